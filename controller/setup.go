// Package controller holds canarygate's reconcilers: the namespace opt-in label, the automatic
// Canary per managed Deployment, and the Canary release itself (whose decisions live in the pure
// package controller/canary). All of them run only on the elected leader.
package controller

import (
	"context"
	"fmt"
	"time"

	promconfig "github.com/prometheus/common/config"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/controller/traffic"
	"canarygate.io/canarygate/policy"
)

// Options configures the controllers; cmd/canarygate fills it from flags.
type Options struct {
	// OwnNamespace is canarygate's namespace, never managed.
	OwnNamespace string
	// MetricsServer is the default Prometheus address.
	MetricsServer string
	// PrometheusHTTPConfig is the auth and TLS configuration for every Prometheus.
	PrometheusHTTPConfig promconfig.HTTPClientConfig
	// DefaultAnalysis applies to Canaries without analysis when no CanaryPolicy gives defaults, and
	// fills the unset schedule fields of every analysis.
	DefaultAnalysis v1alpha1.CanaryAnalysis
	// DefaultProgressDeadline applies when a Canary sets no progressDeadlineSeconds.
	DefaultProgressDeadline time.Duration
	// StripKeys replaces the built-in GitOps ownership key list (a CanaryPolicy may replace it again).
	StripKeys []string
	// MaxConcurrentReconciles of the Canary controller.
	MaxConcurrentReconciles int
	// Router shifts traffic; nil means Istio.
	Router traffic.Router
}

// The API client's defaults. A thousand canaries stepping every 10 s write about 100 Canary
// statuses and 100 routes per second, and controller-runtime gives every resource type its own
// token bucket of this size: at 50/s every step would wait seconds for its writes. The API server's
// priority and fairness, not this client-side limit, is what protects it from a runaway client.
const (
	DefaultClientQPS   = 200
	DefaultClientBurst = 400
)

// DefaultMaxConcurrentReconciles is the Canary controller's worker count. A reconcile spends its
// time waiting for the API server, Prometheus and webhooks, not on CPU: with 8 workers a thousand
// canaries stepping together queued for tens of seconds while the process used a tenth of a core.
const DefaultMaxConcurrentReconciles = 32

// DefaultAnalysis is Flagger's usual analysis: 1m interval, threshold 5, maxWeight 50, stepWeight
// 10, request success rate of at least 99% and p99 request duration of at most 500ms.
func DefaultAnalysis() v1alpha1.CanaryAnalysis {
	minRate, maxDuration := 99.0, 500.0
	return v1alpha1.CanaryAnalysis{
		Interval:   "1m",
		Threshold:  5,
		MaxWeight:  50,
		StepWeight: 10,
		Metrics: []v1alpha1.CanaryMetric{
			{Name: v1alpha1.MetricRequestSuccessRate, Interval: "1m", ThresholdRange: &v1alpha1.CanaryThresholdRange{Min: &minRate}},
			{Name: v1alpha1.MetricRequestDuration, Interval: "1m", ThresholdRange: &v1alpha1.CanaryThresholdRange{Max: &maxDuration}},
		},
	}
}

// DefaultProgressDeadline is Flagger's.
const DefaultProgressDeadline = 10 * time.Minute

// targetIndex indexes Canaries by spec.targetRef.name.
const targetIndex = "spec.targetRef.name"

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=canarygate.io,resources=canaries,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=canarygate.io,resources=canaries/status,verbs=get;update
// +kubebuilder:rbac:groups=canarygate.io,resources=canaries/finalizers,verbs=update
// +kubebuilder:rbac:groups=canarygate.io,resources=canarypolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Setup registers the controllers with the manager. The manager's scheme must know core, apps,
// canarygate.io/v1alpha1 and Istio networking (traffic.AddToScheme).
func Setup(mgr manager.Manager, opts Options) error {
	if opts.DefaultAnalysis.Interval == "" {
		opts.DefaultAnalysis = DefaultAnalysis()
	}
	if opts.DefaultProgressDeadline <= 0 {
		opts.DefaultProgressDeadline = DefaultProgressDeadline
	}
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = 4
	}
	if opts.Router == nil {
		opts.Router = traffic.NewIstio(mgr.GetClient())
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.Canary{}, targetIndex, func(o client.Object) []string {
		return []string{o.(*v1alpha1.Canary).Spec.TargetRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing Canaries by target: %w", err)
	}
	resolver := policy.Resolver{OwnNamespace: opts.OwnNamespace, DefaultStripKeys: opts.StripKeys}
	env := &env{client: mgr.GetClient(), resolver: resolver}

	if err := (&namespaceReconciler{env: env}).setup(mgr); err != nil {
		return fmt.Errorf("namespace controller: %w", err)
	}
	if err := (&autoCanaryReconciler{env: env}).setup(mgr); err != nil {
		return fmt.Errorf("auto-canary controller: %w", err)
	}
	cr := &canaryReconciler{
		env:       env,
		opts:      opts,
		recorder:  mgr.GetEventRecorder("canarygate"),
		providers: newProviderCache(opts.PrometheusHTTPConfig),
	}
	if err := cr.setup(mgr); err != nil {
		return fmt.Errorf("canary controller: %w", err)
	}
	return nil
}

// env is what every reconciler reads through: the manager's cache-backed client and the policy.
type env struct {
	client   client.Client
	resolver policy.Resolver
}

// effective resolves the CanaryPolicies for a namespace from the cache. An invalid policy is
// skipped by the resolver; its error is returned for logging only.
func (e *env) effective(ctx context.Context, ns *corev1.Namespace) (policy.Effective, error) {
	var policies v1alpha1.CanaryPolicyList
	if err := e.client.List(ctx, &policies); err != nil {
		return policy.Effective{}, fmt.Errorf("listing CanaryPolicies: %w", err)
	}
	eff, err := e.resolver.Resolve(ns, policies.Items)
	return eff, err
}

// generated reports whether a Deployment was generated by canarygate.
func generated(d *appsv1.Deployment) bool {
	_, ok := d.Labels[v1alpha1.GeneratedForLabel]
	return ok
}
