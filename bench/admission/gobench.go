package admission

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"canarygate.io/canarygate/bench/stats"
)

// GoBench is one Go benchmark's medians over its runs.
type GoBench struct {
	Name        string // without the "Benchmark" prefix and the GOMAXPROCS suffix
	Runs        int
	NsPerOp     float64
	BytesPerOp  float64
	AllocsPerOp float64
}

// RunGoBenchmarks runs the webhook package's benchmarks count times in repo and returns their
// medians, in the order they ran.
func RunGoBenchmarks(ctx context.Context, repo string, count int) ([]GoBench, string, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run=^$", "-bench=.", "-benchmem", "-count="+strconv.Itoa(count), "./webhook")
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("go test -bench ./webhook: %w\n%s", err, out)
	}
	b, err := ParseGoBench(out)
	return b, string(out), err
}

// ParseGoBench reads `go test -bench -benchmem` output and returns each benchmark's medians.
func ParseGoBench(out []byte) ([]GoBench, error) {
	type samples struct{ ns, bytes, allocs []float64 }
	var order []string
	all := map[string]*samples{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		s := all[name]
		if s == nil {
			s = &samples{}
			all[name] = s
			order = append(order, name)
		}
		// After the iteration count come value-unit pairs.
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: %w", sc.Text(), err)
			}
			switch f[i+1] {
			case "ns/op":
				s.ns = append(s.ns, v)
			case "B/op":
				s.bytes = append(s.bytes, v)
			case "allocs/op":
				s.allocs = append(s.allocs, v)
			}
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("no benchmark results in the output")
	}
	out2 := make([]GoBench, 0, len(order))
	for _, name := range order {
		s := all[name]
		out2 = append(out2, GoBench{Name: name, Runs: len(s.ns), NsPerOp: stats.Median(s.ns), BytesPerOp: stats.Median(s.bytes), AllocsPerOp: stats.Median(s.allocs)})
	}
	return out2, nil
}
