package trafficsim

import (
	"testing"
)

var (
	stable = workload{Ref: Ref{ns, "web"}}
	canary = workload{Ref: Ref{ns, "web-canary"}}
	webSvc = Ref{ns, "web"}
	canSvc = Ref{ns, "web-canary"}
)

func split(stableFraction float64) []share {
	return []share{
		{service: webSvc, workload: stable, fraction: stableFraction},
		{service: canSvc, workload: canary, fraction: 1 - stableFraction},
	}
}

// count returns a series' request count, 0 when it does not exist.
func count(l *ledger, svc Ref, w workload, code int) uint64 {
	if s, ok := l.series[seriesKey{svc, w, code}]; ok {
		return s.requests
	}
	return 0
}

func TestLedgerSplitsExactly(t *testing.T) {
	for _, tc := range []struct {
		name           string
		rps            float64
		stableFraction float64
		ticks          int
		dt             float64
		stable, canary uint64
	}{
		{"80/20", 10, 0.8, 10, 0.1, 8, 2},
		{"carry across ticks", 1, 0.5, 40, 0.1, 2, 2},
		{"one third", 3, 2.0 / 3, 100, 0.1, 20, 10},
		{"odd tick lengths", 20, 0.9, 7, 1.0 / 7, 18, 2},
		{"nothing to the canary", 50, 1, 10, 0.1, 50, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger()
			for range tc.ticks {
				l.account(webSvc, tc.rps, tc.dt, split(tc.stableFraction), nil, Workload{})
			}
			if got := count(l, webSvc, stable, 200); got != tc.stable {
				t.Errorf("stable got %d requests, want %d", got, tc.stable)
			}
			if got := count(l, canSvc, canary, 200); got != tc.canary {
				t.Errorf("canary got %d requests, want %d", got, tc.canary)
			}
			if _, ok := l.series[seriesKey{canSvc, canary, 200}]; ok != (tc.canary > 0) {
				t.Errorf("canary series exists = %v with %d requests: series must appear only with requests", ok, tc.canary)
			}
		})
	}
}

func TestLedgerErrorsAndLatency(t *testing.T) {
	l := newLedger()
	settings := map[Ref]Workload{canary.Ref: {ErrorRatio: 0.15, LatencyMs: 300}}
	for range 100 { // 10 s at 20 rps, half to the canary
		l.account(webSvc, 20, 0.1, split(0.5), settings, Workload{LatencyMs: 5})
	}
	if ok, errs := count(l, canSvc, canary, 200), count(l, canSvc, canary, 500); ok != 85 || errs != 15 {
		t.Errorf("canary answered %d × 200 and %d × 500, want 85 and 15", ok, errs)
	}
	if ok, errs := count(l, webSvc, stable, 200), count(l, webSvc, stable, 500); ok != 100 || errs != 0 {
		t.Errorf("stable (defaults) answered %d × 200 and %d × 500, want 100 and 0", ok, errs)
	}
	s := l.series[seriesKey{canSvc, canary, 200}]
	if s.sumMs != 85*300 {
		t.Errorf("canary latency sum %v, want %v", s.sumMs, 85*300)
	}
	for i, b := range Buckets {
		want := uint64(0)
		if b >= 300 {
			want = 85
		}
		if s.buckets[i] != want {
			t.Errorf("bucket le=%v holds %d, want %d", b, s.buckets[i], want)
		}
	}
	fast := l.series[seriesKey{webSvc, stable, 200}]
	if fast.buckets[2] != 100 || fast.buckets[1] != 0 { // le=5 holds every 5 ms request, le=1 none
		t.Errorf("stable buckets le=1: %d, le=5: %d; want 0 and 100", fast.buckets[1], fast.buckets[2])
	}
}

func TestLedgerErrorCarry(t *testing.T) {
	l := newLedger()
	settings := map[Ref]Workload{stable.Ref: {ErrorRatio: 1.0 / 3}}
	only := []share{{service: webSvc, workload: stable, fraction: 1}}
	for range 30 { // one request per tick
		l.account(webSvc, 10, 0.1, only, settings, Workload{})
	}
	if errs := count(l, webSvc, stable, 500); errs != 10 {
		t.Errorf("%d errors in 30 requests at ratio 1/3, want 10", errs)
	}
}

func TestWorkloadValidate(t *testing.T) {
	for _, w := range []Workload{{ErrorRatio: -0.1}, {ErrorRatio: 1.5}, {LatencyMs: -1}} {
		if w.validate() == nil {
			t.Errorf("%+v accepted", w)
		}
	}
	if err := (Workload{ErrorRatio: 1, LatencyMs: 0}).validate(); err != nil {
		t.Errorf("valid workload rejected: %v", err)
	}
}
