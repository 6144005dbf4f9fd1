package trafficsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a Sim. Zero values take the defaults.
type Options struct {
	// Tick is the accounting step; default 100ms.
	Tick time.Duration
	// Default answers requests of workloads without a setting; default no errors, 5 ms.
	Default *Workload
	// SourceWorkload and SourceNamespace name the calling workload (source_* labels); default
	// trafficsim/trafficsim.
	SourceWorkload, SourceNamespace string
}

// Sim simulates an Istio mesh's request telemetry. See the package documentation.
type Sim struct {
	cache    cache.Cache
	tick     time.Duration
	defaults Workload
	source   workload
	registry *prometheus.Registry

	mu        sync.Mutex
	rates     map[Ref]float64
	workloads map[Ref]Workload
	ledger    *ledger
	last      time.Time // of the previous tick
}

// New returns a simulator that watches Services, Deployments and networking.istio.io/v1
// VirtualServices through cfg. Nothing runs until Start.
func New(cfg *rest.Config, opts Options) (*Sim, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istionetworkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("trafficsim: creating the cache: %w", err)
	}
	s := &Sim{
		cache:     c,
		tick:      opts.Tick,
		defaults:  Workload{LatencyMs: 5},
		registry:  prometheus.NewRegistry(),
		rates:     map[Ref]float64{},
		workloads: map[Ref]Workload{},
		ledger:    newLedger(),
	}
	if s.tick <= 0 {
		s.tick = 100 * time.Millisecond
	}
	if opts.Default != nil {
		if err := opts.Default.validate(); err != nil {
			return nil, fmt.Errorf("trafficsim: default workload: %w", err)
		}
		s.defaults = *opts.Default
	}
	src := Ref{Namespace: opts.SourceNamespace, Name: opts.SourceWorkload}
	if src.Namespace == "" {
		src.Namespace = "trafficsim"
	}
	if src.Name == "" {
		src.Name = "trafficsim"
	}
	s.source = workload{Ref: src, app: src.Name, version: unknown, canonicalService: src.Name, canonicalRevision: "latest",
		principal: "spiffe://cluster.local/ns/" + src.Namespace + "/sa/default"}
	if err := s.registry.Register(collector{s}); err != nil {
		return nil, err
	}
	return s, nil
}

// Start starts watching, waits until the caches are synced, and then accounts traffic every tick in
// the background until ctx ends.
func (s *Sim) Start(ctx context.Context) error {
	for _, obj := range []client.Object{&corev1.Service{}, &appsv1.Deployment{}, &istionetworkingv1.VirtualService{}} {
		if _, err := s.cache.GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("trafficsim: watching %T: %w", obj, err)
		}
	}
	cacheErr := make(chan error, 1)
	go func() { cacheErr <- s.cache.Start(ctx) }()
	if !s.cache.WaitForCacheSync(ctx) {
		select {
		case err := <-cacheErr:
			return fmt.Errorf("trafficsim: cache stopped: %w", err)
		default:
			return errors.New("trafficsim: caches did not sync before the context ended")
		}
	}
	// One read up front, so that a failure shows here and not in the background.
	if _, err := s.snapshot(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.last = time.Now()
	s.mu.Unlock()
	go func() {
		t := time.NewTicker(s.tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				// Reads from the in-memory cache do not fail once they worked; were one to, the
				// skipped time is accounted at the next tick, which measures from the last success.
				_ = s.step(ctx, now)
			}
		}
	}()
	return nil
}

