#!/usr/bin/env bash
# Vigil's OpenTelemetry Collector (core v0.165.0 + contrib Kafka exporter/receiver v0.165.1) on 127.0.0.1:
# OTLP in (HTTP and gRPC), Kafka out (otlp_proto). Built once by the Collector Builder into a cache dir
# outside git (see deploy/go-build.sh and builder-config.yaml).
#
#   otelcol.sh build    build the builder, then the collector, unless already there (5-15 min from cold)
#   otelcol.sh up       build if missing, write the config, start, wait until the OTLP receivers answer
#   otelcol.sh down     stop (SIGTERM, then SIGKILL after VIGIL_OTELCOL_STOP_TIMEOUT s)
#   otelcol.sh status   exit 0 if the collector's OTLP/HTTP receiver answers, 1 if not
#
# The collector starts whether or not Kafka is up; its exporter queues and retries (up to 5 min per batch).
#
# Environment:
#   VIGIL_OTELCOL_BIN             the collector binary (default $VIGIL_CACHE/bin/otelcol-vigil-v0.165.0,
#                                 VIGIL_CACHE defaulting to ${XDG_CACHE_HOME:-$HOME/.cache}/vigil)
#   VIGIL_OTELCOL_HTTP_PORT       OTLP/HTTP port (default 4318)
#   VIGIL_OTELCOL_GRPC_PORT       OTLP/gRPC port (default 4317)
#   VIGIL_KAFKA_BOOTSTRAP         Kafka bootstrap servers, comma separated (default 127.0.0.1:9092)
#   VIGIL_OTELCOL_TRACES_TOPIC    topic for spans (default otlp_spans)
#   VIGIL_OTELCOL_METRICS_TOPIC   topic for metrics (default otlp_metrics)
#   VIGIL_OTELCOL_LOGS_TOPIC      topic for logs (default otlp_logs)
#   VIGIL_OTELCOL_DATA            data dir: config, log, pid (default deploy/otelcol/data)
#   VIGIL_OTELCOL_LOG_LEVEL       collector log level (default info)
#   VIGIL_OTELCOL_START_TIMEOUT   seconds `up` waits for health (default 30)
#   VIGIL_OTELCOL_STOP_TIMEOUT    seconds `down` waits after SIGTERM before SIGKILL (default 20)
#   VIGIL_GOPATH, VIGIL_GOCACHE, VIGIL_GO_NICE   the build's Go caches and niceness (see deploy/go-build.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION=v0.165.0
say() { echo "otelcol: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=SCRIPTDIR/../go-build.sh
source "$HERE/../go-build.sh"

BIN="${VIGIL_OTELCOL_BIN:-$VIGIL_BIN_DIR/otelcol-vigil-$VERSION}"
OCB="$VIGIL_BIN_DIR/ocb-$VERSION"
BUILDER_CONFIG="$HERE/builder-config.yaml"
DATA="${VIGIL_OTELCOL_DATA:-$HERE/data}"
PID_FILE="$DATA/otelcol.pid"
OTELCOL_LOG="$DATA/otelcol.log"
CONFIG="$DATA/config.yaml"
LOCK_FILE="$DATA/.lock"
HOST=127.0.0.1
HTTP_PORT="${VIGIL_OTELCOL_HTTP_PORT:-4318}"
GRPC_PORT="${VIGIL_OTELCOL_GRPC_PORT:-4317}"
BOOTSTRAP="${VIGIL_KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
TRACES_TOPIC="${VIGIL_OTELCOL_TRACES_TOPIC:-otlp_spans}"
METRICS_TOPIC="${VIGIL_OTELCOL_METRICS_TOPIC:-otlp_metrics}"
LOGS_TOPIC="${VIGIL_OTELCOL_LOGS_TOPIC:-otlp_logs}"
LOG_LEVEL="${VIGIL_OTELCOL_LOG_LEVEL:-info}"
START_TIMEOUT="${VIGIL_OTELCOL_START_TIMEOUT:-30}"
STOP_TIMEOUT="${VIGIL_OTELCOL_STOP_TIMEOUT:-20}"

# ---------------------------------------------------------------------------------------------
# pid / health helpers

# The pid from the pid file, if that process is alive and really is our collector (not a reused pid).
otelcol_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config=$CONFIG" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Healthy = both receiver ports accept connections AND the OTLP/HTTP receiver answers a GET of its traces
# path with 405 (it takes POST only): a real answer from the receiver that sends nothing down the pipeline.
healthy() {
    port_open "$HTTP_PORT" && port_open "$GRPC_PORT" || return 1
    [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$HOST:$HTTP_PORT/v1/traces" || true)" == 405 ]]
}

# ---------------------------------------------------------------------------------------------
# build

# Runs in go_build_once's subshell: GOBIN is where the finished collector must land.
build_collector() {
    local work="$VIGIL_CACHE/otelcol-build-$VERSION"
    rm -rf "$work"
    mkdir -p "$work"
    cd "$work"
    "$OCB" --config="$BUILDER_CONFIG" >"$work/ocb.log" 2>&1 || { tail -n 40 "$work/ocb.log" >&2; return 1; }
    install -m 0755 "$work/src/otelcol-vigil" "$GOBIN/otelcol-vigil"
    # the generated sources are small, but the build dir also keeps nothing we need: drop it
    cd / && rm -rf "$work"
}

