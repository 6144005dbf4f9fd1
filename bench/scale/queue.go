package scale

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"canarygate.io/canarygate/e2e/harness"
)

// QueueStats is what controller-runtime's own metrics say of the canary controller during the
// rollout: how long requests waited in its work queue for a worker (a backlog shows there), how
// long its reconciles took, and the largest queue depth and number of busy workers seen. They tell
// whether lateness comes from the controller (waiting for workers, slow reconciles) or elsewhere.
type QueueStats struct {
	Reconciles                 uint64
	WaitP50, WaitP99           time.Duration
	ReconcileP50, ReconcileP99 time.Duration
	MaxDepth, MaxBusyWorkers   int
	Samples                    int
}

// The canary controller's series (controller-runtime names its work queue after the controller).
const (
	queueWaitMetric   = "workqueue_queue_duration_seconds"
	reconcileMetricS  = "controller_runtime_reconcile_time_seconds"
	queueDepthMetric  = "workqueue_depth"
	busyWorkersMetric = "controller_runtime_active_workers"
)

// queueSampler scrapes canarygate's /metrics every second while a rollout runs.
type queueSampler struct {
	addr   string
	mu     sync.Mutex
	first  map[string]*dto.MetricFamily
	last   map[string]*dto.MetricFamily
	stats  QueueStats
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func startQueueSampler(ctx context.Context, addr string) *queueSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &queueSampler{addr: addr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			fams, err := harness.ScrapeMetrics(ctx, s.addr)
			s.mu.Lock()
			if err != nil && ctx.Err() == nil {
				s.err = err
			}
			if err == nil {
				if s.first == nil {
					s.first = fams
				}
				s.last = fams
				s.stats.Samples++
				s.stats.MaxDepth = max(s.stats.MaxDepth, int(harness.Sum(fams[queueDepthMetric], "name", "canary")))
				s.stats.MaxBusyWorkers = max(s.stats.MaxBusyWorkers, int(harness.Sum(fams[busyWorkersMetric], "controller", "canary")))
			}
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return s
}

// stop takes a last sample and returns the stats of the whole window.
func (s *queueSampler) stop(ctx context.Context) (QueueStats, error) {
	s.cancel()
	<-s.done
	fams, err := harness.ScrapeMetrics(ctx, s.addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		return s.stats, err
	}
	if s.err != nil {
		return s.stats, s.err
	}
	if s.first == nil {
		return s.stats, fmt.Errorf("no /metrics sample during the rollout")
	}
	st := s.stats
	wait := histogramDelta(s.first[queueWaitMetric], fams[queueWaitMetric], "name", "canary")
	rec := histogramDelta(s.first[reconcileMetricS], fams[reconcileMetricS], "controller", "canary")
	st.Reconciles = rec.count
	st.WaitP50, st.WaitP99 = wait.quantile(0.5), wait.quantile(0.99)
	st.ReconcileP50, st.ReconcileP99 = rec.quantile(0.5), rec.quantile(0.99)
	return st, nil
}

// histogram is a cumulative Prometheus histogram: counts of observations ≤ each upper bound.
type histogram struct {
	bounds []float64 // ascending, +Inf last
	counts []uint64
	count  uint64
}

// histogramDelta is after minus before, for the series with the label (before may lack it).
func histogramDelta(before, after *dto.MetricFamily, labelName, labelValue string) histogram {
	cum := func(f *dto.MetricFamily) map[float64]uint64 {
		out := map[float64]uint64{}
		for _, m := range harness.Matching(f, labelName, labelValue) {
			for _, b := range m.GetHistogram().GetBucket() {
				if !math.IsInf(b.GetUpperBound(), 1) { // the text format lists +Inf; the count is the same
					out[b.GetUpperBound()] += b.GetCumulativeCount()
				}
			}
			out[math.Inf(1)] += m.GetHistogram().GetSampleCount()
		}
		return out
	}
	b, a := cum(before), cum(after)
	var h histogram
	for bound := range a {
		h.bounds = append(h.bounds, bound)
	}
	sort.Float64s(h.bounds)
	for _, bound := range h.bounds {
		h.counts = append(h.counts, a[bound]-b[bound])
	}
	if n := len(h.counts); n > 0 {
		h.count = h.counts[n-1]
	}
	return h
}

// quantile interpolates linearly within the bucket that holds the q-quantile, as Prometheus'
// histogram_quantile does; in the +Inf bucket it returns the largest finite bound.
func (h histogram) quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	rank := q * float64(h.count)
	lower, below := 0.0, uint64(0)
	for i, bound := range h.bounds {
		c := h.counts[i]
		if float64(c) >= rank {
			if math.IsInf(bound, 1) {
				return seconds(lower)
			}
			inBucket := float64(c - below)
			if inBucket == 0 {
				return seconds(bound)
			}
			return seconds(lower + (bound-lower)*(rank-float64(below))/inBucket)
		}
		lower, below = bound, c
	}
	return seconds(lower)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