// step accounts the traffic since the previous tick, routed as the objects stand now.
func (s *Sim) step(ctx context.Context, now time.Time) error {
	w, err := s.snapshot(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dt := now.Sub(s.last).Seconds()
	s.last = now
	s.account(w, dt)
	return nil
}

// account runs one accounting step of dt seconds over a snapshot; s.mu must be held.
func (s *Sim) account(w *world, dt float64) {
	for svc, rps := range s.rates {
		s.ledger.account(svc, rps, dt, w.route(svc), s.workloads, s.defaults)
	}
}

// snapshot reads the objects routing depends on from the cache, without copies: they are only read.
func (s *Sim) snapshot(ctx context.Context) (*world, error) {
	noCopy := client.UnsafeDisableDeepCopy
	var svcs corev1.ServiceList
	var deps appsv1.DeploymentList
	var vss istionetworkingv1.VirtualServiceList
	for _, l := range []client.ObjectList{&svcs, &deps, &vss} {
		if err := s.cache.List(ctx, l, noCopy); err != nil {
			return nil, fmt.Errorf("trafficsim: listing %T: %w", l, err)
		}
	}
	services := make([]*corev1.Service, len(svcs.Items))
	for i := range svcs.Items {
		services[i] = &svcs.Items[i]
	}
	deployments := make([]*appsv1.Deployment, len(deps.Items))
	for i := range deps.Items {
		deployments[i] = &deps.Items[i]
	}
	return newWorld(services, deployments, vss.Items), nil
}

// SetServiceRate sets the requests per second addressed to Service namespace/name; 0 stops them.
func (s *Sim) SetServiceRate(namespace, name string, rps float64) error {
	if namespace == "" || name == "" {
		return errors.New("service namespace and name are required")
	}
	if math.IsNaN(rps) || math.IsInf(rps, 0) || rps < 0 {
		return fmt.Errorf("rps %v: want a finite number ≥ 0", rps)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rps == 0 {
		delete(s.rates, Ref{namespace, name})
	} else {
		s.rates[Ref{namespace, name}] = rps
	}
	return nil
}

// SetWorkload sets how the Deployment namespace/name answers.
func (s *Sim) SetWorkload(namespace, name string, w Workload) error {
	return s.updateWorkload(Ref{namespace, name}, func(wl *Workload) { *wl = w })
}

// updateWorkload changes a workload's setting (starting from the defaults) in one step, so that
// concurrent partial updates do not lose each other.
func (s *Sim) updateWorkload(ref Ref, change func(*Workload)) error {
	if ref.Namespace == "" || ref.Name == "" {
		return errors.New("workload namespace and name are required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wl, ok := s.workloads[ref]
	if !ok {
		wl = s.defaults
	}
	change(&wl)
	if err := wl.validate(); err != nil {
		return err
	}
	s.workloads[ref] = wl
	return nil
}

func (w Workload) validate() error {
	if math.IsNaN(w.ErrorRatio) || w.ErrorRatio < 0 || w.ErrorRatio > 1 {
		return fmt.Errorf("errorRatio %v: want 0–1", w.ErrorRatio)
	}
	if math.IsNaN(w.LatencyMs) || math.IsInf(w.LatencyMs, 0) || w.LatencyMs < 0 {
		return fmt.Errorf("latencyMs %v: want a finite number ≥ 0", w.LatencyMs)
	}
	return nil
}

// State is what GET /state returns.
type State struct {
	// Services maps "namespace/name" to its request rate.
	Services map[string]ServiceState `json:"services"`
	// Workloads maps "namespace/name" to its settings; others answer with Defaults.
	Workloads map[string]Workload `json:"workloads"`
	Defaults  Workload            `json:"defaults"`
}

// ServiceState is one Service's rate and where its requests go now.
type ServiceState struct {
	RPS float64 `json:"rps"`
	// Routes maps "namespace/workload via namespace/service" to the fraction of requests it serves.
	Routes map[string]float64 `json:"routes"`
}

// State reports the settings and the current routing.
func (s *Sim) State(ctx context.Context) (State, error) {
	w, err := s.snapshot(ctx)
	if err != nil {
		return State{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Services: map[string]ServiceState{}, Workloads: map[string]Workload{}, Defaults: s.defaults}
	for svc, rps := range s.rates {
		ss := ServiceState{RPS: rps, Routes: map[string]float64{}}
		for _, sh := range w.route(svc) {
			ss.Routes[sh.workload.String()+" via "+sh.service.String()] += sh.fraction
		}
		st.Services[svc.String()] = ss
	}
	for ref, wl := range s.workloads {
		st.Workloads[ref.String()] = wl
	}
	return st, nil
}

// Handler serves /metrics and the control endpoints described in the package documentation.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("PUT /services/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			RPS *float64 `json:"rps"`
		}
		if !decode(w, r, &body) {
			return
		}
		if body.RPS == nil {
			http.Error(w, `body must set "rps"`, http.StatusBadRequest)
			return
		}
		reply(w, s.SetServiceRate(r.PathValue("namespace"), r.PathValue("name"), *body.RPS))
	})
	mux.HandleFunc("DELETE /services/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.SetServiceRate(r.PathValue("namespace"), r.PathValue("name"), 0))
	})
	mux.HandleFunc("PUT /workloads/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			ErrorRatio *float64 `json:"errorRatio"`
			LatencyMs  *float64 `json:"latencyMs"`
		}
		if !decode(w, r, &body) {
			return
		}
		ref := Ref{r.PathValue("namespace"), r.PathValue("name")}
		reply(w, s.updateWorkload(ref, func(wl *Workload) {
			if body.ErrorRatio != nil {
				wl.ErrorRatio = *body.ErrorRatio
			}
			if body.LatencyMs != nil {
				wl.LatencyMs = *body.LatencyMs
			}
		}))
	})
	mux.HandleFunc("DELETE /workloads/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		delete(s.workloads, Ref{r.PathValue("namespace"), r.PathValue("name")})
		s.mu.Unlock()
		reply(w, nil)
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.State(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, "invalid JSON body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// collector exports the ledger in Istio's format at scrape time.
type collector struct{ s *Sim }

var (
	labelNames = []string{
		"reporter",
		"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
		"source_canonical_service", "source_canonical_revision", "source_cluster",
		"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
		"destination_service", "destination_service_name", "destination_service_namespace",
		"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
		"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
	}
	requestsDesc = prometheus.NewDesc("istio_requests_total", "Total requests.", labelNames, nil)
	durationDesc = prometheus.NewDesc("istio_request_duration_milliseconds", "Request duration in milliseconds.", labelNames, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- durationDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	src := c.s.source
	for k, s := range c.s.ledger.series {
		values := []string{
			"destination",
			src.Name, src.Namespace, src.principal, src.app, src.version, src.canonicalService, src.canonicalRevision, "Kubernetes",
			k.workload.Name, k.workload.Namespace, k.workload.principal, k.workload.app, k.workload.version,
			k.service.Name + "." + k.service.Namespace + ".svc.cluster.local", k.service.Name, k.service.Namespace,
			k.workload.canonicalService, k.workload.canonicalRevision, "Kubernetes",
			"http", strconv.Itoa(k.code), "", "-", "mutual_tls",
		}
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(s.requests), values...)
		buckets := make(map[float64]uint64, len(Buckets))
		for i, b := range Buckets {
			buckets[b] = s.buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(durationDesc, s.requests, s.sumMs, buckets, values...)
	}
}
