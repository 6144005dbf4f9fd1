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

# Fuzz both admission handlers briefly from the committed seed corpus. Minimising a new input of a
# 5 KB Deployment takes the fuzzer seconds, so it is capped: exploring finds more in a short run.
go test -run='^$' -fuzz='^FuzzMutate$' -fuzztime=15s -fuzzminimizetime=100x ./webhook
go test -run='^$' -fuzz='^FuzzValidate$' -fuzztime=15s -fuzzminimizetime=100x ./webhook
# The fast canonical form and the trimmed template diff against their reference implementations:
# a mismatch would change revision hashes or patches.
go test -run='^$' -fuzz='^FuzzCanonical$' -fuzztime=10s -fuzzminimizetime=100x ./revision
go test -run='^$' -fuzz='^FuzzTemplatePatch$' -fuzztime=10s -fuzzminimizetime=100x ./webhook

# Benchmarks must not rot: run each once.
go test -run='^$' -bench=. -benchtime=1x ./webhook ./revision
# The load and scale benchmarks' tooling (bench/cmd/bench): a short admission load on a test bed.
go run ./bench/cmd/bench -smoke
