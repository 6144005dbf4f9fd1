package manifests_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/manifests"
	"canarygate.io/canarygate/webhook"
)

const (
	namespace      = "canarygate-system"
	serviceAccount = "system:serviceaccount:canarygate-system:canarygate"
)

// Every kustomization a user may apply. The cert-manager overlay is written separately; it is
// checked when present.
var builds = []string{"default", "overlays/servicemonitor", "overlays/cert-manager"}

type build struct {
	dir  string
	objs []*unstructured.Unstructured
}

func buildAll(t *testing.T) []build {
	t.Helper()
	var out []build
	for _, dir := range builds {
		if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); os.IsNotExist(err) && dir == "overlays/cert-manager" {
			t.Logf("%s does not exist yet: not checked", dir)
			continue
		}
		_, objs, err := manifests.Build(dir)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, build{dir, objs})
	}
	return out
}

func buildDefault(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	_, objs, err := manifests.Build("default")
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the one object of kind and name, converted to T.
func find[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in the build, found %d", kind, name, len(found))
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(found[0].Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
	return out
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// TestNamespacedObjectsLiveInCanarygateNamespace: everything namespaced lands in canarygate-system,
// which the webhooks never see.
func TestNamespacedObjectsLiveInCanarygateNamespace(t *testing.T) {
	clusterScoped := map[string]bool{
		"Namespace": true, "CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true,
		"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
	}
	for _, b := range buildAll(t) {
		for _, o := range b.objs {
			if clusterScoped[o.GetKind()] {
				if o.GetNamespace() != "" {
					t.Errorf("%s: cluster-scoped %s %s has namespace %q", b.dir, o.GetKind(), o.GetName(), o.GetNamespace())
				}
				continue
			}
			if o.GetNamespace() != namespace {
				t.Errorf("%s: %s %s is in namespace %q, want %s", b.dir, o.GetKind(), o.GetName(), o.GetNamespace(), namespace)
			}
		}
	}
}

func rulesOf(t *testing.T, o *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var rules []rbacv1.PolicyRule
	switch o.GetKind() {
	case "ClusterRole":
		var r rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
			t.Fatal(err)
		}
		if r.AggregationRule != nil {
			t.Errorf("ClusterRole %s aggregates other roles: its permissions are not in Git", r.Name)
		}
		rules = r.Rules
	case "Role":
		var r rbacv1.Role
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
			t.Fatal(err)
		}
		rules = r.Rules
	}
	return rules
}

// TestRBACHasNoWildcards fails on any rule granting every verb, resource, API group or URL.
func TestRBACHasNoWildcards(t *testing.T) {
	for _, b := range buildAll(t) {
		roles := append(ofKind(b.objs, "ClusterRole"), ofKind(b.objs, "Role")...)
		if len(roles) == 0 {
			t.Fatalf("%s: no roles in the build", b.dir)
		}
		for _, o := range roles {
			for i, r := range rulesOf(t, o) {
				for field, values := range map[string][]string{
					"verbs": r.Verbs, "resources": r.Resources, "apiGroups": r.APIGroups, "nonResourceURLs": r.NonResourceURLs,
				} {
					for _, v := range values {
						if strings.Contains(v, "*") {
							t.Errorf("%s: %s %s rule %d grants %s %q", b.dir, o.GetKind(), o.GetName(), i, field, v)
						}
					}
				}
				if len(r.NonResourceURLs) > 0 {
					t.Errorf("%s: %s %s rule %d grants non-resource URLs %v, which canarygate never calls", b.dir, o.GetKind(), o.GetName(), i, r.NonResourceURLs)
				}
				// Reading Secrets anywhere but canarygate's own namespace would expose every credential.
				if o.GetKind() == "ClusterRole" && slices.Contains(r.Resources, "secrets") {
					t.Errorf("%s: ClusterRole %s grants Secrets cluster-wide", b.dir, o.GetName())
				}
			}
		}
	}
}

// TestRolesAreTheGeneratedOnes: the ClusterRole and the certificate Role in the build are exactly
// what controller-gen generates from the +kubebuilder:rbac markers, so the installed permissions are
// the ones the code declares (and `make verify-generated` keeps role.yaml current).
func TestRolesAreTheGeneratedOnes(t *testing.T) {
	raw, err := os.ReadFile("rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	generated, err := manifests.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(generated) == 0 {
		t.Fatal("rbac/role.yaml holds no roles")
	}
	built := buildDefault(t)
	for _, g := range generated {
		var b *unstructured.Unstructured
		for _, o := range built {
			if o.GetKind() == g.GetKind() && o.GetName() == g.GetName() {
				b = o
			}
		}
		if b == nil {
			t.Errorf("generated %s %s is not in the build", g.GetKind(), g.GetName())
			continue
		}
		if !reflect.DeepEqual(rulesOf(t, g), rulesOf(t, b)) {
			t.Errorf("%s %s: the build's rules differ from rbac/role.yaml", g.GetKind(), g.GetName())
		}
		if g.GetKind() == "Role" && b.GetNamespace() != namespace {
			t.Errorf("Role %s is in %q, want %s", g.GetName(), b.GetNamespace(), namespace)
		}
	}
}

// TestEveryRoleIsBoundToCanarygateOnly: each role is granted to canarygate's ServiceAccount and to
// nobody else, and the Deployment runs as that ServiceAccount.
func TestEveryRoleIsBoundToCanarygateOnly(t *testing.T) {
	objs := buildDefault(t)
	bound := map[string]bool{}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range ofKind(objs, kind) {
			var subjects []rbacv1.Subject
			var ref rbacv1.RoleRef
			if kind == "ClusterRoleBinding" {
				b := find[rbacv1.ClusterRoleBinding](t, objs, kind, o.GetName())
				subjects, ref = b.Subjects, b.RoleRef
			} else {
				b := find[rbacv1.RoleBinding](t, objs, kind, o.GetName())
				subjects, ref = b.Subjects, b.RoleRef
			}
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "canarygate", Namespace: namespace}}
			if !reflect.DeepEqual(subjects, want) {
				t.Errorf("%s %s binds %+v, want only canarygate's ServiceAccount", kind, o.GetName(), subjects)
			}
			bound[ref.Kind+"/"+ref.Name] = true
		}
	}
	for _, kind := range []string{"ClusterRole", "Role"} {
		for _, o := range ofKind(objs, kind) {
			if !bound[kind+"/"+o.GetName()] {
				t.Errorf("%s %s is bound to nobody", kind, o.GetName())
			}
		}
	}
	d := find[appsv1.Deployment](t, objs, "Deployment", "canarygate")
	if d.Spec.Template.Spec.ServiceAccountName != "canarygate" {
		t.Errorf("Deployment runs as %q, want canarygate", d.Spec.Template.Spec.ServiceAccountName)
	}
	find[corev1.ServiceAccount](t, objs, "ServiceAccount", "canarygate")
}

