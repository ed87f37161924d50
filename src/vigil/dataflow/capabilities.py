"""Optional capabilities of sources, sinks and steps, as named protocols checked once at construction.

A runtime needs more from some parts than the basic contracts (:class:`~vigil.io.base.Source`,
:class:`~vigil.io.base.Sink`, :class:`~vigil.dataflow.steps.Step`): a Kafka reader can pause fetching and
commit offsets, a Kafka sink can commit a transaction, the alert manager wants the watermark, a served
model reports its health. Each of those is a :class:`typing.Protocol` here (as prometheus client's
``Collector`` declares its optional ``describe``). A runtime sorts its parts into these roles once, when it
is built (:func:`having`), and from then on calls them directly: no ``getattr`` probing on the hot path, and
the roles a part plays are visible in one place.

Examples:
    >>> class Reader:
    ...     def pause(self): ...
    ...     def resume(self): ...
    >>> isinstance(Reader(), PausableReader), isinstance(Reader(), CommittingReader)
    (True, False)
    >>> len(having([Reader(), object(), Reader()], PausableReader))
    2
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class PausableReader(Protocol):
    """A reader that can stop fetching while the engine is behind (Kafka: the client stops prefetching too)."""

    def pause(self) -> None:
        """Stop fetching (what was already returned stays returned)."""
        ...

    def resume(self) -> None:
        """Fetch again, from the position after the last returned record."""
        ...


@runtime_checkable
class CheckedSource(Protocol):
    """A source that can tell, before a run touches anything, that it can't be read (a file that isn't there)."""

    def check(self) -> None:
        """Raise :class:`~vigil.errors.SourceError` if the source can't be read."""
        ...


@runtime_checkable
class BacklogReader(Protocol):
    """A reader that knows which of its partitions still have records it hasn't read (they are never idle)."""

    def behind(self) -> Iterable[Any]:
        """Partitions with records waiting."""
        ...


@runtime_checkable
class CommittingReader(Protocol):
    """A reader whose positions are committed to an external store (Kafka: the consumer group's offsets)."""

    def committed_offsets(self) -> Any:
        """The committed position, as the reader's ``position()`` has it (``None`` parts: nothing committed)."""
        ...

    def commit(self, position: Any) -> None:
        """Commit ``position`` (at-least-once: after the outputs before it are durable)."""
        ...

    def flush_dead_letters(self) -> None:
        """Make the dead letters produced so far durable (before their offsets are committed)."""
        ...


@runtime_checkable
class TransactionalSink(Protocol):
    """A sink whose outputs and the source positions commit together (exactly-once).

    The engine fences a crashed predecessor before it reads committed positions, and at every checkpoint
    hands over the positions with the readers they belong to; the sink commits them inside its transaction.
    """

    transactional: bool

    def fence(self) -> None:
        """Abort a predecessor's open transaction (it would hold the committed positions unstable)."""
        ...

    def commit_checkpoint(self, positions: Mapping[str, Any], readers: Mapping[str, Any]) -> None:
        """Commit the open transaction with the source positions of ``readers`` (by partition name) in it."""
        ...


@runtime_checkable
class WatermarkListener(Protocol):
    """A sink that wants the stream's watermark in order with what it is sent (to resolve in event time)."""

    def on_watermark(self, watermark_ms: int) -> None:
        """The watermark passed ``watermark_ms``; called on the sink thread, after the items before it."""
        ...


@runtime_checkable
class CheckpointedSink(Protocol):
    """A sink with state of its own that must go back with the engine's checkpoints (the alert manager).

    The engine tells it which checkpoint it resumes from before the first batch, and hands it each checkpoint's
    sequence at the barrier instead of a plain ``flush``, so the sink can key what it saves by it.
    """

    def restore_checkpoint(self, seq: int | None) -> None:
        """The run resumes from checkpoint ``seq`` (``None``: from the start, no checkpoint)."""
        ...

    def checkpoint(self, seq: int, keep_from: int | None = None) -> None:
        """Checkpoint ``seq``: make everything before the barrier durable, as of ``seq`` (the sink's ``flush``).

        ``keep_from`` is the oldest checkpoint the engine may still resume from.
        """
        ...


