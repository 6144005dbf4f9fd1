// Command trafficsim stands in for the Istio data plane on the test bed: it exports the request
// metrics Istio's sidecars would for traffic routed by the cluster's VirtualServices. See package
// canarygate.io/canarygate/e2e/trafficsim.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"canarygate.io/canarygate/e2e/trafficsim"
)

const usage = `trafficsim stands in for the Istio data plane: it serves Istio's request metrics
(istio_requests_total, istio_request_duration_milliseconds) on /metrics for traffic that
follows the VirtualServices, Services and Deployments in the API server.

Usage: trafficsim --kubeconfig FILE [--listen ADDR] [flags]

Control API (JSON):
  PUT    /services/{namespace}/{name}   {"rps": 20}
         requests per second addressed to the Service (0 stops)
  DELETE /services/{namespace}/{name}
  PUT    /workloads/{namespace}/{name}  {"errorRatio": 0.1, "latencyMs": 300}
         how the Deployment answers: a ratio 0-1 of requests fail with 500, every
         request takes latencyMs; omitted fields keep their value
  DELETE /workloads/{namespace}/{name}  back to the defaults
  GET    /state                         settings and the current routing
  GET    /metrics                       Prometheus text format

Routing: the oldest mesh VirtualService whose hosts name the Service, its first HTTP route
without match conditions, destinations by weight; no VirtualService sends everything to the
Service's own pods. A Service's requests reach the Deployments whose pod labels match its
selector, in proportion to their replicas.

Flags:
`

func main() {
	fs := flag.NewFlagSet("trafficsim", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster to watch (default $KUBECONFIG)")
	listen := fs.String("listen", "127.0.0.1:15020", "address to serve /metrics and the control API on")
	tick := fs.Duration("tick", 100*time.Millisecond, "accounting step")
	latency := fs.Float64("default-latency-ms", 5, "latency of workloads without a setting")
	errorRatio := fs.Float64("default-error-ratio", 0, "error ratio of workloads without a setting")
	srcWorkload := fs.String("source-workload", "trafficsim", "source_workload label of the simulated client")
	srcNamespace := fs.String("source-namespace", "trafficsim", "source_workload_namespace label of the simulated client")
	_ = fs.Parse(os.Args[1:])

	if err := run(*kubeconfig, *listen, trafficsim.Options{
		Tick:            *tick,
		Default:         &trafficsim.Workload{ErrorRatio: *errorRatio, LatencyMs: *latency},
		SourceWorkload:  *srcWorkload,
		SourceNamespace: *srcNamespace,
	}); err != nil {
		fmt.Fprintln(os.Stderr, "trafficsim:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, listen string, opts trafficsim.Options) error {
	if kubeconfig == "" {
		return errors.New("--kubeconfig (or $KUBECONFIG) is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sim, err := trafficsim.New(cfg, opts)
	if err != nil {
		return err
	}
	if err := sim.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "trafficsim: serving on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