// TestLeaderElectionRole: the controllers can hold their Lease and record its events, no more.
func TestLeaderElectionRole(t *testing.T) {
	objs := buildDefault(t)
	r := find[rbacv1.Role](t, objs, "Role", "canarygate-leader-election")
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"canarygate.canarygate.io"}, Verbs: []string{"get", "update"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}
	if !reflect.DeepEqual(r.Rules, want) {
		t.Errorf("leader-election rules = %+v, want %+v", r.Rules, want)
	}
	d := find[appsv1.Deployment](t, objs, "Deployment", "canarygate")
	args := d.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--leader-elect") {
		t.Errorf("the Deployment runs two replicas without --leader-elect: %v", args)
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--leader-election-id=") && a != "--leader-election-id=canarygate.canarygate.io" {
			t.Errorf("%s does not match the Role's resourceNames", a)
		}
	}
}

var excluded = []string{"kube-system", "kube-public", "kube-node-lease", namespace, "cattle-fleet-system"}

// TestWebhookConfigurations checks every webhook's scoping, whatever its name, so a webhook added
// to the code without its scoping fails here.
func TestWebhookConfigurations(t *testing.T) {
	objs := buildDefault(t)
	mwc := find[admissionv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration", "canarygate")
	vwc := find[admissionv1.ValidatingWebhookConfiguration](t, objs, "ValidatingWebhookConfiguration", "canarygate")

	type common struct {
		name              string
		client            admissionv1.WebhookClientConfig
		failurePolicy     *admissionv1.FailurePolicyType
		sideEffects       *admissionv1.SideEffectClass
		timeout           *int32
		namespaceSelector *metav1.LabelSelector
		objectSelector    *metav1.LabelSelector
		matchConditions   []admissionv1.MatchCondition
		rules             []admissionv1.RuleWithOperations
	}
	var all []common
	paths := map[string]string{}
	for _, w := range mwc.Webhooks {
		all = append(all, common{w.Name, w.ClientConfig, w.FailurePolicy, w.SideEffects, w.TimeoutSeconds, w.NamespaceSelector, w.ObjectSelector, w.MatchConditions, w.Rules})
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionv1.IfNeededReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy %v, want IfNeeded (another mutating webhook may change the template after canarygate)", w.Name, w.ReinvocationPolicy)
		}
	}
	for _, w := range vwc.Webhooks {
		all = append(all, common{w.Name, w.ClientConfig, w.FailurePolicy, w.SideEffects, w.TimeoutSeconds, w.NamespaceSelector, w.ObjectSelector, w.MatchConditions, w.Rules})
	}
	if len(mwc.Webhooks) != 2 || len(vwc.Webhooks) != 3 {
		t.Errorf("got %d mutating and %d validating webhooks, want 2 and 3: update this test and fleet/canarygate/fleet.yaml", len(mwc.Webhooks), len(vwc.Webhooks))
	}
	// The Namespace label keeper is the one exception to the rules below: it fails open and selects
	// by object, because a namespaceSelector on a Namespace sees only the new object.
	const namespaceKeeper = "mnamespaces.canarygate.io"

	for _, w := range all {
		svc := w.client.Service
		if svc == nil || svc.Name != "canarygate-webhook" || svc.Namespace != namespace || (svc.Port != nil && *svc.Port != 443) || svc.Path == nil {
			t.Errorf("%s: clientConfig.service = %+v, want canarygate-webhook.%s:443 with a path", w.name, svc, namespace)
		} else {
			paths[w.name] = *svc.Path
		}
		if w.client.URL != nil {
			t.Errorf("%s: clientConfig.url is set", w.name)
		}
		wantPolicy := admissionv1.Fail
		if w.name == namespaceKeeper {
			wantPolicy = admissionv1.Ignore
		}
		if w.failurePolicy == nil || *w.failurePolicy != wantPolicy {
			t.Errorf("%s: failurePolicy %v, want %s", w.name, w.failurePolicy, wantPolicy)
		}
		if w.sideEffects == nil || *w.sideEffects != admissionv1.SideEffectClassNone {
			t.Errorf("%s: sideEffects %v, want None", w.name, w.sideEffects)
		}
		if w.timeout == nil || *w.timeout > 5 {
			t.Errorf("%s: timeoutSeconds %v, want at most 5", w.name, w.timeout)
		}
		if w.name == namespaceKeeper {
			if w.namespaceSelector != nil {
				t.Errorf("%s: has a namespaceSelector %+v, which would not see the write that drops the label", w.name, w.namespaceSelector)
			}
			checkManagedSelector(t, w.name, w.objectSelector)
		} else {
			checkManagedSelector(t, w.name, w.namespaceSelector)
		}
		for _, r := range w.rules {
			if slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") || slices.Contains(r.Operations, admissionv1.OperationAll) {
				t.Errorf("%s: rule %+v matches everything", w.name, r)
			}
			if slices.Contains(r.Resources, "namespaces") && (w.name != namespaceKeeper || !slices.Equal(r.Operations, []admissionv1.OperationType{admissionv1.Update})) {
				t.Errorf("%s: intercepts Namespaces (%v)", w.name, r.Operations)
			}
		}
	}

	// The paths the handlers are served on.
	wantPaths := map[string]string{
		"mdeployments.canarygate.io": webhook.MutateDeploymentsPath,
		namespaceKeeper:              webhook.MutateNamespacesPath,
		"vdeployments.canarygate.io": webhook.ValidateDeploymentsPath,
		"vgenerated.canarygate.io":   webhook.ValidateGeneratedPath,
		"vcanarygate.canarygate.io":  webhook.ValidateCanarygatePath,
	}
	if !reflect.DeepEqual(paths, wantPaths) {
		t.Errorf("webhook paths = %v, want %v", paths, wantPaths)
	}

	byName := map[string]common{}
	for _, w := range all {
		byName[w.name] = w
	}
	// Generated objects are selected by their label, whoever created them.
	gen := byName["vgenerated.canarygate.io"]
	wantObj := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: v1alpha1.GeneratedForLabel, Operator: metav1.LabelSelectorOpExists}}}
	if !reflect.DeepEqual(gen.objectSelector, wantObj) {
		t.Errorf("vgenerated objectSelector = %+v, want %s Exists", gen.objectSelector, v1alpha1.GeneratedForLabel)
	}
	for _, name := range []string{"mdeployments.canarygate.io", "vdeployments.canarygate.io", "vcanarygate.canarygate.io"} {
		if s := byName[name].objectSelector; s != nil && (len(s.MatchLabels) > 0 || len(s.MatchExpressions) > 0) {
			t.Errorf("%s has an objectSelector %+v: a label would let an object escape canarygate", name, s)
		}
	}

	// canarygate's own requests are skipped only by the generated-objects validator, whose handler
	// admits them unconditionally, and by the Namespace label keeper (canarygate's own label writes
	// are what it would do anyway). The Deployment mutator must see them (it strips ownership metadata from the
	// Deployments canarygate generates and tells promotions from other template changes), and so
	// must the Deployment and Canary validators.
	for name, w := range byName {
		skipsSA := false
		for _, c := range w.matchConditions {
			if strings.Contains(c.Expression, serviceAccount) {
				skipsSA = true
			}
		}
		if want := name == "vgenerated.canarygate.io" || name == namespaceKeeper; skipsSA != want {
			t.Errorf("%s: skips canarygate's ServiceAccount = %v, want %v", name, skipsSA, want)
		}
	}
	for _, name := range []string{"mdeployments.canarygate.io", "vdeployments.canarygate.io"} {
		want := []admissionv1.MatchCondition{{Name: "not-being-deleted", Expression: "!has(object.metadata.deletionTimestamp)"}}
		if !reflect.DeepEqual(byName[name].matchConditions, want) {
			t.Errorf("%s: matchConditions = %+v, want %+v", name, byName[name].matchConditions, want)
		}
	}
	if len(byName["vcanarygate.canarygate.io"].matchConditions) != 0 {
		t.Errorf("vcanarygate: matchConditions %+v, want none", byName["vcanarygate.canarygate.io"].matchConditions)
	}

	// The self-managed mode fills the caBundle at run time; Git holds none.
	for _, w := range all {
		if len(w.client.CABundle) != 0 {
			t.Errorf("%s: the default build carries a caBundle", w.name)
		}
	}
}

