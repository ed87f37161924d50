"""``vigil train`` and ``vigil models list|show|promote|rollback``: the model registry from the command line.

Each command is a function here that prints with rich (or one JSON document on stdout with ``as_json``) and
returns what it printed as plain data; ``vigil.cli.main`` wires them to Typer. Errors are
:class:`~vigil.errors.VigilError` subclasses (``ConfigError`` for a bad training config,
``vigil.models.RegistryError`` for registry trouble) whose messages name the path and the fix.

The registry folder is ``--registry``, else ``$VIGIL_MODEL_REGISTRY``, else ``./models``. A training config
(YAML) names the model, its features and the fit::

    name: fraud_iforest          # the model's name in the registry
    registry: ../models          # optional; relative to this file (the CLI's --registry wins)
    features: [amount, gap_s]    # feature columns, in the model's order
    time_column: ts              # optional: orders rows and records the training window
    contamination: auto
    n_estimators: 200
    holdout: 0.2                 # the latest 20 % of rows are held back for the validation report
    seed: 42

A sequence model (``algorithm: tcn_autoencoder``; PyTorch, so run it from ``.venv-torch/bin/vigil``, see
``make torch-venv``) is exported to ONNX into a folder instead of the registry, and served by the
``onnx_sequence`` detector::

    name: hosts_seq
    algorithm: tcn_autoencoder
    features: [cpu, mem, net_in]   # the model's channels
    window: 32                     # rows per window (a multiple of 4)
    epochs: 10
    out: models/hosts_seq          # model.onnx + model.json (relative to this file; --out wins)
    key_column: host               # optional: one sequence per key (a host, a card holder), else the whole table
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table

from vigil.cli.common import strict_json
from vigil.errors import ConfigError

DEFAULT_REGISTRY = "models"
REGISTRY_ENV = "VIGIL_MODEL_REGISTRY"


class TrainSpec(BaseModel):
    """A training config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    features: list[str] = Field(min_length=1)
    registry: str | None = None
    time_column: str | None = "timestamp"
    algorithm: str = "isolation_forest"
    contamination: float | str = "auto"
    n_estimators: int = Field(default=100, ge=1)
    holdout: float = Field(default=0.2, ge=0.0, le=0.9)
    seed: int = 42
    # algorithm: tcn_autoencoder (a PyTorch sequence model exported to ONNX; vigil.models.sequence)
    out: str | None = None
    key_column: str | None = None
    window: int = Field(default=32, ge=4)
    epochs: int = Field(default=10, ge=1)
    hidden: int = Field(default=16, ge=1)
    code: int = Field(default=4, ge=1)


def load_train_config(path: str | os.PathLike[str]) -> tuple[TrainSpec, str]:
    """Read and check a training config; return it and the folder that its relative paths start from."""
    from vigil.yamlfile import read_yaml

    path = os.fspath(path)
    raw = read_yaml(path, "--config")
    try:
        spec = TrainSpec.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        name = ".".join(str(p) for p in e["loc"]) or "config"
        hint = f"known fields: {', '.join(TrainSpec.model_fields)}" if e["type"] == "extra_forbidden" else None
        value = e.get("input") if e["type"] != "missing" and not isinstance(e.get("input"), dict) else None
        raise ConfigError(f"{e['msg']} (in {path})", field=name, value=value, hint=hint) from None
    if spec.algorithm not in ("isolation_forest", "tcn_autoencoder"):
        raise ConfigError(f"is not a trainable algorithm (in {path})", field="algorithm", value=spec.algorithm,
                          hint="isolation_forest or tcn_autoencoder")  # fmt: skip
    return spec, os.path.dirname(os.path.abspath(path))


def resolve_registry(registry: str | os.PathLike[str] | None, config_value: str | None = None,
                     base_dir: str = ".") -> str:  # fmt: skip
    """``--registry``, else the config's ``registry`` (relative to ``base_dir``), else the env var, else ./models."""
    if registry:
        return os.fspath(registry)
    if config_value:
        return config_value if os.path.isabs(config_value) else os.path.join(base_dir, config_value)
    return os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY


