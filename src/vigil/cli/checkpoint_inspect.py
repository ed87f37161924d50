"""``vigil checkpoint inspect``: what a checkpoint holds, in readable form."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from vigil.cli.common import strict_json
from vigil.state import codec
from vigil.state.checkpoint import CheckpointStore


def _size(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_size(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(_size(v) for v in obj)
    if isinstance(obj, str):
        return len(obj)
    return 8


def summarize(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """A plain-data summary of one checkpoint."""
    keys = state["keys"]["keys"]
    live = sum(k is not None for k in keys)
    wm = state["watermarks"]
    steps = {}
    for name, s in state["steps"].items():
        st = s["state"]
        key = str(s["key"])
        parts = key.split("/")
        entry: dict[str, Any] = {"state_key": key, "step_kind": parts[0], "bytes": _size(st)}
        # a detect step's kind is its detector's (sliding_zscore, velocity, ...)
        entry["kind"] = parts[1] if parts[0] == "detect" and len(parts) > 1 else parts[0]
        det = st.get("detector") if isinstance(st, dict) else None
        if isinstance(det, dict):
            win = det.get("window")
            if isinstance(win, dict) and "cnt" in win:
                entry["keys_with_events"] = int((np.asarray(win["cnt"]) > 0).sum())
                entry["buffered_events"] = int(np.asarray(win["cnt"]).sum())
        host = st.get("host") if isinstance(st, dict) else None
        if isinstance(host, dict):
            entry["state_entries"], entry["timers"] = len(host["state"]), len(host["timers"])
        steps[name] = entry
    return {
        "path": str(path),
        "pipeline": state["pipeline"],
        "seq": state["seq"],
        "created": datetime.fromtimestamp(state["created_ms"] / 1000, UTC).isoformat(timespec="milliseconds"),
        "file_bytes": path.stat().st_size,
        "positions": state["positions"],
        "watermark_ms": wm["watermark"],
        "partitions": {str(p): t for p, t in wm["partitions"]},
        "keys": live,
        "key_slots": len(keys),
        "sample_keys": [k for k in keys if k is not None][:5],
        "steps": steps,
        "counters": state["counters"],
    }


def inspect(target: Path, *, as_json: bool, console: Console) -> dict[str, Any]:
    """Inspect a checkpoint file, or the newest good one in a directory (reporting bad ones)."""
    if target.is_dir():
        store = CheckpointStore(target)
        files = store.list()
        if not files:
            sub = [d for d in target.iterdir() if d.is_dir() and CheckpointStore(d).list()]
            if len(sub) == 1:
                store, files = CheckpointStore(sub[0]), CheckpointStore(sub[0]).list()
        loaded = store.load_latest()
        if loaded is None:
            raise FileNotFoundError(f"no checkpoint in {target}")
        for _path, reason in loaded.skipped:
            console.print(f"[yellow]skipped[/] {reason}")
        if loaded.seq < 0:
            raise FileNotFoundError(f"no readable checkpoint in {target}")
        state, path = loaded.state, loaded.path
        others = [p.name for _, p in files if p != path]
    else:
        state, path, others = CheckpointStore.read(target), target, []
    out = summarize(state, path)
    out["other_checkpoints"] = others
    if as_json:
        print(strict_json(codec.to_jsonable(out)))
        return out
    t = Table(title=f"checkpoint {path.name}", show_header=False, title_justify="left")
    t.add_row("pipeline", f"{out['pipeline']} (seq {out['seq']}, taken {out['created']})")
    t.add_row("file", f"{out['path']} ({out['file_bytes']:,} bytes)")
    t.add_row("source positions", json.dumps(out["positions"], default=str))
    t.add_row("watermark", f"{out['watermark_ms']} (partitions: {json.dumps(out['partitions'], default=str)[:200]})")
    sample = ", ".join(map(str, out["sample_keys"]))
    t.add_row("keys", f"{out['keys']:,} live in {out['key_slots']:,} slots; e.g. {sample}")
    for name, s in out["steps"].items():
        extra = ""
        if "buffered_events" in s:
            extra = f"; {s['keys_with_events']:,} keys with {s['buffered_events']:,} events in their windows"
        if "timers" in s:
            extra = f"; {s['state_entries']:,} state entries, {s['timers']:,} timers"
        t.add_row(f"step {name}", f"{s['state_key']}; {s['bytes']:,} bytes{extra}")
    t.add_row("counters", ", ".join(f"{k} {v:,}" for k, v in out["counters"].items()))
    if others:
        t.add_row("older checkpoints", ", ".join(others))
    console.print(t)
    return out