// checkManagedSelector asserts the namespaceSelector by what it selects: opted-in namespaces, and
// never the system, canarygate or Fleet namespaces even when someone labels them.
func checkManagedSelector(t *testing.T, name string, s *metav1.LabelSelector) {
	t.Helper()
	if s == nil {
		t.Errorf("%s: no namespaceSelector: every namespace in the cluster would depend on canarygate", name)
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("%s: namespaceSelector: %v", name, err)
		return
	}
	ns := func(n string, optedIn bool) labels.Set {
		l := labels.Set{"kubernetes.io/metadata.name": n}
		if optedIn {
			l[v1alpha1.OptInKey] = v1alpha1.OptInEnabled
		}
		return l
	}
	if !sel.Matches(ns("team-a", true)) {
		t.Errorf("%s: an opted-in namespace is not selected by %v", name, sel)
	}
	for _, l := range []labels.Set{ns("team-a", false), {v1alpha1.OptInKey: "disabled", "kubernetes.io/metadata.name": "x"}} {
		if sel.Matches(l) {
			t.Errorf("%s: namespace with labels %v is selected", name, l)
		}
	}
	for _, n := range excluded {
		if sel.Matches(ns(n, true)) {
			t.Errorf("%s: namespace %s is selected even though it is always excluded", name, n)
		}
	}
}

