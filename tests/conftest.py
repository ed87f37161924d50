"""Shared fixtures: the local Apache Kafka broker (deploy/kafka/kafka.sh) for tests marked `kafka`.

- `kafka_bootstrap` (session): "127.0.0.1:9092" once a broker answers there. It uses
  VIGIL_KAFKA_BOOTSTRAP when set (an external broker, never started or stopped by the tests);
  otherwise it starts the local broker with `deploy/kafka/kafka.sh up` when nothing answers, so
  `pytest tests/test_x.py` works on its own, and stops it at the end of the session if it started it.
- `kafka_broker`: the broker as an object with `.stop()` / `.start()` (kafka.sh down / up: the data
  is kept, so topics and committed offsets survive) for fault tests. If a test leaves it stopped,
  the fixture starts it again after the test.
- `kafka_topic`: a factory, `kafka_topic(partitions=3)` -> the name of a fresh, uniquely-named topic,
  created and deleted again after the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# `vigil score --train` caches fitted models in ~/.cache/vigil/fits: tests don't, unless one turns it on
os.environ.setdefault("VIGIL_FIT_CACHE", "0")
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
# `up` itself waits at most VIGIL_KAFKA_START_TIMEOUT (90 s) for health; a cold start also resolves jars.
_SCRIPT_TIMEOUT_S = 600


def _default_bootstrap() -> str:
    return os.environ.get("VIGIL_KAFKA_BOOTSTRAP") or f"127.0.0.1:{os.environ.get('VIGIL_KAFKA_PORT', '9092')}"


def kafka_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a broker at `bootstrap` answers a metadata request with at least one broker."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return False


class KafkaBroker:
    """The local test broker: `.start()` / `.stop()` run deploy/kafka/kafka.sh up / down."""

    def __init__(self, bootstrap: str, managed: bool) -> None:
        self.bootstrap = bootstrap
        # False for an external broker (VIGIL_KAFKA_BOOTSTRAP): the tests must not stop or start it.
        self.managed = managed

    def _script(self, action: str) -> None:
        if not self.managed:
            pytest.skip(f"kafka_broker.{action}: the broker at {self.bootstrap} is external (VIGIL_KAFKA_BOOTSTRAP)")
        proc = subprocess.run(
            [str(KAFKA_SH), action], capture_output=True, text=True, timeout=_SCRIPT_TIMEOUT_S, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kafka.sh {action} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def start(self) -> None:
        """Start the broker (no-op when it is up) and wait until it answers metadata requests."""
        self._script("up")

    def stop(self) -> None:
        """Stop the broker, keeping its data (no-op when it is down)."""
        self._script("down")

    def is_up(self, timeout: float = 3.0) -> bool:
        return kafka_answers(self.bootstrap, timeout)


@pytest.fixture(scope="session")
def _kafka_session_broker() -> Iterator[KafkaBroker]:
    external = os.environ.get("VIGIL_KAFKA_BOOTSTRAP")
    broker = KafkaBroker(_default_bootstrap(), managed=not external)
    if broker.is_up():
        yield broker
        return
    if not broker.managed:
        pytest.fail(f"VIGIL_KAFKA_BOOTSTRAP={external} is set but no broker answers there")
    try:
        broker.start()
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        pytest.fail(f"could not start the local Kafka broker with {KAFKA_SH} up: {exc}")
    yield broker
    # this session started it: stop it again (unless asked to keep it for quick re-runs)
    if os.environ.get("VIGIL_KAFKA_KEEP") != "1":
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_session_broker: KafkaBroker) -> str:
    """The bootstrap servers of a broker that answers, e.g. "127.0.0.1:9092"."""
    return _kafka_session_broker.bootstrap


@pytest.fixture
def kafka_broker(_kafka_session_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """The broker as an object with .stop() / .start(); it is up again after the test."""
    yield _kafka_session_broker
    if _kafka_session_broker.managed and not _kafka_session_broker.is_up():
        _kafka_session_broker.start()


def _wait_for_leaders(admin, topic: str, partitions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            if all(p.leader >= 0 and p.error is None for p in md.partitions.values()):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic}: partitions have no leader after {timeout}s")
        time.sleep(0.1)


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Factory: `kafka_topic(partitions=3, config=None)` creates a fresh topic and returns its name."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []
    base = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:80].strip("-.")

    def make(partitions: int = 3, config: dict[str, str] | None = None) -> str:
        name = f"vigil-test.{base}.{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
        )
        futures[name].result(timeout=60)
        created.append(name)
        _wait_for_leaders(admin, name, partitions, timeout=30)
        return name

    yield make
    # best effort: the data dir survives `down`, so don't let test topics pile up run after run
    if created and kafka_answers(kafka_bootstrap, timeout=2):
        for fut in admin.delete_topics(created, operation_timeout=10).values():
            try:
                fut.result(timeout=15)
            except Exception:
                pass


# ---- Temporal (deploy/temporal/temporal.sh) and the OpenTelemetry Collector (deploy/otelcol/otelcol.sh) ---------

GO_SERVER_FIXTURES = {"temporal_address", "otelcol_binary"}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need a Go-built server run last: `make test` builds them in the background meanwhile."""
    needs = [it for it in items if GO_SERVER_FIXTURES & set(getattr(it, "fixturenames", ()))]
    if needs:
        rest = [it for it in items if not GO_SERVER_FIXTURES & set(getattr(it, "fixturenames", ()))]
        items[:] = rest + needs


