#!/usr/bin/env bash
# `make bench`: runs canarygate's benchmarks (bench/cmd/bench) and regenerates BENCHMARKS.md.
# Knobs (environment):
#   BENCH_STAGES      gobench,admission,scale,idle (default: all)
#   BENCH_COUNT       runs of each Go benchmark (default 6; the report gives medians)
#   BENCH_RATES       admission load rates in req/s (default "500 2000")
#   BENCH_DURATION    admission load per rate, server and run (default 10s)
#   BENCH_REPEATS     admission runs per rate and server, alternating (default 3)
#   BENCH_SCALE_N     canary counts of the rollout experiment (default "10 100"; 200 and 1000 take long)
#   BENCH_IDLE_N      managed Deployments of the idle experiment (default 10000)
#   BENCH_IDLE_WINDOW idle measurement window (default 1m)
#   BENCH_CANARYGATE_QPS canarygate's --kube-api-qps for the scale and idle runs (default: its own default)
#   BENCH_RESULTS     where each stage's JSON results are kept (default $CANARYGATE_CACHE/bench-results);
#                     stages not re-run keep their last results in the report.
# With the defaults it takes about 25-30 minutes on 2 cores: Go benchmarks 1, admission 5, scale
# (N = 10, 100) 5, idle 10-12 (creating 10,000 Deployments and waiting for their Canaries).
# BENCH_SCALE_N="10 100 200" adds about 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CANARYGATE_CACHE="${CANARYGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canarygate}"

bash hack/install-prometheus.sh >/dev/null
go build -o "${CANARYGATE_CACHE}/bench" ./bench/cmd/bench
exec "${CANARYGATE_CACHE}/bench" \
	-stages "${BENCH_STAGES:-gobench,admission,scale,idle}" \
	-bench-count "${BENCH_COUNT:-6}" \
	-rates "${BENCH_RATES:-500 2000}" \
	-duration "${BENCH_DURATION:-10s}" \
	-repeats "${BENCH_REPEATS:-3}" \
	-scale-n "${BENCH_SCALE_N:-10 100}" \
	-idle-n "${BENCH_IDLE_N:-10000}" \
	-idle-window "${BENCH_IDLE_WINDOW:-1m}" \
	-canarygate-qps "${BENCH_CANARYGATE_QPS:-0}" \
	-results "${BENCH_RESULTS:-${CANARYGATE_CACHE}/bench-results}" \
	-report BENCHMARKS.md
