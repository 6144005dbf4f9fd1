// Package policy decides, without Kubernetes I/O, whether a namespace is managed and which
// CanaryPolicy settings apply in it. The webhook and the controller both use it on cached objects.
package policy

import (
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/revision"
)

// AlwaysExcluded are never managed, whatever their annotations or any policy say, so that an outage
// of canarygate cannot block the cluster's own components. canarygate's own namespace is added by
// the caller.
var AlwaysExcluded = []string{"kube-system", "kube-public", "kube-node-lease", "cattle-fleet-system"}

// Effective is what applies in one namespace once every matching CanaryPolicy is merged.
type Effective struct {
	// Managed namespaces get canaries for their Deployments.
	Managed bool
	// Policies are the names of the matching policies, sorted.
	Policies []string
	// Defaults is the analysis of Canaries that carry none (first matching policy that sets it).
	Defaults *v1alpha1.CanaryAnalysis
	// MaxWeight is the smallest cap of all matching policies; nil means no cap.
	MaxWeight *int
	// MinInterval is the largest minimum interval of all matching policies.
	MinInterval time.Duration
	// AllowSkipAnalysis and AllowOptOut hold only if every matching policy allows them.
	AllowSkipAnalysis bool
	AllowOptOut       bool
	// BreakGlassGroups is the union of the matching policies' groups: every policy is an admin's.
	BreakGlassGroups []string
	// StripKeys is the ownership key list for generated objects.
	StripKeys []string
	// MetricsServer is the Prometheus address from the first matching policy that sets one.
	MetricsServer string
}

// Resolver decides with a fixed set of exclusions.
type Resolver struct {
	// OwnNamespace is canarygate's namespace; it is never managed.
	OwnNamespace string
	// DefaultStripKeys replaces revision.DefaultOwnershipKeys when set (the --strip-metadata-keys flag).
	DefaultStripKeys []string
}

// Excluded reports whether a namespace can never be managed.
func (r Resolver) Excluded(namespace string) bool {
	if namespace == r.OwnNamespace {
		return true
	}
	for _, n := range AlwaysExcluded {
		if n == namespace {
			return true
		}
	}
	return false
}

// OptedIn reports whether the namespace carries the opt-in annotation.
func OptedIn(ns *corev1.Namespace) bool {
	return ns.Annotations[v1alpha1.OptInKey] == v1alpha1.OptInEnabled
}

// Selects reports whether a policy selects the namespace through its namespaceSelector.
func Selects(p *v1alpha1.CanaryPolicy, ns *corev1.Namespace) (bool, error) {
	if p.Spec.NamespaceSelector == nil {
		return false, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.NamespaceSelector)
	if err != nil {
		return false, fmt.Errorf("CanaryPolicy %s has an invalid namespaceSelector: %w", p.Name, err)
	}
	// An empty selector selects every namespace, as elsewhere in Kubernetes.
	return sel.Matches(labels.Set(ns.Labels)), nil
}

// Resolve merges the policies that apply to ns. A policy applies when it selects the namespace, or
// when it has no selector and the namespace opted in itself. Policies with an invalid selector are
// skipped and reported in the error, which callers surface as a condition or an Event.
func (r Resolver) Resolve(ns *corev1.Namespace, policies []v1alpha1.CanaryPolicy) (Effective, error) {
	eff := Effective{AllowOptOut: true}
	if ns == nil || r.Excluded(ns.Name) {
		eff.StripKeys = r.stripKeys(nil)
		return eff, nil
	}
	optedIn := OptedIn(ns)
	eff.Managed = optedIn
	sorted := make([]*v1alpha1.CanaryPolicy, 0, len(policies))
	for i := range policies {
		sorted = append(sorted, &policies[i])
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })

	var firstErr error
	allowSkip := true
	matched := 0
	groups := map[string]bool{}
	for _, p := range sorted {
		selects, err := Selects(p, ns)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if !selects && !(p.Spec.NamespaceSelector == nil && optedIn) {
			continue
		}
		matched++
		eff.Managed = true
		eff.Policies = append(eff.Policies, p.Name)
		if eff.Defaults == nil && p.Spec.Defaults != nil {
			eff.Defaults = p.Spec.Defaults
		}
		if eff.MetricsServer == "" {
			eff.MetricsServer = p.Spec.MetricsServer
		}
		if eff.StripKeys == nil && len(p.Spec.StripMetadataKeys) > 0 {
			eff.StripKeys = p.Spec.StripMetadataKeys
		}
		b := p.Spec.Bounds
		if b.MaxWeight != nil && (eff.MaxWeight == nil || *b.MaxWeight < *eff.MaxWeight) {
			w := *b.MaxWeight
			eff.MaxWeight = &w
		}
		if b.MinInterval != "" {
			d, err := time.ParseDuration(b.MinInterval)
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("CanaryPolicy %s: bounds.minInterval %q: %w", p.Name, b.MinInterval, err)
			}
			if d > eff.MinInterval {
				eff.MinInterval = d
			}
		}
		allowSkip = allowSkip && b.AllowSkipAnalysis
		if b.AllowOptOut != nil && !*b.AllowOptOut {
			eff.AllowOptOut = false
		}
		for _, g := range p.Spec.BreakGlassGroups {
			if !groups[g] {
				groups[g] = true
				eff.BreakGlassGroups = append(eff.BreakGlassGroups, g)
			}
		}
	}
	// Without any policy nothing forbids skipAnalysis: the Canary's author owns the namespace.
	eff.AllowSkipAnalysis = matched == 0 || allowSkip
	sort.Strings(eff.BreakGlassGroups)
	eff.StripKeys = r.stripKeys(eff.StripKeys)
	return eff, firstErr
}

func (r Resolver) stripKeys(fromPolicy []string) []string {
	if fromPolicy != nil {
		return fromPolicy
	}
	if r.DefaultStripKeys != nil {
		return r.DefaultStripKeys
	}
	return revision.DefaultOwnershipKeys
}

// InGroups reports whether any of the requester's groups is among allowed.
func InGroups(requester, allowed []string) bool {
	for _, g := range requester {
		for _, a := range allowed {
			if g == a {
				return true
			}
		}
	}
	return false
}

// DeploymentManaged reports whether a Deployment in a managed namespace goes through canaries:
// its opt-out annotation is honoured only where the policy allows opting out.
func (e Effective) DeploymentManaged(annotations map[string]string) bool {
	if !e.Managed {
		return false
	}
	return !(annotations[v1alpha1.OptInKey] == v1alpha1.OptOutDisabled && e.AllowOptOut)
}
