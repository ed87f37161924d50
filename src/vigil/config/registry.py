"""Registries of the kinds a pipeline file can name: sources, sinks and steps.

A kind brings its own pydantic model (what its YAML mapping may hold, validated at load) and a builder
(spec → live object). Step kinds also say how they change on a running pipeline (``vigil apply``), which
fields of the source's records they read (checked against the source schema at load), and what base bars
the feedback loop may raise for them. ``config/spec.py`` knows none of them by name: it looks them up here.

The built-in kinds are registered by :mod:`vigil.config.kinds`; an app declares its own in its own folder
(``apps/servers/spec.py`` declares the ``servers`` step as ``STEP``) and :func:`load` registers it: adding
an app is one line there. A plugin outside the package registers itself when imported, with
``load(apps=("my_plugin.spec",))``.

Examples:
    >>> {"detector", "window", "servers"} <= set(step_kinds())
    True
    >>> "kafka" in source_kinds() and "sqlite" in sink_kinds()
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from vigil.dataflow.kinds import BuildContext, StepKind


@dataclass(frozen=True)
class SourceKind:
    """A source kind: its ``kind:`` name, its spec model and builder.

    ``columns`` gives the shape of the records a source of this spec yields, a
    :class:`~vigil.io.schema.Schema` (its ``schema:``, or the fixed shape of e.g. metric files), against which
    the fields every step reads and ``event_ids`` are checked at load; ``None`` (or a ``columns`` that returns
    ``None``): not known before the run, nothing is checked.
    """

    name: str
    spec: type[BaseModel]
    build: Callable[[Any, BuildContext], Any]
    columns: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class SinkKind:
    """A sink kind: its ``kind:`` name, its spec model and builder."""

    name: str
    spec: type[BaseModel]
    build: Callable[[Any, BuildContext], Any]


_SOURCES: dict[str, SourceKind] = {}
_SINKS: dict[str, SinkKind] = {}
_STEPS: dict[str, StepKind] = {}
_loaded = False


def register_source(kind: SourceKind) -> None:
    """Make a source kind available to pipeline files."""
    _SOURCES[kind.name] = kind


def register_sink(kind: SinkKind) -> None:
    """Make a sink kind available to pipeline files."""
    _SINKS[kind.name] = kind


def register_step(kind: StepKind) -> None:
    """Make a step kind available to pipeline files."""
    _STEPS[kind.tag] = kind


def load(apps: tuple[str, ...] | None = None) -> None:
    """Import the modules that register kinds (once; ``apps`` adds more, e.g. a plugin of one's own)."""
    global _loaded
    if not _loaded:
        _loaded = True
        # imported on first use, not at import time: `vigil --help` and light commands never pay for them
        import vigil.config.kinds  # noqa: F401  (the built-in sources, sinks and steps register themselves)
        from vigil.apps.servers.spec import STEP as servers
        from vigil.apps.services.step import STEP as services
        from vigil.apps.services.telemetry.step import STEP as service_graph

        register_step(servers)  # one line per app
        register_step(service_graph)
        register_step(services)
    for module in apps or ():
        importlib.import_module(module)


def source_kinds() -> dict[str, SourceKind]:
    """Registered source kinds by name."""
    load()
    return dict(_SOURCES)


def sink_kinds() -> dict[str, SinkKind]:
    """Registered sink kinds by name."""
    load()
    return dict(_SINKS)


def step_kinds() -> dict[str, StepKind]:
    """Registered step kinds by tag."""
    load()
    return dict(_STEPS)


def source_kind(name: str) -> SourceKind:
    """The source kind called ``name``."""
    return source_kinds()[name]


def sink_kind(name: str) -> SinkKind:
    """The sink kind called ``name``."""
    return sink_kinds()[name]


def step_kind_of(spec: Any) -> StepKind:
    """The step kind a validated step spec belongs to."""
    for kind in step_kinds().values():
        if isinstance(spec, kind.spec):
            return kind
    raise KeyError(type(spec).__name__)
