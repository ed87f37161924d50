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
