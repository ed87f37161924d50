#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) on 127.0.0.1,
# run from Apache's own jars, which Maven resolves into deploy/kafka/target/libs/ (see pom.xml).
#
#   kafka.sh up       resolve jars if missing, format storage if new, start, wait until healthy
#   kafka.sh down     stop (SIGTERM, then SIGKILL after VIGIL_KAFKA_STOP_TIMEOUT s); keeps the data
#   kafka.sh wipe     down, then delete the data dir (next `up` formats a fresh cluster)
#   kafka.sh status   exit 0 if the broker answers a metadata request, 1 if not
#
# Environment:
#   VIGIL_KAFKA_PORT             client listener port (default 9092)
#   VIGIL_KAFKA_CONTROLLER_PORT  KRaft controller listener port (default VIGIL_KAFKA_PORT+1)
#   VIGIL_KAFKA_DATA             data dir: logs, pid, config (default deploy/kafka/data)
#   VIGIL_KAFKA_START_TIMEOUT    seconds `up` waits for health (default 90)
#   VIGIL_KAFKA_STOP_TIMEOUT     seconds `down` waits after SIGTERM before SIGKILL (default 30)
#   VIGIL_KAFKA_HEAP             JVM heap (default 512m)
#   VIGIL_KAFKA_JAVA_OPTS        extra JVM options, appended
#   VIGIL_PYTHON                 python with confluent_kafka for the health check
#                                (default: the repo's .venv/bin/python when it has confluent_kafka)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LIBS="$HERE/target/libs"
LIBS_STAMP="$LIBS/.resolved"
DATA="${VIGIL_KAFKA_DATA:-$HERE/data}"
LOG_DIR="$DATA/kraft-logs"
PID_FILE="$DATA/broker.pid"
BROKER_LOG="$DATA/broker.log"
PROPS="$DATA/server.properties"
LOG4J="$DATA/log4j2.properties"
LOCK_FILE="$DATA/.lock"
HOST=127.0.0.1
PORT="${VIGIL_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${VIGIL_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
BOOTSTRAP="$HOST:$PORT"
START_TIMEOUT="${VIGIL_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${VIGIL_KAFKA_STOP_TIMEOUT:-30}"
HEAP="${VIGIL_KAFKA_HEAP:-512m}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

say() { echo "kafka: $*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# pid / health helpers

# The pid from the pid file, if that process is alive and really is our broker (not a reused pid).
broker_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

health_python() {
    if [[ -n "${VIGIL_PYTHON:-}" ]]; then echo "$VIGIL_PYTHON"; return 0; fi
    local py="$REPO/.venv/bin/python"
    if [[ -x "$py" ]] && "$py" -c 'import confluent_kafka' 2>/dev/null; then echo "$py"; return 0; fi
    return 1
}

# Healthy = the client port accepts connections AND a metadata request lists broker 1.
healthy() {
    port_open "$PORT" || return 1
    local py
    py="$(health_python)" || return 0  # no confluent_kafka: the open port is all we can check
    "$py" - "$BOOTSTRAP" 2>/dev/null <<'PY'
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": sys.argv[1], "socket.timeout.ms": 3000, "log_level": 0})
md = admin.list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
PY
}

# ---------------------------------------------------------------------------------------------
# jars

resolve_jars() {
    local pom_sum
    pom_sum="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
    if [[ -f "$LIBS_STAMP" && "$(cat "$LIBS_STAMP")" == "$pom_sum" ]]; then return 0; fi
    command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: apt-get install maven)"
    say "resolving Kafka jars with Maven into $LIBS ..."
    rm -rf "$LIBS"
    local args=(-q -B -f "$HERE/pom.xml" dependency:copy-dependencies)
    # offline first (the local ~/.m2 may already hold everything), then online
    if ! mvn -o "${args[@]}" >/dev/null 2>&1; then
        local out
        out="$(mktemp)"
        if ! mvn "${args[@]}" >"$out" 2>&1; then
            cat "$out" >&2; rm -f "$out"
            die "Maven could not resolve the Kafka jars"
        fi
        rm -f "$out"
    fi
    ls "$LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven ran but no kafka_2.13 jar in $LIBS"
    echo "$pom_sum" >"$LIBS_STAMP"
}

check_java() {
    command -v "$JAVA" >/dev/null || die "java not found: Kafka 4.x needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
}

# ---------------------------------------------------------------------------------------------
# config

