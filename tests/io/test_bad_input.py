"""A file mixing good records with every kind of malformed one: nothing raises, nothing is lost.

20,000 good records and 10,000 malformed ones (plus blank lines) are read through
``JsonlFileSource`` in small batches across small chunks. Every good record must come out exactly
once, every malformed one as a dead letter whose reason code and message name its problem.
"""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import pytest

from vigil.io import JsonlFileSource, Schema
from vigil.testing.sources import check_source

SCHEMA = Schema("user", "ts", fields=("amount",), extra=("id",))
T0 = 1_700_000_000_000
N_GOOD, N_BAD = 20_000, 10_000


def _obj(i: int, **over: object) -> dict[str, object]:
    d: dict[str, object] = {"user": f"u{i % 97}", "ts": T0 + i, "amount": 1.25, "id": f"b{i}"}
    d.update(over)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()


def _j(d: dict[str, object]) -> bytes:
    return json.dumps(d, separators=(",", ":")).encode()


# kind -> (make the line for malformed record i, its reason code, text its message must contain)
KINDS: dict[str, tuple] = {
    "truncated": (lambda i: _j(_obj(i))[:-9], "invalid_json", "not valid JSON"),
    "broken": (lambda i: b'{"user" "u1","ts":1}', "invalid_json", "not valid JSON: Expecting ':' delimiter"),
    "trailing": (lambda i: _j(_obj(i)) + b"}", "invalid_json", "not valid JSON: Extra data"),
    "missing_amount": (lambda i: _j(_obj(i, amount=_DROP)), "missing_field", "`amount` is missing"),
    "missing_ts": (lambda i: _j(_obj(i, ts=_DROP)), "missing_field", "`ts` is missing"),
    "missing_key": (lambda i: _j(_obj(i, user=_DROP)), "missing_field", "`user` is missing"),
    "string_amount": (lambda i: _j(_obj(i, amount="12.5")), "wrong_type", "`amount` must be a number; got '12.5' (text)"),
    "string_nan": (lambda i: _j(_obj(i, amount="NaN")), "wrong_type", "`amount` must be a number; got 'NaN' (text)"),
    "bool_amount": (lambda i: _j(_obj(i, amount=True)), "wrong_type", "`amount` must be a number; got True (a boolean)"),
    "list_ts": (lambda i: _j(_obj(i, ts=[T0])), "wrong_type", "`ts` must be an integer (epoch ms); got [1700000000000]"),
    "float_ts": (lambda i: _j(_obj(i, ts=T0 + 0.5)), "wrong_type", "`ts` must be an integer (epoch ms)"),
    "nan_literal": (lambda i: _j(_obj(i, amount=0)).replace(b'"amount":0', b'"amount":NaN'), "invalid_json",
                    "NaN is not a JSON value"),
    "inf_literal": (lambda i: _j(_obj(i, amount=0)).replace(b'"amount":0', b'"amount":-Infinity'),
                    "invalid_json", "-Infinity is not a JSON value"),
    "huge_number": (lambda i: _j(_obj(i, amount=0)).replace(b'"amount":0', b'"amount":1e999'),
                    "not_finite", "`amount` is not finite: inf"),
    "ts_zero": (lambda i: _j(_obj(i, ts=0)), "absurd_timestamp", "`ts` 0 is absurd: before 2000-01-01 (min_ts_ms); "
                "zeroed clock?"),
    "ts_seconds": (lambda i: _j(_obj(i, ts=1_700_000_000 + i)), "absurd_timestamp",
                   "is absurd: before 2000-01-01 (min_ts_ms); seconds instead of ms?"),
    "ts_year_3000": (lambda i: _j(_obj(i, ts=32_503_680_000_000)), "absurd_timestamp",
                     "`ts` 32503680000000 is absurd: after 2100-01-01 (max_ts_ms)"),
    "ts_negative": (lambda i: _j(_obj(i, ts=-1)), "absurd_timestamp", "negative time?"),
    "non_utf8": (lambda i: b'{"user":"u\xff\xfe","ts":%d,"amount":1,"id":"b%d"}' % (T0, i), "invalid_utf8",
                 "invalid UTF-8 at byte 10 (0xff)"),
    "binary_garbage": (lambda i: bytes([0x80 + i % 100, 0, 0xC3, 0x28]) + b"\x1b[31m", "invalid_utf8",
                       "invalid UTF-8 at byte 0"),
    "empty_object": (lambda i: b"{}", "missing_field", "`user` is missing; `ts` is missing; `amount` is missing"),
    "array": (lambda i: b'["u1",%d,1.0]' % T0, "not_an_object", "got an array"),
    "scalar": (lambda i: b"42", "not_an_object", "got a number"),
    "null": (lambda i: b"null", "not_an_object", "got null"),
    "key_null": (lambda i: _j(_obj(i, user=None)), "missing_field", "`user` is null"),
    "key_object": (lambda i: _j(_obj(i, user={"a": 1})), "wrong_type", "`user` must be text or an integer"),
    "id_object": (lambda i: _j(_obj(i, id={"x": [1]})), "wrong_type", "`id` must be text, a number or a boolean"),
    "huge_line": (lambda i: b'{"user":"' + b"x" * 5000, "invalid_json", "not valid JSON: Unterminated string"),
}


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, str], list[str]]:
    rng = random.Random(7)
    entries: list[tuple[str, int]] = [("good", i) for i in range(N_GOOD)]
    kinds = list(KINDS)
    entries += [(kinds[j % len(kinds)], j) for j in range(N_BAD)]
    entries += [("blank", j) for j in range(300)]
    rng.shuffle(entries)
    lines, kind_of_line, good_ids = [], {}, []
    for lineno, (kind, i) in enumerate(entries, start=1):
        if kind == "good":
            amount = round(rng.uniform(-1e6, 1e6), 4) if i % 3 else i  # ints are fine for floats
            lines.append(_j({"user": i % 500 if i % 5 == 0 else f"u{i % 500}", "ts": T0 + i * 7,
                             "amount": amount, "id": f"g{i}"}))
            good_ids.append(f"g{i}")
        elif kind == "blank":
            lines.append(rng.choice([b"", b"  ", b"\t", b"\r"]))
        else:
            lines.append(KINDS[kind][0](i))
            kind_of_line[lineno] = kind
    path = tmp_path_factory.mktemp("bad") / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, kind_of_line, good_ids


