package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/policy"
)

// Paths the handlers are served on: a contract with the webhook configurations in manifests/.
const (
	MutateDeploymentsPath   = "/mutate-deployments"
	MutateNamespacesPath    = "/mutate-namespaces"
	ValidateDeploymentsPath = "/validate-deployments"
	ValidateGeneratedPath   = "/validate-generated"
	ValidateCanarygatePath  = "/validate-canarygate"
)

// The webhook configurations, generated into manifests/webhook by `make manifests`. The
// namespaceSelector (only namespaces labeled canarygate.io/canary=enabled) is added by kustomize;
// /validate-generated is only sent objects labeled canarygate.io/generated-for, and
// /mutate-namespaces only Namespaces labeled canarygate.io/canary=enabled (the API server matches
// an objectSelector against the old and the new object, so a write that drops the label is sent
// too; a namespaceSelector on a Namespace would match only the new object). /mutate-namespaces
// fails open: it only keeps a label in place that the controller would restore anyway.
// +kubebuilder:webhook:path=/mutate-deployments,mutating=true,failurePolicy=fail,sideEffects=None,groups=apps,resources=deployments,verbs=create;update,versions=v1,name=mdeployments.canarygate.io,admissionReviewVersions=v1,timeoutSeconds=5,reinvocationPolicy=IfNeeded
// +kubebuilder:webhook:path=/mutate-namespaces,mutating=true,failurePolicy=ignore,sideEffects=None,groups=core,resources=namespaces,verbs=update,versions=v1,name=mnamespaces.canarygate.io,admissionReviewVersions=v1,timeoutSeconds=3,reinvocationPolicy=IfNeeded,patch=`{"objectSelector":{"matchLabels":{"canarygate.io/canary":"enabled"}}}`
// +kubebuilder:webhook:path=/validate-deployments,mutating=false,failurePolicy=fail,sideEffects=None,groups=apps,resources=deployments,verbs=create;update,versions=v1,name=vdeployments.canarygate.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-generated,mutating=false,failurePolicy=fail,sideEffects=None,groups=apps;core;networking.istio.io,resources=deployments;services;virtualservices,verbs=create;update;delete,versions=v1;v1beta1;v1alpha3,name=vgenerated.canarygate.io,admissionReviewVersions=v1,timeoutSeconds=5,patch=`{"objectSelector":{"matchExpressions":[{"key":"canarygate.io/generated-for","operator":"Exists"}]}}`
// +kubebuilder:webhook:path=/validate-canarygate,mutating=false,failurePolicy=fail,sideEffects=None,groups=canarygate.io,resources=canaries;canarypolicies,verbs=create;update,versions=v1alpha1,name=vcanarygate.canarygate.io,admissionReviewVersions=v1,timeoutSeconds=5

// What the handlers read from the manager's cache.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=canarygate.io,resources=canaries;canarypolicies,verbs=get;list;watch

// DefaultGitOpsFieldManagers are the field managers whose writes state what Git holds: Fleet (its
// agent deploys through Helm), Argo CD, Flux, and kubectl apply.
var DefaultGitOpsFieldManagers = []string{
	"fleet", "fleet-agent", "helm",
	"argocd-controller", "argocd-application-controller",
	"kustomize-controller", "helm-controller",
	"kubectl", "kubectl-client-side-apply",
}

// Options configure the handlers.
type Options struct {
	// OwnNamespace is canarygate's namespace; it is never managed.
	OwnNamespace string
	// ServiceAccount is canarygate's own username, "system:serviceaccount:<ns>:<name>".
	ServiceAccount string
	// GitOpsFieldManagers are the field managers whose updates state Git's template; nil means
	// DefaultGitOpsFieldManagers.
	GitOpsFieldManagers []string
	// StripKeys are the ownership key patterns where no policy sets them; nil means
	// revision.DefaultOwnershipKeys.
	StripKeys []string
}

