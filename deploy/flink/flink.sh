#!/usr/bin/env bash
# A real standalone Apache Flink 2.2 session cluster on 127.0.0.1: one JobManager and (by default) two
# TaskManagers, each its own JVM, run from the Flink distribution inside the apache-flink wheel
# (pyflink/bin, pyflink/lib) in .venv-flink. Nothing in the wheel is edited: the config lives in a
# generated FLINK_CONF_DIR under the data dir, written on every `up`.
#
#   flink.sh venv        create/refresh .venv-flink from requirements.lock (+ Vigil, editable, --no-deps)
#   flink.sh lock        recompile requirements.lock (uv, in a throwaway venv; needs PyPI)
#   flink.sh jars        resolve the Kafka connector jar with Maven into deploy/flink/target/libs/
#   flink.sh up          venv + jars if missing, write config, start JM + TMs, wait until REST shows every TM
#   flink.sh down        stop every process of this cluster (SIGTERM, then SIGKILL); keeps the data
#   flink.sh wipe        down, then delete the data dir (checkpoints, savepoints, logs)
#   flink.sh status      exit 0 if the REST API answers and every TaskManager started here is registered
#   flink.sh tm-kill N   SIGKILL TaskManager N (and its Python workers): a crash, for failure tests
#   flink.sh tm-start [N] start TaskManager N (default: the first one not running, or one more)
#   flink.sh flink ARGS  the distribution's `flink` CLI against this cluster; `run` gets `-j <connector jar>`
#                        (e.g. `flink.sh flink run -d -p 2 -py job.py`)
#   flink.sh env         print the variables a caller needs (FLINK_HOME, FLINK_CONF_DIR, REST URL, ...)
#
# Environment:
#   VIGIL_FLINK_REST_PORT      REST API and web UI port (default 8081)
#   VIGIL_FLINK_RPC_PORT       JobManager RPC port (default 6123)
#   VIGIL_FLINK_BLOB_PORT      JobManager blob server port (default 0 = any free port)
#   VIGIL_FLINK_TASKMANAGERS   TaskManagers started by `up` (default 2)
#   VIGIL_FLINK_SLOTS          task slots per TaskManager (default 2)
#   VIGIL_FLINK_JM_MEMORY      JobManager process size (default 1024m)
#   VIGIL_FLINK_TM_MEMORY      TaskManager process size (default 2048m)
#   VIGIL_FLINK_STATE_BACKEND  hashmap | rocksdb (cluster default; jobs may override; default hashmap)
#   VIGIL_FLINK_DATA           data dir: conf, logs, pids, checkpoints, savepoints (default deploy/flink/data)
#   VIGIL_FLINK_VENV           the PyFlink virtualenv (default .venv-flink at the repo root)
#   VIGIL_FLINK_START_TIMEOUT  seconds `up` waits for the TaskManagers to register (default 120)
#   VIGIL_FLINK_STOP_TIMEOUT   seconds `down` waits after SIGTERM before SIGKILL (default 30)
#   VIGIL_FLINK_JAVA_OPTS      extra JVM options for every Flink JVM, appended
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LIBS="$HERE/target/libs"
LIBS_STAMP="$LIBS/.resolved"
LOCK="$HERE/requirements.lock"
VENV="${VIGIL_FLINK_VENV:-$REPO/.venv-flink}"
VENV_STAMP="$VENV/.vigil-flink-installed"
DATA="${VIGIL_FLINK_DATA:-$HERE/data}"
CONF_DIR="$DATA/conf"
LIB_DIR="$DATA/lib"
LOG_DIR="$DATA/log"
PID_DIR="$DATA/pids"
LOCK_FILE="$DATA/.lock"
HOST=127.0.0.1
REST_PORT="${VIGIL_FLINK_REST_PORT:-8081}"
RPC_PORT="${VIGIL_FLINK_RPC_PORT:-6123}"
BLOB_PORT="${VIGIL_FLINK_BLOB_PORT:-0}"
TASKMANAGERS="${VIGIL_FLINK_TASKMANAGERS:-2}"
SLOTS="${VIGIL_FLINK_SLOTS:-2}"
JM_MEMORY="${VIGIL_FLINK_JM_MEMORY:-1024m}"
TM_MEMORY="${VIGIL_FLINK_TM_MEMORY:-2048m}"
STATE_BACKEND="${VIGIL_FLINK_STATE_BACKEND:-hashmap}"
START_TIMEOUT="${VIGIL_FLINK_START_TIMEOUT:-120}"
STOP_TIMEOUT="${VIGIL_FLINK_STOP_TIMEOUT:-30}"
REST_URL="http://$HOST:$REST_PORT"
CONNECTOR_JAR_GLOB="flink-sql-connector-kafka-*.jar"
# Every process this script starts carries this variable, and so do its children (the TaskManagers' Python
# workers): it is how `down` and `tm-kill` find exactly this cluster's processes and no one else's.
MARK_VAR=VIGIL_FLINK_PROCESS
MARK_ID="$(cd "$(dirname "$DATA")" 2>/dev/null && pwd)/$(basename "$DATA")"

