"""Steering a running simulation: the runner (stepped or paced) and its HTTP control API.

:class:`SimRunner` owns a :class:`~.simulator.ServiceSimulator` and its sinks. Windows and control actions
take one lock, so an action always lands between two windows and takes effect from the next one, at the
simulated time it was taken (recorded in the ground truth's ``actions``). Two ways to drive it:

* **stepped**: ``advance(n)`` simulates ``n`` windows now (also ``POST /step``): a remediation engine under
  test decides, acts, steps, looks again, with no clock involved;
* **paced**: ``run_paced(speed)`` keeps simulated time ``speed`` times ahead of the wall clock (60: an hour
  in a minute). The clock and the sleep are injected; the wall clock is read here only, never by the model.

:func:`control_app` is the HTTP face (FastAPI)::

    GET  /health                 {"ok": true, "now_ms": ..., "done": ...}
    GET  /state                  versions, replicas and traffic weights per service
    GET  /topology               services with their kind, and the call edges
    GET  /actions                the actions taken so far
    POST /actions/rollback       {"service": "cart"}
    POST /actions/restart        {"service": "cart"}
    POST /actions/scale          {"service": "cart", "replicas": 6}
    POST /actions/shift-traffic  {"service": "cart", "weights": {"zone-a": 1, "zone-b": 0}}  (or "drain": "zone-b")
    POST /step                   {"windows": 1}   (stepped mode only)
    GET  /ground-truth           only with ``expose_truth`` (evaluation harnesses; a healer must not peek)

Unknown services answer 404, bad values 400, ``/step`` in paced mode 409.

**Safe to retry.** An action request may carry ``Idempotency-Key: <key>`` (Vigil's playbooks send
``<run>/<step>``): the first request with a key acts, and any later one with the same key gets the first
one's answer again (header ``Idempotent-Replayed: true``) without acting, so a remediation worker that died
after sending and is replaced resends safely. The same key on another action or body is a mistake: 422.
:attr:`SimRunner.keys` counts the requests seen per key.

**Token.** With ``token`` set, every ``POST`` needs ``Authorization: Bearer <token>`` (else 401); reads stay
open. The token is compared in constant time and never logged or echoed.
"""

# no `from __future__ import annotations` here: FastAPI reads the endpoints' Annotated[...] parameters at
# definition time, and they name the locally imported Body
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from vigil.apps.services.sim.simulator import ServiceSimulator, Window
from vigil.apps.services.sim.topology import ZONES

__all__ = ["SimRunner", "control_app"]


class SimRunner:
    """A simulator, its sinks and a lock (see the module docstring)."""

    def __init__(self, sim: ServiceSimulator, sinks: Sequence[Any] = (), *, mode: str = "stepped",
                 on_window: Callable[[Window], None] | None = None) -> None:  # fmt: skip
        if mode not in ("stepped", "paced"):
            raise ValueError(f"`mode` must be 'stepped' or 'paced'; got {mode!r}")
        self.sim, self.sinks, self.mode, self.on_window = sim, list(sinks), mode, on_window
        self.lock = threading.RLock()
        self.windows = 0
        self.spans = 0
        #: requests seen per Idempotency-Key, and the first answer to each (action, body, answer)
        self.keys: Counter[str] = Counter()
        self.answers: dict[str, tuple[str, str, dict[str, Any]]] = {}

    def advance(self, windows: int = 1) -> list[dict[str, int]]:
        """Simulate ``windows`` windows, write them to the sinks; returns a summary of each."""
        out = []
        for _ in range(windows):
            with self.lock:
                w = self.sim.step()
                for sink in self.sinks:
                    sink.write(w)
                self.windows += 1
                self.spans += len(w.spans["span_id"])
            if self.on_window is not None:
                self.on_window(w)
            out.append({"t0_ms": w.t0_ms, "t1_ms": w.t1_ms, "spans": len(w.spans["span_id"])})
        return out

    def act(self, action: str, **kwargs: Any) -> dict[str, Any]:
        """Apply a control action (``rollback``, ``restart``, ``scale``, ``shift_traffic``) between windows."""
        if action not in ("rollback", "restart", "scale", "shift_traffic"):
            raise ValueError(f"unknown action {action!r}")
        with self.lock:
            return dict(getattr(self.sim, action)(**kwargs))

    def act_once(self, key: str | None, action: str, **kwargs: Any) -> tuple[dict[str, Any], bool]:
        """:meth:`act` unless ``key`` was seen: then the first answer again; ``(answer, replayed)``.

        Raises:
            KeyError: ``key`` was used before for another action or body.
        """
        if key is None:
            return self.act(action, **kwargs), False
        body = json.dumps(kwargs, sort_keys=True, default=str)
        with self.lock:
            self.keys[key] += 1
            seen = self.answers.get(key)
            if seen is not None:
                if seen[:2] != (action, body):
                    raise KeyError(f"Idempotency-Key {key!r} was used for {seen[0]} {seen[1]}")
                return dict(seen[2]), True
            out = self.act(action, **kwargs)
            self.answers[key] = (action, body, out)
            return out, False

    def run_paced(self, speed: float, *, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep,
                  stop: threading.Event | None = None) -> None:  # fmt: skip
        """Run to the scenario's end, simulated time ``speed`` x the wall clock (``speed`` 0: no pacing)."""
        t_wall0, t_sim0 = clock(), self.sim.now_ms
        while not self.sim.done and not (stop is not None and stop.is_set()):
            if speed > 0:
                due = t_wall0 + (self.sim.now_ms - t_sim0) / 1000.0 / speed
                wait = due - clock()
                if wait > 0:
                    sleep(wait)
            self.advance(1)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


