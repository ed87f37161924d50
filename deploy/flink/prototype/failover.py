"""Failure drills for the prototype job on the standalone cluster; prints one RESULT JSON line each.

    .venv-flink/bin/python deploy/flink/prototype/failover.py tm-kill  --topic txns1m
    .venv-flink/bin/python deploy/flink/prototype/failover.py rescale  --topic txns1m --to 3

* ``tm-kill``: a bounded job at parallelism 2; after its first completed checkpoint, TaskManager 1 is SIGKILLed
  (``flink.sh tm-kill 1``) and a replacement started (``flink.sh tm-start``); the job restarts from the checkpoint
  and finishes. The read_committed alerts must equal the reference exactly: no duplicate, no loss.
* ``rescale``: a bounded job at parallelism 2; after a checkpoint, stop-with-savepoint through REST
  (``POST /jobs/<id>/stop``), resubmit from the savepoint at ``--to``; when it has finished, compare exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
import kafkaio  # noqa: E402


def wait_checkpoints(jid: str, n: int, timeout_s: float = 300) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c = bench.rest(f"/jobs/{jid}/checkpoints")["counts"]["completed"]
        if c >= n:
            return c
        time.sleep(0.3)
    raise TimeoutError(f"no {n} completed checkpoints for {jid}")


def job_args(a, alerts: str, bounded: bool) -> list[str]:
    args = ["--variant", a.variant, "--topic", a.topic, "--alerts", alerts, "--group", f"drill-{alerts}",
            "--bootstrap", a.bootstrap, "--checkpoint-ms", str(a.checkpoint_ms), *a.job_arg]
    return args + (["--bounded"] if bounded else [])


def tm_kill(a) -> dict:
    alerts = f"{a.topic}-drill-kill-{time.strftime('%H%M%S')}"
    conf = {"python.execution-mode": a.mode, "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": "10", "restart-strategy.fixed-delay.delay": "2 s"}
    jid = bench.submit(job_args(a, alerts, bounded=True), 2, conf)
    bench.wait_job(jid, 120, states=("RUNNING",))
    wait_checkpoints(jid, 1)
    t_kill = time.monotonic()
    subprocess.run([bench.FLINK_SH, "tm-kill", "1"], check=True)
    subprocess.run([bench.FLINK_SH, "tm-start"], check=True)
    j = bench.wait_job(jid, a.timeout)
    res = {"drill": "tm-kill", "mode": a.mode, "variant": a.variant, "state": j["state"],
           "recovered_and_finished_s": round(time.monotonic() - t_kill, 1),
           "failures": len(bench.rest(f"/jobs/{jid}/exceptions")["exceptionHistory"]["entries"]),
           "checkpoints": bench.rest(f"/jobs/{jid}/checkpoints")["counts"]}
    res["check"] = kafkaio.check(a.bootstrap, a.topic, alerts, a.variant)
    return res


def stop_with_savepoint(jid: str, timeout_s: float = 300) -> str:
    trig = bench.rest(f"/jobs/{jid}/stop", "POST", {"drain": False})["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = bench.rest(f"/jobs/{jid}/savepoints/{trig}")
        if r["status"]["id"] == "COMPLETED":
            if "failure-cause" in r["operation"]:
                raise RuntimeError(r["operation"]["failure-cause"])
            return r["operation"]["location"]
        time.sleep(0.5)
    raise TimeoutError("stop-with-savepoint did not complete")


def rescale(a) -> dict:
    alerts = f"{a.topic}-drill-rescale-{time.strftime('%H%M%S')}"
    conf = {"python.execution-mode": a.mode}
    # bounded: the source's stopping offsets are part of its split state, so the resumed job also ends at the end
    # of the input and the last windows fire (an unbounded job would wait for more data)
    jid = bench.submit(job_args(a, alerts, bounded=True), 2, conf)
    bench.wait_job(jid, 120, states=("RUNNING",))
    wait_checkpoints(jid, 1)
    t0 = time.monotonic()
    sp = stop_with_savepoint(jid)
    stop_s = time.monotonic() - t0
    committed_before = len(kafkaio.read_topic(a.bootstrap, alerts, idle_s=1.0))
    jid2 = bench.submit(job_args(a, alerts, bounded=True), a.to, conf, savepoint=sp)
    j2 = bench.wait_job(jid2, a.timeout)
    par = [v["parallelism"] for v in bench.rest(f"/jobs/{jid2}")["vertices"]]
    res = {"drill": "rescale", "mode": a.mode, "variant": a.variant, "from_p": 2, "to_p": a.to, "state": j2["state"],
           "vertex_parallelism_after": par, "savepoint": sp, "stop_with_savepoint_s": round(stop_s, 1),
           "alerts_committed_before_stop": committed_before}
    res["check"] = kafkaio.check(a.bootstrap, a.topic, alerts, a.variant)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("drill", choices=["tm-kill", "rescale"])
    p.add_argument("--variant", default="bucket")
    p.add_argument("--mode", choices=["thread", "process"], default="thread")
    p.add_argument("--topic", default="txns1m")
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--checkpoint-ms", type=int, default=2000)
    p.add_argument("--to", type=int, default=3, help="rescale: the new parallelism")
    p.add_argument("--job-arg", action="append", default=[])
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = tm_kill(a) if a.drill == "tm-kill" else rescale(a)
    print("RESULT " + json.dumps(res), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0 if res["check"]["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
