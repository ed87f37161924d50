"""Micro-benchmark: JSON-lines decoding into columnar records (not a test).

Decodes the canonical workload (``{"user":"u0001234","ts":1700000000123,"amount":23.4567}``) with
``JsonDecoder`` in batches, then reads the same lines from a file through ``JsonlFileSource``
(chunked reads + line splitting + decode), and prints lines/s. Target: >= 2.5M lines/s decode.

    .venv/bin/python bench/bench_decode.py [--n 1000000] [--batch 4096] [--workload-dir ../shared/bench/perf]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from vigil.io import JsonDecoder, JsonlFileSource, Schema

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workload-dir", default=str(REPO.parent / "shared" / "bench" / "perf"))
    a = p.parse_args()
    sys.path.insert(0, a.workload_dir)
    from workload import generate, json_lines_bytes  # type: ignore[import-not-found]

    lines = json_lines_bytes(generate(a.n, 10_000))
    schema = Schema("user", "ts", fields=("amount",))
    dec = JsonDecoder(schema)

    best = float("inf")
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        rows = 0
        for i in range(0, len(lines), a.batch):
            rows += len(dec.decode(lines[i : i + a.batch]))
        best = min(best, time.perf_counter() - t0)
    assert rows == len(lines)
    print(f"JsonDecoder.decode   batch={a.batch:<6} {len(lines) / best / 1e6:6.2f} M lines/s  ({best:.3f} s)")

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "events.jsonl")
        with open(path, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
        best = float("inf")
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            reader = JsonlFileSource(path, schema).open("0")
            rows = 0
            while not reader.at_end:
                recs = reader.read_batch(a.batch, 1000)
                rows += 0 if recs is None else len(recs)
            reader.close()
            best = min(best, time.perf_counter() - t0)
        assert rows == len(lines)
        rate = len(lines) / best / 1e6
        print(f"JsonlFileSource read batch={a.batch:<6} {rate:6.2f} M lines/s  ({best:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
