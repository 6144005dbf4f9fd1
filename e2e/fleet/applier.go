package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/csaupgrade"
	"k8s.io/client-go/util/retry"
)

// watchedKinds are listed by Check for extra objects even when the bundle declares none of them:
// the kinds a canary controller creates next to a Git-owned Deployment.
var watchedKinds = []schema.GroupKind{
	{Group: "apps", Kind: "Deployment"},
	{Group: "", Kind: "Service"},
	{Group: "", Kind: "ConfigMap"},
	{Group: "networking.istio.io", Kind: "VirtualService"},
}

// Applier writes bundles to a cluster as Fleet's agent does and reports what Fleet would report.
type Applier struct {
	// ForceConflicts makes Apply take fields other managers own. Fleet's agent does not (Helm v4's
	// default), so a field another manager changed makes its next deploy fail with a conflict.
	ForceConflicts bool
	// ForceDriftCorrection is Fleet's correctDrift.force: CorrectDrift then replaces every object
	// with its manifest (a PUT with the live resourceVersion), as Helm v4's rollback does with
	// ForceReplace, instead of patching the declared fields back.
	ForceDriftCorrection bool

	client dynamic.Interface
	mapper meta.ResettableRESTMapper
}

// NewApplier returns an applier for the cluster cfg points at.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client: %w", err)
	}
	return &Applier{
		client: client,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco)),
	}, nil
}

// target is one declared object, decorated and placed, with where it is served.
type target struct {
	obj     *unstructured.Unstructured
	mapping *meta.RESTMapping
}

func (t target) resource(c dynamic.Interface) dynamic.ResourceInterface {
	if t.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Resource(t.mapping.Resource).Namespace(t.obj.GetNamespace())
	}
	return c.Resource(t.mapping.Resource)
}

// restMapping resolves a kind, refreshing discovery once so that CRDs installed after the applier
// was made are found.
func (a *Applier) restMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m, err := a.mapper.RESTMapping(gk, versions...)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gk, versions...)
	}
	return m, err
}

// targets decorates b's objects, places namespaced ones without a namespace into b.Namespace, and
// orders them as Helm installs them.
func (a *Applier) targets(b *Bundle) ([]target, error) {
	if err := validateNames(b.Name, b.Namespace); err != nil {
		return nil, err
	}
	out := make([]target, 0, len(b.Objects))
	for _, o := range b.Objects {
		gvk := o.GroupVersionKind()
		m, err := a.restMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", refOf(o), err)
		}
		d := b.decorate(o)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if d.GetNamespace() == "" {
				d.SetNamespace(b.Namespace)
			}
		} else {
			d.SetNamespace("")
		}
		out = append(out, target{obj: d, mapping: m})
	}
	sort.SliceStable(out, func(i, j int) bool { return kindRank(out[i].obj.GetKind()) < kindRank(out[j].obj.GetKind()) })
	return out, nil
}

// Apply deploys b as a Fleet deploy does: Helm v4's server-side apply of every object, as field
// manager "fleet", in Helm's kind order. Like Fleet's Helm install (CreateNamespace), it creates
// b.Namespace when the bundle does not declare it and it does not exist. Like Helm v4 when a
// release moves from client-side to server-side apply, it first hands the fields "fleet" owns
// through Updates (drift corrections) over to its apply ownership, so that a deploy after a drift
// correction does not conflict with Fleet's own earlier writes.
func (a *Applier) Apply(ctx context.Context, b *Bundle) error {
	ts, err := a.targets(b)
	if err != nil {
		return err
	}
	if err := a.ensureNamespace(ctx, b, ts); err != nil {
		return err
	}
	force := a.ForceConflicts
	for _, t := range ts {
		if err := a.upgradeClientSideOwnership(ctx, t); err != nil {
			return err
		}
		data, err := json.Marshal(t.obj)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", refOf(t.obj), err)
		}
		_, err = t.resource(a.client).Patch(ctx, t.obj.GetName(), types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
		if err != nil {
			return fmt.Errorf("applying %s: %w", refOf(t.obj), err)
		}
	}
	return nil
}

