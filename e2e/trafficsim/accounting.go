package trafficsim

import (
	"math"
	"slices"
)

// Buckets are Istio's default bucket bounds (ms) for istio_request_duration_milliseconds.
var Buckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Workload sets how a workload answers: ErrorRatio of its requests fail with 500, and every request
// takes LatencyMs.
type Workload struct {
	ErrorRatio float64 `json:"errorRatio"`
	LatencyMs  float64 `json:"latencyMs"`
}

// seriesKey identifies one istio_requests_total series (and one histogram): the workload that
// served, the Service the request was routed to, and the response code.
type seriesKey struct {
	service  Ref
	workload workload
	code     int
}

// series accumulates one label set.
type series struct {
	requests uint64
	sumMs    float64
	buckets  []uint64 // cumulative, one per Buckets entry
}

// flowKey is one path of requests: addressed to a Service, served by a workload through a
// (possibly different) destination Service. Carries are kept per flow.
type flowKey struct {
	addressed, service, workload Ref
}

// epsilon absorbs floating-point error in rate·dt so that 20 rps over ten 100 ms ticks is exactly
// 20 requests, not 19.
const epsilon = 1e-9

// ledger turns rates into whole requests deterministically: fractional requests and errors carry
// over to the next tick instead of being rounded away or drawn at random.
type ledger struct {
	requestCarry map[flowKey]float64
	errorCarry   map[flowKey]float64
	series       map[seriesKey]*series
}

func newLedger() *ledger {
	return &ledger{requestCarry: map[flowKey]float64{}, errorCarry: map[flowKey]float64{}, series: map[seriesKey]*series{}}
}

// account adds dt seconds of traffic at rps requests per second, split by routes, answered as the
// workloads are set (defaults for workloads without a setting).
func (l *ledger) account(addressed Ref, rps, dt float64, routes []share, settings map[Ref]Workload, defaults Workload) {
	for _, sh := range routes {
		f := flowKey{addressed, sh.service, sh.workload.Ref}
		n := whole(l.requestCarry, f, rps*dt*sh.fraction)
		if n == 0 {
			continue
		}
		ws, ok := settings[sh.workload.Ref]
		if !ok {
			ws = defaults
		}
		errs := min(whole(l.errorCarry, f, float64(n)*ws.ErrorRatio), n)
		l.observe(seriesKey{sh.service, sh.workload, 500}, errs, ws.LatencyMs)
		l.observe(seriesKey{sh.service, sh.workload, 200}, n-errs, ws.LatencyMs)
	}
}

// whole adds x to the carry of f and takes out the whole part.
func whole(carry map[flowKey]float64, f flowKey, x float64) uint64 {
	c := carry[f] + x
	n := math.Floor(c + epsilon)
	if n < 0 {
		n = 0
	}
	carry[f] = max(c-n, 0)
	return uint64(n)
}

// observe records n requests of one latency; a series appears only once a request happened.
func (l *ledger) observe(k seriesKey, n uint64, latencyMs float64) {
	if n == 0 {
		return
	}
	s, ok := l.series[k]
	if !ok {
		s = &series{buckets: make([]uint64, len(Buckets))}
		l.series[k] = s
	}
	s.requests += n
	s.sumMs += float64(n) * latencyMs
	for i := slices.IndexFunc(Buckets, func(b float64) bool { return latencyMs <= b }); i >= 0 && i < len(Buckets); i++ {
		s.buckets[i] += n
	}
}
