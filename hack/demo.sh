#!/usr/bin/env bash
# `make demo`: builds what is missing, with a progress line while that runs, then runs the demo
# (e2e/cmd/demo), which starts and stops everything itself.
#
#   SCENARIO   success (default) or fail
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${CANARYGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarygate}
mkdir -p "$CACHE"

# with_progress WHAT CMD...: runs CMD with its stdout discarded and shows how long it has been
# running: one line rewritten every second on a terminal, a line every 30 seconds otherwise.
with_progress() {
  local what=$1 start=$SECONDS rc=0 pid
  shift
  "$@" >/dev/null &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    local t=$((SECONDS - start))
    if [ -t 2 ]; then
      printf '\r... %s: %dm%02ds ' "$what" $((t / 60)) $((t % 60)) >&2
    elif [ $((t % 30)) -eq 0 ]; then
      printf '... %s: %dm%02ds\n' "$what" $((t / 60)) $((t % 60)) >&2
    fi
    sleep 1
  done
  wait "$pid" || rc=$?
  trap - INT TERM
  if [ -t 2 ]; then printf '\r\033[K' >&2; fi
  return $rc
}

echo "==> checking the tools (the first run builds Kubernetes, etcd and kwok from source: about 10 minutes on 2 cores)"
with_progress "Prometheus (Debian package)" bash hack/install-prometheus.sh
with_progress "Kubernetes, etcd and kwok binaries" bash hack/testbed-bins.sh
with_progress "compiling the demo and canarygate" go build -o "$CACHE/demo/" ./e2e/cmd/demo ./cmd/canarygate

CANARYGATE_BINARY="$CACHE/demo/canarygate" exec "$CACHE/demo/demo" --scenario="${SCENARIO:-success}"
