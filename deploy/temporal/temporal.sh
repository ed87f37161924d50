#!/usr/bin/env bash
# A real single-node Temporal server (go.temporal.io/server v1.32.1, SQLite persistence) on 127.0.0.1,
# built once with `go install` into a cache dir outside git (see deploy/go-build.sh).
#
#   temporal.sh build    build the server binary unless it is already there (10-20 min from cold)
#   temporal.sh up       build if missing, write the config, start, register the namespace, wait until healthy
#   temporal.sh down     stop (SIGTERM, then SIGKILL after VIGIL_TEMPORAL_STOP_TIMEOUT s); keeps the data
#   temporal.sh wipe     down, then delete the data dir (next `up` starts from an empty database)
#   temporal.sh status   exit 0 if the frontend's gRPC health says SERVING and the namespace exists, 1 if not
#
# Environment:
#   VIGIL_TEMPORAL_BIN            the server binary (default $VIGIL_CACHE/bin/temporal-server-v1.32.1,
#                                 VIGIL_CACHE defaulting to ${XDG_CACHE_HOME:-$HOME/.cache}/vigil)
#   VIGIL_TEMPORAL_PORT           frontend gRPC port (default 7233); the other services' ports are derived
#                                 from it with upstream's offsets: history +1, matching +2, worker +6,
#                                 frontend HTTP +10, membership ports -300/-299/-298/-294
#   VIGIL_TEMPORAL_HTTP_PORT      frontend HTTP API port (default VIGIL_TEMPORAL_PORT+10)
#   VIGIL_TEMPORAL_DATA           data dir: config, SQLite files, log, pid (default deploy/temporal/data)
#   VIGIL_TEMPORAL_NAMESPACE      namespace `up` registers (default "default")
#   VIGIL_TEMPORAL_EPHEMERAL      1: in-memory SQLite, nothing survives `down` (default 0: files in the data dir)
#   VIGIL_TEMPORAL_LOG_LEVEL      server log level (default info)
#   VIGIL_TEMPORAL_START_TIMEOUT  seconds `up` waits for health (default 60)
#   VIGIL_TEMPORAL_STOP_TIMEOUT   seconds `down` waits after SIGTERM before SIGKILL (default 30)
#   VIGIL_GOPATH, VIGIL_GOCACHE, VIGIL_GO_NICE   the build's Go caches and niceness (see deploy/go-build.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION=v1.32.1
MODULE=go.temporal.io/server
say() { echo "temporal: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=SCRIPTDIR/../go-build.sh
source "$HERE/../go-build.sh"

BIN="${VIGIL_TEMPORAL_BIN:-$VIGIL_BIN_DIR/temporal-server-$VERSION}"
DATA="${VIGIL_TEMPORAL_DATA:-$HERE/data}"
PID_FILE="$DATA/server.pid"
SERVER_LOG="$DATA/server.log"
CONFIG="$DATA/config.yaml"
DYNCONFIG="$DATA/dynamicconfig.yaml"
LOCK_FILE="$DATA/.lock"
HOST=127.0.0.1
PORT="${VIGIL_TEMPORAL_PORT:-7233}"
HTTP_PORT="${VIGIL_TEMPORAL_HTTP_PORT:-$((PORT + 10))}"
NAMESPACE="${VIGIL_TEMPORAL_NAMESPACE:-default}"
EPHEMERAL="${VIGIL_TEMPORAL_EPHEMERAL:-0}"
LOG_LEVEL="${VIGIL_TEMPORAL_LOG_LEVEL:-info}"
START_TIMEOUT="${VIGIL_TEMPORAL_START_TIMEOUT:-60}"
STOP_TIMEOUT="${VIGIL_TEMPORAL_STOP_TIMEOUT:-30}"

# ---------------------------------------------------------------------------------------------
# pid / health helpers

# The pid from the pid file, if that process is alive and really is our server (not a reused pid).
server_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config-file $CONFIG" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# grpc.health.v1.Health/Check for the WorkflowService over HTTP/2 with curl, no client library needed:
# the request is one length-prefixed HealthCheckRequest{service}, the answer SERVING is 00 00000002 0801.
grpc_serving() {
    local svc=temporal.api.workflowservice.v1.WorkflowService
    local len=${#svc} reply
    reply="$(
        { printf '%b' '\x00\x00\x00\x00' "\\x$(printf %02x $((len + 2)))" '\x0a' "\\x$(printf %02x "$len")"
          printf '%s' "$svc"; } |
            curl -sS --max-time 3 --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
                --data-binary @- "http://$HOST:$PORT/grpc.health.v1.Health/Check" 2>/dev/null | od -An -tx1 | tr -d ' \n'
    )" || return 1
    [[ "$reply" == "00000000020801" ]]
}

# HTTP status of ListWorkflowExecutions(namespace, page size 1) through the frontend's HTTP API (000 when
# nothing answers). Not DescribeNamespace: that reads the database, while workflow calls resolve the name
# through the frontend's namespace cache, which remembers a miss for 1 s, and RegisterNamespace's own
# "does it exist?" look-up is such a miss: a client that starts a workflow right after registration can
# be told "Namespace default is not found". This call goes through that cache, so 200 means usable.
namespace_http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        "http://$HOST:$HTTP_PORT/api/v1/namespaces/$NAMESPACE/workflows?pageSize=1" || true
}

