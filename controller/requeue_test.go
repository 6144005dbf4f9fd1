package controller

import (
	"testing"
	"time"
)

func TestRemaining(t *testing.T) {
	decided := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		after time.Duration
		took  time.Duration
		want  time.Duration
	}{
		{"instant reconcile", 10 * time.Second, 0, 10 * time.Second},
		{"writes took 2.5 s: the round stays due 10 s after the decision", 10 * time.Second, 2500 * time.Millisecond, 7500 * time.Millisecond},
		{"the reconcile outlasted the wait: at once", 10 * time.Second, 12 * time.Second, time.Millisecond},
		{"exactly due: at once, never zero (zero means no requeue)", time.Second, time.Second, time.Millisecond},
	}
	for _, c := range cases {
		if got := remaining(c.after, decided, decided.Add(c.took)); got != c.want {
			t.Errorf("%s: remaining = %v, want %v", c.name, got, c.want)
		}
	}
}
