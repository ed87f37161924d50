"""Run the prototype job on the local standalone cluster and measure it: one RESULT JSON line per run.

    .venv-flink/bin/python deploy/flink/prototype/bench.py --variant bucket --mode thread -p 2 --topic txns1m
    ... --conf python.fn-execution.bundle.size=10000 --check

Needs the cluster (flink.sh up, same VIGIL_FLINK_* environment) and the broker. Measures:

* submit_s: `flink run -d` wall time (client JVM + Python client building the graph + upload);
* to_running_s / job_s: from the JobManager's timestamps (job created -> RUNNING -> FINISHED);
* first_output_s: submit start -> the first alert readable with read_committed (needs a checkpoint to commit);
* cpu_s: CPU seconds of the TaskManagers and their Python workers (/proc of every process carrying flink.sh's
  mark), so events_per_cpu_s = events / cpu_s is "events per second per core" even on a busy machine;
* events_per_s: events / job_s (wall; start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
FLINK_SH = os.path.join(REPO, "deploy", "flink", "flink.sh")
sys.path.insert(0, HERE)
import kafkaio  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def rest(path: str, method: str = "GET", body: dict | None = None):
    url = f"http://127.0.0.1:{os.environ.get('VIGIL_FLINK_REST_PORT', '8081')}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def cluster_cpu_s(role_prefix: str = "tm") -> float:
    """CPU seconds (self + reaped children) of the live processes carrying flink.sh's mark for TaskManagers."""
    data = os.path.abspath(os.environ.get("VIGIL_FLINK_DATA", os.path.join(REPO, "deploy", "flink", "data")))
    mark = f"VIGIL_FLINK_PROCESS={data}:{role_prefix}".encode()
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except OSError:
            continue
    return total / CLK


def submit(job_args: list[str], parallelism: int, conf: dict[str, str], savepoint: str | None = None) -> str:
    cmd = [FLINK_SH, "flink", "run", "-d", "-p", str(parallelism)]
    for k, v in conf.items():
        cmd.append(f"-D{k}={v}")
    if savepoint:
        cmd += ["-s", savepoint]
    cmd += ["-py", os.path.join(HERE, "job.py"), "-pyfs", os.path.join(HERE, "zscore.py"), *job_args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    m = re.search(r"JobID ([0-9a-f]{32})", out.stdout + out.stderr)
    if not m:
        raise RuntimeError(f"submit failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return m.group(1)


def wait_job(jid: str, timeout_s: float, states=("FINISHED", "FAILED", "CANCELED")) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        j = rest(f"/jobs/{jid}")
        if j["state"] in states:
            return j
        time.sleep(0.5)
    raise TimeoutError(f"job {jid} not in {states} after {timeout_s}s (state {j['state']})")


def first_output_watch(bootstrap: str, topic: str, t0: float, out: dict, stop: threading.Event) -> None:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"vigil-first-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 1000})
    c.subscribe([topic])
    try:
        while not stop.is_set():
            m = c.poll(0.2)
            if m is not None and not m.error():
                out["first_output_s"] = round(time.monotonic() - t0, 2)
                return
    finally:
        c.close()


def run(a) -> dict:
    events = kafkaio.ensure_topic(a.bootstrap, a.topic, a.n, a.keys, a.seed, a.late)
    tag = f"{a.variant}-{a.mode}-p{a.parallelism}-{time.strftime('%H%M%S')}"
    alerts = f"{a.topic}-alerts-{tag}"
    conf = {"python.execution-mode": a.mode, **dict(kv.split("=", 1) for kv in a.conf)}
    job_args = ["--variant", a.variant, "--topic", a.topic, "--alerts", alerts, "--group", f"bench-{tag}",
                "--bootstrap", a.bootstrap, "--bounded", "--name", f"bench-{tag}", *a.job_arg]
    watch: dict = {}
    stop = threading.Event()
    t0 = time.monotonic()
    th = threading.Thread(target=first_output_watch, args=(a.bootstrap, alerts, t0, watch, stop), daemon=True)
    th.start()
    cpu0 = cluster_cpu_s()
    jid = submit(job_args, a.parallelism, conf)
    submit_s = time.monotonic() - t0
    j = wait_job(jid, a.timeout)
    cpu1 = cluster_cpu_s()
    stop.set()
    ts = j["timestamps"]
    job_s = (ts["FINISHED"] or ts.get("FAILED") or int(time.time() * 1000)) - ts["CREATED"]
    res = {"variant": a.variant, "mode": a.mode, "p": a.parallelism, "conf": conf, "job_args": a.job_arg,
           "events": events, "state": j["state"], "jid": jid, "submit_s": round(submit_s, 2),
           "to_running_s": round((ts["RUNNING"] - ts["CREATED"]) / 1000, 2), "job_s": round(job_s / 1000, 2),
           "cpu_s": round(cpu1 - cpu0, 1), "first_output_s": watch.get("first_output_s")}
    res["events_per_s"] = round(events / (job_s / 1000))
    res["events_per_cpu_s"] = round(events / max(res["cpu_s"], 1e-9))
    if a.check:
        res["check"] = kafkaio.check(a.bootstrap, a.topic, alerts, a.variant)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="bucket")
    p.add_argument("--mode", choices=["thread", "process"], default="thread")
    p.add_argument("-p", "--parallelism", type=int, default=2)
    p.add_argument("--conf", action="append", default=[], help="KEY=VALUE job configuration (repeatable)")
    p.add_argument("--job-arg", action="append", default=[], help="extra job.py argument (repeatable)")
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--topic", default="txns1m")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--late", type=int, default=100)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--check", action="store_true", help="compare the alerts with the reference")
    p.add_argument("--out", default=None, help="append the RESULT line to this file too")
    a = p.parse_args(argv)
    res = run(a)
    line = "RESULT " + json.dumps(res)
    print(line, flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0 if res["state"] == "FINISHED" else 1


if __name__ == "__main__":
    sys.exit(main())