def control_app(runner: SimRunner, *, expose_truth: bool = False, token: str | None = None) -> Any:
    """The FastAPI app of the control API (module docstring); ``token``: POSTs need it as a bearer token."""
    from fastapi import Body, Depends, FastAPI, Header, HTTPException, Response

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not (authorization or "").startswith("Bearer ") or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "this control API needs `Authorization: Bearer <token>`",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    app = FastAPI(title="Vigil services simulator control", docs_url="/docs", redoc_url=None)
    sim = runner.sim
    Key = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
    guard = [Depends(authorized)]

    def guarded(action: str, key: str | None, response: Response, **kw: Any) -> dict[str, Any]:
        service = kw.get("service")
        if not isinstance(service, str) or service not in sim.topology.services:
            raise HTTPException(404, f"no service {service!r}; see GET /topology")
        try:
            out, replayed = runner.act_once(key, action, **kw)
        except KeyError as exc:
            raise HTTPException(422, str(exc.args[0])) from None
        except (ValueError, TypeError) as exc:
            raise HTTPException(400, str(exc)) from None
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return out

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "now_ms": sim.now_ms, "done": sim.done, "mode": runner.mode}

    @app.get("/state")
    def state() -> dict[str, Any]:
        with runner.lock:
            return sim.state()

    @app.get("/topology")
    def topology() -> dict[str, Any]:
        t = sim.topology
        return {"services": {name: t.defs[i].kind for i, name in enumerate(t.services)},
                "edges": [[t.services[a], t.services[b]] for a, b in t.edges]}  # fmt: skip

    @app.get("/actions")
    def actions() -> list[dict[str, Any]]:
        return list(sim.world.actions)

    @app.post("/actions/rollback", dependencies=guard)
    def rollback(service: Annotated[str, Body(embed=True)], response: Response, key: Key = None) -> dict[str, Any]:
        return guarded("rollback", key, response, service=service)

    @app.post("/actions/restart", dependencies=guard)
    def restart(service: Annotated[str, Body(embed=True)], response: Response, key: Key = None) -> dict[str, Any]:
        return guarded("restart", key, response, service=service)

    @app.post("/actions/scale", dependencies=guard)
    def scale(service: Annotated[str, Body()], replicas: Annotated[int, Body()], response: Response,
              key: Key = None) -> dict[str, Any]:  # fmt: skip
        return guarded("scale", key, response, service=service, replicas=replicas)

    @app.post("/actions/shift-traffic", dependencies=guard)
    def shift(service: Annotated[str, Body()], response: Response,
              weights: Annotated[dict[str, float] | None, Body()] = None,
              drain: Annotated[str | None, Body()] = None, key: Key = None) -> dict[str, Any]:  # fmt: skip
        if (weights is None) == (drain is None):
            raise HTTPException(400, "give `weights` ({zone: weight}) or `drain` (a zone), not both or neither")
        if drain is not None:
            if drain not in ZONES:
                raise HTTPException(400, f"`drain` must be one of {list(ZONES)}; got {drain!r}")
            weights = {z: 0.0 if z == drain else 1.0 for z in ZONES}
        return guarded("shift_traffic", key, response, service=service, weights=weights)

    @app.post("/step", dependencies=guard)
    def step(windows: Annotated[int, Body(embed=True)] = 1) -> list[dict[str, int]]:
        if runner.mode != "stepped":
            raise HTTPException(409, "the simulation is paced; /step works in stepped mode only")
        if not 1 <= windows <= 1000:
            raise HTTPException(400, f"`windows` must be in 1..1000; got {windows}")
        return runner.advance(windows)

    if expose_truth:

        @app.get("/ground-truth")
        def truth() -> dict[str, Any]:
            return sim.ground_truth()

    return app
