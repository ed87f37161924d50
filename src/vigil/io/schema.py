"""What a source's records look like: which field is the key, which is the time, which are numbers.

A :class:`Schema` is checked when it is made (never mid-stream) and drives every decoder in
:mod:`vigil.io.decode`: the JSON decoder compiles it into a typed msgspec Struct, the CSV decoder
maps header columns by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vigil.errors import ConfigError

TimeUnit = Literal["ms", "s", "iso8601"]

MIN_TS_MS_DEFAULT = 946_684_800_000
"""2000-01-01T00:00:00Z in epoch ms."""
MAX_TS_MS_DEFAULT = 4_102_444_800_000
"""2100-01-01T00:00:00Z in epoch ms."""


@dataclass(frozen=True, slots=True)
class Schema:
    """The shape of incoming records.

    Attributes:
        key: field holding the entity key (a string, or an integer that is converted to ``str``).
        time: field holding the event time.
        time_unit: ``"ms"`` (integer epoch milliseconds), ``"s"`` (epoch seconds, integer or
            fractional; rounded to ms) or ``"iso8601"`` (text such as ``2024-05-01T12:00:00.123Z``;
            text without an offset is taken as UTC).
        fields: numeric fields, decoded to float64 columns. JSON integers are accepted; strings,
            booleans, null, NaN and infinities are not (they become dead letters).
        extra: passthrough fields (string, integer, float or boolean) kept as object columns, e.g.
            event ids and labels. Required unless also listed in ``optional``.
        optional: passthrough fields that may be absent or null (the column holds ``None`` then).
            A name listed here but not in ``extra`` is added to the extra columns.
        min_ts_ms: event times before this are rejected as absurd. The default (2000-01-01)
            catches zeroed clocks and, above all, epoch *seconds* sent where milliseconds were
            expected (1.7e9 ms is January 1970).
        max_ts_ms: event times after this are rejected as absurd (default 2100-01-01): catches
            microseconds or nanoseconds sent as milliseconds, and corrupt values.

    Examples:
        >>> s = Schema("user", "ts", fields=("amount",), extra=("txn_id",), optional=("label",))
        >>> s.extra_columns
        ('txn_id', 'label')
        >>> Schema("user", "ts", fields=("user",))
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `fields` names `user` twice ...
    """

    key: str
    time: str
    time_unit: TimeUnit = "ms"
    fields: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    min_ts_ms: int = MIN_TS_MS_DEFAULT
    max_ts_ms: int = MAX_TS_MS_DEFAULT

    def __post_init__(self) -> None:
        # Tuples are required (hashable, immutable); accept lists from YAML/JSON configs.
        for name in ("fields", "extra", "optional"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(
                    "must be a list of field names, not one string", field=name, value=value,
                    hint=f"write ({value!r},)",
                )
            object.__setattr__(self, name, tuple(value))
        if self.time_unit not in ("ms", "s", "iso8601"):
            raise ConfigError("must be 'ms', 's' or 'iso8601'", field="time_unit", value=self.time_unit)
        for name in ("key", "time"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError("must be a non-empty field name", field=name, value=getattr(self, name))
        seen: set[str] = set()
        for name in (self.key, self.time, *self.fields, *self.extra_columns):
            if name in seen:
                raise ConfigError(
                    f"names `{name}` twice (key, time, fields and extra must be distinct)",
                    field="fields",
                )
            seen.add(name)
        if not self.min_ts_ms < self.max_ts_ms:
            raise ConfigError(
                "must be < max_ts_ms", field="min_ts_ms", value=(self.min_ts_ms, self.max_ts_ms)
            )

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Names of the passthrough (object) columns: ``extra`` then optional names not in it."""
        return self.extra + tuple(n for n in self.optional if n not in self.extra)