say() { echo "flink: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# virtualenv and jars

venv_python() { echo "$VENV/bin/python"; }

flink_home() {
    local d
    for d in "$VENV"/lib/python3*/site-packages/pyflink; do
        [[ -x "$d/bin/flink" ]] && { echo "$d"; return 0; }
    done
    return 1
}

venv_sum() { cat "$LOCK" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1; }

# Installs only what requirements.lock pins (with hashes, no resolver), then Vigil itself without its
# dependencies (they are all in the lock: it is compiled from pyproject.toml too), then `pip check`.
cmd_venv() {
    local sum
    sum="$(venv_sum)"
    if [[ -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$sum" ]] && flink_home >/dev/null; then
        return 0
    fi
    local py="${VIGIL_FLINK_BASE_PYTHON:-python3}"
    "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
        || die "$py is not Python 3.11: requirements.lock is compiled for 3.11 (set VIGIL_FLINK_BASE_PYTHON)"
    [[ -x "$VENV/bin/python" ]] || { say "creating $VENV"; "$py" -m venv "$VENV"; }
    say "installing the locked PyFlink set into $VENV (first time: ~400 MB, a few minutes) ..."
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$LOCK"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$REPO"
    "$VENV/bin/python" -m pip check >&2 || die "pip check failed in $VENV"
    echo "$sum" >"$VENV_STAMP"
    say "venv ready: $VENV (apache-flink $("$VENV/bin/python" -c 'import pyflink.version as v; print(v.__version__)'))"
}

# Recompile the lock from requirements.in + pyproject.toml (dependencies and the kafka extra), with uv from
# a throwaway venv. The header above uv's own is kept.
cmd_lock() {
    local tmp
    tmp="$(mktemp -d)"
    python3 -m venv "$tmp/uv" && "$tmp/uv/bin/pip" install --quiet uv
    (cd "$REPO" && "$tmp/uv/bin/uv" pip compile --quiet deploy/flink/requirements.in pyproject.toml --extra kafka \
        --generate-hashes --python-version 3.11 --custom-compile-command './deploy/flink/flink.sh lock' \
        -o "$tmp/out.txt")
    { sed -n '/^# This file was autogenerated/q;p' "$LOCK"; cat "$tmp/out.txt"; } >"$tmp/lock"
    mv "$tmp/lock" "$LOCK"
    rm -rf "$tmp"
    say "wrote $LOCK ($(grep -c '^[a-z]' "$LOCK") packages); run \`flink.sh venv\` to install it"
}

cmd_jars() {
    local pom_sum
    pom_sum="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
    if [[ -f "$LIBS_STAMP" && "$(cat "$LIBS_STAMP")" == "$pom_sum" ]]; then return 0; fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: apt-get install maven)"
    say "resolving the Flink Kafka connector with Maven into $LIBS ..."
    rm -rf "$LIBS"
    local args=(-q -B -f "$HERE/pom.xml" dependency:copy-dependencies)
    if ! mvn -o "${args[@]}" >/dev/null 2>&1; then
        local out
        out="$(mktemp)"
        if ! mvn "${args[@]}" >"$out" 2>&1; then
            cat "$out" >&2; rm -f "$out"
            die "Maven could not resolve the connector jar"
        fi
        rm -f "$out"
    fi
    connector_jar >/dev/null || die "Maven ran but no $CONNECTOR_JAR_GLOB in $LIBS"
    echo "$pom_sum" >"$LIBS_STAMP"
}

connector_jar() {
    local j
    for j in "$LIBS"/$CONNECTOR_JAR_GLOB; do [[ -f "$j" ]] && { echo "$j"; return 0; }; done
    return 1
}

# ---------------------------------------------------------------------------------------------
# processes

# The mark ("ROLE" or "*" for any role) in /proc/PID/environ? (Read whole: a `| grep -q` would SIGPIPE under pipefail.)
has_mark() {
    local pid="$1" role="$2" env
    env="$( { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null)" || return 1
    if [[ "$role" == "*" ]]; then
        [[ $'\n'"$env" == *$'\n'"$MARK_VAR=$MARK_ID:"* ]]
    else
        [[ $'\n'"$env"$'\n' == *$'\n'"$MARK_VAR=$MARK_ID:$role"$'\n'* ]]
    fi
}

# pids of live processes carrying this cluster's mark for ROLE (jm, tm1, tm2, ...; "*" = any role)
marked_pids() {
    local role="$1" d pid
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        has_mark "$pid" "$role" && echo "$pid"
    done
    return 0
}

# The pid from ROLE's pid file, if that process is alive and really is ours (its environment carries the mark).
role_pid() {
    local role="$1" pid
    [[ -f "$PID_DIR/$role.pid" ]] || return 1
    pid="$(cat "$PID_DIR/$role.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    has_mark "$pid" "$role" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# GET a REST path; prints the body. Plain python3 (no curl, no venv needed).
rest_get() {
    python3 - "$REST_URL$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        sys.stdout.write(r.read().decode())
except Exception:
    sys.exit(1)
PY
}

# Registered TaskManagers according to the JobManager (REST /overview), or nothing if it does not answer.
registered_tms() {
    rest_get /overview 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["taskmanagers"])' 2>/dev/null
}

check_java() {
    command -v java >/dev/null || [[ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]] \
        || die "java not found: Flink 2.2 needs Java 11+ (17 here; Debian: apt-get install openjdk-17-jre-headless)"
}

# Start ROLE (jm | tmN) in its own session; the scripts exec down to the JVM, so $! is the JVM's pid.
start_role() {
    local role="$1" script ident fh
    fh="$(flink_home)"
    case "$role" in
        jm) script=jobmanager.sh ;;
        tm*) script=taskmanager.sh ;;
        *) die "unknown role $role" ;;
    esac
    ident="vigil-$role"
    mkdir -p "$LOG_DIR" "$PID_DIR/flink"
    echo "===== $(date -u +%FT%TZ) flink.sh: starting $role =====" >>"$LOG_DIR/$role.console"
    # FLINK_*_DIR: the generated config, lib, logs and Flink's own pid files live under the data dir, not in the wheel.
    # STD_REDIRECT_TO_FILE: the JVM's stdout/stderr go to log/flink-vigil-ROLE-*.out/.err, not the console.
    # PYTHONPATH: thread mode embeds CPython in the TaskManager JVM (PEMJA), which does not see the venv's
    # site-packages by itself, nor runs its .pth files (an editable Vigil's source dir is added from them).  9>&-: the JVM must not inherit (and so hold) the lock.
    # shellcheck disable=SC2094
    env "$MARK_VAR=$MARK_ID:$role" \
        FLINK_CONF_DIR="$CONF_DIR" FLINK_LIB_DIR="$LIB_DIR" FLINK_LOG_DIR="$LOG_DIR" FLINK_PID_DIR="$PID_DIR/flink" \
        FLINK_IDENT_STRING="$ident" STD_REDIRECT_TO_FILE=true \
        PYTHONPATH="$(python_path)${PYTHONPATH:+:$PYTHONPATH}" \
        setsid nohup "$fh/bin/$script" start-foreground >>"$LOG_DIR/$role.console" 2>&1 </dev/null 9>&- &
    echo "$!" >"$PID_DIR/$role.pid"
    say "started $role pid $! (log: $LOG_DIR/flink-$ident-*.log)"
}

