# Sourced by deploy/temporal/temporal.sh and deploy/otelcol/otelcol.sh: where Go-built servers and their
# Go caches live (outside git), and one locked, atomic, niced `go` build step.
#
# Environment:
#   VIGIL_CACHE        root of everything below (default ${XDG_CACHE_HOME:-$HOME/.cache}/vigil)
#   VIGIL_GOPATH       GOPATH for these builds; modules land in $VIGIL_GOPATH/pkg/mod (default $VIGIL_CACHE/go)
#   VIGIL_GOCACHE      Go build cache for these builds (default $VIGIL_CACHE/go-build)
#   VIGIL_GO_NICE      nice level of the build (default 10: the machine is shared)
#   GOPROXY, GOTOOLCHAIN ...  passed through as usual
# shellcheck shell=bash

VIGIL_CACHE="${VIGIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil}"
# shellcheck disable=SC2034  # used by the scripts that source this file
VIGIL_BIN_DIR="$VIGIL_CACHE/bin"

# The Go environment of every build: a dedicated GOPATH/GOMODCACHE/GOCACHE under the cache, so a build is
# reproducible from a cold start, its size can be measured, and `rm -rf ~/.cache/vigil` forgets all of it.
go_env() {
    local gopath="${VIGIL_GOPATH:-$VIGIL_CACHE/go}"
    export GOPATH="$gopath"
    export GOMODCACHE="$gopath/pkg/mod"
    export GOCACHE="${VIGIL_GOCACHE:-$VIGIL_CACHE/go-build}"
    export CGO_ENABLED=0
    export GOFLAGS="-mod=mod -buildvcs=false"
    # the module cache is read-only by default, which makes `rm -rf` of the cache fail
    export GOFLAGS="$GOFLAGS -modcacherw"
}

check_go() {
    command -v go >/dev/null || die "go not found: install Go 1.26+ (https://go.dev/doc/install; Debian: golang-go may be too old)"
}

# go_build_once OUT DESC CMD...: unless OUT exists, run CMD (a command or a shell function; niced, in go_env)
# with GOBIN set to a fresh temp dir next to OUT; CMD must leave one executable there, which becomes OUT
# atomically (a half-built OUT never exists, so "OUT exists" means "built").
# A lock ($VIGIL_CACHE/locks/) makes a second concurrent build of OUT wait for the first and then skip.
go_build_once() {
    local out="$1" desc="$2"
    shift 2
    [[ -x "$out" ]] && { say "$desc already built: $out"; return 0; }
    mkdir -p "$(dirname "$out")"
    mkdir -p "$VIGIL_CACHE/locks"
    local lock
    lock="$VIGIL_CACHE/locks/$(basename "$out").lock"
    (
        exec 8>"$lock"
        flock -w 7200 8 || die "timed out waiting for $lock (another build of $desc?)"
        [[ -x "$out" ]] && { say "$desc already built (by a concurrent build): $out"; exit 0; }
        check_go
        go_env
        local tmp t0=$SECONDS
        tmp="$(mktemp -d "$out.tmp.XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        say "building $desc into $out (GOMODCACHE=$GOMODCACHE; this takes minutes from cold) ..."
        # niceness of this subshell, so CMD may be a shell function; everything it starts inherits it
        renice -n "${VIGIL_GO_NICE:-10}" -p "$BASHPID" >/dev/null 2>&1 || true
        GOBIN="$tmp" "$@" 8>&- || die "building $desc failed"
        local built
        built="$(find "$tmp" -maxdepth 1 -type f -perm -u+x | head -n 1)"
        [[ -n "$built" ]] || die "the build of $desc left no executable"
        mv -f "$built" "$out"
        say "built $desc in $((SECONDS - t0))s: $out ($(du -h "$out" | cut -f1))"
    )
}
