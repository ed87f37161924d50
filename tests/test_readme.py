"""The README's examples run: the Python API example and the YAML example."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

from vigil.config import build_pipeline, parse_spec

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_opens_with_the_two_commands():
    first = _blocks("bash")[0]
    assert "make demo" in first and "make test" in first


def test_python_example_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "generate", "transactions", "-o",
                        str(tmp_path / "transactions.jsonl"), "--events", "20000", "--users", "300"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = _blocks("python")[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "amount_z" in r.stdout or "velocity" in r.stdout


def test_yaml_example_builds(tmp_path):
    doc = yaml.safe_load(_blocks("yaml")[0])
    p = build_pipeline(parse_spec(doc), base_dir=str(tmp_path))
    assert [s.name for s in p.steps] == ["amount_z", "velocity"]
