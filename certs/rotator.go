package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// +kubebuilder:rbac:groups="",namespace=canarygate-system,resources=secrets,verbs=get;list;watch;create;update
// canarygate reads every webhook configuration through its cache (list and watch cannot be limited
// by name) but may write only its own two, both named canarygate in the install manifests.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=get;list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=update,resourceNames=canarygate

// retryAfterConflict is how soon a reconcile that lost a write race looks again; the winner's
// write is usually in the cache by then.
const retryAfterConflict = 200 * time.Millisecond

// Setup makes mgr's webhook server present the self-managed serving certificate and adds the
// controller that creates, rotates and distributes it. It returns the readiness check to register
// (for example as /readyz): it fails until a valid serving certificate is loaded.
//
// Call it before mgr.Start, on every replica: the controller runs whether or not this replica
// holds the manager's leader lease, because every replica serves webhooks. Any replica may
// rotate; writes to the Secret use optimistic concurrency, and each replica serves only what the
// Secret holds, so replicas that start together converge on one CA and one certificate.
//
// mgr's webhook server must be a *webhook.DefaultServer (what the manager and webhook.NewServer
// create); Setup appends a TLS option that makes it take its certificate from memory instead of
// CertDir. Setup registers that server with mgr if nothing did so yet.
func Setup(mgr manager.Manager, opts Options) (healthz.Checker, error) {
	p, err := opts.policy()
	if err != nil {
		return nil, err
	}
	srv, ok := mgr.GetWebhookServer().(*webhook.DefaultServer)
	if !ok {
		return nil, fmt.Errorf("certs: webhook server %T cannot be given a certificate; use webhook.NewServer", mgr.GetWebhookServer())
	}
	s := &served{}
	srv.Options.TLSOpts = append(srv.Options.TLSOpts, func(c *tls.Config) { c.GetCertificate = s.getCertificate })

	// A cache of our own, narrowed to the one Secret and the two configurations by name, so that
	// neither the RBAC nor the memory cost of watching every Secret falls on the manager's cache.
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := admissionregistrationv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	watched := []client.Object{&corev1.Secret{}}
	byObject := map[client.Object]cache.ByObject{
		&corev1.Secret{}: {
			Namespaces: map[string]cache.Config{opts.Namespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", opts.SecretName),
		},
	}
	if opts.MutatingWebhookConfig != "" {
		obj := &admissionregistrationv1.MutatingWebhookConfiguration{}
		watched = append(watched, obj)
		byObject[obj] = cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", opts.MutatingWebhookConfig)}
	}
	if opts.ValidatingWebhookConfig != "" {
		obj := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		watched = append(watched, obj)
		byObject[obj] = cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", opts.ValidatingWebhookConfig)}
	}
	c, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme:                      scheme,
		Mapper:                      mgr.GetRESTMapper(),
		HTTPClient:                  mgr.GetHTTPClient(),
		ByObject:                    byObject,
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("certs: creating cache: %w", err)
	}
	cl, err := client.New(mgr.GetConfig(), client.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper(), HTTPClient: mgr.GetHTTPClient()})
	if err != nil {
		return nil, fmt.Errorf("certs: creating client: %w", err)
	}
	if err := mgr.Add(ownCache{c}); err != nil {
		return nil, err
	}

	r := &rotator{opts: opts, policy: p, reader: c, writer: cl, served: s}
	ctrl, err := controller.New("canarygate-certs", mgr, controller.Options{
		Reconciler:         r,
		NeedLeaderElection: ptr.To(false),
		// The name is fixed; a process running several managers (the tests) has it several times.
		SkipNameValidation: ptr.To(true),
	})
	if err != nil {
		return nil, err
	}
	// Everything funnels into one request: the reconcile looks at the whole picture each time.
	key := types.NamespacedName{Namespace: opts.Namespace, Name: opts.SecretName}
	enqueue := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: key}}
	})
	for _, obj := range watched {
		if err := ctrl.Watch(source.Kind(c, obj, enqueue)); err != nil {
			return nil, err
		}
	}
	return s.ready, nil
}

// ownCache puts the cache into the manager's cache group, which starts (and syncs) before
// controllers and needs no leader lease.
type ownCache struct{ cache.Cache }

func (o ownCache) GetCache() cache.Cache { return o.Cache }

// rotator reconciles the Secret, this replica's served certificate and the caBundles.
type rotator struct {
	opts   Options
	policy policy
	reader client.Reader // the narrowed cache
	writer client.Client
	served *served
}

