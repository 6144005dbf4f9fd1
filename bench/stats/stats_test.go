package stats

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(100 - i) // unsorted on purpose
	}
	for _, tc := range []struct {
		name    string
		samples []int64
		q       float64
		want    int64
	}{
		{"empty", nil, 0.5, 0},
		{"single", []int64{7}, 0.99, 7},
		{"p50 of 1..100", hundred, 0.5, 50},
		{"p99 of 1..100", hundred, 0.99, 99},
		{"p100 of 1..100", hundred, 1, 100},
		{"p99 of 1..10 is the maximum", []int64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 0.99, 10},
		{"tiny q is the minimum", []int64{3, 1, 2}, 0.0001, 1},
	} {
		if got := Quantile(tc.samples, tc.q); got != tc.want {
			t.Errorf("%s: Quantile(q=%v) = %d, want %d", tc.name, tc.q, got, tc.want)
		}
	}
	if hundred[0] != 100 {
		t.Error("Quantile sorted its input")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		samples []time.Duration
		want    time.Duration
	}{
		{nil, 0},
		{[]time.Duration{5}, 5},
		{[]time.Duration{9, 1, 5}, 5},
		{[]time.Duration{4, 1, 3, 2}, 2},
	} {
		if got := Median(tc.samples); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.samples, got, tc.want)
		}
	}
}
