package scale

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	raw := []byte("4242 (cmd with) spaces)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 1000000 500 18446744073709551615\n")
	got, err := parseStatCPU(raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want { // (250+50) ticks at 100 Hz
		t.Errorf("parseStatCPU = %v, want %v", got, want)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Errorf("ProcCPU(self): %v", err)
	}
}

func TestParseStatusMemory(t *testing.T) {
	raw := []byte("Name:\tcanarygate\nVmPeak:\t 900000 kB\nVmHWM:\t   60000 kB\nVmRSS:\t   50000 kB\nThreads:\t12\n")
	rss, peak, err := parseStatusMemory(raw)
	if err != nil {
		t.Fatal(err)
	}
	if rss != 50000<<10 || peak != 60000<<10 {
		t.Errorf("rss %d peak %d", rss, peak)
	}
	if _, _, err := parseStatusMemory([]byte("Name:\tx\nVmRSS:\t 1 kB\n")); err == nil {
		t.Error("status without VmHWM parsed")
	}
}