register_namespace() {
    local code body
    body="{\"namespace\":\"$NAMESPACE\",\"workflowExecutionRetentionPeriod\":\"86400s\"}"
    code="$(curl -s -o "$DATA/register.out" -w '%{http_code}' --max-time 10 -H 'content-type: application/json' \
        --data "$body" "http://$HOST:$HTTP_PORT/api/v1/namespaces" || true)"
    case "$code" in
        200) say "registered namespace '$NAMESPACE'" ;;
        409) ;;  # already exists (a concurrent up, or a lagging describe)
        *) say "registering namespace '$NAMESPACE' answered HTTP $code: $(cat "$DATA/register.out" 2>/dev/null)"; return 1 ;;
    esac
}

# Healthy = the WorkflowService reports SERVING over gRPC AND workflows of the namespace can be listed.
healthy() {
    port_open "$PORT" || return 1
    grpc_serving || return 1
    [[ "$(namespace_http_status)" == 200 ]]
}

check_tools() {
    command -v curl >/dev/null || die "curl not found (Debian: apt-get install curl)"
    curl -V | grep -q HTTP2 || die "this curl has no HTTP/2, which the gRPC health check needs"
}

# ---------------------------------------------------------------------------------------------
# build / config

cmd_build() {
    go_build_once "$BIN" "Temporal server $VERSION" \
        go install -trimpath -ldflags='-s -w' "$MODULE/cmd/server@$VERSION"
}

sqlite_store() {
    # $1: database file name inside the data dir
    if [[ "$EPHEMERAL" == 1 ]]; then
        # no maxConnLifetime: an in-memory database dies with its last connection, so never recycle it
        cat <<EOF
      sql:
        pluginName: sqlite
        databaseName: "$1"
        connectAddr: localhost
        connectProtocol: tcp
        connectAttributes:
          mode: memory
          cache: private
        maxConns: 1
        maxIdleConns: 1
EOF
    else
        # setup: true creates the schema on first start and tolerates an existing one afterwards
        cat <<EOF
      sql:
        pluginName: sqlite
        databaseName: "$DATA/$1"
        connectAddr: localhost
        connectProtocol: tcp
        connectAttributes:
          cache: private
          setup: "true"
          journal_mode: wal
          synchronous: 2
        maxConns: 1
        maxIdleConns: 1
        maxConnLifetime: 1h
EOF
    fi
}

