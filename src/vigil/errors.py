"""Vigil's exceptions, rooted at :class:`VigilError`.

The tree::

    VigilError
    ├── ConfigError            bad pipeline / detector config (raised at load, never mid-stream)
    ├── DecodeError            a record that can't be read (normally routed to dead letters, not raised)
    ├── StateError             state that can't be restored
    │   ├── SnapshotError      a snapshot envelope of the wrong kind or version
    │   └── CheckpointError    a corrupt, truncated or missing checkpoint
    ├── SourceError            a source that can't be opened or read
    └── SinkError              a sink whose write or flush failed (aborts the checkpoint)
        └── SinkBackpressure   the sink is full; retry after ``retry_after_ms``
"""

from __future__ import annotations


class VigilError(Exception):
    """Base class of every error Vigil raises on purpose."""


class ConfigError(VigilError):
    """A pipeline, step or detector configuration is invalid.

    Carries the step, the field and the offending value so that the message can name them.

    Examples:
        >>> e = ConfigError("must be > 0", step="amount_z", field="window", value="0s", hint="use e.g. '60s'")
        >>> str(e)
        "step `amount_z`: `window` must be > 0; got '0s' (hint: use e.g. '60s')"
    """

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        field: str | None = None,
        value: object = None,
        hint: str | None = None,
        section: str | None = None,
    ) -> None:
        self.step, self.field, self.value, self.hint, self.section = step, field, value, hint, section
        self.message = message
        parts = []
        if step is not None:
            parts.append(f"step `{step}`: ")
        elif section is not None:
            parts.append(f"{section}: ")
        if field is not None:
            parts.append(f"`{field}` ")
        parts.append(message)
        if value is not None:
            parts.append(f"; got {value!r}")
        if hint:
            parts.append(f" (hint: {hint})")
        super().__init__("".join(parts))

    def within(self, *, section: str | None = None, step: str | None = None, prefix: str | None = None) -> ConfigError:
        """The same error located in ``section`` (or ``step``), its field under ``prefix``, unless already located.

        Examples:
            >>> str(ConfigError("must be > 0", field="keep", value=0).within(section="checkpoints"))
            'checkpoints: `keep` must be > 0; got 0'
        """
        located = self.step is not None or self.section is not None
        field = f"{prefix}.{self.field}" if prefix and self.field else (self.field or prefix)
        if section and field and field.startswith(f"{section}."):  # already says where: don't say it twice
            field = field[len(section) + 1 :]
        return ConfigError(self.message, step=self.step if located else step,
                           section=self.section if located else section, field=field, value=self.value,
                           hint=self.hint)  # fmt: skip


class DecodeError(VigilError):
    """A record that can't be decoded; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StateError(VigilError):
    """State that can't be restored."""


class SnapshotError(StateError):
    """A snapshot of the wrong kind or version. Operator action: delete the state directory or migrate."""


class CheckpointError(StateError):
    """A checkpoint file that is corrupt, truncated or missing."""


class SourceError(VigilError):
    """A source that can't be opened or read."""


def blame(exc: BaseException, where: str) -> BaseException:
    """Record where an unexpected exception happened (``step `z` failed on a batch``), keeping its type.

    The runner re-raises a thread's exception as it is (callers and tests catch its own type); this says where it
    came from — as a PEP 678 note in tracebacks, and for :func:`describe`. The first place recorded wins.

    Examples:
        >>> describe(blame(KeyError("amont"), "step `amount_z` failed on a batch"))
        "step `amount_z` failed on a batch: KeyError: 'amont'"
    """
    if getattr(exc, "vigil_where", None) is None:
        try:
            exc.vigil_where = where  # type: ignore[attr-defined]
        except AttributeError:  # an exception type that takes no attributes: the note still says it
            pass
        exc.add_note(f"vigil: {where}")
    return exc


def describe(exc: BaseException) -> str:
    r"""``[where: ]Type: message`` of an unexpected exception, on one line (what an ``error:`` line shows).

    Examples:
        >>> describe(KeyError("x")), describe(ValueError("bad\nvalue"))
        ("KeyError: 'x'", 'ValueError: bad value')
    """
    text = " ".join(str(exc).split())
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = getattr(exc, "vigil_where", None)
    return f"{where}: {what}" if where else what


class SinkError(VigilError):
    """A sink whose write or flush failed; the checkpoint in progress is aborted."""


class TransactionAborted(SinkError):
    """A Kafka transaction was aborted (fenced, expired or a delivery failed): restart from the last checkpoint."""


class NotifyError(VigilError):
    """A notification could not be delivered (after the notifier's retries)."""


class SinkBackpressure(SinkError):
    """The sink is full: the caller should retry after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int = 10) -> None:
        self.retry_after_ms = retry_after_ms
        super().__init__(f"sink is full; retry after {retry_after_ms} ms")