func (r *rotator) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx)
	now := time.Now()

	sec := &corev1.Secret{}
	exists := true
	if err := r.reader.Get(ctx, req.NamespacedName, sec); apierrors.IsNotFound(err) {
		exists = false
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: req.Name},
			Type:       corev1.SecretTypeTLS,
		}
	} else if err != nil {
		return reconcile.Result{}, err
	}
	cur := readState(sec)
	injected, err := r.signerInjected(ctx, cur.signer)
	if err != nil {
		return reconcile.Result{}, err
	}

	d := decide(now, r.policy, cur, injected)
	if d.changes() {
		next := sec.DeepCopy()
		if err := apply(now, r.policy, cur, d, next); err != nil {
			return reconcile.Result{}, err
		}
		if exists {
			err = r.writer.Update(ctx, next)
		} else {
			err = r.writer.Create(ctx, next)
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			// Another replica wrote first: its content wins, and we look again once we see it.
			log.V(1).Info("lost the race to write the certificate Secret; re-reading", "reason", err.Error())
			return reconcile.Result{RequeueAfter: retryAfterConflict}, nil
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("writing secret %s: %w", req.NamespacedName, err)
		}
		log.Info("updated certificate Secret", "newCA", d.newSigner, "newServingCert", d.issueServing,
			"caTrusted", d.markTrusted, "bundleSize", len(parseBundle(next.Data[bundleKey])))
		sec = next
	}

	if leaf, err := r.served.load(sec, now); err != nil {
		log.Error(err, "keeping the serving certificate loaded before")
	} else if leaf != nil {
		log.Info("serving certificate loaded", "notAfter", leaf.NotAfter, "serial", leaf.SerialNumber.Text(16))
	}
	if err := r.inject(ctx, sec.Data[bundleKey]); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: retryAfterConflict}, nil
		}
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: d.requeueAfter}, nil
}

// signerInjected reports whether every webhook of every configured configuration that exists
// trusts signer. A configuration that does not exist calls nobody, so it does not hold trust back.
func (r *rotator) signerInjected(ctx context.Context, signer *keyPair) (bool, error) {
	if signer == nil {
		return false, nil
	}
	ok := true
	err := r.eachClientConfig(ctx, func(cc *admissionregistrationv1.WebhookClientConfig) bool {
		ok = ok && bundleContains(cc.CABundle, signer.cert)
		return false
	})
	return ok, err
}

// inject sets caBundle on every webhook of the configured configurations to bundle.
func (r *rotator) inject(ctx context.Context, bundle []byte) error {
	if len(bundle) == 0 {
		return nil
	}
	return r.eachClientConfig(ctx, func(cc *admissionregistrationv1.WebhookClientConfig) bool {
		if bytes.Equal(cc.CABundle, bundle) {
			return false
		}
		cc.CABundle = bundle
		return true
	})
}

// eachClientConfig calls fn for every webhook's client config of the configured configurations
// and writes back (with the read resourceVersion) each configuration for which fn reported a change.
func (r *rotator) eachClientConfig(ctx context.Context, fn func(*admissionregistrationv1.WebhookClientConfig) bool) error {
	if name := r.opts.MutatingWebhookConfig; name != "" {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		err := r.visit(ctx, name, cfg, func() bool {
			changed := false
			for i := range cfg.Webhooks {
				changed = fn(&cfg.Webhooks[i].ClientConfig) || changed
			}
			return changed
		})
		if err != nil {
			return err
		}
	}
	if name := r.opts.ValidatingWebhookConfig; name != "" {
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		return r.visit(ctx, name, cfg, func() bool {
			changed := false
			for i := range cfg.Webhooks {
				changed = fn(&cfg.Webhooks[i].ClientConfig) || changed
			}
			return changed
		})
	}
	return nil
}

func (r *rotator) visit(ctx context.Context, name string, obj client.Object, mutate func() bool) error {
	if err := r.reader.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			// Normal for a moment while the install manifests are applied; for longer, a
			// misnamed configuration that would leave every webhook call failing TLS.
			logf.FromContext(ctx).Info("webhook configuration not found; no CA bundle to inject until it exists "+
				"(see --mutating-webhook-configuration and --validating-webhook-configuration)", "kind", fmt.Sprintf("%T", obj), "name", name)
			return nil
		}
		return err
	}
	if !mutate() {
		return nil
	}
	if err := r.writer.Update(ctx, obj); err != nil {
		return fmt.Errorf("injecting caBundle into %T %s: %w", obj, name, err)
	}
	logf.FromContext(ctx).Info("injected caBundle", "kind", fmt.Sprintf("%T", obj), "name", name)
	return nil
}
