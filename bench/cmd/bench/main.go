// Command bench runs canarygate's benchmarks (issue 8) and writes BENCHMARKS.md: the admission
// handlers' Go benchmarks, an HTTPS load against canarygate's webhook server next to a no-op
// floor, controller rollouts of N canaries at once, and the idle cost of many managed Deployments.
// Each stage stores its figures as JSON in -results, so that a stage can be re-run alone and the
// report regenerated from all of them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"canarygate.io/canarygate/bench/admission"
	"canarygate.io/canarygate/bench/scale"
	"canarygate.io/canarygate/controller"
	"canarygate.io/canarygate/e2e/testbed"
)

type flags struct {
	stages     string
	results    string
	report     string
	smoke      bool
	benchCount int
	rates      string
	duration   time.Duration
	repeats    int
	scaleN     string
	interval   time.Duration
	idleWindow time.Duration
	idleN      int
	idleNS     int
	kubeQPS    int
	cgQPS      int
}

func main() {
	var f flags
	flag.StringVar(&f.stages, "stages", "gobench,admission,scale,idle", "comma-separated stages to run: gobench, admission, scale, idle (none: only render the report)")
	flag.StringVar(&f.results, "results", "", "directory of the stages' JSON results (default <cache>/bench-results)")
	flag.StringVar(&f.report, "report", "", "write the report (markdown) from every result in -results to this file")
	flag.BoolVar(&f.smoke, "smoke", false, "a quick run that only checks the benchmarks still work: admission load at 100 req/s for 2s, nothing stored")
	flag.IntVar(&f.benchCount, "bench-count", 6, "runs of each Go benchmark (the report gives medians)")
	flag.StringVar(&f.rates, "rates", "500 1000 2000", "admission load rates, requests per second")
	flag.DurationVar(&f.duration, "duration", 10*time.Second, "admission load duration per rate, server and repeat")
	flag.IntVar(&f.repeats, "repeats", 3, "admission load runs per rate and server, alternating the servers (the report gives medians)")
	flag.StringVar(&f.scaleN, "scale-n", "10 100", "canary counts for the rollout experiment")
	flag.DurationVar(&f.interval, "interval", 10*time.Second, "analysis interval of the rollout experiment's Canaries")
	flag.DurationVar(&f.idleWindow, "idle-window", time.Minute, "how long idle requests and CPU are measured")
	flag.IntVar(&f.idleN, "idle-n", 10000, "managed Deployments of the idle experiment")
	flag.IntVar(&f.idleNS, "idle-namespaces", 100, "namespaces the idle experiment's Deployments are spread over")
	flag.IntVar(&f.kubeQPS, "kube-qps", 200, "kube-controller-manager's and kube-scheduler's client QPS on the test bed")
	flag.IntVar(&f.cgQPS, "canarygate-qps", 0, "canarygate's --kube-api-qps (burst twice that); 0 keeps its defaults")
	flag.Parse()
	// controller-runtime's in-process servers log nothing the report needs.
	ctrl.SetLogger(logr.Discard())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(ctx context.Context, f flags) error {
	repo, err := testbed.RepoRoot()
	if err != nil {
		return err
	}
	if f.smoke {
		return smoke(ctx, repo)
	}
	if f.results == "" {
		cache := os.Getenv("CANARYGATE_CACHE")
		if cache == "" {
			if cache, err = os.UserCacheDir(); err != nil {
				return err
			}
			cache = filepath.Join(cache, "canarygate")
		}
		f.results = filepath.Join(cache, "bench-results")
	}
	if err := os.MkdirAll(f.results, 0o755); err != nil {
		return err
	}
	for _, stage := range splitList(f.stages) {
		began, commit := time.Now(), commitOf(repo)
		logf("stage %s", stage)
		var err error
		switch stage {
		case "gobench":
			err = runGoBench(ctx, repo, f)
		case "admission":
			err = runAdmission(ctx, repo, f)
		case "scale":
			err = runScale(ctx, f)
		case "idle":
			err = runIdle(ctx, f)
		default:
			err = fmt.Errorf("unknown stage %q", stage)
		}
		if err != nil {
			return fmt.Errorf("stage %s: %w", stage, err)
		}
		run := stageRun{Duration: time.Since(began).Round(time.Second).String(), Finished: time.Now().UTC(), Commit: commit}
		if err := store(f.results, "stage-"+stage, run); err != nil {
			return err
		}
		logf("stage %s done in %s", stage, time.Since(began).Round(time.Second))
	}
	if f.report != "" {
		return writeReport(repo, f.results, f.report)
	}
	return nil
}

// stageRun says when, on which code and for how long a stage last ran: the report combines the
// last run of every stage, which need not be the same.
type stageRun struct {
	Duration string
	Finished time.Time
	Commit   string
}

// commitOf is the checkout's commit when a stage starts (its binaries are built then), with
// "+changes" when Go code or the module files differ from it; documents (this report among them)
// do not count.
func commitOf(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	commit := strings.TrimSpace(string(out))
	status, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--", "*.go", "go.mod", "go.sum").Output()
	if err == nil && len(status) > 0 {
		commit += "+changes"
	}
	return commit
}

// smoke checks, quickly, that the admission load path works end to end on a test bed.
func smoke(ctx context.Context, repo string) error {
	bed, err := testbed.Start(ctx, testbed.Options{NoPrometheus: true})
	if err != nil {
		return err
	}
	defer bed.Stop()
	res, err := admissionLoad(ctx, repo, bed, []int{100}, 2*time.Second, 0, 1)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Failed > 0 || r.OK == 0 {
			return fmt.Errorf("%s: %d ok, %d failed (first: %s)", r.Server, r.OK, r.Failed, r.FirstError)
		}
	}
	logf("smoke: admission load answered")
	return nil
}