def _emit(data: Any) -> None:
    """One JSON document on stdout (for scripts: ``--json``)."""
    print(strict_json(data, sort_keys=True))


def train_cmd(config: str | os.PathLike[str], input_path: str | os.PathLike[str], *,
              registry: str | os.PathLike[str] | None = None, promote: bool = False,
              reason: str = "trained", as_json: bool = False, out: str | os.PathLike[str] | None = None,
              console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """``vigil train --config TRAIN.yaml --input FILE``: fit, validate on the held-back slice, register."""
    from vigil.models.training import train_isolation_forest

    spec, base = load_train_config(config)
    if spec.algorithm == "tcn_autoencoder":
        return train_sequence_cmd(spec, base, input_path, out=out, as_json=as_json, console=console)
    root = resolve_registry(registry, spec.registry, base)
    version, meta = train_isolation_forest(
        os.fspath(input_path), features=spec.features, name=spec.name, registry_root=root,
        contamination=spec.contamination, n_estimators=spec.n_estimators, holdout=spec.holdout, seed=spec.seed,
        time_column=spec.time_column, promote=promote, reason=reason,
    )  # fmt: skip
    result = {"name": spec.name, "version": version, "registry": root, "promoted": promote, "meta": meta}
    if as_json:
        _emit(result)
        return result
    con = console or Console()
    val = meta.get("validation") or {}
    con.print(f"registered [bold]{spec.name} {version}[/] in {root}: {meta['n_rows']:,} training rows, "
              f"features {', '.join(meta['features'])}")  # fmt: skip
    if val:
        con.print(f"held-back slice: {val['n_rows']:,} rows, {val['flag_share']:.2%} flagged at "
                  f"{val['threshold']} (expected ~{val['expected_flag_share']:.0%})")  # fmt: skip
    con.print("promoted" if promote else f"not promoted yet: vigil models promote {spec.name} {version} --reason ...")
    return result


def train_sequence_cmd(spec: TrainSpec, base: str, input_path: str | os.PathLike[str], *,
                       out: str | os.PathLike[str] | None = None, as_json: bool = False,
                       console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """``algorithm: tcn_autoencoder``: train with PyTorch, export ``model.onnx`` + ``model.json`` into ``out``."""
    from vigil.models.sequence import train_tcn_autoencoder
    from vigil.models.training import read_table

    folder = os.fspath(out) if out else spec.out
    if not folder:
        raise ConfigError("is needed for a sequence model: the folder that gets model.onnx and model.json",
                          field="out", value=None, hint="`out: models/seq` in the config, or --out")  # fmt: skip
    if not out and not os.path.isabs(folder):
        folder = os.path.join(base, folder)
    columns = read_table(os.fspath(input_path), spec.features, spec.time_column, spec.key_column)
    ts = columns.pop("__ts_ms", None)
    if ts is not None:
        order = np.argsort(ts, kind="stable")
        columns = {f: c[order] for f, c in columns.items()}
    keys = columns.pop("__key", None)
    meta = train_tcn_autoencoder(columns, features=spec.features, out=folder, window=spec.window,
                                 epochs=spec.epochs, hidden=spec.hidden, code=spec.code, seed=spec.seed,
                                 keys=keys)  # fmt: skip
    result = {"name": spec.name, "out": folder, "training": meta["training"], "fields": meta["fields"],
              "window": meta["window"]}  # fmt: skip
    if as_json:
        _emit(result)
        return result
    t = meta["training"]
    con = console or Console()
    con.print(f"trained [bold]{spec.name}[/] (tcn_autoencoder, window {meta['window']}) on {t['rows']:,} rows, "
              f"{t['epochs']} epochs in {t['train_seconds']:.1f} s; loss {t['final_loss']:.4g}; ONNX vs PyTorch "
              f"max |diff| {t['max_abs_diff_onnx']:.1e}")  # fmt: skip
    con.print(f"wrote {folder}/model.onnx and model.json; serve it: kind onnx_sequence, params {{model: {folder}}}")
    return result


def list_cmd(registry: str | os.PathLike[str] | None = None, *, as_json: bool = False,
             console: Console | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """``vigil models list``: every model, its versions and which one is promoted."""
    from vigil.models import ModelRegistry

    root = resolve_registry(registry)
    rows = ModelRegistry(root).list()
    if as_json:
        _emit(rows)
        return rows
    con = console or Console()
    table = Table(title=f"models in {root}")
    for col in ("model", "version", "promoted", "created", "rows", "features", "held-back flagged"):
        table.add_column(col)
    for m in rows:
        for v in m["versions"] or [{"version": "-"}]:
            share = v.get("holdout_flag_share")
            table.add_row(m["name"], v["version"], "●" if v.get("promoted") else "", str(v.get("created") or ""),
                          f"{v['n_rows']:,}" if v.get("n_rows") is not None else "",
                          ", ".join(v.get("features") or []) or v.get("error", ""),
                          f"{share:.2%}" if isinstance(share, float) else "")  # fmt: skip
    con.print(table if rows else f"no models in {root} (train one: vigil train --config ... --input ...)")
    return rows


def show_cmd(name: str, version: str | None = None, registry: str | os.PathLike[str] | None = None, *,
             as_json: bool = False, console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """``vigil models show NAME [VERSION]``: a version's metadata and validation report, and the history."""
    from vigil.models import ModelRegistry

    reg = ModelRegistry(resolve_registry(registry))
    info = reg.show(name, version)
    info["history"] = reg.history(name)
    if as_json:
        _emit(info)
        return info
    con = console or Console()
    con.print(f"[bold]{name} {info['version']}[/]" + (" [green](promoted)[/]" if info["promoted"] else "")
              + f"  {info['path']}")  # fmt: skip
    table = Table(show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in ("created", "source", "features", "training_window", "contamination", "n_rows", "params",
                "validation", "model_sha256", "model_bytes"):  # fmt: skip
        if key in info:
            val = info[key]
            table.add_row(key, val if isinstance(val, str) else json.dumps(val, default=str))
    for f, st in (info.get("training_stats") or {}).items():
        table.add_row(f"stats {f}", ", ".join(f"{k} {v:.4g}" for k, v in st.items() if isinstance(v, float)))
    con.print(table)
    if info["history"]:
        hist = Table(title="history")
        for col in ("when", "who", "action", "from", "to", "reason"):
            hist.add_column(col)
        for h in info["history"]:
            hist.add_row(*(str(h.get(k) or "") for k in ("ts", "who", "action", "from", "to", "reason")))
        con.print(hist)
    return info


def promote_cmd(name: str, version: str, reason: str, registry: str | os.PathLike[str] | None = None, *,
                who: str | None = None, as_json: bool = False,
                console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """``vigil models promote NAME VERSION --reason ...``: serving detectors pick it up within their check interval."""
    from vigil.models import ModelRegistry

    reg = ModelRegistry(resolve_registry(registry))
    reg.promote(name, version, reason=reason, who=who)
    rec = reg.history(name)[-1]
    if as_json:
        _emit(rec)
    else:
        (console or Console()).print(f"promoted {name} {rec['from'] or '(none)'} → [bold]{version}[/] ({reason})")
    return rec


def rollback_cmd(name: str, reason: str, registry: str | os.PathLike[str] | None = None, *,
                 who: str | None = None, as_json: bool = False,
                console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """``vigil models rollback NAME --reason ...``: back to the version promoted before the current one."""
    from vigil.models import ModelRegistry

    reg = ModelRegistry(resolve_registry(registry))
    reg.rollback(name, reason=reason, who=who)
    rec = reg.history(name)[-1]
    if as_json:
        _emit(rec)
    else:
        (console or Console()).print(f"rolled back {name} {rec['from']} → [bold]{rec['to']}[/] ({reason})")
    return rec

