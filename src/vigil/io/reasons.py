"""Why a record became a dead letter: stable reason codes, in Vigil's own words.

Every :class:`~vigil.io.base.DeadLetter` carries a **code** (``reason``) and a **message**. The code is
for machines — dashboards, alerts and scripts key on it, and it never changes between releases or with
the version of a decoding library underneath. The message is for people: it names the field, shows the
value and suggests a likely cause. Both travel with the record: file dead letters hold ``reason`` and
``message``; the Kafka dead-letter topic has them in the ``vigil.reason`` and ``vigil.message`` headers.

A record with several problems gets the code of the first one and all the messages, joined by ``; ``.

================== =====================================================================================
code               meaning
================== =====================================================================================
invalid_utf8       the bytes are not valid UTF-8
invalid_json       not parseable as JSON
not_an_object      JSON, but not an object (``{...}``), which a record must be
invalid_csv        a CSV line that can't be split into the header's columns
invalid_line       an Influx line-protocol line that can't be parsed
invalid_protobuf   bytes that are not the protobuf message expected (an OTLP export request)
missing_field      a field the schema needs is absent or null
wrong_type         a field has the wrong type (text where a number is needed, a fraction where an
                   integer is needed, ...)
not_finite         a numeric field is NaN or infinite
no_numeric_field   a metric line or object whose fields are all text or booleans: nothing to score
absurd_timestamp   the event time lies outside ``[min_ts_ms, max_ts_ms]``: a wrong unit or a broken clock
invalid_timestamp  the event time can't be read as a time at all
empty_value        a message whose value is null or blank
too_large          a record larger than the source's size cap (``max_record_bytes``, 8 MiB by default)
scrape_failed      a scrape target answered with an error or a body that can't be read
unreachable        a scrape target could not be reached
undecodable        any other failure to read the record; the message says what
================== =====================================================================================

Examples:
    >>> describe("absurd_timestamp")
    'the event time lies outside [min_ts_ms, max_ts_ms]: a wrong unit or a broken clock'
    >>> check("bad_code")
    Traceback (most recent call last):
    ...
    ValueError: unknown dead-letter reason code 'bad_code'; known: invalid_utf8, invalid_json, ...
"""

from __future__ import annotations

from typing import Final, Literal, get_args

ReasonCode = Literal[
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "invalid_csv",
    "invalid_line",
    "invalid_protobuf",
    "missing_field",
    "wrong_type",
    "not_finite",
    "no_numeric_field",
    "absurd_timestamp",
    "invalid_timestamp",
    "empty_value",
    "too_large",
    "scrape_failed",
    "unreachable",
    "undecodable",
]

REASONS: Final[dict[str, str]] = {
    "invalid_utf8": "the bytes are not valid UTF-8",
    "invalid_json": "not parseable as JSON",
    "not_an_object": "JSON, but not an object ({...}), which a record must be",
    "invalid_csv": "a CSV line that can't be split into the header's columns",
    "invalid_line": "an Influx line-protocol line that can't be parsed",
    "invalid_protobuf": "bytes that are not the protobuf message expected (an OTLP export request)",
    "missing_field": "a field the schema needs is absent or null",
    "wrong_type": "a field has the wrong type (text where a number is needed, a fraction where an integer is "
    "needed, ...)",
    "not_finite": "a numeric field is NaN or infinite",
    "no_numeric_field": "a metric line or object whose fields are all text or booleans: nothing to score",
    "absurd_timestamp": "the event time lies outside [min_ts_ms, max_ts_ms]: a wrong unit or a broken clock",
    "invalid_timestamp": "the event time can't be read as a time at all",
    "empty_value": "a message whose value is null or blank",
    "too_large": "a record larger than the source's size cap (max_record_bytes, 8 MiB by default)",
    "scrape_failed": "a scrape target answered with an error or a body that can't be read",
    "unreachable": "a scrape target could not be reached",
    "undecodable": "any other failure to read the record; the message says what",
}
assert tuple(REASONS) == get_args(ReasonCode)


def check(code: str) -> str:
    """``code`` if it is a known reason code.

    Raises:
        ValueError: for any other string (a programming error, never data).
    """
    if code not in REASONS:
        raise ValueError(f"unknown dead-letter reason code {code!r}; known: {', '.join(REASONS)}")
    return code


def describe(code: str) -> str:
    """What a reason code means, for help texts and documentation."""
    return REASONS[check(code)]