site_packages() { local d; for d in "$VENV"/lib/python3*/site-packages; do echo "$d"; return; done; }

# site-packages, then the directories its editable installs' .pth files name (`pip install -e` of Vigil).
python_path() {
    local sp out line
    sp="$(site_packages)"
    out="$sp"
    for f in "$sp"/__editable__*.pth; do
        [[ -f "$f" ]] || continue
        while IFS= read -r line; do [[ -d "$line" ]] && out="$out:$line"; done <"$f"
    done
    echo "$out"
}

# SIGTERM the given pids, wait up to STOP_TIMEOUT, then SIGKILL the survivors.
stop_pids() {
    local pids=("$@") pid alive deadline
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while ((SECONDS < deadline)); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.2
    done
    say "still alive after ${STOP_TIMEOUT}s: SIGKILL ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
}

tm_roles_started() {
    local f
    for f in "$PID_DIR"/tm*.pid; do [[ -f "$f" ]] && basename "$f" .pid; done
}

running_tms() {
    local role n=0
    for role in $(tm_roles_started); do role_pid "$role" >/dev/null && n=$((n + 1)); done
    echo "$n"
}

# Wait until the JobManager lists WANT TaskManagers (or more), failing fast when one of ours dies.
wait_registered() {
    local want="$1" t0="$2" deadline=$((SECONDS + START_TIMEOUT)) role n
    while ((SECONDS < deadline)); do
        role_pid jm >/dev/null || { tail -n 40 "$LOG_DIR"/flink-vigil-jm-*.log >&2 2>/dev/null || true
            die "the JobManager exited during start-up (see $LOG_DIR)"; }
        for role in $(tm_roles_started); do
            role_pid "$role" >/dev/null || { tail -n 40 "$LOG_DIR"/flink-vigil-"$role"-*.log >&2 2>/dev/null || true
                die "TaskManager $role exited during start-up (see $LOG_DIR)"; }
        done
        n="$(registered_tms || true)"
        if [[ -n "$n" ]] && ((n >= want)); then
            say "up at $REST_URL: $n TaskManagers x $SLOTS slots in $((SECONDS - t0))s"
            return 0
        fi
        sleep 0.3
    done
    die "only ${n:-0} of $want TaskManagers registered after ${START_TIMEOUT}s (processes left running; see $LOG_DIR)"
}

