"""The layers of ARCHITECTURE.md hold: every import of every module (function-local and TYPE_CHECKING ones too)
points to a lower layer, or stays in its own package. No exceptions are listed here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "vigil"

#: lowest first; a package may import only packages of lower layers (never one of its own layer)
LAYERS: list[tuple[str, ...]] = [
    ("vigil", "types", "errors"),
    ("stats", "eventtime", "state", "yamlfile"),
    ("detectors",),
    ("dataflow",),
    ("io",),
    ("engine",),
    ("alerting", "models", "ops", "rca"),
    ("feedback", "incidents"),
    ("remediation",),
    ("apps",),
    ("config",),
    ("control",),
    ("console",),
    ("worker",),
    ("integrations",),
    ("cli", "testing"),
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "vigil":
        return None
    return parts[1] if len(parts) > 1 else "vigil"


def _imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, where) for every import of the package."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package_parts[: len(package_parts) - node.level + 1]
                    names = [".".join(base + ([node.module] if node.module else []))]
                else:
                    names = [node.module or ""]
            else:
                continue
            out += [(module, name, f"{path.relative_to(ROOT)}:{node.lineno}") for name in names]
    return out


def test_every_package_is_in_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert sorted(packages - set(RANK)) == []


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, imported, where in _imports():
        a, b = _package(module), _package(imported)
        if a is None or b is None or a == b:
            continue
        if RANK[b] >= RANK[a]:
            wrong.append(f"{where}: {module} -> {imported} ({a} is layer {RANK[a]}, {b} is layer {RANK[b]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_architecture_doc_states_the_same_layers() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", text, re.M)
    documented = [tuple(p.strip().strip("`").rstrip("/").removesuffix(".py") for p in names.split(","))
                  for _, names in rows]
    assert documented == LAYERS


def test_the_tests_mirror_the_package() -> None:
    """Each test folder is named after the package it tests (tests/engine/ tests src/vigil/engine/)."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(folders - packages) == []
    assert not list((ROOT / "tests").glob("*/test_*/")), "test folders hold test modules, not more folders"
