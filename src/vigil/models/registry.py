"""A model registry folder: named models, immutable numbered versions, a promoted pointer and an audit trail.

Layout (plain files, readable with ``ls`` and ``cat``; nothing but this module writes them)::

    ROOT/
      fraud_iforest/
        v1/model.vmodel      the artifact (save_model: msgpack envelope of the snapshot codec, sha256-checked)
        v1/meta.json         name, version, created, features (in order), training window, contamination,
                             n_rows, training statistics, validation report, ...
        v2/...
        PROMOTED             one line, e.g. "v2": the version that serving detectors use (atomic replace)
        history.jsonl        one JSON object per promotion or rollback: ts, who, action, from, to, reason

Rules:

* A version is **immutable** and appears atomically: it is written in a hidden staging folder, then renamed
  to ``vN`` (a rename onto an existing, non-empty ``vN`` fails, so concurrent registrations get distinct
  numbers).
* ``PROMOTED`` is replaced atomically (write a temporary file, fsync, ``os.replace``): a reader sees the old
  or the new version, never a torn one. A version is promoted only after its artifact loads and passes its
  checksum.
* ``rollback`` returns to the version promoted before the current one, replaying ``history.jsonl`` as a
  stack (promote pushes, rollback pops), so rolling back twice after ``v1 -> v2 -> v3`` lands on ``v1``.
* Writers of one model serialize on ``ROOT/NAME/.lock`` (``fcntl.flock`` where available).

Errors are :class:`RegistryError` subclasses of :class:`vigil.errors.VigilError` that name the path and
the fix: :class:`ModelNotFoundError` (no such model, version or promotion) and :class:`CorruptModelError` (a
file that exists but can't be read).

Examples:
    >>> import tempfile, numpy as np
    >>> from vigil.detectors.iforest import fit_isolation_forest
    >>> art = fit_isolation_forest(np.random.default_rng(0).standard_normal((200, 2)), ["a", "b"], n_estimators=5)
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> reg.register("demo", art, {"contamination": "auto"}), reg.register("demo", art, {})
    ('v1', 'v2')
    >>> reg.promote("demo", "v1", reason="first"); reg.promote("demo", "v2", reason="retrained")
    >>> reg.rollback("demo", reason="v2 too noisy")
    'v1'
    >>> reg.promoted("demo")[0], [h["action"] for h in reg.history("demo")]
    ('v1', ['promote', 'promote', 'rollback'])
"""

from __future__ import annotations

import builtins
import contextlib
import getpass
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigil.errors import VigilError

MODEL_FILE = "model.vmodel"
META_FILE = "meta.json"
POINTER_FILE = "PROMOTED"
HISTORY_FILE = "history.jsonl"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


class RegistryError(VigilError):
    """A model registry operation that can't be done; the message names the path and the fix."""


class ModelNotFoundError(RegistryError):
    """No such model, version, or promoted version."""


class CorruptModelError(RegistryError):
    """A registry file exists but can't be read (truncated, edited by hand, or of another format)."""


