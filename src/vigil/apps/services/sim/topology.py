"""The simulated shop: services, their endpoints, the calls between them, and their resources.

A catalogue of 42 services modelled on the public demo shops (OpenTelemetry's Online Boutique/Astronomy
Shop, Sock Shop, Train Ticket): a ``frontend`` entry point, application services (cart, checkout, payment,
shipping, currency, catalog, recommendation, ads, email, ...), datastores and caches (Redis, MySQL,
Postgres, MongoDB, Elasticsearch, memcached, Kafka), two external dependencies (a payment gateway, an
object store) and a ``batch-scheduler`` whose cron jobs are the legitimate "scheduled batch" load.
:func:`shop_topology` keeps the first ``n`` services of the catalogue in priority order (every service's
callers come before it), dropping calls to services that are not kept.

Each **operation** has a self-time distribution (log-normal: median and sigma, in ms), an intrinsic error
rate and an ordered list of **calls**. Calls in the same ``group`` run in parallel, groups run in order; a
call has a probability, extra sequential repeats (``repeat``: Poisson mean, e.g. one call per cart item), a
client timeout, retries, and whether its failure fails the caller (``critical``) or degrades gracefully.
Datastores and external services are not instrumented: they appear only as the ``peer.service`` of their
callers' client spans (as in real OpenTelemetry deployments), but they do report resource metrics.

Capacity is sized from the expected load at the daily peak (``peak_rate`` root requests/s): each service
gets enough replicas, split over two zones, for a peak CPU utilisation of 15-35 % (headroom for spikes).

Examples:
    >>> topo = shop_topology(30, peak_rate=50.0, seed=1)
    >>> len(topo.services), topo.services[0], topo.op_names[topo.entry_ops[0]]
    (30, 'frontend', 'frontend GET /')
    >>> bool(topo.fanout[topo.service_index("cart")] > 0)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ZONES", "Call", "Op", "ServiceDef", "Topology", "catalogue", "shop_topology"]

ZONES: tuple[str, ...] = ("zone-a", "zone-b")


@dataclass(frozen=True)
class Call:
    """One downstream call an operation makes (see the module docstring)."""

    service: str
    op: str
    p: float = 1.0
    repeat: float = 0.0
    group: int = 1
    timeout_ms: float = 800.0
    retries: int = 0
    critical: bool = True


@dataclass(frozen=True)
class Op:
    """An endpoint: self-time median and log-normal sigma (ms), intrinsic error rate, downstream calls."""

    name: str
    median_ms: float
    sigma: float = 0.5
    error_rate: float = 2e-4
    calls: tuple[Call, ...] = ()


@dataclass(frozen=True)
class ServiceDef:
    """A service: ``kind`` is entry, app, batch, datastore or external; ``runtime`` drives GC behaviour."""

    name: str
    kind: str
    runtime: str
    ops: tuple[Op, ...]
    cpu_ms: float = 3.0  # CPU time per request
    mem_mb: float = 400.0

    @property
    def instrumented(self) -> bool:
        """Whether the service emits server spans (datastores and external services do not)."""
        return self.kind in ("entry", "app", "batch")


def _c(target: str, **kw: object) -> Call:
    service, _, op = target.partition(".")
    return Call(service, op, **kw)  # type: ignore[arg-type]


_SESSION = _c("redis-session.GET", group=0, timeout_ms=100, retries=1)
_NONCRIT = {"critical": False, "timeout_ms": 300}


def catalogue() -> tuple[ServiceDef, ...]:
    """The 42 services in priority order (callers before callees)."""
    S, O = ServiceDef, Op
    return (
        S("frontend", "entry", "go", (
            O("GET /", 4.0, 0.4, calls=(_SESSION, _c("ratelimit.Check", group=0, **_NONCRIT),
              _c("feature-flags.Evaluate", group=0, **_NONCRIT), _c("currency.GetSupportedCurrencies"),
              _c("catalog.ListProducts", retries=1), _c("ads.GetAds", **_NONCRIT),
              _c("recommendation.ListRecommendations", **_NONCRIT), _c("cart.GetCart", retries=1),
              _c("analytics.Track", group=2, **_NONCRIT))),
            O("GET /product", 3.0, 0.4, calls=(_SESSION, _c("catalog.GetProduct", retries=1),
              _c("currency.Convert"), _c("pricing.GetPrice"), _c("reviews.GetReviews", **_NONCRIT),
              _c("recommendation.ListRecommendations", **_NONCRIT), _c("ads.GetAds", **_NONCRIT),
              _c("media.GetImage", **_NONCRIT), _c("analytics.Track", group=2, **_NONCRIT))),
            O("GET /cart", 3.0, 0.4, calls=(_SESSION, _c("cart.GetCart", retries=1),
              _c("currency.Convert", group=2, repeat=1.5), _c("shipping.GetQuote", group=2),
              _c("recommendation.ListRecommendations", group=2, **_NONCRIT))),
            O("POST /cart", 3.0, 0.4, calls=(_SESSION, _c("catalog.GetProduct", retries=1),
              _c("inventory.Check", **_NONCRIT), _c("cart.AddItem", group=2))),
            O("POST /checkout", 5.0, 0.4, calls=(_SESSION, _c("auth.Verify", group=0),
              _c("checkout.PlaceOrder", timeout_ms=5000))),
            O("GET /search", 3.0, 0.4, calls=(_SESSION, _c("search.Query", retries=1), _c("ads.GetAds", **_NONCRIT))),
            O("POST /login", 4.0, 0.4, calls=(_c("ratelimit.Check", group=0, **_NONCRIT), _c("auth.Login"),
              _c("redis-session.SET", group=2, timeout_ms=100))),
            O("GET /account", 3.0, 0.4, calls=(_c("auth.Verify", group=0), _c("user.GetUser"),
              _c("orders.ListOrders"), _c("loyalty.GetPoints", **_NONCRIT), _c("wishlist.Get", **_NONCRIT))),
        ), cpu_ms=4.0, mem_mb=300),
        S("redis-session", "datastore", "native", (O("GET", 0.3, 0.5, 1e-5), O("SET", 0.35, 0.5, 1e-5),
                                                   O("INCR", 0.3, 0.5, 1e-5)), cpu_ms=0.3, mem_mb=500),
        S("cart", "app", "dotnet", (
            O("GetCart", 1.5, 0.4, calls=(_c("redis-cart.HGETALL", timeout_ms=150, retries=1),)),
            O("AddItem", 2.0, 0.4, calls=(_c("redis-cart.HSET", timeout_ms=150, retries=1),)),
            O("EmptyCart", 1.0, 0.4, calls=(_c("redis-cart.DEL", timeout_ms=150, retries=1),)),
        ), cpu_ms=2.0, mem_mb=350),
        S("redis-cart", "datastore", "native", (O("HGETALL", 0.4, 0.5, 1e-5), O("HSET", 0.4, 0.5, 1e-5),
                                                O("DEL", 0.3, 0.5, 1e-5)), cpu_ms=0.3, mem_mb=800),
        S("catalog", "app", "go", (
            O("ListProducts", 4.0, 0.5, calls=(_c("memcached-catalog.GET", group=0, timeout_ms=80),
              _c("mysql-catalog.SELECT", p=0.3, timeout_ms=1000, retries=1))),
            O("GetProduct", 1.5, 0.5, calls=(_c("memcached-catalog.GET", group=0, timeout_ms=80),
              _c("mysql-catalog.SELECT", p=0.2, timeout_ms=1000, retries=1))),
        ), cpu_ms=3.0, mem_mb=250),
        S("mysql-catalog", "datastore", "native", (O("SELECT", 2.5, 0.7, 1e-5),), cpu_ms=2.0, mem_mb=2000),
        S("currency", "app", "node", (O("Convert", 1.0, 0.4), O("GetSupportedCurrencies", 0.6, 0.4)),
          cpu_ms=1.0, mem_mb=150),
        S("checkout", "app", "go", (
            O("PlaceOrder", 6.0, 0.4, calls=(
                _c("cart.GetCart", group=0, retries=1), _c("catalog.GetProduct", group=1, repeat=1.5),
                _c("currency.Convert", group=2, repeat=1.5), _c("shipping.GetQuote", group=3),
                _c("tax.Compute", group=3), _c("promotions.Apply", group=3, **_NONCRIT),
                _c("payment.Charge", group=4, timeout_ms=3000), _c("shipping.ShipOrder", group=5),
                _c("orders.CreateOrder", group=6, timeout_ms=2000), _c("cart.EmptyCart", group=7),
                _c("email.SendConfirmation", group=7, **_NONCRIT), _c("notification.Publish", group=7, **_NONCRIT),
                _c("loyalty.AddPoints", group=7, **_NONCRIT))),
        ), cpu_ms=5.0, mem_mb=200),
        S("payment", "app", "node", (
            O("Charge", 8.0, 0.4, 5e-4, calls=(_c("fraud.Check", group=0, timeout_ms=500),
              _c("payment-gateway.Authorize", timeout_ms=2000, retries=1))),
        ), cpu_ms=3.0, mem_mb=250),
        S("payment-gateway", "external", "native", (O("Authorize", 120.0, 0.35, 1e-3),), cpu_ms=0.5, mem_mb=100),
        S("shipping", "app", "go", (
            O("GetQuote", 2.0, 0.4, calls=(_c("geo.Locate", group=0, timeout_ms=200),)),
            O("ShipOrder", 5.0, 0.4, calls=(_c("geo.Locate", group=0, timeout_ms=200),
              _c("kafka-events.Produce", timeout_ms=500, retries=2))),
        ), cpu_ms=2.0, mem_mb=150),
        S("email", "app", "python", (O("SendConfirmation", 25.0, 0.5, 1e-3),), cpu_ms=8.0, mem_mb=300),
        S("recommendation", "app", "python", (
            O("ListRecommendations", 12.0, 0.5, calls=(_c("catalog.ListProducts", retries=1),
              _c("feature-flags.Evaluate", group=0, **_NONCRIT))),
        ), cpu_ms=9.0, mem_mb=600),
        S("ads", "app", "java", (O("GetAds", 3.0, 0.5),), cpu_ms=2.5, mem_mb=700),
        S("auth", "app", "go", (
            O("Verify", 0.8, 0.4, calls=(_c("redis-session.GET", group=0, timeout_ms=100, retries=1),)),
            O("Login", 30.0, 0.3, calls=(_c("user.GetUser", group=0),)),  # password hashing
        ), cpu_ms=3.0, mem_mb=150),
        S("user", "app", "java", (O("GetUser", 2.0, 0.4, calls=(_c("mongo-users.find", timeout_ms=500, retries=1),)),),
          cpu_ms=2.0, mem_mb=800),
        S("mongo-users", "datastore", "native", (O("find", 1.8, 0.6, 1e-5),), cpu_ms=1.5, mem_mb=1500),
        S("orders", "app", "java", (
            O("CreateOrder", 4.0, 0.4, calls=(_c("inventory.Reserve", group=0),
              _c("postgres-orders.INSERT", timeout_ms=1000), _c("kafka-events.Produce", group=2, timeout_ms=500))),
            O("ListOrders", 3.0, 0.4, calls=(_c("postgres-orders.SELECT", timeout_ms=1000, retries=1),)),
        ), cpu_ms=3.0, mem_mb=900),
        S("postgres-orders", "datastore", "native", (O("INSERT", 3.0, 0.6, 1e-5), O("SELECT", 2.5, 0.7, 1e-5)),
          cpu_ms=2.0, mem_mb=2500),
        S("batch-scheduler", "batch", "java", (
            O("cron ReindexCatalog", 20.0, 0.3, calls=(_c("catalog.ListProducts", group=0, repeat=4.0),
              _c("search.Index", repeat=4.0, timeout_ms=2000))),
            O("cron OrderReport", 15.0, 0.3, calls=(_c("orders.ListOrders", repeat=6.0),)),
        ), cpu_ms=10.0, mem_mb=500),
        S("search", "app", "java", (
            O("Query", 4.0, 0.5, calls=(_c("elasticsearch.search", timeout_ms=800), _c("pricing.GetPrice", group=2))),
            O("Index", 6.0, 0.4, calls=(_c("elasticsearch.bulk", timeout_ms=2000),)),
        ), cpu_ms=4.0, mem_mb=1000),
        S("elasticsearch", "datastore", "native", (O("search", 12.0, 0.6, 1e-5), O("bulk", 30.0, 0.5, 1e-5)),
          cpu_ms=6.0, mem_mb=4000),
        S("inventory", "app", "java", (
            O("Check", 1.5, 0.4, calls=(_c("postgres-inventory.SELECT", timeout_ms=500),)),
            O("Reserve", 3.0, 0.4, calls=(_c("postgres-inventory.UPDATE", timeout_ms=1000),)),
        ), cpu_ms=2.0, mem_mb=700),
        S("postgres-inventory", "datastore", "native", (O("SELECT", 1.5, 0.6, 1e-5), O("UPDATE", 3.5, 0.6, 1e-5)),
          cpu_ms=1.5, mem_mb=2000),
        S("fraud", "app", "python", (
            O("Check", 15.0, 0.5, calls=(_c("user.GetUser", group=0), _c("postgres-orders.SELECT", group=0))),
        ), cpu_ms=10.0, mem_mb=700),
        S("memcached-catalog", "datastore", "native", (O("GET", 0.25, 0.5, 1e-5),), cpu_ms=0.2, mem_mb=1000),
        S("reviews", "app", "python", (O("GetReviews", 3.0, 0.5, calls=(_c("mongo-reviews.find", timeout_ms=500),)),),
          cpu_ms=4.0, mem_mb=400),
        S("mongo-reviews", "datastore", "native", (O("find", 2.0, 0.6, 1e-5),), cpu_ms=1.5, mem_mb=1200),
        S("pricing", "app", "go", (O("GetPrice", 1.0, 0.4, calls=(_c("promotions.Get", **_NONCRIT),)),),
          cpu_ms=1.0, mem_mb=150),
        S("notification", "app", "go", (O("Publish", 1.0, 0.4, calls=(_c("kafka-events.Produce", timeout_ms=500),)),),
          cpu_ms=1.0, mem_mb=150),
        S("kafka-events", "datastore", "native", (O("Produce", 1.5, 0.5, 1e-5),), cpu_ms=0.5, mem_mb=3000),
        S("tax", "app", "java", (O("Compute", 2.0, 0.4, calls=(_c("geo.Locate", group=0, timeout_ms=200),)),),
          cpu_ms=2.0, mem_mb=500),
        S("geo", "app", "go", (O("Locate", 0.8, 0.4),), cpu_ms=0.8, mem_mb=200),
        S("promotions", "app", "node", (O("Apply", 2.0, 0.4), O("Get", 0.8, 0.4)), cpu_ms=1.0, mem_mb=200),
        S("loyalty", "app", "java", (
            O("GetPoints", 1.5, 0.4, calls=(_c("postgres-loyalty.SELECT", timeout_ms=500),)),
            O("AddPoints", 2.0, 0.4, calls=(_c("postgres-loyalty.UPDATE", timeout_ms=500),)),
        ), cpu_ms=1.5, mem_mb=600),
        S("postgres-loyalty", "datastore", "native", (O("SELECT", 1.5, 0.6, 1e-5), O("UPDATE", 3.0, 0.6, 1e-5)),
          cpu_ms=1.0, mem_mb=1500),
        S("wishlist", "app", "node", (O("Get", 1.5, 0.4, calls=(_c("redis-cart.HGETALL", timeout_ms=150),)),),
          cpu_ms=1.0, mem_mb=200),
        S("feature-flags", "app", "go", (O("Evaluate", 0.3, 0.4, 1e-5),), cpu_ms=0.3, mem_mb=100),
        S("media", "app", "go", (O("GetImage", 2.0, 0.5, calls=(_c("object-store.GET", timeout_ms=1000),)),),
          cpu_ms=1.5, mem_mb=300),
        S("object-store", "external", "native", (O("GET", 20.0, 0.6, 1e-4),), cpu_ms=0.5, mem_mb=100),
        S("analytics", "app", "python", (O("Track", 2.0, 0.5, calls=(_c("kafka-events.Produce", timeout_ms=300),)),),
          cpu_ms=2.0, mem_mb=300),
        S("ratelimit", "app", "go", (O("Check", 0.4, 0.4, calls=(_c("redis-session.INCR", timeout_ms=50),)),),
          cpu_ms=0.5, mem_mb=100),
    )


#: share of frontend traffic per entry operation (batch jobs run only when scheduled)
ENTRY_MIX = {"GET /": 0.30, "GET /product": 0.30, "GET /cart": 0.10, "POST /cart": 0.09, "POST /checkout": 0.03,
             "GET /search": 0.12, "POST /login": 0.03, "GET /account": 0.03}  # fmt: skip


@dataclass
class Topology:
    """The compiled shop: services and operations as arrays and indices (see :func:`shop_topology`).

    Attributes:
        services: service names; ``defs`` their definitions.
        op_names: ``"<service> <op>"`` per operation; ``op_service`` its service index.
        calls: per operation, the groups of compiled calls ``(callee op, Call)`` in order.
        entry_ops / entry_mix: frontend operations and their traffic shares; ``batch_ops``: cron jobs.
        fanout: expected server requests per service per frontend request (retries not counted).
        replicas: ``[service, zone]`` replica counts; ``cores``: cores per replica.
        edges: ``(caller, callee)`` service-index pairs of the call graph.
    """

    defs: tuple[ServiceDef, ...]
    services: tuple[str, ...]
    op_names: tuple[str, ...]
    op_service: np.ndarray
    op_median_ms: np.ndarray
    op_sigma: np.ndarray
    op_error: np.ndarray
    calls: list[list[list[tuple[int, Call]]]]
    entry_ops: np.ndarray
    entry_mix: np.ndarray
    batch_ops: np.ndarray
    fanout: np.ndarray
    cpu_ms: np.ndarray
    replicas: np.ndarray
    cores: np.ndarray
    mem_mb: np.ndarray
    edges: list[tuple[int, int]] = field(default_factory=list)

    def service_index(self, name: str) -> int:
        """Index of a service by name (``ValueError`` naming the known ones when absent)."""
        try:
            return self.services.index(name)
        except ValueError:
            raise ValueError(f"no service {name!r}; the topology has {', '.join(self.services)}") from None

    @property
    def instrumented(self) -> np.ndarray:
        """Boolean per service: emits server spans."""
        return np.array([d.instrumented for d in self.defs])


def shop_topology(n_services: int = 30, *, peak_rate: float = 50.0, seed: int = 7) -> Topology:
    """The first ``n_services`` of the catalogue, compiled and sized for ``peak_rate`` frontend requests/s."""
    cat = catalogue()
    if not 8 <= n_services <= len(cat):
        raise ValueError(f"`services` must be in 8..{len(cat)}; got {n_services}")
    defs = cat[:n_services]
    names = tuple(d.name for d in defs)
    op_names, op_service, med, sig, err, raw_ops = [], [], [], [], [], []
    for si, d in enumerate(defs):
        for op in d.ops:
            op_names.append(f"{d.name} {op.name}")
            op_service.append(si)
            med.append(op.median_ms)
            sig.append(op.sigma)
            err.append(op.error_rate)
            raw_ops.append(op)
    index = {n: i for i, n in enumerate(op_names)}
    calls: list[list[list[tuple[int, Call]]]] = []
    edges: set[tuple[int, int]] = set()
    for oi, op in enumerate(raw_ops):
        groups: dict[int, list[tuple[int, Call]]] = {}
        for c in op.calls:
            callee = index.get(f"{c.service} {c.op}")
            if callee is None:
                continue  # the callee is not part of this (smaller) shop
            groups.setdefault(c.group, []).append((callee, c))
            edges.add((op_service[oi], op_service[callee]))
        calls.append([groups[g] for g in sorted(groups)])
    op_service_a = np.array(op_service, np.int32)
    entry = [index[f"frontend {k}"] for k in ENTRY_MIX]
    mix = np.array(list(ENTRY_MIX.values()))
    batch = [i for i, n in enumerate(op_names) if n.startswith("batch-scheduler ")]
    fan_op = _fanout(calls, len(op_names), entry, mix / mix.sum())
    fanout = np.bincount(op_service_a, weights=fan_op, minlength=len(names))
    rng = np.random.default_rng([seed, 0x70907])
    cpu_ms = np.array([d.cpu_ms for d in defs])
    target = rng.uniform(0.15, 0.35, len(names))  # peak CPU utilisation: headroom for spikes
    need = peak_rate * fanout * cpu_ms / 1000.0 / target  # cores
    per_zone = np.maximum(1, np.ceil(need / len(ZONES) / 2.0)).astype(np.int32)  # at most 2 cores a replica
    cores = np.maximum(np.round(need / (len(ZONES) * per_zone) * 20) / 20, 0.1)  # a k8s limit, 0.05 steps
    replicas = np.repeat(per_zone[:, None], len(ZONES), axis=1)
    return Topology(defs=defs, services=names, op_names=tuple(op_names), op_service=op_service_a,
                    op_median_ms=np.array(med), op_sigma=np.array(sig), op_error=np.array(err), calls=calls,
                    entry_ops=np.array(entry), entry_mix=mix / mix.sum(), batch_ops=np.array(batch, np.int64),
                    fanout=fanout, cpu_ms=cpu_ms, replicas=replicas, cores=cores,
                    mem_mb=np.array([d.mem_mb for d in defs]), edges=sorted(edges))  # fmt: skip


def _fanout(calls: list[list[list[tuple[int, Call]]]], n_ops: int, roots: list[int], weights: np.ndarray) -> np.ndarray:
    """Expected calls of each operation per root request (a topological sweep; the call graph is a DAG)."""
    order, state = [], np.zeros(n_ops, np.int8)

    def visit(o: int) -> None:
        if state[o] == 2:
            return
        if state[o] == 1:
            raise ValueError("the call graph has a cycle")
        state[o] = 1
        for group in calls[o]:
            for callee, _ in group:
                visit(callee)
        state[o] = 2
        order.append(o)

    for o in range(n_ops):
        visit(o)
    exp = np.zeros(n_ops)
    exp[roots] = weights
    for o in reversed(order):  # callers before callees
        for group in calls[o]:
            for callee, c in group:
                exp[callee] += exp[o] * c.p * (1.0 + c.repeat)
    return exp