cmd_build() {
    go_build_once "$OCB" "OpenTelemetry Collector Builder $VERSION" \
        go install -trimpath -ldflags='-s -w' "go.opentelemetry.io/collector/cmd/builder@$VERSION"
    go_build_once "$BIN" "OpenTelemetry Collector (otelcol-vigil $VERSION)" build_collector
}

# ---------------------------------------------------------------------------------------------
# config

write_config() {
    local brokers="" b
    IFS=',' read -ra parts <<<"$BOOTSTRAP"
    for b in "${parts[@]}"; do brokers+="${brokers:+, }\"$b\""; done
    cat >"$CONFIG" <<EOF
# Written by deploy/otelcol/otelcol.sh on every 'up'; edits here are overwritten.
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "$HOST:$GRPC_PORT"
      http:
        endpoint: "$HOST:$HTTP_PORT"

processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 512
    spike_limit_mib: 128
  batch:
    timeout: 200ms
    send_batch_size: 8192

exporters:
  kafka:
    brokers: [$brokers]
    client_id: vigil-otelcol
    timeout: 5s
    traces:
      topic: "$TRACES_TOPIC"
      encoding: otlp_proto
    metrics:
      topic: "$METRICS_TOPIC"
      encoding: otlp_proto
    logs:
      topic: "$LOGS_TOPIC"
      encoding: otlp_proto
    producer:
      required_acks: -1
      allow_auto_topic_creation: true
  debug:
    verbosity: basic

service:
  telemetry:
    logs:
      level: $LOG_LEVEL
    # no internal metrics listener (it would default to :8888 and collide between instances)
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [kafka]
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [kafka]
    logs:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [kafka]
EOF
}

# ---------------------------------------------------------------------------------------------
# subcommands

cmd_up() {
    local t0=$SECONDS pid
    command -v curl >/dev/null || die "curl not found (Debian: apt-get install curl)"
    if pid="$(otelcol_pid)"; then
        if healthy; then say "already up (pid $pid): OTLP http $HOST:$HTTP_PORT grpc $HOST:$GRPC_PORT"; return 0; fi
        say "collector pid $pid is running but not answering yet; waiting"
    else
        rm -f "$PID_FILE"
        if healthy; then
            say "a collector not started by this script already answers at $HOST:$HTTP_PORT; using it"
            return 0
        fi
        port_open "$HTTP_PORT" && die "port $HTTP_PORT is taken by another program (set VIGIL_OTELCOL_HTTP_PORT)"
        port_open "$GRPC_PORT" && die "port $GRPC_PORT is taken by another program (set VIGIL_OTELCOL_GRPC_PORT)"
        [[ -x "$BIN" ]] || { say "no collector binary at $BIN yet: building it first"; cmd_build; }
        [[ -f "$OTELCOL_LOG" && $(stat -c %s "$OTELCOL_LOG") -gt 20000000 ]] && mv -f "$OTELCOL_LOG" "$OTELCOL_LOG.1"
        write_config
        "$BIN" validate --config="$CONFIG" >>"$OTELCOL_LOG" 2>&1 \
            || { tail -n 20 "$OTELCOL_LOG" >&2; die "the collector rejects $CONFIG"; }
        echo "===== $(date -u +%FT%TZ) otelcol.sh up: OTLP $HOST:$HTTP_PORT/$GRPC_PORT -> Kafka $BOOTSTRAP =====" \
            >>"$OTELCOL_LOG"
        # setsid + nohup: the collector outlives this script, its make and its terminal;
        # 9>&-: it must not inherit (and so hold) the lock
        setsid nohup "$BIN" --config="$CONFIG" >>"$OTELCOL_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$PID_FILE"
        say "started collector pid $pid (log: $OTELCOL_LOG)"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 40 "$OTELCOL_LOG" >&2
            die "collector exited during start-up (see $OTELCOL_LOG)"
        fi
        if healthy; then
            say "up (pid $pid) in $((SECONDS - t0))s: OTLP http $HOST:$HTTP_PORT grpc $HOST:$GRPC_PORT -> Kafka $BOOTSTRAP"
            return 0
        fi
        sleep 0.2
    done
    tail -n 40 "$OTELCOL_LOG" >&2
    die "collector not healthy after ${START_TIMEOUT}s (pid $pid left running; see $OTELCOL_LOG)"
}

cmd_down() {
    local pid
    if ! pid="$(otelcol_pid)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping collector pid $pid"
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

cmd_status() {
    local pid=""
    pid="$(otelcol_pid)" || true
    if healthy; then
        say "up at $HOST:$HTTP_PORT (http) $HOST:$GRPC_PORT (grpc)${pid:+ (pid $pid)}"
        return 0
    fi
    if [[ -n "$pid" ]]; then say "pid $pid running but not answering at $HOST:$HTTP_PORT"; else say "down"; fi
    return 1
}

usage() { echo "usage: $0 {build|up|down|status}" >&2; exit 2; }

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        up | down) ;;
        build) cmd_build; return ;;
        status) cmd_status; return ;;
        *) usage ;;
    esac
    mkdir -p "$DATA"
    exec 9>"$LOCK_FILE"
    flock -w $((START_TIMEOUT + STOP_TIMEOUT + 30)) 9 || die "timed out waiting for $LOCK_FILE"
    "cmd_$1"
}

main "$@"
