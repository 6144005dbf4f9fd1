package testbed

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
)

var (
	sharedMu  sync.Mutex
	sharedEnv *Env
)

// Shared returns the test bed started by Run, or nil outside Run.
func Shared() *Env {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	return sharedEnv
}

// Run is a TestMain helper: it starts one test bed for the package's tests, runs them, and stops it. A
// test bed that cannot start fails the run (exit code 1) with the tail of every log; tests are never
// silently skipped. SIGINT or SIGTERM stops the test bed before the process exits.
//
//	func TestMain(m *testing.M) { os.Exit(testbed.Run(m, testbed.Options{})) }
func Run(m *testing.M, opts Options) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	// A signal during Start cancels it (Start cleans up); afterwards it stops the running test bed.
	interrupted := make(chan struct{})
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "testbed: %v: stopping the test bed\n", sig)
		cancel()
		if env := Shared(); env != nil {
			if err := env.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "testbed: stop: %v\n", err)
			}
			os.Exit(130)
		}
		close(interrupted)
	}()

	env, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed: cannot start the test bed, failing all tests: %v\n", err)
		return 1
	}
	sharedMu.Lock()
	sharedEnv = env
	sharedMu.Unlock()
	select {
	case <-interrupted:
		// Interrupted after Start returned but before Shared was set.
		_ = env.Stop()
		return 130
	default:
	}

	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