// upgradeClientSideOwnership is Helm's ClientUpdateOptionUpgradeClientSideFieldManager: merge the
// "fleet" Update entry of managedFields into the "fleet" Apply entry.
func (a *Applier) upgradeClientSideOwnership(ctx context.Context, t target) error {
	res := t.resource(a.client)
	// The patch pins the resourceVersion it was computed from; a controller writing in between
	// makes it conflict, and it is computed again.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live, err := res.Get(ctx, t.obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		patch, err := csaupgrade.UpgradeManagedFieldsPatch(live, sets.New(FieldManager), FieldManager)
		if err != nil || patch == nil {
			return err
		}
		_, err = res.Patch(ctx, t.obj.GetName(), types.JSONPatchType, patch, metav1.PatchOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("moving the field ownership of %s to server-side apply: %w", refOf(t.obj), err)
	}
	return nil
}

func (a *Applier) ensureNamespace(ctx context.Context, b *Bundle, ts []target) error {
	for _, t := range ts {
		if t.obj.GetKind() == "Namespace" && t.obj.GroupVersionKind().Group == "" && t.obj.GetName() == b.Namespace {
			return nil // declared: applied first, in Helm's order
		}
	}
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(b.Namespace)
	_, err := a.client.Resource(corev1.SchemeGroupVersion.WithResource("namespaces")).
		Create(ctx, ns, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", b.Namespace, err)
	}
	return nil
}