// TestDeployment checks the high-availability and hardening settings.
func TestDeployment(t *testing.T) {
	objs := buildDefault(t)
	d := find[appsv1.Deployment](t, objs, "Deployment", "canarygate")
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rolling update may take a webhook replica away before its successor is ready: %+v", d.Spec.Strategy)
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	aff := spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		t.Fatal("no preferred pod anti-affinity")
	}
	term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != corev1.LabelHostname {
		t.Errorf("anti-affinity topologyKey %q, want %s", term.TopologyKey, corev1.LabelHostname)
	}
	if sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("anti-affinity does not select canarygate's own pods (%v)", err)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v", psc)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.Capabilities == nil ||
		!reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || (sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container securityContext = %+v", sc)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	args := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	if ports["webhook"] != 9443 || args["--webhook-port"] != "9443" {
		t.Errorf("webhook port: container port %d, flag %q; want 9443", ports["webhook"], args["--webhook-port"])
	}
	if ports["metrics"] != 8080 || args["--metrics-bind-address"] != ":8080" {
		t.Errorf("metrics port: container port %d, flag %q; want 8080", ports["metrics"], args["--metrics-bind-address"])
	}
	if ports["health"] != 8081 || args["--health-probe-bind-address"] != ":8081" {
		t.Errorf("health port: container port %d, flag %q; want 8081", ports["health"], args["--health-probe-bind-address"])
	}
	for probe, wantPath := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != wantPath || probe.HTTPGet.Port.String() != "health" {
			t.Errorf("probe for %s = %+v", wantPath, probe)
		}
	}
	var podNS bool
	for _, e := range c.Env {
		if e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace" {
			podNS = true
		}
	}
	if !podNS {
		t.Error("POD_NAMESPACE is not taken from metadata.namespace")
	}
	// Self-managed certificates are served from memory: the private key never touches a disk, and
	// the base mounts no certificate directory (the cert-manager overlay adds one).
	if certDir, ok := args["--cert-dir"]; ok || len(c.VolumeMounts) > 0 || len(spec.Volumes) > 0 {
		t.Errorf("the base mounts a certificate directory (--cert-dir %q, mounts %v, volumes %v)", certDir, c.VolumeMounts, spec.Volumes)
	}

	pdb := find[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "canarygate")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}
	if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !sel.Matches(podLabels) {
		t.Errorf("PDB does not select canarygate's pods (%v)", err)
	}

	for name, want := range map[string][2]any{"canarygate-webhook": {int32(443), "webhook"}, "canarygate-metrics": {int32(8080), "metrics"}} {
		svc := find[corev1.Service](t, objs, "Service", name)
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s does not select canarygate's pods", name)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != want[0] || svc.Spec.Ports[0].TargetPort.String() != want[1] {
			t.Errorf("Service %s ports = %+v, want %v → %v", name, svc.Spec.Ports, want[0], want[1])
		}
	}
}