@pytest.fixture(scope="session")
def otelcol_binary() -> str:
    """The Collector's path, built first if missing (waits for a build in progress: deploy/go-build.sh locks it)."""
    sh = REPO / "deploy" / "otelcol" / "otelcol.sh"
    proc = subprocess.run([str(sh), "build"], capture_output=True, text=True, timeout=_SCRIPT_TIMEOUT_S * 3,
                          check=False)  # fmt: skip  (a cold build takes 5-15 min)
    if proc.returncode != 0:
        pytest.fail(f"otelcol.sh build failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else str(sh)


TEMPORAL_SH = REPO / "deploy" / "temporal" / "temporal.sh"


def _ports_free(ports: list[int]) -> bool:
    import socket

    for p in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HOST:PORT of a Temporal server (namespace "default") for the session.

    VIGIL_TEMPORAL_ADDRESS (set by `make test`, which starts one) is used as it is and never stopped; otherwise
    a server of our own starts on free ports (in-memory SQLite, its own data dir) and stops at the end.
    Tests use their own task queues, so sharing one server is safe.
    """
    external = os.environ.get("VIGIL_TEMPORAL_ADDRESS")
    if external:
        yield external
        return
    import random

    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(21000, 39000)
        # the frontend, history, matching, worker, HTTP and membership ports temporal.sh derives from it
        if _ports_free([port, port + 1, port + 2, port + 6, port + 10, port - 300, port - 299, port - 298, port - 294]):
            break
    else:
        pytest.fail("no free block of ports for a Temporal server")
    data = tmp_path_factory.mktemp("temporal")
    env = {**os.environ, "VIGIL_TEMPORAL_PORT": str(port), "VIGIL_TEMPORAL_DATA": str(data),
           "VIGIL_TEMPORAL_EPHEMERAL": "1", "VIGIL_TEMPORAL_LOG_LEVEL": "warn"}  # fmt: skip
    proc = subprocess.run(
        [str(TEMPORAL_SH), "up"], env=env, capture_output=True, text=True, timeout=_SCRIPT_TIMEOUT_S * 3, check=False
    )  # fmt: skip  (a cold build takes ~12 min)
    if proc.returncode != 0:
        pytest.fail(f"temporal.sh up failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(TEMPORAL_SH), "down"], env=env, capture_output=True, timeout=120, check=False)
