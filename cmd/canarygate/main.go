// Command canarygate runs the admission webhooks and the canary controllers in one manager.
// Flags pick what runs; every replica serves the webhooks, the controllers are leader-elected.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	istionetworking "istio.io/client-go/pkg/apis/networking/v1"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/certs"
	"canarygate.io/canarygate/controller"
	"canarygate.io/canarygate/revision"
	"canarygate.io/canarygate/webhook"
)

type config struct {
	namespace, serviceAccount                      string
	enableWebhooks, enableControllers              bool
	webhookHost, certDir                           string
	webhookPort                                    int
	metricsAddr, probeAddr, pprofAddr              string
	leaderElect                                    bool
	leaderElectionID                               string
	kubeQPS                                        float64
	kubeBurst                                      int
	certManagement                                 string
	webhookService, mutatingConfig, validatingConf string
	certExtraDNS, certExtraIPs                     string
	caValidity, certValidity, renewBefore          time.Duration
	prometheusAddr, prometheusHTTPConfig           string
	defaultInterval                                time.Duration
	defaultThreshold, defaultMaxWeight             int
	defaultStepWeight                              int
	defaultProgressDeadline                        time.Duration
	stripKeys, gitopsManagers                      string
	maxConcurrent                                  int
}

func main() {
	cfg := config{}
	fs := flag.CommandLine
	fs.StringVar(&cfg.namespace, "namespace", envOr("POD_NAMESPACE", "canarygate-system"), "canarygate's own namespace: never managed; holds the certificate Secret and the leader-election lease (env POD_NAMESPACE)")
	fs.StringVar(&cfg.serviceAccount, "service-account", "", "canarygate's own user name, allowed to promote and to edit generated objects (default system:serviceaccount:<namespace>:canarygate)")
	fs.BoolVar(&cfg.enableWebhooks, "enable-webhooks", true, "serve the admission webhooks (every replica)")
	fs.BoolVar(&cfg.enableControllers, "enable-controllers", true, "run the controllers (leader-elected when --leader-elect)")
	fs.StringVar(&cfg.webhookHost, "webhook-host", "", "address the webhook server listens on (empty: all)")
	fs.IntVar(&cfg.webhookPort, "webhook-port", 9443, "port of the webhook server")
	fs.StringVar(&cfg.certDir, "cert-dir", "/tmp/canarygate/serving-certs", "directory holding the webhook serving certificate (tls.crt, tls.key) with --cert-management=external; self-managed certificates are served from memory")
	fs.StringVar(&cfg.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (0 disables it)")
	fs.StringVar(&cfg.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.StringVar(&cfg.pprofAddr, "pprof-bind-address", "", "address of Go's pprof endpoints, for profiling (empty: off)")
	fs.BoolVar(&cfg.leaderElect, "leader-elect", false, "elect one leader for the controllers (set for more than one replica)")
	fs.StringVar(&cfg.leaderElectionID, "leader-election-id", "canarygate.canarygate.io", "name of the leader-election Lease")
	fs.Float64Var(&cfg.kubeQPS, "kube-api-qps", controller.DefaultClientQPS, "client-side queries per second to the API server, per resource type")
	fs.IntVar(&cfg.kubeBurst, "kube-api-burst", controller.DefaultClientBurst, "client-side burst to the API server, per resource type")
	fs.StringVar(&cfg.certManagement, "cert-management", "self", "who manages the webhook certificate: self (canarygate's own CA, rotated and injected) or external (cert-manager or files in --cert-dir)")
	fs.StringVar(&cfg.webhookService, "webhook-service", "canarygate-webhook", "name of the webhook Service (the serving certificate's DNS names)")
	fs.StringVar(&cfg.mutatingConfig, "mutating-webhook-configuration", "canarygate", "MutatingWebhookConfiguration whose caBundle canarygate keeps")
	fs.StringVar(&cfg.validatingConf, "validating-webhook-configuration", "canarygate", "ValidatingWebhookConfiguration whose caBundle canarygate keeps")
	fs.StringVar(&cfg.certExtraDNS, "cert-extra-dns-names", "", "comma-separated extra DNS names for the serving certificate")
	fs.StringVar(&cfg.certExtraIPs, "cert-extra-ips", "", "comma-separated extra IP addresses for the serving certificate")
	fs.DurationVar(&cfg.caValidity, "ca-validity", certs.DefaultCAValidity, "validity of the self-managed CA")
	fs.DurationVar(&cfg.certValidity, "cert-validity", certs.DefaultCertValidity, "validity of the self-managed serving certificate")
	fs.DurationVar(&cfg.renewBefore, "cert-renew-before", certs.DefaultRenewBefore, "renew a certificate this long before it expires")
	fs.StringVar(&cfg.prometheusAddr, "prometheus-address", "http://prometheus.istio-system:9090", "default Prometheus address (a Canary's metricsServer or the CanaryPolicy's override it)")
	fs.StringVar(&cfg.prometheusHTTPConfig, "prometheus-http-config", "", "YAML file with Prometheus' HTTP client config (bearer token, basic auth, TLS), as in Prometheus' own http_config")
	fs.DurationVar(&cfg.defaultInterval, "default-interval", time.Minute, "analysis interval of Canaries without analysis and without a policy default")
	fs.IntVar(&cfg.defaultThreshold, "default-threshold", 5, "failed checks before rollback, default")
	fs.IntVar(&cfg.defaultMaxWeight, "default-max-weight", 50, "largest canary weight before promotion, default")
	fs.IntVar(&cfg.defaultStepWeight, "default-step-weight", 10, "weight added per passing round, default")
	fs.DurationVar(&cfg.defaultProgressDeadline, "default-progress-deadline", controller.DefaultProgressDeadline, "how long a canary or promotion rollout may take to become available, default")
	fs.StringVar(&cfg.stripKeys, "strip-metadata-keys", strings.Join(revision.DefaultOwnershipKeys, ","), "comma-separated GitOps ownership metadata patterns kept off generated objects (prefix/*, *.domain/*, key=value, key), unless a CanaryPolicy sets its own")
	fs.StringVar(&cfg.gitopsManagers, "gitops-field-managers", strings.Join(webhook.DefaultGitOpsFieldManagers, ","), "comma-separated field managers whose updates state Git's template (a template equal to the stable one from them clears the pending revision)")
	fs.IntVar(&cfg.maxConcurrent, "max-concurrent-reconciles", controller.DefaultMaxConcurrentReconciles, "canaries reconciled in parallel")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: canarygate [flags]\n\nRuns canarygate's admission webhooks and canary controllers.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(cfg); err != nil {
		// A plain line, not a logged stack trace: most errors here are a flag a person mistyped.
		fmt.Fprintln(os.Stderr, "canarygate:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	log := ctrl.Log.WithName("setup")
	if cfg.serviceAccount == "" {
		cfg.serviceAccount = "system:serviceaccount:" + cfg.namespace + ":canarygate"
	}
	switch cfg.certManagement {
	case "self", "external":
	default:
		return fmt.Errorf("--cert-management must be self or external, not %q", cfg.certManagement)
	}
	stripKeys := splitList(cfg.stripKeys)
	analysisDefaults, err := defaultAnalysis(cfg)
	if err != nil {
		return err
	}
	var promHTTP promconfig.HTTPClientConfig
	if cfg.prometheusHTTPConfig != "" {
		raw, err := os.ReadFile(cfg.prometheusHTTPConfig)
		if err != nil {
			return fmt.Errorf("--prometheus-http-config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &promHTTP); err != nil {
			return fmt.Errorf("--prometheus-http-config %s: %w", cfg.prometheusHTTPConfig, err)
		}
		promHTTP.SetDirectory(filepath.Dir(cfg.prometheusHTTPConfig))
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme, istionetworking.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no Kubernetes configuration: %w", err)
	}
	restCfg.QPS = float32(cfg.kubeQPS)
	restCfg.Burst = cfg.kubeBurst

	webhookPort := cfg.webhookPort
	if !cfg.enableWebhooks {
		webhookPort = -1
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: cfg.metricsAddr},
		HealthProbeBindAddress: cfg.probeAddr,
		PprofBindAddress:       cfg.pprofAddr,
		// Nothing reads managedFields from the cache, and they are a large part of every cached
		// object; an Update without managedFields leaves the stored ones as they are.
		Cache:                   cache.Options{DefaultTransform: cache.TransformStripManagedFields()},
		LeaderElection:          cfg.leaderElect,
		LeaderElectionID:        cfg.leaderElectionID,
		LeaderElectionNamespace: cfg.namespace,
		// The controllers stop at once when leadership is lost; a new leader resumes from status.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: ctrlwebhook.NewServer(ctrlwebhook.Options{
			Host: cfg.webhookHost, Port: webhookPort, CertDir: cfg.certDir,
		}),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}

	if cfg.enableWebhooks {
		ready := certs.CertFileReady(cfg.certDir)
		if cfg.certManagement == "self" {
			ready, err = certs.Setup(mgr, certs.Options{
				Namespace:               cfg.namespace,
				SecretName:              cfg.webhookService + "-tls",
				ServiceName:             cfg.webhookService,
				ExtraDNSNames:           splitList(cfg.certExtraDNS),
				ExtraIPs:                splitList(cfg.certExtraIPs),
				MutatingWebhookConfig:   cfg.mutatingConfig,
				ValidatingWebhookConfig: cfg.validatingConf,
				CAValidity:              cfg.caValidity,
				CertValidity:            cfg.certValidity,
				RenewBefore:             cfg.renewBefore,
			})
			if err != nil {
				return fmt.Errorf("setting up certificates: %w", err)
			}
		}
		if err := mgr.AddReadyzCheck("serving-certificate", ready); err != nil {
			return err
		}
		if err := webhook.Register(mgr, webhook.Options{
			OwnNamespace:        cfg.namespace,
			ServiceAccount:      cfg.serviceAccount,
			GitOpsFieldManagers: splitList(cfg.gitopsManagers),
			StripKeys:           stripKeys,
		}); err != nil {
			return fmt.Errorf("registering webhooks: %w", err)
		}
	}
	if cfg.enableControllers {
		if err := controller.Setup(mgr, controller.Options{
			OwnNamespace:            cfg.namespace,
			MetricsServer:           cfg.prometheusAddr,
			PrometheusHTTPConfig:    promHTTP,
			DefaultAnalysis:         analysisDefaults,
			DefaultProgressDeadline: cfg.defaultProgressDeadline,
			StripKeys:               stripKeys,
			MaxConcurrentReconciles: cfg.maxConcurrent,
		}); err != nil {
			return fmt.Errorf("setting up controllers: %w", err)
		}
	}
	log.Info("starting", "namespace", cfg.namespace, "webhooks", cfg.enableWebhooks, "controllers", cfg.enableControllers)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// defaultAnalysis is the analysis of Canaries that set none and whose namespace's policy sets none:
// the controller's default checks (Flagger's Istio success rate and latency, so that no canary is
// ever promoted unmeasured) on the schedule the flags give.
func defaultAnalysis(cfg config) (v1alpha1.CanaryAnalysis, error) {
	if cfg.defaultInterval < 5*time.Second {
		return v1alpha1.CanaryAnalysis{}, fmt.Errorf("--default-interval must be at least 5s, not %s", cfg.defaultInterval)
	}
	if cfg.defaultThreshold < 1 {
		return v1alpha1.CanaryAnalysis{}, fmt.Errorf("--default-threshold must be at least 1, not %d", cfg.defaultThreshold)
	}
	if cfg.defaultMaxWeight < 1 || cfg.defaultMaxWeight > 100 || cfg.defaultStepWeight < 1 || cfg.defaultStepWeight > cfg.defaultMaxWeight {
		return v1alpha1.CanaryAnalysis{}, fmt.Errorf("--default-max-weight must be 1-100 and --default-step-weight 1 to --default-max-weight, not %d and %d", cfg.defaultMaxWeight, cfg.defaultStepWeight)
	}
	a := controller.DefaultAnalysis()
	a.Interval = cfg.defaultInterval.String()
	a.Threshold = cfg.defaultThreshold
	a.MaxWeight = cfg.defaultMaxWeight
	a.StepWeight = cfg.defaultStepWeight
	return a, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
