// Package stats summarises benchmark samples: quantiles by the nearest-rank method, so that a
// reported p99 is a latency some request really had.
package stats

import (
	"math"
	"slices"
	"time"
)

// Quantile returns the q-quantile (0 < q ≤ 1) of samples by the nearest-rank method, 0 for no
// samples. samples is not modified.
func Quantile[T int64 | float64 | time.Duration](samples []T, q float64) T {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[rank(len(s), q)]
}

// Median is the middle sample (the lower of the two middle ones for an even count, a value that
// was measured), 0 for no samples.
func Median[T int64 | float64 | time.Duration](samples []T) T {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func rank(n int, q float64) int {
	r := int(math.Ceil(q*float64(n))) - 1
	return min(max(r, 0), n-1)
}
