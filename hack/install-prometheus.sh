#!/usr/bin/env bash
# Installs Debian's prometheus package when no prometheus binary is on PATH, for the local test bed and CI.
# The test bed runs Prometheus as its own process with its own config; the packaged service is never started.
# Prints the path of the prometheus binary on stdout.
#
#   CANARYGATE_CACHE   directory for the lock file (default: ${XDG_CACHE_HOME:-$HOME/.cache}/canarygate)
set -euo pipefail

log() { echo "install-prometheus: $*" >&2; }

if bin=$(command -v prometheus); then
  echo "$bin"
  exit 0
fi

CACHE=${CANARYGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarygate}
mkdir -p "$CACHE"
# Test packages started together all find the binary missing; one installs, the others wait.
exec 9>"$CACHE/.prometheus-install.lock"
flock 9
if bin=$(command -v prometheus); then
  echo "$bin"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { log "prometheus is missing and installing it needs root (or sudo)"; exit 1; }
  sudo=(sudo -n)
fi

# Without a service manager the package's postinst would try (and fail) to start the daemon;
# policy-rc.d exiting 101 tells invoke-rc.d not to. Only a file created here is removed again.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  "${sudo[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

log "installing Debian package prometheus"
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
# The package may have started its daemon anyway (systemd hosts ignore policy-rc.d for enabled units);
# it listens on :9090 and would only compete for resources, so it is stopped when a service manager exists.
if [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now prometheus >&2 || true
fi

command -v prometheus || { log "prometheus still not on PATH after installing the package"; exit 1; }
