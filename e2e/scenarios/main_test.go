// Package scenarios holds the end-to-end scenarios of issue 7: the real canarygate binary, running
// under its ServiceAccount, with its webhooks called by a real kube-apiserver over TLS, judged by a
// real Prometheus scraping the traffic simulator, with the apps deployed by the Fleet-style applier.
//
// One test bed and one canarygate serve every scenario, each in its own namespace. The scenarios
// that stop canarygate or Prometheus run one after another; Go runs the parallel ones (t.Parallel)
// only after them, so no in-flight canary of another scenario is disturbed.
package scenarios

import (
	"context"
	"flag"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"canarygate.io/canarygate/e2e/harness"
	"canarygate.io/canarygate/e2e/testbed"
)

func TestMain(m *testing.M) {
	// The watches of the scenarios log through controller-runtime; their messages are not needed.
	ctrllog.SetLogger(logr.Discard())
	// The parallel scenarios mostly wait for analysis intervals: run them all at once rather than
	// GOMAXPROCS at a time, unless -parallel says otherwise.
	flag.Parse()
	if !flagSet("test.parallel") {
		_ = flag.Set("test.parallel", "16")
	}
	os.Exit(testbed.Run(m, testbed.Options{}))
}

var (
	harnessOnce sync.Once
	shared      *harness.Harness
	sharedErr   error
)

// setup returns the harness, starting it on first use. It lives as long as the test binary: the
// canarygate process dies with it (a parent-death signal), and the test bed is stopped by Run.
func setup(t *testing.T) *harness.Harness {
	t.Helper()
	harnessOnce.Do(func() {
		env := testbed.Shared()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		shared, sharedErr = harness.Start(ctx, harness.Options{Env: env, Logf: func(format string, args ...any) {
			t.Logf("harness: "+format, args...)
		}})
	})
	if sharedErr != nil {
		t.Fatalf("starting canarygate and the traffic simulator: %v", sharedErr)
	}
	return shared
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
