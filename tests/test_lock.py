"""requirements.lock must say exactly what pyproject.toml asks for: `make setup` installs from the lock only.

When this fails, run `make lock` (and commit requirements.lock) — see the Makefile.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SELF = "vigil (pyproject.toml)"


@dataclass
class Pin:
    version: Version
    marker: str
    hashes: int = 0
    via: set[str] = field(default_factory=set)


def _lock(path: str = "requirements.lock") -> dict[str, list[Pin]]:
    pins: dict[str, list[Pin]] = {}
    current: Pin | None = None
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+))?", line)
        if m:
            current = Pin(Version(m[2]), (m[3] or "").strip())
            pins.setdefault(canonicalize_name(m[1]), []).append(current)
        elif current is not None and "--hash=sha256:" in line:
            current.hashes += 1
        elif current is not None and line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip()
            text = text.removeprefix("via").strip()
            if text:
                current.via.add(text)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _applies(pin: Pin) -> bool:
    if not pin.marker:
        return True
    from packaging.markers import Marker

    return Marker(pin.marker).evaluate(default_environment())


def test_every_dependency_is_locked_at_a_version_it_allows() -> None:
    pins = _lock()
    wrong = []
    for req in _requirements():
        here = [p for p in pins.get(canonicalize_name(req.name), []) if _applies(p)]
        if not here:
            wrong.append(f"{req} is not in requirements.lock")
        elif not any(req.specifier.contains(p.version, prereleases=True) for p in here):
            wrong.append(f"{req} but the lock has {[str(p.version) for p in here]}")
    assert not wrong, "pyproject.toml and requirements.lock disagree (run `make lock`):\n" + "\n".join(wrong)


def test_the_lock_holds_nothing_pyproject_no_longer_asks_for() -> None:
    asked = {canonicalize_name(r.name) for r in _requirements()}
    direct = {name for name, ps in _lock().items() if any(SELF in p.via for p in ps)}
    assert direct == asked, (
        "requirements.lock was made from other dependencies than pyproject.toml's (run `make lock`): "
        f"only in the lock {sorted(direct - asked)}, only in pyproject {sorted(asked - direct)}"
    )


def test_every_pin_is_exact_and_hashed() -> None:
    pins = _lock()
    assert pins, "requirements.lock is empty"
    unhashed = [name for name, ps in pins.items() for p in ps if p.hashes == 0]
    assert not unhashed, f"pins without hashes: {unhashed}"


def test_setup_installs_from_the_lock_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile


def test_the_torch_lock_holds_every_core_and_ml_dependency() -> None:
    """.venv-torch installs Vigil with --no-deps from deploy/torch/requirements.lock: a core dependency missing
    there fails `pip check` in `make test` (run `./deploy/torch/torch.sh lock`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["ml"]]
    pins = _lock("deploy/torch/requirements.lock")
    missing = [str(r) for r in wanted if (r.marker is None or r.marker.evaluate()) and not any(
        r.specifier.contains(p.version, prereleases=True) for p in pins.get(canonicalize_name(r.name), []))]
    assert not missing, f"not in deploy/torch/requirements.lock at an allowed version: {missing}"