// TestServiceMonitorOverlay: the ServiceMonitor scrapes the metrics Service's named port.
func TestServiceMonitorOverlay(t *testing.T) {
	_, objs, err := manifests.Build("overlays/servicemonitor")
	if err != nil {
		t.Fatal(err)
	}
	sms := ofKind(objs, "ServiceMonitor")
	if len(sms) != 1 || sms[0].GetAPIVersion() != "monitoring.coreos.com/v1" || sms[0].GetNamespace() != namespace {
		t.Fatalf("want one monitoring.coreos.com/v1 ServiceMonitor in %s, got %d", namespace, len(sms))
	}
	matchLabels, _, _ := unstructured.NestedStringMap(sms[0].Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(sms[0].Object, "spec", "endpoints")
	metricsSvc := find[corev1.Service](t, objs, "Service", "canarygate-metrics")
	webhookSvc := find[corev1.Service](t, objs, "Service", "canarygate-webhook")
	sel := labels.SelectorFromSet(matchLabels)
	if len(matchLabels) == 0 || !sel.Matches(labels.Set(metricsSvc.Labels)) || sel.Matches(labels.Set(webhookSvc.Labels)) {
		t.Errorf("ServiceMonitor selector %v must select canarygate-metrics and not canarygate-webhook", matchLabels)
	}
	if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != metricsSvc.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor endpoints %v do not scrape port %q", endpoints, metricsSvc.Spec.Ports[0].Name)
	}
	// The rest is the default install, unchanged.
	if got, want := len(objs)-1, len(buildDefault(t)); got != want {
		t.Errorf("the overlay has %d objects besides the ServiceMonitor, the default build %d", got, want)
	}
}