func runGoBench(ctx context.Context, repo string, f flags) error {
	res, raw, err := admission.RunGoBenchmarks(ctx, repo, f.benchCount)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.results, "gobench.txt"), []byte(raw), 0o644); err != nil {
		return err
	}
	return store(f.results, "gobench", res)
}

func runAdmission(ctx context.Context, repo string, f flags) error {
	rates, err := ints(f.rates)
	if err != nil {
		return err
	}
	bed, err := testbed.Start(ctx, testbed.Options{NoPrometheus: true, Logf: logf})
	if err != nil {
		return err
	}
	defer bed.Stop()
	res, err := admissionLoad(ctx, repo, bed, rates, f.duration, 2*time.Second, f.repeats)
	if err != nil {
		return err
	}
	reviews, err := admission.NewReviews(repo, "bench-admission")
	if err != nil {
		return err
	}
	return store(f.results, "admission", admissionFile{Duration: f.duration, Repeats: f.repeats, ReviewBytes: reviews.Size(), Results: res})
}

type admissionFile struct {
	Duration    time.Duration
	Repeats     int
	ReviewBytes int
	Results     []admission.LoadResult
}

func admissionLoad(ctx context.Context, repo string, bed *testbed.Env, rates []int, d, warmup time.Duration, repeats int) ([]admission.LoadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const ns = "bench-admission"
	servers, err := admission.StartServers(ctx, bed.Config, filepath.Join(bed.Dir, "bench-certs"), ns)
	if err != nil {
		return nil, err
	}
	reviews, err := admission.NewReviews(repo, ns)
	if err != nil {
		return nil, err
	}
	return admission.RunLoad(ctx, servers, reviews, admission.LoadOptions{Rates: rates, Duration: d, Warmup: warmup, Repeats: repeats, Logf: logf})
}

// clientQPS is canarygate's --kube-api-qps in the scale and idle runs.
func clientQPS(f flags) int {
	if f.cgQPS > 0 {
		return f.cgQPS
	}
	return controller.DefaultClientQPS
}

func canarygateArgs(f flags) []string {
	if f.cgQPS <= 0 {
		return nil
	}
	return []string{"--kube-api-qps=" + strconv.Itoa(f.cgQPS), "--kube-api-burst=" + strconv.Itoa(2*f.cgQPS)}
}

func runScale(ctx context.Context, f flags) error {
	ns, err := ints(f.scaleN)
	if err != nil {
		return err
	}
	for _, n := range ns {
		env, err := scale.StartEnv(ctx, scale.EnvOptions{KubeAPIQPS: f.kubeQPS, CanarygateArgs: canarygateArgs(f), Pprof: true, Logf: logf})
		if err != nil {
			return err
		}
		res, err := scale.Rollout(ctx, env, scale.RolloutOptions{
			N: n, Interval: f.interval, StepWeight: 10, MaxWeight: 50,
			IdleWindow:     f.idleWindow,
			Timeout:        5*time.Minute + time.Duration(n)*time.Second,
			ProfilePath:    filepath.Join(f.results, fmt.Sprintf("scale-%05d.cpu.pprof", n)),
			ProfileSeconds: 60,
			ClientQPS:      clientQPS(f),
			Logf:           logf,
		})
		if err == nil {
			res.Args = canarygateArgs(f)
			logf("N=%d: first step p50 %s p99 %s, lateness p99 %s, succeeded p50 %s p99 %s, %d requests, CPU %s, peak RSS %d MiB",
				n, res.FirstStepP50, res.FirstStepP99, res.LatenessP99, res.SucceededP50, res.SucceededP99, res.RolloutRequests.Total(), res.RolloutCPU, res.PeakRSS>>20)
			err = store(f.results, fmt.Sprintf("scale-%05d", n), res)
		}
		err = errors.Join(err, env.Stop())
		if err != nil {
			return fmt.Errorf("scale run with %d canaries: %w", n, err)
		}
	}
	return nil
}

func runIdle(ctx context.Context, f flags) error {
	env, err := scale.StartEnv(ctx, scale.EnvOptions{KubeAPIQPS: f.kubeQPS, CanarygateArgs: canarygateArgs(f), Logf: logf})
	if err != nil {
		return err
	}
	res, err := scale.Idle(ctx, env, scale.IdleOptions{
		Deployments: f.idleN, Namespaces: f.idleNS,
		Settle: 10 * time.Minute, Window: f.idleWindow, Logf: logf,
	})
	if err == nil {
		err = store(f.results, "idle", res)
	}
	return errors.Join(err, env.Stop())
}

func store(dir, name string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".json"), raw, 0o644)
}

func load(dir, name string, v any) (bool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(raw, v)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		v, err := strconv.Atoi(p)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", p)
		}
		out = append(out, v)
	}
	return out, nil
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}