@runtime_checkable
class HealthReporter(Protocol):
    """A step (or the model it serves) that reports its health: ``{healthy, version, reason, since}`` or ``None``."""

    def health(self) -> dict[str, Any] | None:
        """The current health, or ``None`` when there is nothing to report."""
        ...


@runtime_checkable
class LagReporter(Protocol):
    """A reader that knows how far behind the end of its source it is (Kafka: consumer lag per partition)."""

    def lag(self) -> dict[Any, int]:
        """Records not read yet, per partition."""
        ...


@runtime_checkable
class ModelServer(Protocol):
    """A step that serves a model from the registry (for model age and input-drift monitoring)."""

    def served_model(self) -> Any:
        """The served model (with ``model_version``, ``name`` and ``registry``), or ``None``."""
        ...


@runtime_checkable
class ServedModel(Protocol):
    """A model served from the registry: its name, the version in force and the registry it follows."""

    name: str
    model_version: str | None
    registry: Any


@runtime_checkable
class SlicedState(Protocol):
    """A detector whose state can be taken and put back one key at a time (Flink keyed state, late scoring)."""

    def export_slots(self, slots: Any) -> list[dict[str, Any]]:
        """One plain-data slice per slot."""
        ...

    def import_slots(self, slots: Any, states: Any) -> None:
        """Put slices into slots (``None`` resets a slot)."""
        ...

    def fresh(self) -> Any:
        """An empty instance with the same parameters, sharing immutable heavy parts (models)."""
        ...

    def slice_caveat(self) -> str | None:
        """Why some state is in no key's slice (``None``: every key's slice is complete)."""
        ...


@runtime_checkable
class SlicedStep(Protocol):
    """A step whose state can be taken and put back one key at a time: what a keyed runtime (Flink) needs.

    Flink keeps each key's slice in its keyed state (bytes from the snapshot codec) and runs the step over a
    *twin* holding only the keys of the micro-batch at hand; imported into any slot of any twin, a key's slice
    continues that key exactly as the uninterrupted step would.
    """

    def export_slots(self, slots: Any) -> list[dict[str, Any]]:
        """One plain-data slice per slot: everything that key's later results depend on."""
        ...

    def import_slots(self, slots: Any, states: Any) -> None:
        """Put slices into slots (``None`` resets a slot)."""
        ...

    def twin(self) -> Any:
        """An empty step with the same settings and sinks, sharing immutable heavy parts (a loaded model)."""
        ...

    def slice_caveat(self) -> str | None:
        """Why some of the step's state is in no key's slice (``None``: every key's slice is complete)."""
        ...


@runtime_checkable
class WatermarkDue(Protocol):
    """A step that can tell, per key, the watermark at which ``on_watermark`` will next change its state.

    A keyed runtime that holds only some keys in memory uses it to know which keys to load, and when to wake
    up (an event-time timer), to close their windows. A step with watermark work that doesn't say is woken for
    every key at every watermark advance.
    """

    def due_ms(self, slots: Any) -> Any:
        """Per slot, the lowest watermark at which ``on_watermark`` changes it (int64; the max int64: never)."""
        ...


@runtime_checkable
class StateSizer(Protocol):
    """A step that can tell how many bytes its state takes (for the ``state_bytes`` gauge)."""

    def state_bytes(self) -> int:
        """Bytes of state held."""
        ...


@dataclass(frozen=True, slots=True)
class WatermarkMark:
    """The stream's watermark, sent through a sink's queue behind the items it follows."""

    watermark_ms: int


def having(parts: Iterable[Any], capability: Any) -> list[Any]:
    """The parts that implement ``capability`` (distinct objects, in order)."""
    seen: dict[int, Any] = {}
    for p in parts:
        if isinstance(p, capability) and id(p) not in seen:
            seen[id(p)] = p
    return list(seen.values())
