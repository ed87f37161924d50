"""Decoding: JSON lines, CSV and dicts into columnar records, with dead letters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.errors import ConfigError, SourceError
from vigil.io.decode import CsvDecoder, JsonDecoder
from vigil.io.schema import Schema

T0 = 1_700_000_000_000
SCHEMA = Schema("user", "ts", fields=("amount",))
FULL = Schema("user", "ts", fields=("amount", "qty"), extra=("txn_id",), optional=("label",))


def line(**kw: object) -> bytes:
    return json.dumps(kw).encode()


def test_good_lines_become_columns() -> None:
    recs = JsonDecoder(FULL).decode(
        [
            line(user="a", ts=T0, amount=1.5, qty=2, txn_id="t1", label=1),
            line(user=42, ts=T0 + 1, amount=-3, qty=0.25, txn_id=7, extra_field={"nested": [1]}),
        ]
    )
    assert recs.dead == []
    assert recs.keys.tolist() == ["a", "42"]  # int keys become str
    assert recs.keys.dtype == object and recs.ts_ms.dtype == np.int64
    assert recs.ts_ms.tolist() == [T0, T0 + 1]
    assert recs.cols["amount"].dtype == np.float64
    assert recs.cols["amount"].tolist() == [1.5, -3.0] and recs.cols["qty"].tolist() == [2.0, 0.25]
    assert recs.extra["txn_id"].tolist() == ["t1", 7]
    assert recs.extra["label"].tolist() == [1, None]  # optional: absent -> None


def test_field_names_that_are_not_identifiers() -> None:
    schema = Schema("user-id", "@timestamp", fields=("class", "amount.usd"))
    recs = JsonDecoder(schema).decode([b'{"user-id":"x","@timestamp":%d,"class":1,"amount.usd":2}' % T0])
    assert recs.keys.tolist() == ["x"] and recs.cols["amount.usd"].tolist() == [2.0]


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        (b'{"user":"a","ts":1700000000000,"amount":"12"}', "wrong_type", "`amount` must be a number; got '12' (text)"),
        (b'{"user":"a","ts":[1],"amount":1}', "wrong_type", "`ts` must be an integer (epoch ms); got [1] (an array)"),
        (b'{"user":"a","ts":1700000000000}', "missing_field", "`amount` is missing"),
        (b'{"user":null,"ts":1700000000000,"amount":1}', "missing_field", "`user` is null"),
        (b'{"user":true,"ts":1700000000000,"amount":1}', "wrong_type", "`user` must be text or an integer; got True"),
        (b"[1,2,3]", "not_an_object", "expected a JSON object ({...}); got an array"),
        (b"{}", "missing_field", "`user` is missing; `ts` is missing; `amount` is missing"),
        (b'{"user":"a","ts":1700000000000,"amount":NaN}', "invalid_json", "not valid JSON"),
        (b'{"user":"a","ts":1700000000000,"amount":Infinity}', "invalid_json", "not valid JSON"),
        (b'{"user":"a","ts":1700000000000,"amount":1e999}', "not_finite", "`amount` is not finite"),
        (b'{"user":"a","ts":1700000000000,"am', "invalid_json", "not valid JSON"),
        (b'{"user":"\xff\xfe","ts":1700000000000,"amount":1}', "invalid_utf8", "invalid UTF-8 at byte 9 (0xff)"),
        (b"\x00\x01garbage", "invalid_json", "not valid JSON"),
        (b'{"user":"a","ts":0,"amount":1}', "absurd_timestamp", "`ts` 0 is absurd: before 2000-01-01 (min_ts_ms); zeroed clock?"),
        (b'{"user":"a","ts":1700000000,"amount":1}', "absurd_timestamp", "before 2000-01-01 (min_ts_ms); seconds instead of ms?"),
        (b'{"user":"a","ts":32503680000000,"amount":1}', "absurd_timestamp", "after 2100-01-01 (max_ts_ms)"),
        (b'{"user":"a","ts":1700000000000000,"amount":1}', "absurd_timestamp", "microseconds instead of ms?"),
        (b'{"user":"a","ts":99999999999999999999999999,"amount":1}', "absurd_timestamp", "is absurd: after 2100-01-01"),
        (b'{"user":"a","ts":-5,"amount":1}', "absurd_timestamp", "negative time?"),
        (b'{"user":"a","ts":1700000000000.5,"amount":1}', "wrong_type", "`ts` must be an integer (epoch ms); got 1700000000000.5 (a number)"),
    ],
)
def test_bad_lines_become_dead_letters_with_reasons(raw: bytes, code: str, message: str) -> None:
    good = line(user="g", ts=T0, amount=1)
    recs = JsonDecoder(SCHEMA).decode([good, raw, good], source="s", first_position=10)
    assert recs.keys.tolist() == ["g", "g"]
    assert len(recs.dead) == 1
    d = recs.dead[0]
    assert d.reason == code, (d.reason, d.message)
    assert message in d.message, d.message
    assert (d.source, d.position) == ("s", 11)
    assert d.raw == raw.decode("utf-8", "replace")
    assert d.to_dict()["reason"] == code and d.to_dict()["message"] == d.message


def test_every_reason_code_is_documented_in_the_readme() -> None:
    from pathlib import Path

    from vigil.io.reasons import REASONS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert [c for c in REASONS if f"`{c}`" not in readme] == []


def test_a_dead_letter_needs_a_known_code() -> None:
    from vigil.io.base import DeadLetter

    with pytest.raises(ValueError, match="unknown dead-letter reason code"):
        DeadLetter("Expected `float`, got `str`", "", "")


def test_several_problems_in_one_row_are_all_named() -> None:
    recs = JsonDecoder(Schema("user", "ts", fields=("a", "b"))).decode(
        [b'{"user":"x","ts":5,"a":1e308,"b":1}', line(user="x", ts=T0, a=1, b=2)]
    )
    assert len(recs) == 1
    # 1e308 is finite; only the time is wrong here
    assert recs.dead[0].reason == "absurd_timestamp" and recs.dead[0].message.startswith("`ts` 5 is absurd")


def test_blank_lines_are_skipped_but_keep_line_numbers() -> None:
    lines = [b"", line(user="a", ts=T0, amount=1), b"   ", b"\r", b"oops", line(user="b", ts=T0, amount=2)]
    recs = JsonDecoder(SCHEMA).decode(lines, first_position=1)
    assert recs.keys.tolist() == ["a", "b"]
    assert [(d.position, d.raw) for d in recs.dead] == [(5, "oops")]


def test_raw_is_truncated_to_1000_chars() -> None:
    raw = b'{"user":"' + b"x" * 5000 + b'"'
    d = JsonDecoder(SCHEMA).decode([raw]).dead[0]
    assert len(d.raw) == 1000 and d.raw.startswith('{"user":"xxx')


def test_empty_input() -> None:
    recs = JsonDecoder(FULL).decode([])
    assert len(recs) == 0 and recs.dead == [] and set(recs.cols) == {"amount", "qty"}
    assert set(recs.extra) == {"txn_id", "label"}


def test_all_bad_input() -> None:
    recs = JsonDecoder(SCHEMA).decode([b"x", b"y"])
    assert len(recs) == 0 and len(recs.dead) == 2 and recs.ts_ms.dtype == np.int64


def test_time_in_seconds() -> None:
    schema = Schema("user", "ts", time_unit="s", fields=("amount",))
    recs = JsonDecoder(schema).decode(
        [b'{"user":"a","ts":1700000000,"amount":1}', b'{"user":"a","ts":1700000000.1234,"amount":1}',
         b'{"user":"a","ts":1700000000000,"amount":1}', b'{"user":"a","ts":17,"amount":1}']
    )
    assert recs.ts_ms.tolist() == [T0, T0 + 123]
    assert [d.reason for d in recs.dead] == ["absurd_timestamp"] * 2
    assert "milliseconds instead of seconds?" in recs.dead[0].message
    assert "`ts` 17 is absurd: before 2000-01-01" in recs.dead[1].message


def test_time_iso8601() -> None:
    schema = Schema("user", "ts", time_unit="iso8601", fields=("amount",))
    recs = JsonDecoder(schema).decode(
        [b'{"user":"a","ts":"2023-11-14T22:13:20.123Z","amount":1}',
         b'{"user":"a","ts":"2023-11-14T23:13:20.123+01:00","amount":1}',
         b'{"user":"a","ts":"2023-11-14T22:13:20.123","amount":1}',
         b'{"user":"a","ts":"yesterday","amount":1}',
         b'{"user":"a","ts":"1970-01-01T00:00:00Z","amount":1}',
         b'{"user":"a","ts":1700000000000,"amount":1}']
    )
    assert recs.ts_ms.tolist() == [T0 + 123] * 3
    assert [d.reason for d in recs.dead] == ["invalid_timestamp", "absurd_timestamp", "wrong_type"]
    messages = [d.message for d in recs.dead]
    assert messages[0] == "`ts` 'yesterday' is not an ISO 8601 time"
    assert "is absurd: before 2000-01-01" in messages[1]
    assert messages[2] == "`ts` must be an ISO 8601 time (text); got 1700000000000 (a number)"


def test_custom_time_bounds() -> None:
    schema = Schema("user", "ts", fields=("amount",), min_ts_ms=0, max_ts_ms=10)
    recs = JsonDecoder(schema).decode([b'{"user":"a","ts":5,"amount":1}', b'{"user":"a","ts":11,"amount":1}'])
    assert recs.ts_ms.tolist() == [5] and recs.dead[0].reason == "absurd_timestamp"
    assert "after 1970-01-01T00:00:00.010000+00:00" in recs.dead[0].message


def test_optional_and_required_extra() -> None:
    schema = Schema("user", "ts", extra=("txn_id", "label"), optional=("label",))
    recs = JsonDecoder(schema).decode(
        [b'{"user":"a","ts":%d,"txn_id":"t","label":null}' % T0, b'{"user":"a","ts":%d,"label":1}' % T0,
         b'{"user":"a","ts":%d,"txn_id":{"x":1}}' % T0]
    )
    assert recs.extra["label"].tolist() == [None]
    assert [(d.reason, d.message) for d in recs.dead] == [
        ("missing_field", "`txn_id` is missing"),
        ("wrong_type", "`txn_id` must be text, a number or a boolean; got {'x': 1} (an object)"),
    ]


def test_decode_dicts_accepts_numpy_scalars_and_checks_values() -> None:
    dec = JsonDecoder(FULL)
    rows = [
        {"user": "a", "ts": np.int64(T0), "amount": np.float64(1.5), "qty": 1, "txn_id": "t"},
        {"user": "b", "ts": T0, "amount": float("nan"), "qty": 1, "txn_id": "t"},
        {"user": "c", "ts": T0, "amount": "x", "qty": 1, "txn_id": "t"},
        ["not", "a", "dict"],
        {"user": 5, "ts": T0 + 1, "amount": 2, "qty": 3, "txn_id": 9, "label": "l"},
    ]
    recs = dec.decode_dicts(rows, source="mem", first_position=100)
    assert recs.keys.tolist() == ["a", "5"] and recs.ts_ms.tolist() == [T0, T0 + 1]
    assert recs.extra["label"].tolist() == [None, "l"]
    assert [(d.position, d.reason, d.message) for d in recs.dead] == [
        (101, "not_finite", "`amount` is not finite: nan"),
        (102, "wrong_type", "`amount` must be a number; got 'x' (text)"),
        (103, "not_an_object", "expected a JSON object ({...}); got an array"),
    ]
    assert json.loads(recs.dead[0].raw)["user"] == "b"


def test_csv_decoder() -> None:
    dec = CsvDecoder(FULL)
    dec.set_header(b"user,ts,amount,qty,txn_id,label\r\n")
    recs = dec.decode(
        [
            b'a,1700000000000,1.5,2,"t,1",',
            b"b,1700000000001,nan,2,t2,x",
            b"c,17000000000,1,2,t3,x",
            b"d,1700000000002,1,2",
            b"e,1.5,1,2,t4,x",
            b"",
            b'f,1700000000003,1,2,"unterminated,x',
            b"g,1700000000004,\xff,2,t5,x",
            b"h,1700000000005,-7,1e3,t6,lab\r",
        ],
        source="c",
        first_position=2,
    )
    assert recs.keys.tolist() == ["a", "h"]
    assert recs.extra["txn_id"].tolist() == ["t,1", "t6"] and recs.extra["label"].tolist() == [None, "lab"]
    assert recs.cols["qty"].tolist() == [2.0, 1000.0]
    assert [(d.position, d.reason, d.message) for d in recs.dead] == [
        (3, "not_finite", "`amount` is not finite: nan"),
        (4, "absurd_timestamp", "`ts` 17000000000 is absurd: before 2000-01-01 (min_ts_ms); seconds instead of ms?"),
        (5, "invalid_csv", "expected 6 columns, got 4"),
        (6, "wrong_type", "`ts` '1.5' is not an integer (epoch ms)"),
        (8, "invalid_csv", "can't be split into columns (csv: unexpected end of data)"),
        (9, "invalid_utf8", "invalid UTF-8 at byte 16 (0xff)"),
    ]


def test_csv_header_must_hold_schema_columns() -> None:
    with pytest.raises(SourceError, match="lacks column"):
        CsvDecoder(SCHEMA, header=["user", "amount"])
    with pytest.raises(SourceError, match="needs a header"):
        CsvDecoder(SCHEMA).decode([b"a,1,2"])


def test_schema_is_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match="time_unit"):
        Schema("user", "ts", time_unit="us")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="twice"):
        Schema("user", "ts", fields=("ts",))
    with pytest.raises(ConfigError, match="not one string"):
        Schema("user", "ts", fields="amount")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_ts_ms"):
        Schema("user", "ts", min_ts_ms=10, max_ts_ms=5)
    assert Schema("user", "ts", fields=["amount"]).fields == ("amount",)  # type: ignore[arg-type]


# -- property: the decoder equals a naive per-line reference ---------------------------------------

_value = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=3), st.none(), st.booleans(),
    st.sampled_from([T0, T0 + 5, 0, 1_700_000_000]),
)
_obj = st.fixed_dictionaries({}, optional={"user": _value, "ts": _value, "amount": _value})
_line = st.one_of(
    _obj.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=8),
    st.sampled_from([b"", b"  ", b"[]", b"null", b'{"user":"x","ts":1700000000001,"amount":1e999}']),
)


def _reference(raw: bytes) -> tuple[str, int, float] | None:
    """What a careful per-line decoder accepts (None = dead or blank)."""
    try:
        d = json.loads(raw.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(d, dict) or not {"user", "ts", "amount"} <= d.keys():
        return None
    user, ts, amount = d["user"], d["ts"], d["amount"]
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        return None
    if isinstance(ts, bool) or not isinstance(ts, int) or not SCHEMA.min_ts_ms <= ts <= SCHEMA.max_ts_ms:
        return None
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return None
    try:
        amount = float(amount)
    except OverflowError:
        return None
    if not math.isfinite(amount):
        return None
    return str(user), ts, amount


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=30))
def test_decoder_matches_reference(lines: list[bytes]) -> None:
    recs = JsonDecoder(SCHEMA).decode(lines, first_position=1)
    want = [r for r in map(_reference, lines) if r is not None]
    got = list(zip(recs.keys.tolist(), recs.ts_ms.tolist(), recs.cols["amount"].tolist(), strict=True))
    assert got == want
    blank = sum(1 for raw in lines if not raw.strip())
    assert len(recs) + len(recs.dead) + blank == len(lines)
    positions = [d.position for d in recs.dead]
    assert positions == sorted(positions) and all(d.reason for d in recs.dead)