// CorrectDrift restores b as Fleet's drift correction does: a Helm rollback to the current
// release with server-side apply off. Missing objects are created. By default the declared fields
// that drifted are patched back with a strategic merge patch, for kinds of the Kubernetes scheme
// only (custom resources are left alone: Helm's two-way merge of a release with itself is empty),
// and nothing is sent when nothing differs. With ForceDriftCorrection every object is replaced by
// its manifest instead, dropping whatever the manifest does not set. Writes are Updates by field
// manager "fleet". See the package documentation for the sources.
func (a *Applier) CorrectDrift(ctx context.Context, b *Bundle) error {
	ts, err := a.targets(b)
	if err != nil {
		return err
	}
	for _, t := range ts {
		res := t.resource(a.client)
		live, err := res.Get(ctx, t.obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if _, err := res.Create(ctx, t.obj, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
				return fmt.Errorf("creating %s: %w", refOf(t.obj), err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", refOf(t.obj), err)
		}
		if a.ForceDriftCorrection {
			if err := replace(ctx, res, t.obj, live.GetResourceVersion()); err != nil {
				return err
			}
			continue
		}
		d, err := diff(t.obj, live)
		if err != nil {
			return err
		}
		if d.patchType != types.StrategicMergePatchType || string(d.patch) == "{}" {
			continue
		}
		if _, err := res.Patch(ctx, t.obj.GetName(), d.patchType, d.patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("correcting %s: %w", refOf(t.obj), err)
		}
	}
	return nil
}

// replace PUTs the manifest over the live object. Helm reads the resourceVersion just before, as
// here; a conflict with a concurrent writer (a controller updating status) is retried with a fresh
// one, where Helm would fail this round and Fleet try again at its next resync.
func replace(ctx context.Context, res dynamic.ResourceInterface, obj *unstructured.Unstructured, resourceVersion string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		put := obj.DeepCopy()
		put.SetResourceVersion(resourceVersion)
		_, err := res.Update(ctx, put, metav1.UpdateOptions{FieldManager: FieldManager})
		if apierrors.IsConflict(err) {
			live, getErr := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if getErr != nil {
				return getErr
			}
			resourceVersion = live.GetResourceVersion()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("replacing %s: %w", refOf(obj), err)
	}
	return nil
}

// Report is what Fleet would put in the bundle deployment's status.
type Report struct {
	// Missing are declared objects Fleet does not find carrying the bundle's hash label.
	Missing []ObjectRef
	// Extra are live objects carrying the bundle's hash label that the bundle does not declare
	// (Fleet's orphaned objects).
	Extra []ObjectRef
	// Modified are declared objects whose declared fields differ from the live ones.
	Modified []Modified
}

// Modified is one drifted object and how it drifted.
type Modified struct {
	ObjectRef
	// Diff has one "path: live → desired" line per differing field, sorted.
	Diff []string
}

// Clean reports whether Fleet would show the bundle deployment as Ready and in sync.
func (r Report) Clean() bool { return len(r.Missing)+len(r.Extra)+len(r.Modified) == 0 }

func (r Report) String() string {
	if r.Clean() {
		return "in sync: nothing missing, extra or modified"
	}
	var sb strings.Builder
	for _, m := range r.Missing {
		fmt.Fprintf(&sb, "missing  %s\n", m)
	}
	for _, e := range r.Extra {
		fmt.Fprintf(&sb, "extra    %s\n", e)
	}
	for _, m := range r.Modified {
		fmt.Fprintf(&sb, "modified %s\n", m.ObjectRef)
		for _, line := range m.Diff {
			fmt.Fprintf(&sb, "         %s\n", line)
		}
	}
	return strings.TrimSuffix(sb.String(), "\n")
}

// Check reports what Fleet would: per kind of the bundle (and the watched kinds Deployment,
// Service, ConfigMap and VirtualService), the live objects carrying b's hash label in b's
// namespaces, compared with what b declares.
func (a *Applier) Check(ctx context.Context, b *Bundle) (Report, error) {
	ts, err := a.targets(b)
	if err != nil {
		return Report{}, err
	}
	declared := make([]*unstructured.Unstructured, len(ts))
	kinds := map[schema.GroupKind]*meta.RESTMapping{}
	namespaces := map[string]bool{b.Namespace: true}
	for i, t := range ts {
		declared[i] = t.obj
		kinds[t.mapping.GroupVersionKind.GroupKind()] = t.mapping
		if ns := t.obj.GetNamespace(); ns != "" {
			namespaces[ns] = true
		}
	}
	for _, gk := range watchedKinds {
		if _, ok := kinds[gk]; ok {
			continue
		}
		m, err := a.restMapping(gk)
		if meta.IsNoMatchError(err) {
			continue // not served here (Istio's CRDs not installed): nothing of that kind can exist
		}
		if err != nil {
			return Report{}, fmt.Errorf("resolving %s: %w", gk, err)
		}
		kinds[gk] = m
	}

	live := map[string]*unstructured.Unstructured{}
	selector := LabelHash + "=" + b.Hash()
	for _, m := range kinds {
		lists := []dynamic.ResourceInterface{a.client.Resource(m.Resource)}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			lists = lists[:0]
			for ns := range namespaces {
				lists = append(lists, a.client.Resource(m.Resource).Namespace(ns))
			}
		}
		for _, l := range lists {
			items, err := l.List(ctx, metav1.ListOptions{LabelSelector: selector})
			if err != nil {
				return Report{}, fmt.Errorf("listing %s: %w", m.Resource, err)
			}
			for i := range items.Items {
				u := &items.Items[i]
				u.SetGroupVersionKind(m.GroupVersionKind)
				live[identity(u)] = u
			}
		}
	}
	return compare(declared, live)
}

// compare is Check's decision on what was declared and what was found.
// declared are decorated and placed; live is keyed by identity.
func compare(declared []*unstructured.Unstructured, live map[string]*unstructured.Unstructured) (Report, error) {
	var r Report
	seen := map[string]bool{}
	var errs []error
	for _, obj := range declared {
		key := identity(obj)
		seen[key] = true
		l, ok := live[key]
		if !ok {
			r.Missing = append(r.Missing, refOf(obj))
			continue
		}
		d, err := diff(obj, l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(d.changes) > 0 {
			r.Modified = append(r.Modified, Modified{ObjectRef: refOf(obj), Diff: d.changes})
		}
	}
	for key, l := range live {
		if !seen[key] && l.GetLabels()[LabelPrune] != "false" {
			r.Extra = append(r.Extra, refOf(l))
		}
	}
	sortRefs(r.Missing)
	sortRefs(r.Extra)
	sort.Slice(r.Modified, func(i, j int) bool { return r.Modified[i].String() < r.Modified[j].String() })
	return r, errors.Join(errs...)
}

func sortRefs(refs []ObjectRef) {
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
}
