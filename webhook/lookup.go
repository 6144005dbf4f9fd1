package webhook

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"canarygate.io/canarygate/api/v1alpha1"
)

// Lookup is everything the handlers read besides the request: in production the manager's cache,
// in tests a map. Implementations must not call the API server per request.
type Lookup interface {
	// Namespace returns the namespace, or errNamespaceUnknown when it is not known (yet).
	Namespace(ctx context.Context, name string) (*corev1.Namespace, error)
	// Policies returns every CanaryPolicy. Callers only read the result.
	Policies(ctx context.Context) ([]v1alpha1.CanaryPolicy, error)
	// CanariesTargeting returns the names of the Canaries in namespace whose targetRef names target.
	CanariesTargeting(ctx context.Context, namespace, target string) ([]string, error)
}

// errNamespaceUnknown means the namespace is not in the cache: the API server sent the request
// because the namespace carries the opt-in label, so the cache lags and the answer must wait.
var errNamespaceUnknown = errors.New("namespace not known")

// canaryTargetIndex is the cache index of Canaries by spec.targetRef.name. The name is the
// webhook's own so that it never clashes with an index the controllers register.
const canaryTargetIndex = "webhook.canarygate.io/target"

func canaryTarget(obj client.Object) []string {
	c, ok := obj.(*v1alpha1.Canary)
	if !ok || c.Spec.TargetRef.Name == "" {
		return nil
	}
	return []string{c.Spec.TargetRef.Name}
}

// cacheLookup reads from the manager's informer cache.
type cacheLookup struct {
	reader client.Reader
}

func (l cacheLookup) Namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	var ns corev1.Namespace
	if err := l.reader.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, fmt.Errorf("%w: %s", errNamespaceUnknown, name)
		}
		return nil, err
	}
	return &ns, nil
}

func (l cacheLookup) Policies(ctx context.Context) ([]v1alpha1.CanaryPolicy, error) {
	var list v1alpha1.CanaryPolicyList
	// Read-only use: skip the deep copy of every policy on every request.
	if err := l.reader.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return list.Items, nil
}

func (l cacheLookup) CanariesTargeting(ctx context.Context, namespace, target string) ([]string, error) {
	var list v1alpha1.CanaryList
	if err := l.reader.List(ctx, &list, client.InNamespace(namespace),
		client.MatchingFields{canaryTargetIndex: target}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for i := range list.Items {
		names = append(names, list.Items[i].Name)
	}
	return names, nil
}