def test_every_record_accounted_for(bad_file: tuple[Path, dict[int, str], list[str]]) -> None:
    path, kind_of_line, good_ids = bad_file
    reader = JsonlFileSource(path, SCHEMA, chunk_bytes=64 << 10).open("0")
    ids: list[str] = []
    dead = []
    batch_sizes = [97, 1, 13, 500]
    reads = 0
    while not reader.at_end:
        recs = reader.read_batch(batch_sizes[reads % len(batch_sizes)], 100)
        reads += 1
        if recs is not None:
            assert len(recs) <= batch_sizes[(reads - 1) % len(batch_sizes)]
            ids += recs.extra["id"].tolist()
            dead += recs.dead
            assert all(isinstance(k, str) for k in recs.keys.tolist())
            assert recs.cols["amount"].dtype.kind == "f"
    reader.close()

    assert len(ids) == len(set(ids)) == N_GOOD, "a good record was lost or duplicated"
    assert sorted(ids) == sorted(good_ids)

    assert len(dead) == N_BAD
    assert len({d.position for d in dead}) == N_BAD
    per_kind = collections.Counter()
    for d in dead:
        kind = kind_of_line.get(d.position)
        assert kind is not None, f"line {d.position} is good but became a dead letter: {d.reason} {d.message}"
        assert d.reason == KINDS[kind][1], f"{kind} at line {d.position}: {d.reason!r} {d.message!r}"
        assert KINDS[kind][2] in d.message, f"{kind} at line {d.position}: message {d.message!r}"
        assert d.source == "mixed.jsonl" and len(d.raw) <= 1000
        per_kind[kind] += 1
    want = collections.Counter(kind_of_line.values())
    assert per_kind == want
    assert min(want.values()) >= N_BAD // len(KINDS)


def test_bad_file_resumes_exactly(bad_file: tuple[Path, dict[int, str], list[str]]) -> None:
    path, _, _ = bad_file
    got = check_source(lambda: JsonlFileSource(path, SCHEMA, chunk_bytes=100_000), max_items=(333, 4096, 7))
    assert got["records"] == N_GOOD and got["dead"] == N_BAD
