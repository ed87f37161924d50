"""Static checks of deploy/flink (no Docker engine or Kubernetes here): the Dockerfile, the compose file and the
Flink Kubernetes Operator manifest name only files, modules, commands, options and ports that exist.

Every command they run is parsed by the real parser (``vigil``'s Typer app, the job module's argparse), with the
image's paths mapped back to the repository (``/pipelines`` is ``COPY pipelines /pipelines``).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from vigil.cli.main import app
from vigil.integrations.flink.job import parser as job_parser
from vigil.integrations.flink.spec import load_job

REPO = Path(__file__).resolve().parents[2]
FLINK = REPO / "deploy" / "flink"
DOCKERFILE = FLINK / "docker" / "Dockerfile"
COMPOSE = FLINK / "docker-compose.yml"
K8S = FLINK / "k8s" / "flinkdeployment.yaml"


def _copies() -> dict[str, Path]:
    """Image path -> repository path of every ``COPY`` from the build context."""
    out = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"COPY\s+(?!--from)(.+)$", line.strip())
        if m:
            *srcs, dest = m.group(1).split()
            for s in srcs:
                out[dest.rstrip("/") + ("/" + Path(s).name if dest.endswith("/") and len(srcs) > 1 else "")] = REPO / s
    return out


def _local(path: str) -> str:
    """An image path as the repository file it was copied from."""
    for image, repo in sorted(_copies().items(), key=lambda kv: -len(kv[0])):
        if path == image or path.startswith(image + "/"):
            return str(repo / path[len(image) :].lstrip("/"))
    return path


def _parse_vigil(argv: list[str]) -> dict[str, Any]:
    """Parse a ``vigil ...`` command line with the real CLI, without running it; the leaf command's params."""
    cmd: Any = get_command(app)
    ctx = cmd.make_context("vigil", [_local(a) for a in argv])
    while hasattr(cmd, "resolve_command"):  # a group (typer's own click)
        name, sub, rest = cmd.resolve_command(ctx, ctx._protected_args + ctx.args)
        assert sub is not None, f"no command {name!r} in {argv}"
        ctx = sub.make_context(name or "", rest, parent=ctx)
        cmd = sub
    return dict(ctx.params)


def test_every_dockerfile_copy_source_exists() -> None:
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"COPY\s+(?!--from)(.+)$", line.strip())
        if m:
            for src in m.group(1).split()[:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_the_image_and_the_lock_agree_on_flink() -> None:
    text = DOCKERFILE.read_text()
    image = re.search(r"FLINK_IMAGE=flink:(\d+\.\d+\.\d+)-", text)
    assert image is not None
    lock = (FLINK / "requirements.lock").read_text()
    pinned = re.search(r"^apache-flink==(\S+)", lock, re.M)
    assert pinned is not None and pinned.group(1) == image.group(1), "the image's Flink is the lock's PyFlink"
    jar = yaml.safe_load(K8S.read_text())["spec"]["job"]["jarURI"]
    assert jar.endswith(f"flink-python-{image.group(1)}.jar")
    pom = (FLINK / "pom.xml").read_text()
    assert "flink-sql-connector-kafka" in pom and f"-{'.'.join(image.group(1).split('.')[:2])}<" in pom


def test_compose_commands_parse_with_the_real_cli() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    job = _parse_vigil(services["job"]["command"][1:])
    assert Path(str(job["pipeline"])).exists()
    jm_host, jm_port = job["jobmanager"].split(":")
    assert jm_host == "jobmanager" and f"{jm_port}:{jm_port}" in services["jobmanager"]["ports"]
    env = services["kafka"]["environment"]
    assert f"INTERNAL://{job['bootstrap']}" in env["KAFKA_ADVERTISED_LISTENERS"]
    am = _parse_vigil(services["alertmanager"]["command"][1:])
    assert am["from_"] == f"kafka://{job['bootstrap']}/alerts"
    assert load_job(str(job["pipeline"])).output("alerts").topic == "alerts"  # type: ignore[union-attr]
    prom = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    targets = [t for sc in prom["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"]]
    assert f"alertmanager:{am['metrics_port']}" in targets
    flink_port = next(sc for sc in prom["scrape_configs"] if sc["job_name"] == "flink")["dns_sd_configs"][0]["port"]
    props = yaml.safe_load(compose["x-flink"]["environment"]["FLINK_PROPERTIES"])
    assert props["metrics.reporter.prom.port"] == flink_port


def test_k8s_job_args_parse_with_the_job_module() -> None:
    spec = yaml.safe_load(K8S.read_text())["spec"]
    args = spec["job"]["args"]
    assert args[0] == "-pym" and importlib.util.find_spec(args[1]) is not None
    ns = job_parser().parse_args([_local(a) for a in args[2:]])
    assert load_job(ns.pipeline).source.topic == "transactions"
    assert spec["job"]["upgradeMode"] == "savepoint" and int(spec["job"]["parallelism"]) >= 1
    conf = spec["flinkConfiguration"]
    assert conf["python.executable"] == "/opt/vigil/venv/bin/python"
    assert "/opt/vigil/venv" in DOCKERFILE.read_text()


@pytest.mark.parametrize("path", [COMPOSE, K8S])
def test_python_executable_is_the_images_venv(path: Path) -> None:
    assert "/opt/vigil/venv/bin/python" in path.read_text()
    assert "python3.11 -m venv /opt/vigil/venv" in DOCKERFILE.read_text()
