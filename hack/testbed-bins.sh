#!/usr/bin/env bash
# Builds the pinned control-plane binaries from the Go module proxy into a cache outside the clone,
# keyed by version, so every clone on the machine reuses them. Prints the cache directory on stdout.
#
#   CANARYGATE_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/canarygate)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE=${CANARYGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarygate}

log() { echo "testbed-bins: $*" >&2; }
mkdir -p "$CACHE"
# One builder at a time per machine: clones started together wait instead of building twice.
exec 9>"$CACHE/.build.lock"
flock 9

k8s_dir=$CACHE/kubernetes-$K8S_VERSION
if [ ! -x "$k8s_dir/kube-apiserver" ] || [ ! -x "$k8s_dir/kube-controller-manager" ] || [ ! -x "$k8s_dir/kube-scheduler" ]; then
  log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (about 8 minutes cold on 2 cores)"
  work=$CACHE/src/kubernetes-$K8S_VERSION
  mkdir -p "$work"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  staging_version=v0${K8S_VERSION#v1}
  {
    echo "module canarygate.io/testbed-tools"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # kubernetes' go.mod points its staging modules at ./staging; outside its repo they come from the proxy.
    sed -n 's#^\s*\(k8s.io/[^ ]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  mkdir -p "$k8s_dir.tmp"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    (cd "$work" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$k8s_dir.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  rm -rf "$k8s_dir" && mv "$k8s_dir.tmp" "$k8s_dir"
fi

etcd_dir=$CACHE/etcd-$ETCD_VERSION
if [ ! -x "$etcd_dir/etcd" ]; then
  log "building etcd $ETCD_VERSION"
  work=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$work"
  cat >"$work/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  printf 'module canarygate.io/testbed-etcd\n\ngo 1.26\n' >"$work/go.mod"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1)
  mkdir -p "$etcd_dir.tmp"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$etcd_dir.tmp/etcd" .)
  rm -rf "$etcd_dir" && mv "$etcd_dir.tmp" "$etcd_dir"
fi

kwok_dir=$CACHE/kwok-$KWOK_VERSION
if [ ! -x "$kwok_dir/kwok" ]; then
  log "building kwok $KWOK_VERSION"
  mkdir -p "$kwok_dir.tmp"
  GOBIN=$kwok_dir.tmp go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  # kwok only moves nodes and pods through the stages it is given.
  for stage in node/fast node/heartbeat pod/fast; do
    mkdir -p "$kwok_dir.tmp/stages/$stage"
    cp "$src/kustomize/stage/$stage"/*.yaml "$kwok_dir.tmp/stages/$stage/"
  done
  chmod -R u+w "$kwok_dir.tmp"
  rm -f "$kwok_dir.tmp/stages"/*/*/kustomization.yaml
  rm -rf "$kwok_dir" && mv "$kwok_dir.tmp" "$kwok_dir"
fi

echo "$CACHE"