def version_number(version: str) -> int:
    """``"v3"`` -> 3; raises :class:`RegistryError` for anything else.

    Examples:
        >>> version_number("v12")
        12
    """
    m = _VERSION.match(str(version))
    if not m:
        raise RegistryError(f"{version!r} is not a model version; versions are v1, v2, ...")
    return int(m.group(1))


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (e.g. a container's arbitrary uid)
        return os.environ.get("USER") or "unknown"


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, non-finite floats to None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return obj


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ModelRegistry:
    """A registry folder (see the module docstring).

    Args:
        root: the registry folder (created on the first registration).
        now: the clock for ``created`` and history timestamps (injectable for tests; default UTC now).
    """

    def __init__(self, root: str | os.PathLike[str], *, now: Callable[[], datetime] | None = None) -> None:
        self.root = Path(root)
        self._now = now or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ---- paths -------------------------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(
                f"{name!r} is not a valid model name: use letters, digits, '_', '.', '-' (e.g. fraud_iforest)"
            )
        return self.root / name

    def version_dir(self, name: str, version: str) -> Path:
        """The folder of one version (not checked to exist)."""
        version_number(version)
        return self._model_dir(name) / version

    def _require_model(self, name: str) -> Path:
        d = self._model_dir(name)
        if not d.is_dir():
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(
                f"no model {name!r} in the registry {str(self.root)!r} (models: {known}); "
                f"train one first: vigil train --config TRAIN.yaml --input FILE"
            )
        return d

    def _require_version(self, name: str, version: str) -> Path:
        self._require_model(name)
        d = self.version_dir(name, version)
        if not d.is_dir():
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r} (looked for {str(d)!r}); "
                f"versions: {', '.join(self.versions(name)) or 'none'}"
            )
        return d

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        d = self._model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as fh:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX: single writer assumed
                pass
            yield

    # ---- reading -----------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Model names, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[str]:
        """Published versions of a model, oldest first (staging folders are not versions)."""
        d = self._model_dir(name)
        if not d.is_dir():
            return []
        vs = [p.name for p in d.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(vs, key=version_number)

    def read_pointer(self, name: str) -> str | None:
        """The promoted version named by ``PROMOTED``, or ``None`` when nothing was promoted.

        Raises:
            CorruptModelError: ``PROMOTED`` does not hold a version name.
        """
        path = self._model_dir(name) / POINTER_FILE
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptModelError(f"can't read {str(path)!r} ({exc}); fix: vigil models promote {name} vN") from exc
        if not _VERSION.match(text):
            raise CorruptModelError(
                f"{str(path)!r} should name a version such as 'v2'; got {text[:40]!r}. "
                f"Fix: vigil models promote {name} vN --reason 'repair pointer'"
            )
        return text

    def promoted(self, name: str) -> tuple[str, Path]:
        """``(version, folder)`` of the promoted version.

        Raises:
            ModelNotFoundError: no such model, nothing promoted, or the promoted folder is gone.
            CorruptModelError: the pointer is unreadable.
        """
        self._require_model(name)
        v = self.read_pointer(name)
        if v is None:
            raise ModelNotFoundError(
                f"model {name!r} has no promoted version ({str(self._model_dir(name) / POINTER_FILE)!r} is missing); "
                f"fix: vigil models promote {name} {(self.versions(name) or ['vN'])[-1]} --reason '...'"
            )
        d = self.version_dir(name, v)
        if not d.is_dir():
            raise ModelNotFoundError(
                f"model {name!r}: PROMOTED names {v!r} but {str(d)!r} does not exist; "
                f"fix: vigil models promote {name} vN (versions: {', '.join(self.versions(name)) or 'none'})"
            )
        return v, d

    def meta(self, name: str, version: str) -> dict[str, Any]:
        """The ``meta.json`` of a version."""
        path = self._require_version(name, version) / META_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CorruptModelError(
                f"{str(path)!r} is missing: version {version} of {name!r} is incomplete; "
                f"register a new version (vigil train) and promote that"
            ) from None
        except (OSError, ValueError) as exc:
            raise CorruptModelError(
                f"{str(path)!r} is not readable JSON ({exc}); register a new version (vigil train)"
            ) from exc
        if not isinstance(meta, dict):
            raise CorruptModelError(f"{str(path)!r} must hold a JSON object; register a new version (vigil train)")
        return meta

    def load(self, name: str, version: str | None = None) -> dict[str, Any]:
        """The artifact of a version (default: the promoted one), checksum-verified.

        Raises:
            ModelNotFoundError: no such model or version, or nothing promoted.
            CorruptModelError: the model file is missing, truncated, of another format or fails its checksum.
        """
        from vigil.detectors.iforest import load_model
        from vigil.errors import SnapshotError

        if version is None:
            version, d = self.promoted(name)
        else:
            d = self._require_version(name, version)
        path = d / MODEL_FILE
        fix = f"fix: vigil models rollback {name} --reason '...', or promote another version"
        try:
            return load_model(str(path))
        except FileNotFoundError:
            raise CorruptModelError(f"{str(path)!r} is missing ({name} {version}); {fix}") from None
        except (SnapshotError, ValueError, KeyError, TypeError, OSError) as exc:
            raise CorruptModelError(f"{str(path)!r} is corrupt ({name} {version}): {exc}; {fix}") from exc

    def history(self, name: str) -> list[dict[str, Any]]:
        """Promotions and rollbacks of a model, oldest first.

        Raises:
            CorruptModelError: a line is not JSON (the message gives the line number).
        """
        path = self._model_dir(name) / HISTORY_FILE
        if not path.is_file():
            return []
        out = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise CorruptModelError(
                    f"{str(path)}:{i} is not JSON ({exc}); remove or repair that line (the file is an audit log)"
                ) from exc
            out.append(rec)
        return out

    def show(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A version's ``meta.json`` plus ``path``, ``promoted`` (bool) and ``model_bytes``.

        ``version`` defaults to the promoted one, else the latest.
        """
        self._require_model(name)
        pointer = self.read_pointer(name)
        if version is None:
            versions = self.versions(name)
            version = pointer or (versions[-1] if versions else None)
            if version is None:
                raise ModelNotFoundError(f"model {name!r} has no versions in {str(self._model_dir(name))!r}")
        meta = self.meta(name, version)
        d = self.version_dir(name, version)
        size = (d / MODEL_FILE).stat().st_size if (d / MODEL_FILE).is_file() else None
        return {**meta, "name": name, "version": version, "path": str(d), "promoted": version == pointer,
                "model_bytes": size}  # fmt: skip

    # ---- writing -----------------------------------------------------------------------------------------

    def register(self, name: str, artifact: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
        """Store an artifact as the next version and return it (``"v1"``, ``"v2"``, ...); does not promote.

        ``meta`` is the caller's description (training window, statistics, validation, ...); the registry sets
        ``name``, ``version``, ``created``, ``features``, ``model_file``, ``model_format`` and ``model_sha256``.
        """
        from vigil.detectors.iforest import check_artifact, save_model

        try:
            check_artifact(artifact)
        except ValueError as exc:
            raise RegistryError(f"can't register {name!r}: {exc}") from exc
        model_dir = self._model_dir(name)
        with self._lock(name):
            stage = model_dir / f".stage-{uuid.uuid4().hex}"
            stage.mkdir(parents=True)
            try:
                save_model(artifact, str(stage / MODEL_FILE))
                n = max((version_number(v) for v in self.versions(name)), default=0) + 1
                while True:
                    version = f"v{n}"
                    full = {
                        **_jsonable(dict(meta or {})), "name": name, "version": version,
                        "created": self._now().isoformat(timespec="seconds"),
                        "features": list(artifact["features"]), "model_file": MODEL_FILE,
                        "model_format": artifact.get("format"), "model_sha256": artifact.get("onnx_sha256"),
                    }  # fmt: skip
                    _atomic_write(stage / META_FILE, json.dumps(full, indent=2, sort_keys=True).encode())
                    try:
                        if (model_dir / version).exists():
                            raise FileExistsError(version)
                        os.rename(stage, model_dir / version)
                        return version
                    except OSError:  # another writer took vN (no lock on this platform): try the next number
                        n += 1
            finally:
                if stage.exists():
                    shutil.rmtree(stage, ignore_errors=True)

    def promote(self, name: str, version: str, reason: str, *, who: str | None = None) -> None:
        """Point ``PROMOTED`` at ``version`` (after checking that it loads) and record it in the history."""
        self._require_version(name, version)
        self.load(name, version)  # never promote a model that can't be served
        with self._lock(name):
            try:
                before = self.read_pointer(name)
            except CorruptModelError:
                before = None
            self._set_pointer(name, version)
            self._append_history(name, "promote", before, version, reason, who)

    def rollback(self, name: str, reason: str, *, who: str | None = None) -> str:
        """Promote the version that was promoted before the current one; return it.

        Raises:
            ModelNotFoundError: there is no earlier promotion to return to.
        """
        self._require_model(name)
        with self._lock(name):
            stack = self._promotion_stack(name)
            current = self.read_pointer(name)
            if len(stack) < 2:
                raise ModelNotFoundError(
                    f"model {name!r} has no earlier promotion to roll back to "
                    f"(history: {str(self._model_dir(name) / HISTORY_FILE)!r}); promote a version explicitly"
                )
            if current != stack[-1]:
                raise RegistryError(
                    f"model {name!r}: PROMOTED says {current!r} but the history ends at {stack[-1]!r} "
                    "(edited by hand?); promote the version you want explicitly: vigil models promote"
                )
            target = stack[-2]
            self.load(name, target)
            self._set_pointer(name, target)
            self._append_history(name, "rollback", current, target, reason, who)
            return target

    def _promotion_stack(self, name: str) -> list[str]:
        stack: list[str] = []
        for rec in self.history(name):
            if rec.get("action") == "promote":
                stack.append(str(rec.get("to")))
            elif rec.get("action") == "rollback" and stack:
                stack.pop()
        return stack

    def _set_pointer(self, name: str, version: str) -> None:
        _atomic_write(self._model_dir(name) / POINTER_FILE, f"{version}\n".encode())

    def _append_history(self, name: str, action: str, before: str | None, after: str, reason: str,
                        who: str | None) -> None:  # fmt: skip
        rec = {"ts": self._now().isoformat(timespec="seconds"), "who": who or _who(), "action": action,
               "from": before, "to": after, "reason": str(reason)}  # fmt: skip
        with open(self._model_dir(name) / HISTORY_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # defined last: a method named `list` shadows the builtin in the class body
    def list(self) -> builtins.list[dict[str, Any]]:
        """One summary per model: ``name``, ``versions``, ``latest``, ``promoted`` and per-version rows.

        A version whose ``meta.json`` is unreadable is listed with its ``error`` rather than hiding the model.
        """
        rows = []
        for name in self.names():
            try:
                promoted: str | None = self.read_pointer(name)
                pointer_error = None
            except CorruptModelError as exc:
                promoted, pointer_error = None, str(exc)
            versions = []
            for v in self.versions(name):
                row: dict[str, Any] = {"version": v, "promoted": v == promoted}
                try:
                    m = self.meta(name, v)
                    row.update({k: m.get(k) for k in ("created", "n_rows", "contamination", "features")})
                    val = m.get("validation") or {}
                    row["holdout_flag_share"] = val.get("flag_share")
                    row["training_window"] = m.get("training_window")
                except RegistryError as exc:
                    row["error"] = str(exc)
                versions.append(row)
            rows.append({
                "name": name, "versions": versions, "latest": versions[-1]["version"] if versions else None,
                "promoted": promoted, **({"pointer_error": pointer_error} if pointer_error else {}),
            })  # fmt: skip
        return rows