// TestCertManagerOverlay: built on this base, cert-manager's overlay switches canarygate to
// external certificates and has cainjector fill both webhook configurations.
func TestCertManagerOverlay(t *testing.T) {
	if _, err := os.Stat("overlays/cert-manager/kustomization.yaml"); os.IsNotExist(err) {
		t.Skip("overlays/cert-manager is not written yet")
	}
	_, objs, err := manifests.Build("overlays/cert-manager")
	if err != nil {
		t.Fatal(err)
	}
	if len(ofKind(objs, "Certificate")) == 0 || len(ofKind(objs, "Issuer")) == 0 {
		t.Error("no cert-manager Certificate or Issuer")
	}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		var inject string
		for _, o := range ofKind(objs, kind) {
			if o.GetName() == "canarygate" {
				inject = o.GetAnnotations()["cert-manager.io/inject-ca-from"]
			}
		}
		if inject == "" {
			t.Errorf("%s canarygate has no cert-manager.io/inject-ca-from", kind)
		}
	}
	d := find[appsv1.Deployment](t, objs, "Deployment", "canarygate")
	c := d.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--cert-management=external") {
		t.Errorf("args %v lack --cert-management=external", c.Args)
	}
	// Go's flag package takes the last value of a repeated flag.
	var certDir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--cert-dir="); ok {
			certDir = v
		}
	}
	var secretMounted bool
	for _, m := range c.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if m.MountPath == certDir && v.Name == m.Name && v.Secret != nil {
				secretMounted = true
			}
		}
	}
	if !secretMounted {
		t.Errorf("--cert-dir %q is not a mounted Secret", certDir)
	}
}

// fleetOptions mirrors the part of Fleet's fleet.yaml (BundleDeploymentOptions) used here;
// decoding is strict, so a misspelt key fails.
type fleetOptions struct {
	DefaultNamespace string `json:"defaultNamespace"`
	Kustomize        struct {
		Dir string `json:"dir"`
	} `json:"kustomize"`
	Helm struct {
		ReleaseName string `json:"releaseName"`
	} `json:"helm"`
	Diff struct {
		ComparePatches []struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Namespace  string `json:"namespace"`
			Name       string `json:"name"`
			Operations []struct {
				Op    string `json:"op"`
				Path  string `json:"path"`
				Value string `json:"value"`
			} `json:"operations"`
			JSONPointers []string `json:"jsonPointers"`
		} `json:"comparePatches"`
	} `json:"diff"`
}

