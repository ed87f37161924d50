"""Static checks of deploy/: the Dockerfile, docker-compose.yml and the Helm chart (no Docker or helm needed).

Nothing here builds an image or starts a container (see deploy/README.md). The chart's templates are
rendered by a tiny renderer that knows exactly the template features the chart uses: ``{{ .Values.a.b }}``,
``.Release.*``, ``.Chart.*``, the pipes ``quote``, ``toYaml``, ``nindent N``, ``indent N``, and ``{{-``
whitespace chomping, and the call form ``toYaml .Values.x``. Anything else in a template fails the test, so the chart can't silently outgrow it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "vigil"

# ---- the mini Helm renderer ---------------------------------------------------------------------------------

_ACTION = re.compile(r"(?P<chomp>[ \t]*\n?[ \t]*)?\{\{(?P<left>-)?\s*(?P<expr>.*?)\s*\}\}")


def _lookup(path: str, ctx: dict) -> object:
    if not path.startswith("."):
        raise ValueError(f"unsupported template expression {path!r}")
    node: object = ctx
    for part in path[1:].split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{path} is not defined in the values/context")
        node = node[part]
    return node


def _to_yaml(v: object) -> str:
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=False).rstrip("\n")


def _apply(value: object, pipe: str) -> object:
    name, *args = pipe.split()
    if name == "quote":
        return json.dumps(str(value))
    if name == "toYaml":
        return _to_yaml(value)
    if name in ("nindent", "indent"):
        pad = " " * int(args[0])
        text = "\n".join(pad + line for line in str(value).split("\n"))
        return "\n" + text if name == "nindent" else text
    raise ValueError(f"unsupported template function {name!r}")


def render(template: str, values: dict, release: str = "vigil-test") -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    ctx = {"Values": values, "Release": {"Name": release, "Namespace": "default"},
           "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]}}

    def sub(m: re.Match) -> str:
        head, *pipes = [p.strip() for p in m.group("expr").split("|")]
        *func, arg = head.split()  # `toYaml .Values.x` is `.Values.x | toYaml`
        value: object = _lookup(arg, ctx)
        if func:
            value = _apply(value, " ".join(func))
        for p in pipes:
            value = _apply(value, p)
        if isinstance(value, bool):
            value = str(value).lower()
        keep = "" if m.group("left") else (m.group("chomp") or "")
        return keep + str(value)

    out = _ACTION.sub(sub, template)
    assert "{{" not in out and "}}" not in out, "unrendered template action"
    return out


def test_renderer_itself():
    vals = {"a": {"b": 3}, "m": {"x": [1, 2]}, "s": "l1\nl2\n"}
    assert render("n: {{ .Values.a.b }}", vals) == "n: 3"
    assert render("q: {{ .Chart.AppVersion | quote }}", vals) == 'q: "0.1.0"'
    assert render("k:\n  {{- toYaml .Values.m | nindent 2 }}", vals) == "k:\n  x:\n  - 1\n  - 2"
    with pytest.raises(KeyError):
        render("{{ .Values.missing }}", vals)
    with pytest.raises(ValueError):
        render("{{ if .Values.a }}", vals)


@pytest.fixture(scope="module")
def chart_docs() -> dict[str, dict]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = {}
    for t in sorted((CHART / "templates").glob("*.yaml")):
        doc = yaml.safe_load(render(t.read_text(), values))
        docs[doc["kind"]] = doc
    return docs


# ---- Helm chart -----------------------------------------------------------------------------------------------


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "vigil" and chart["type"] == "application"
    assert chart["appVersion"] == "0.1.0"


def test_chart_renders_deployment_configmap_service(chart_docs):
    assert set(chart_docs) == {"Deployment", "ConfigMap", "Service"}
    dep = chart_docs["Deployment"]
    assert dep["apiVersion"] == "apps/v1" and dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    [c] = pod["spec"]["containers"]
    assert c["image"] == "vigil:0.1.0" and c["args"][:2] == ["run", "/etc/vigil/pipeline.yaml"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"][:2] == ["python", "-c"] and c[probe]["periodSeconds"] > 0
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert set(mounts.values()) <= set(volumes)
    assert volumes["pipeline"]["configMap"]["name"] == chart_docs["ConfigMap"]["metadata"]["name"]
    assert "/tmp" in mounts and "/var/lib/vigil" in mounts  # writable paths under a read-only root

    svc = chart_docs["Service"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port_names = {p["name"] for p in c["ports"]}
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])


def test_chart_pipeline_is_a_valid_vigil_pipeline(chart_docs, tmp_path):
    from vigil.config.spec import parse_spec

    text = chart_docs["ConfigMap"]["data"]["pipeline.yaml"]
    spec = parse_spec(yaml.safe_load(text), origin="helm values.pipeline")
    assert spec.name == "fraud-kafka" and spec.checkpoints is not None
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert spec.checkpoints.dir.startswith(values["stateDir"])  # the probes look where checkpoints go


def _probe_script(chart_docs, probe: str, state_dir: Path) -> str:
    [c] = chart_docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    script = c[probe]["exec"]["command"][2]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["stateDir"] in script
    return script.replace(values["stateDir"], str(state_dir))


@pytest.mark.parametrize("probe", ["livenessProbe", "readinessProbe"])
def test_probe_commands_run_against_a_state_dir(chart_docs, tmp_path, probe):
    script = _probe_script(chart_docs, probe, tmp_path)
    run = lambda: subprocess.run([sys.executable, "-c", script], timeout=60).returncode  # noqa: E731
    assert run() == 1  # no checkpoint yet: neither ready nor alive
    chk = tmp_path / "fraud-kafka" / "chk-0000000001.vck"
    chk.parent.mkdir()
    chk.write_bytes(b"x")
    assert run() == 0
    if probe == "livenessProbe":
        old = time.time() - 3600
        import os

        os.utime(chk, (old, old))
        assert run() == 1  # stale checkpoint: the loop is stuck -> restart


# ---- docker-compose ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_services(compose):
    s = compose["services"]
    assert set(s) == {"kafka", "vigil", "prometheus", "grafana"}
    k = s["kafka"]
    assert k["image"].startswith("apache/kafka:")
    env = k["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft, no ZooKeeper
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1  # exactly-once on one node
    assert "healthcheck" in k

    v = s["vigil"]
    assert v["command"][:2] == ["run", "/pipelines/fraud-kafka.yaml"]
    assert (DEPLOY / v["build"]["context"]).resolve() == REPO and (REPO / v["build"]["dockerfile"]).is_file()
    assert v["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert v["network_mode"] == "service:kafka"  # the pipeline names 127.0.0.1:9092
    assert not v["user"].startswith("0") and v["read_only"] is True
    mounts = {m.split(":")[1]: m.split(":")[0] for m in v["volumes"]}
    assert (DEPLOY / mounts["/pipelines"] / "fraud-kafka.yaml").is_file()
    named = set(compose["volumes"])
    assert all(src in named for src in mounts.values() if not src.startswith("."))

    for svc in ("prometheus", "grafana"):
        for c in s[svc].get("configs", []):
            assert c["source"] in compose["configs"]
    prom = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    assert {j["job_name"] for j in prom["scrape_configs"]} >= {"vigil"}
    ds = yaml.safe_load(compose["configs"]["grafana-datasource"]["content"])
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_worker_runs_the_repository_pipeline(compose):
    """The mounted pipeline is valid, points at the broker the worker can reach, and checkpoints on a volume."""
    import os

    from vigil.config.spec import load_spec

    spec = load_spec(str(REPO / "pipelines" / "fraud-kafka.yaml"))
    assert "127.0.0.1:9092" in spec.source.url
    assert compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:9092"
    state = os.path.normpath(os.path.join("/pipelines", spec.checkpoints.dir))
    mounts = {m.split(":")[1] for m in compose["services"]["vigil"]["volumes"]}
    assert state in mounts


# ---- Dockerfile ---------------------------------------------------------------------------------------------------


def test_dockerfile_multi_stage_non_root():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(stages) >= 2 and all("slim" in s for s in stages)
    assert stages[0].endswith(" AS build") and stages[-1].endswith(" AS runtime")
    runtime = lines[lines.index(stages[-1]):]
    assert any(ln.startswith("COPY --from=build") for ln in runtime)
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any("python -m build" in ln or "build>=" in ln for ln in runtime)  # build tools stay behind
    assert any(ln.startswith("ENTRYPOINT") and "vigil" in ln for ln in runtime)
    for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+?) \S+$", text, re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"COPY source {part} is not in the repository"
    extras = re.search(r"VIGIL_EXTRAS=(\S+)", text).group(1).split(",")
    import tomllib

    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(optional)


def test_dockerignore_keeps_what_the_build_copies():
    rules = [ln.strip() for ln in (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "**"
    assert {"!pyproject.toml", "!README.md", "!src", "!pipelines"} <= set(rules)