write_config() {
    cat >"$PROPS" <<EOF
# Written by deploy/kafka/kafka.sh on every 'up'; edits here are overwritten.
# KRaft, combined broker + controller, one node, static controller quorum.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$LOG_DIR

# one node: every internal topic has one replica
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

# test-friendly defaults
num.partitions=3
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
log.segment.bytes=8388608
log.retention.hours=24
log.retention.check.interval.ms=60000
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
# after a SIGKILL the old registration blocks the new one until its session expires (default 9 s)
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=2
background.threads=4
EOF
    cat >"$LOG4J" <<'EOF'
# Written by deploy/kafka/kafka.sh: everything to stdout, which kafka.sh sends to broker.log.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
}

java_opts() {
    # Quick JVM start on 2 cores: serial GC, C1 only, no JMX port.
    echo "-Xms128m -Xmx$HEAP -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k"
    echo "-Djava.awt.headless=true -Dlog4j2.configurationFile=file:$LOG4J"
    echo "${VIGIL_KAFKA_JAVA_OPTS:-}"
}

format_storage() {
    [[ -f "$LOG_DIR/meta.properties" ]] && return 0
    local cluster_id
    # 16 random bytes as URL-safe base64 without padding: a Kafka cluster id
    cluster_id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    say "formatting new KRaft storage in $LOG_DIR (cluster id $cluster_id)"
    # shellcheck disable=SC2046
    "$JAVA" $(java_opts) -cp "$LIBS/*" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$PROPS" --ignore-formatted >>"$BROKER_LOG" 2>&1 \
        || { tail -n 30 "$BROKER_LOG" >&2; die "storage format failed (see $BROKER_LOG)"; }
}

# ---------------------------------------------------------------------------------------------
# subcommands

cmd_up() {
    local t0=$SECONDS pid
    if pid="$(broker_pid)"; then
        if healthy; then say "already up (pid $pid) at $BOOTSTRAP"; return 0; fi
        say "broker pid $pid is running but not answering yet; waiting"
    else
        rm -f "$PID_FILE"
        if healthy; then
            say "a Kafka broker not started by this script already answers at $BOOTSTRAP; using it"
            return 0
        fi
        if port_open "$PORT"; then die "port $PORT is taken by another program (set VIGIL_KAFKA_PORT)"; fi
        if port_open "$CONTROLLER_PORT"; then
            die "controller port $CONTROLLER_PORT is taken (set VIGIL_KAFKA_CONTROLLER_PORT)"
        fi
        check_java
        resolve_jars
        mkdir -p "$LOG_DIR"
        # keep the log from growing without bound across many up/down cycles
        if [[ -f "$BROKER_LOG" && $(stat -c %s "$BROKER_LOG") -gt 20000000 ]]; then
            mv -f "$BROKER_LOG" "$BROKER_LOG.1"
        fi
        write_config
        format_storage
        echo "===== $(date -u +%FT%TZ) kafka.sh up: starting broker on $BOOTSTRAP =====" >>"$BROKER_LOG"
        # setsid + nohup: the broker outlives this script, its make and its terminal;
        # 9>&-: it must not inherit (and so hold) the lock
        # shellcheck disable=SC2046
        setsid nohup "$JAVA" $(java_opts) -cp "$LIBS/*" kafka.Kafka "$PROPS" \
            >>"$BROKER_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$PID_FILE"
        say "started broker pid $pid (log: $BROKER_LOG)"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 40 "$BROKER_LOG" >&2
            die "broker exited during start-up (see $BROKER_LOG)"
        fi
        if healthy; then say "up at $BOOTSTRAP (pid $pid) in $((SECONDS - t0))s"; return 0; fi
        sleep 0.3
    done
    tail -n 40 "$BROKER_LOG" >&2
    die "broker not healthy after ${START_TIMEOUT}s (pid $pid left running; see $BROKER_LOG)"
}

cmd_down() {
    local pid
    if ! pid="$(broker_pid)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping broker pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        say "still alive after ${STOP_TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    say "stopped"
}

cmd_wipe() {
    cmd_down
    # the lock file lives in DATA, which is about to go: remove it while holding the lock
    rm -rf "$DATA"
    say "wiped $DATA"
}

cmd_status() {
    local pid=""
    pid="$(broker_pid)" || true
    if healthy; then
        say "up at $BOOTSTRAP${pid:+ (pid $pid)}"
        return 0
    fi
    if [[ -n "$pid" ]]; then say "pid $pid running but not answering at $BOOTSTRAP"; else say "down"; fi
    return 1
}

usage() { echo "usage: $0 {up|down|wipe|status}" >&2; exit 2; }

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        up | down | wipe) ;;
        status) cmd_status; return ;;
        *) usage ;;
    esac
    mkdir -p "$DATA"
    # one up/down/wipe at a time (e.g. parallel pytest sessions calling `up`)
    exec 9>"$LOCK_FILE"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT + 30)) 9 || die "timed out waiting for $LOCK_FILE"
    "cmd_$1"
}

main "$@"