// Register serves the five handlers on the manager's webhook server and sets up the cache
// informers and index they read. It must be called before the manager starts; the manager's
// scheme must know corev1 and canarygate.io/v1alpha1.
func Register(mgr manager.Manager, opts Options) error {
	if opts.ServiceAccount == "" {
		return errors.New("webhook: Options.ServiceAccount is required")
	}
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.Canary{}, canaryTargetIndex, canaryTarget); err != nil {
		return fmt.Errorf("webhook: indexing Canaries by target: %w", err)
	}
	// Informers are created now, not on the first request, so that they sync when the manager
	// starts and no admission request waits for an initial list.
	for _, obj := range []client.Object{&corev1.Namespace{}, &v1alpha1.CanaryPolicy{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("webhook: watching %T: %w", obj, err)
		}
	}
	h := newHandlers(cacheLookup{reader: mgr.GetCache()}, opts)
	srv := mgr.GetWebhookServer()
	srv.Register(MutateDeploymentsPath, &admission.Webhook{Handler: admission.HandlerFunc(h.mutateDeployment)})
	srv.Register(MutateNamespacesPath, &admission.Webhook{Handler: admission.HandlerFunc(h.mutateNamespace)})
	srv.Register(ValidateDeploymentsPath, &admission.Webhook{Handler: admission.HandlerFunc(h.validateDeployment)})
	srv.Register(ValidateGeneratedPath, &admission.Webhook{Handler: admission.HandlerFunc(h.validateGenerated)})
	srv.Register(ValidateCanarygatePath, &admission.Webhook{Handler: admission.HandlerFunc(h.validateCanarygate)})
	return nil
}

// handlers holds the configuration and the lookups shared by all five handlers. Every handler is
// a pure function of the request and the lookups: no API writes, so dry-run gets the same answer.
type handlers struct {
	lookup         Lookup
	resolver       policy.Resolver
	serviceAccount string
	gitOps         map[string]bool
	memo           *memo
}

func newHandlers(lookup Lookup, opts Options) *handlers {
	managers := opts.GitOpsFieldManagers
	if managers == nil {
		managers = DefaultGitOpsFieldManagers
	}
	gitOps := make(map[string]bool, len(managers))
	for _, m := range managers {
		gitOps[m] = true
	}
	return &handlers{
		lookup:         lookup,
		resolver:       policy.Resolver{OwnNamespace: opts.OwnNamespace, DefaultStripKeys: opts.StripKeys},
		serviceAccount: opts.ServiceAccount,
		gitOps:         gitOps,
		memo:           newMemo(),
	}
}

// effective resolves the policy in force in a namespace. A non-nil response is the answer to give
// instead: canarygate cannot decide without the namespace, and must not allow by default.
func (h *handlers) effective(ctx context.Context, namespace string) (policy.Effective, *admission.Response) {
	ns, err := h.lookup.Namespace(ctx, namespace)
	if err != nil {
		code := int32(http.StatusInternalServerError)
		if errors.Is(err, errNamespaceUnknown) {
			code = http.StatusServiceUnavailable
		}
		resp := admission.Errored(code, fmt.Errorf("canarygate cannot read namespace %q yet, retry: %w", namespace, err))
		return policy.Effective{}, &resp
	}
	return h.resolve(ctx, ns)
}

// resolve merges the CanaryPolicies that apply to ns, which may be the namespace as a request
// would store it rather than the cached one.
func (h *handlers) resolve(ctx context.Context, ns *corev1.Namespace) (policy.Effective, *admission.Response) {
	policies, err := h.lookup.Policies(ctx)
	if err != nil {
		resp := admission.Errored(http.StatusInternalServerError, fmt.Errorf("canarygate cannot read CanaryPolicies, retry: %w", err))
		return policy.Effective{}, &resp
	}
	eff, err := h.resolver.Resolve(ns, policies)
	if err != nil {
		// An invalid policy is skipped (and reported by the controller); the others still apply.
		logf.FromContext(ctx).Info("ignoring an invalid CanaryPolicy", "error", err.Error())
	}
	return eff, nil
}

// isKind reports whether the request is about group/kind (any version for Istio's several).
func isKind(req admission.Request, group, kind string) bool {
	return req.Kind.Group == group && req.Kind.Kind == kind
}

func isDeployment(req admission.Request) bool {
	return isKind(req, "apps", "Deployment") && req.Kind.Version == "v1"
}

func badRequest(format string, args ...any) admission.Response {
	return admission.Errored(http.StatusBadRequest, fmt.Errorf(format, args...))
}

func wrongKind(req admission.Request, want string) admission.Response {
	return badRequest("canarygate: this webhook admits %s, not %s", want, req.Kind.String())
}

// isWrite reports whether the operation carries an object (CREATE or UPDATE).
func isWrite(op admissionv1.Operation) bool {
	return op == admissionv1.Create || op == admissionv1.Update
}