// TestFleetBundle: the Fleet options install the default build and ignore exactly the caBundle of
// every webhook, which canarygate injects at run time.
func TestFleetBundle(t *testing.T) {
	raw, err := os.ReadFile("fleet/canarygate/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var opts fleetOptions
	if err := yaml.UnmarshalStrict(raw, &opts); err != nil {
		t.Fatalf("fleet.yaml: %v", err)
	}
	if opts.DefaultNamespace != namespace || opts.Kustomize.Dir != "default" {
		t.Errorf("fleet.yaml: defaultNamespace %q, kustomize.dir %q", opts.DefaultNamespace, opts.Kustomize.Dir)
	}
	// The bundle's base is manifests/ (this directory): its kustomize dir is relative to it.
	objs := buildDefault(t)
	want := map[string][]string{}
	for _, kind := range []string{"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} {
		for _, o := range ofKind(objs, kind) {
			hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
			for i := range hooks {
				want[kind+"/"+o.GetName()] = append(want[kind+"/"+o.GetName()], "/webhooks/"+strconv.Itoa(i)+"/clientConfig/caBundle")
			}
		}
	}
	got := map[string][]string{}
	for _, p := range opts.Diff.ComparePatches {
		if p.APIVersion != "admissionregistration.k8s.io/v1" || len(p.Operations) > 0 || p.Namespace != "" {
			t.Errorf("comparePatch %+v: want admissionregistration.k8s.io/v1, no namespace, jsonPointers only", p)
		}
		got[p.Kind+"/"+p.Name] = append(got[p.Kind+"/"+p.Name], p.JSONPointers...)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("comparePatches ignore %v, want the caBundle of every webhook: %v", got, want)
	}

	// .fleetignore must not drop any file that the default build reads.
	ignore, err := os.ReadFile(".fleetignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"default", "crd", "rbac", "manager", "webhook"} {
		err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			for _, line := range strings.Split(string(ignore), "\n") {
				pat := strings.TrimSpace(line)
				if pat == "" || strings.HasPrefix(pat, "#") {
					continue
				}
				dirPat, isDir := strings.CutSuffix(pat, "/")
				if isDir && strings.HasPrefix(filepath.ToSlash(p), dirPat+"/") || !isDir && matches(pat, filepath.Base(p)) {
					t.Errorf(".fleetignore pattern %q drops %s, which manifests/default needs", pat, p)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// The demo app's GitRepo points at a directory that is a Fleet bundle.
	gr, err := os.ReadFile("fleet/demo-app/gitrepo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var repo struct {
		Spec struct {
			Paths []string `json:"paths"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(gr, &repo); err != nil {
		t.Fatal(err)
	}
	if len(repo.Spec.Paths) != 1 {
		t.Fatalf("demo-app GitRepo paths = %v", repo.Spec.Paths)
	}
	bundle := filepath.Join("..", repo.Spec.Paths[0])
	if _, err := os.Stat(filepath.Join(bundle, "fleet.yaml")); err != nil {
		t.Errorf("demo-app bundle %s: %v", bundle, err)
	}
}

func matches(pattern, name string) bool {
	ok, err := filepath.Match(pattern, name)
	return err == nil && ok
}

// TestDockerfileCopiesEveryPackage: the builder stage copies each directory that holds a package
// of the binary, so adding a package never breaks `make docker-build` unnoticed.
func TestDockerfileCopiesEveryPackage(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	copied := map[string]bool{}
	for _, line := range strings.Split(string(df), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "COPY" && strings.HasSuffix(f[1], "/") {
			copied[strings.TrimSuffix(f[1], "/")] = true
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "../cmd/canarygate")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "canarygate.io/canarygate/"
	for _, pkg := range strings.Fields(string(bytes.TrimSpace(out))) {
		rel, ok := strings.CutPrefix(pkg, module)
		if !ok {
			continue
		}
		top, _, _ := strings.Cut(rel, "/")
		if !copied[top] {
			t.Errorf("Dockerfile does not COPY %s/ (package %s)", top, pkg)
		}
	}
	for _, want := range []string{"FROM golang:1.26 AS builder", "CGO_ENABLED=0", "-trimpath", "FROM gcr.io/distroless/static:nonroot", "USER 65532:65532"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