write_config() {
    local frontend_membership=$((PORT - 300))
    cat >"$CONFIG" <<EOF
# Written by deploy/temporal/temporal.sh on every 'up'; edits here are overwritten.
# Single node, all four services in one process, SQLite persistence, no metrics/pprof listeners, no UI.
log:
  stdout: true
  level: $LOG_LEVEL

persistence:
  defaultStore: sqlite-default
  visibilityStore: sqlite-visibility
  numHistoryShards: 1
  datastores:
    sqlite-default:
$(sqlite_store temporal.db)
    sqlite-visibility:
$(sqlite_store temporal-visibility.db)

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "$HOST"
  pprof:
    port: 0

services:
  frontend:
    rpc:
      grpcPort: $PORT
      membershipPort: $frontend_membership
      bindOnLocalHost: true
      httpPort: $HTTP_PORT
  history:
    rpc:
      grpcPort: $((PORT + 1))
      membershipPort: $((frontend_membership + 1))
      bindOnLocalHost: true
  matching:
    rpc:
      grpcPort: $((PORT + 2))
      membershipPort: $((frontend_membership + 2))
      bindOnLocalHost: true
  worker:
    rpc:
      grpcPort: $((PORT + 6))
      membershipPort: $((frontend_membership + 6))
      bindOnLocalHost: true

clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "$HOST:$PORT"
      httpAddress: "$HOST:$HTTP_PORT"

dcRedirectionPolicy:
  policy: noop

archival:
  history:
    state: disabled
  visibility:
    state: disabled

namespaceDefaults:
  archival:
    history:
      state: disabled
    visibility:
      state: disabled

publicClient:
  hostPort: "$HOST:$PORT"

dynamicConfigClient:
  filepath: "$DYNCONFIG"
  pollInterval: 10s
EOF
    cat >"$DYNCONFIG" <<EOF
# Written by deploy/temporal/temporal.sh on every 'up' (upstream's development-sql.yaml, trimmed).
limit.maxIDLength:
  - value: 255
    constraints: {}
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
    constraints: {}
component.nexusoperations.callback.endpoint.template:
  - value: http://$HOST:$HTTP_PORT/namespaces/{{.NamespaceName}}/nexus/callback
EOF
}

# ---------------------------------------------------------------------------------------------
# subcommands

cmd_up() {
    local t0=$SECONDS pid
    check_tools
    if pid="$(server_pid)"; then
        if healthy; then say "already up (pid $pid) at $HOST:$PORT, namespace '$NAMESPACE'"; return 0; fi
        say "server pid $pid is running but not healthy yet; waiting"
    else
        rm -f "$PID_FILE"
        if healthy; then
            say "a Temporal server not started by this script already answers at $HOST:$PORT; using it"
            return 0
        fi
        local p
        for p in "$PORT" "$HTTP_PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 6)); do
            port_open "$p" && die "port $p is taken by another program (set VIGIL_TEMPORAL_PORT)"
        done
        [[ -x "$BIN" ]] || { say "no server binary at $BIN yet: building it first"; cmd_build; }
        [[ -f "$SERVER_LOG" && $(stat -c %s "$SERVER_LOG") -gt 20000000 ]] && mv -f "$SERVER_LOG" "$SERVER_LOG.1"
        write_config
        echo "===== $(date -u +%FT%TZ) temporal.sh up: starting server on $HOST:$PORT =====" >>"$SERVER_LOG"
        # setsid + nohup: the server outlives this script, its make and its terminal;
        # 9>&-: it must not inherit (and so hold) the lock
        setsid nohup "$BIN" --config-file "$CONFIG" --allow-no-auth start \
            >>"$SERVER_LOG" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$PID_FILE"
        say "started server pid $pid (log: $SERVER_LOG)"
    fi
    local deadline=$((SECONDS + START_TIMEOUT)) registered=0
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 40 "$SERVER_LOG" >&2
            die "server exited during start-up (see $SERVER_LOG)"
        fi
        if port_open "$PORT" && grpc_serving; then
            case "$(namespace_http_status)" in
                200) say "up at $HOST:$PORT (pid $pid), namespace '$NAMESPACE', in $((SECONDS - t0))s"; return 0 ;;
                404) ((registered)) || { register_namespace && registered=1; } || true ;;
            esac
        fi
        sleep 0.2
    done
    tail -n 40 "$SERVER_LOG" >&2
    die "server not healthy after ${START_TIMEOUT}s (pid $pid left running; see $SERVER_LOG)"
}

cmd_down() {
    local pid
    if ! pid="$(server_pid)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping server pid $pid"
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
    rm -rf "$DATA"
    say "wiped $DATA"
}

cmd_status() {
    local pid=""
    pid="$(server_pid)" || true
    if healthy; then
        say "up at $HOST:$PORT${pid:+ (pid $pid)}, namespace '$NAMESPACE'"
        return 0
    fi
    if [[ -n "$pid" ]]; then say "pid $pid running but not healthy at $HOST:$PORT"; else say "down"; fi
    return 1
}

usage() { echo "usage: $0 {build|up|down|wipe|status}" >&2; exit 2; }

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        up | down | wipe) ;;
        build) cmd_build; return ;;
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
