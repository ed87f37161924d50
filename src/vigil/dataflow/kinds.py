"""What a step kind declares so that pipeline files can use it: the contract between apps and the config layer.

An app (e.g. :mod:`vigil.apps.servers`) defines a :class:`StepKind` in its own folder — the YAML key that
selects it, the spec model its mapping is validated with, how to build the step, how it may change on a
running pipeline, which record fields it reads, and which base bars the feedback loop may raise — and the
config layer registers it (:mod:`vigil.config.registry`). Neither side names the other's internals.

The builder gets a :class:`BuildContext` (implemented by the config layer): where relative paths resolve,
how to build a sink the step writes to, and the pipeline's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class BuildContext(Protocol):
    """What a builder may ask of the config layer (see :class:`vigil.config.spec.PipelineContext`).

    Attributes:
        base_dir: the pipeline file's folder.
        pipeline: the pipeline's name.
        delivery: ``at-least-once`` or ``exactly-once``.
        overrides: run-time overrides (``stop_at_end``, ``rate``).
        shared: per-pipeline state builders keep (e.g. the Kafka producer all Kafka sinks share).
    """

    base_dir: str
    pipeline: str
    delivery: str
    overrides: dict[str, Any]
    shared: dict[str, Any]

    def build_sink(self, spec: Any) -> Any:
        """Build a validated sink spec."""
        ...

    def path(self, path: str) -> str:
        """``path`` resolved against the pipeline file's folder."""
        ...

    def sink(self, raw: Any, *, step: str, field: str) -> Any:
        """Validate and build a sink mapping (``{kind: jsonl, path: ...}``) a step writes to."""
        ...


@dataclass(frozen=True)
class LiveChange:
    """What changing a step on a running pipeline would do: readable ``changes``, or ``problems`` forbidding it.

    ``step`` is the new step to swap in (the running step's state moves into it), or ``None`` when nothing
    changed or the change is refused.
    """

    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    step: Any = None


@dataclass(frozen=True)
class StepKind:
    """A step kind a pipeline file can name.

    Attributes:
        tag: the key that marks a step of this kind (``detector: ...``, ``window: ...``, ``servers: ...``).
        spec: its spec model (pydantic, with a ``name`` field); validated at load.
        build: ``(spec, context) -> Step``.
        live: ``(old spec, new spec, context, running step) -> LiveChange``; ``None``: any change needs a restart.
        reads: ``spec -> [field, ...]``: the record fields the step reads (checked against the source schema).
        feedback_base: ``step -> {detector: {feature: base threshold}}`` that the feedback loop may raise.
        summary: one line for ``--help`` texts and error hints.
    """

    tag: str
    spec: type[Any]
    build: Callable[[Any, BuildContext], Any]
    live: Callable[[Any, Any, BuildContext, Any], LiveChange] | None = None
    reads: Callable[[Any], list[str]] | None = None
    feedback_base: Callable[[Any], dict[str, dict[str, float]]] | None = None
    summary: str = ""
