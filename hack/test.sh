#!/usr/bin/env bash
# The whole test suite `make test` runs after the generated-file check and lint: unit tests,
# integration tests on the local test bed (each package's TestMain starts a real control plane),
# end-to-end scenarios on the real binary, brief fuzzing, and a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prometheus is a Debian package; install it once so test packages do not race to apt-get it.
bash hack/install-prometheus.sh

# Two packages at a time: each integration package runs its own control plane on 2 cores.
go test -count=1 -p 2 -timeout 40m ./...

# Fuzz briefly from the committed seed corpus only. The fuzzer's own cache ($GOCACHE/fuzz) grows
# with every run on a machine, and replaying it before fuzzing starts once ate the whole time budget
# (Go then fails with "context deadline exceeded"), so each run gets a fresh, temporary cache.
# Minimising a new input of a 5 KB Deployment takes the fuzzer seconds, so it is capped: exploring
# finds more in a short run.
fuzz_cache=$(mktemp -d)
trap 'rm -rf "$fuzz_cache"' EXIT
fuzz() { # fuzz <target> <package> <duration>
	go test -run='^$' -fuzz="^$1\$" -fuzztime="$3" -fuzzminimizetime=100x "$2" \
		-args -test.fuzzcachedir="$fuzz_cache/$1"
}
# Both admission handlers.
fuzz FuzzMutate ./webhook 15s
fuzz FuzzValidate ./webhook 15s
# The fast canonical form and the trimmed template diff against their reference implementations:
# a mismatch would change revision hashes or patches.
fuzz FuzzCanonical ./revision 10s
fuzz FuzzTemplatePatch ./webhook 10s

# Benchmarks must not rot: run each once.
go test -run='^$' -bench=. -benchtime=1x ./webhook ./revision
# The load and scale benchmarks' tooling (bench/cmd/bench): a short admission load on a test bed.
go run ./bench/cmd/bench -smoke