# ---------------------------------------------------------------------------------------------
# config

write_config() {
    local fh java_opts_all
    fh="$(flink_home)"
    mkdir -p "$CONF_DIR" "$DATA/checkpoints" "$DATA/savepoints" "$DATA/tmp" "$DATA/work" "$DATA/web"
    # lib: the wheel's lib/ plus opt/flink-python, so that the Python runtime (and PEMJA's native library, for thread
    # mode) is loaded once per JVM by the parent class loader. Loaded per job from opt/ (the default), the second
    # thread-mode job on a TaskManager fails: PEMJA cannot load its native library into a second class loader
    # on Java 17 ("NoSuchFieldException: loadedLibraryNames").
    rm -rf "$LIB_DIR"
    mkdir -p "$LIB_DIR"
    ln -s "$fh"/lib/*.jar "$fh"/opt/flink-python-*.jar "$LIB_DIR"/
    # logging: the distribution's log4j files as they are (file appenders under FLINK_LOG_DIR)
    cp -f "$fh"/conf/log4j*.properties "$fh"/conf/logback*.xml "$CONF_DIR"/
    # the distribution's JVM flags (Java 17 module opens that Flink needs) + ours
    java_opts_all="$(sed -n 's/^ *all: \(--add-exports.*\)$/\1/p' "$fh/conf/config.yaml")"
    [[ -n "$java_opts_all" ]] || die "could not read env.java.opts.all from $fh/conf/config.yaml"
    cat >"$CONF_DIR/config.yaml" <<EOF
# Written by deploy/flink/flink.sh on every 'up'; edits here are overwritten.
# Flink 2.x reads only config.yaml (standard YAML; flat keys are accepted) from FLINK_CONF_DIR.
env.java.opts.all: $java_opts_all ${VIGIL_FLINK_JAVA_OPTS:-}

# everything on loopback, fixed JobManager ports, any free port for the rest
jobmanager.bind-host: $HOST
jobmanager.rpc.address: $HOST
jobmanager.rpc.port: $RPC_PORT
blob.server.port: "$BLOB_PORT"
rest.address: $HOST
rest.bind-address: $HOST
rest.port: $REST_PORT
taskmanager.bind-host: $HOST
taskmanager.host: $HOST

# small: a 2-core box shared with other work
jobmanager.memory.process.size: $JM_MEMORY
taskmanager.memory.process.size: $TM_MEMORY
taskmanager.numberOfTaskSlots: $SLOTS
# spread a job's slots over the TaskManagers (so a TaskManager crash hits part of the job, as in production)
taskmanager.load-balance.mode: SLOTS
parallelism.default: 2
jobmanager.execution.failover-strategy: region
# a killed TaskManager is noticed by failed RPCs within seconds; the timeout is the slow path
heartbeat.timeout: 20000

# state: the backend is a cluster default that a job may override; checkpoints and savepoints under the data dir
state.backend.type: $STATE_BACKEND
execution.checkpointing.dir: file://$DATA/checkpoints
execution.checkpointing.savepoint-dir: file://$DATA/savepoints
execution.checkpointing.num-retained: 2
execution.checkpointing.externalized-checkpoint-retention: RETAIN_ON_CANCELLATION
io.tmp.dirs: $DATA/tmp
process.working-dir: $DATA/work
web.tmpdir: $DATA/web
web.upload.dir: $DATA/web

# Python: the workers (process mode) and the embedded interpreter (thread mode) use .venv-flink,
# and so does \`flink run -py\`'s client (it runs the job script to build the job graph)
python.executable: $VENV/bin/python
python.client.executable: $VENV/bin/python
# the job jar shipped by \`flink run -py\` holds PEMJA too: load it from lib/ (see above), never child-first
classloader.parent-first-patterns.additional: pemja.
EOF
}

# ---------------------------------------------------------------------------------------------
# subcommands

cmd_up() {
    local t0=$SECONDS pid role i
    check_java
    cmd_venv
    cmd_jars
    if role_pid jm >/dev/null; then
        say "JobManager already running (pid $(role_pid jm))"
    else
        rm -f "$PID_DIR/jm.pid"
        if port_open "$REST_PORT"; then die "REST port $REST_PORT is taken by another program (set VIGIL_FLINK_REST_PORT)"; fi
        if port_open "$RPC_PORT"; then die "RPC port $RPC_PORT is taken by another program (set VIGIL_FLINK_RPC_PORT)"; fi
        write_config
        start_role jm
    fi
    for ((i = 1; i <= TASKMANAGERS; i++)); do
        role="tm$i"
        if pid="$(role_pid "$role")"; then continue; fi
        start_role "$role"
    done
    wait_registered "$(running_tms)" "$t0"
}

cmd_down() {
    local pids=() role pid
    for role in $(tm_roles_started) jm; do
        if pid="$(role_pid "$role")"; then pids+=("$pid"); fi
    done
    # plus anything else of ours still alive (a TaskManager's Python workers, a half-started JVM)
    for pid in $(marked_pids "*"); do
        [[ " ${pids[*]} " == *" $pid "* ]] || pids+=("$pid")
    done
    if ((${#pids[@]} == 0)); then
        rm -f "$PID_DIR"/*.pid
        say "not running"
        return 0
    fi
    say "stopping pids ${pids[*]}"
    stop_pids "${pids[@]}"
    rm -f "$PID_DIR"/*.pid
    say "stopped"
}

cmd_wipe() {
    cmd_down
    rm -rf "$DATA"
    say "wiped $DATA"
}

cmd_status() {
    local n want
    n="$(registered_tms || true)"
    want="$(running_tms 2>/dev/null || echo 0)"
    if [[ -z "$n" ]]; then
        if pid="$(role_pid jm)"; then say "JobManager pid $pid running but $REST_URL not answering"; else say "down"; fi
        return 1
    fi
    say "up at $REST_URL: $n TaskManagers registered, $want started here"
    rest_get /overview && echo
    ((n >= want))
}

cmd_tm_kill() {
    local n="${1:-}" pid extra
    [[ "$n" =~ ^[0-9]+$ ]] || die "usage: flink.sh tm-kill N"
    pid="$(role_pid "tm$n")" || die "TaskManager $n is not running"
    extra="$(marked_pids "tm$n" | grep -vx "$pid" | tr '\n' ' ' || true)"
    # shellcheck disable=SC2086
    kill -KILL "$pid" $extra 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    say "killed TaskManager $n (pid $pid${extra:+; its Python workers $extra})"
}

cmd_tm_start() {
    local n="${1:-}" t0=$SECONDS before
    role_pid jm >/dev/null || die "the JobManager is not running (flink.sh up)"
    if [[ -z "$n" ]]; then
        n=1
        while role_pid "tm$n" >/dev/null; do n=$((n + 1)); done
    fi
    [[ "$n" =~ ^[0-9]+$ ]] || die "usage: flink.sh tm-start [N]"
    role_pid "tm$n" >/dev/null && die "TaskManager $n is already running"
    # a TaskManager just killed may still be listed until the JobManager notices: wait for a new resource id
    before="$(rest_get /taskmanagers 2>/dev/null | python3 -c 'import json,sys; print(" ".join(t["id"] for t in json.load(sys.stdin)["taskmanagers"]))' 2>/dev/null || true)"
    start_role "tm$n"
    wait_new_tm "$before" "$t0" "$n"
}

# wait for a TaskManager whose resource id is not among KNOWN (space-separated ids), up to START_TIMEOUT
wait_new_tm() {
    local known="$1" t0="$2" n="$3" deadline=$((SECONDS + START_TIMEOUT)) pid
    while ((SECONDS < deadline)); do
        pid="$(role_pid "tm$n")" || die "TaskManager $n exited during start-up (see $LOG_DIR)"
        if rest_get /taskmanagers 2>/dev/null | python3 -c '
import json, sys
known = set(sys.argv[1].split())
sys.exit(0 if any(t["id"] not in known for t in json.load(sys.stdin)["taskmanagers"]) else 1)' "$known" 2>/dev/null; then
            say "TaskManager $n registered in $((SECONDS - t0))s (pid $pid)"
            return 0
        fi
        sleep 0.3
    done
    die "TaskManager $n did not register within ${START_TIMEOUT}s"
}

# `flink run` gets the Kafka connector as `-j` unless a jar is given: the Python client builds the job graph through
# Py4J and needs the connector's classes on ITS classpath; `pipeline.jars` in config.yaml does not put them there.
cmd_flink() {
    [[ -f "$CONF_DIR/config.yaml" ]] || die "no config yet: run flink.sh up first"
    local args=("$@") a has_jar=0
    for a in "${args[@]}"; do [[ "$a" == "-j" || "$a" == --jarfile* ]] && has_jar=1; done
    if [[ "${args[0]:-}" == "run" ]] && ((has_jar == 0)); then
        args=(run -j "$(connector_jar)" "${args[@]:1}")
    fi
    FLINK_CONF_DIR="$CONF_DIR" FLINK_LIB_DIR="$LIB_DIR" FLINK_LOG_DIR="$LOG_DIR" exec "$(flink_home)/bin/flink" "${args[@]}"
}

cmd_env() {
    echo "FLINK_HOME=$(flink_home || true)"
    echo "FLINK_CONF_DIR=$CONF_DIR"
    echo "FLINK_LIB_DIR=$LIB_DIR"
    echo "FLINK_LOG_DIR=$LOG_DIR"
    echo "VIGIL_FLINK_REST_URL=$REST_URL"
    echo "VIGIL_FLINK_PYTHON=$VENV/bin/python"
    echo "VIGIL_FLINK_CONNECTOR_JAR=$(connector_jar || true)"
    echo "VIGIL_FLINK_DATA=$DATA"
}

usage() {
    echo "usage: $0 {venv|lock|jars|up|down|wipe|status|tm-kill N|tm-start [N]|flink ARGS...|env}" >&2
    exit 2
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"; shift
    case "$cmd" in
        status) cmd_status; return ;;
        flink) cmd_flink "$@"; return ;;
        env) cmd_env; return ;;
        lock) cmd_lock; return ;;
        venv | jars | up | down | wipe | tm-kill | tm-start) ;;
        *) usage ;;
    esac
    mkdir -p "$DATA"
    # one state-changing command at a time (e.g. parallel pytest sessions calling `up`)
    exec 9>"$LOCK_FILE"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT + 600)) 9 || die "timed out waiting for $LOCK_FILE"
    "cmd_${cmd//-/_}" "$@"
}

main "$@"
