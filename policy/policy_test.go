package policy

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/revision"
)

func ns(name string, labels map[string]string, optIn bool) *corev1.Namespace {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if optIn {
		n.Annotations = map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	}
	return n
}

func pol(name string, selector map[string]string, mod func(*v1alpha1.CanaryPolicySpec)) v1alpha1.CanaryPolicy {
	p := v1alpha1.CanaryPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if selector != nil {
		p.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: selector}
	}
	if mod != nil {
		mod(&p.Spec)
	}
	return p
}

func TestManaged(t *testing.T) {
	r := Resolver{OwnNamespace: "canarygate-system"}
	team := map[string]string{"team": "shop"}
	selecting := pol("by-team", team, nil)
	global := pol("global", nil, nil)
	everything := pol("everything", map[string]string{}, nil)
	cases := []struct {
		name     string
		ns       *corev1.Namespace
		policies []v1alpha1.CanaryPolicy
		managed  bool
		matched  []string
	}{
		{name: "opted in", ns: ns("shop", nil, true), managed: true},
		{name: "not opted in", ns: ns("shop", nil, false)},
		{name: "selected by a policy", ns: ns("shop", team, false), policies: []v1alpha1.CanaryPolicy{selecting}, managed: true, matched: []string{"by-team"}},
		{name: "a policy selecting others", ns: ns("shop", map[string]string{"team": "pay"}, false), policies: []v1alpha1.CanaryPolicy{selecting}},
		{name: "a selector-less policy covers opted-in namespaces", ns: ns("shop", nil, true), policies: []v1alpha1.CanaryPolicy{global}, managed: true, matched: []string{"global"}},
		{name: "a selector-less policy opts nobody in", ns: ns("shop", nil, false), policies: []v1alpha1.CanaryPolicy{global}},
		{name: "an empty selector selects every namespace", ns: ns("shop", nil, false), policies: []v1alpha1.CanaryPolicy{everything}, managed: true, matched: []string{"everything"}},
		{name: "kube-system never", ns: ns("kube-system", team, true), policies: []v1alpha1.CanaryPolicy{everything}},
		{name: "cattle-fleet-system never", ns: ns("cattle-fleet-system", nil, true)},
		{name: "canarygate's own namespace never", ns: ns("canarygate-system", nil, true), policies: []v1alpha1.CanaryPolicy{everything}},
		{name: "no namespace", ns: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eff, err := r.Resolve(tc.ns, tc.policies)
			if err != nil {
				t.Fatal(err)
			}
			if eff.Managed != tc.managed || !reflect.DeepEqual(eff.Policies, tc.matched) {
				t.Fatalf("managed %v policies %v, want %v %v", eff.Managed, eff.Policies, tc.managed, tc.matched)
			}
			if !reflect.DeepEqual(eff.StripKeys, revision.DefaultOwnershipKeys) {
				t.Fatalf("strip keys %v", eff.StripKeys)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	r := Resolver{}
	defaultsA := &v1alpha1.CanaryAnalysis{Interval: "1m"}
	defaultsB := &v1alpha1.CanaryAnalysis{Interval: "2m"}
	// Given out of name order: the result must not depend on list order.
	policies := []v1alpha1.CanaryPolicy{
		pol("b", nil, func(s *v1alpha1.CanaryPolicySpec) {
			s.Defaults = defaultsB
			s.Bounds = v1alpha1.PolicyBounds{MaxWeight: ptr.To(20), MinInterval: "30s", AllowSkipAnalysis: true}
			s.BreakGlassGroups = []string{"sre", "admins"}
			s.StripMetadataKeys = []string{"b/*"}
			s.MetricsServer = "http://b"
		}),
		pol("a", nil, func(s *v1alpha1.CanaryPolicySpec) {
			s.Defaults = defaultsA
			s.Bounds = v1alpha1.PolicyBounds{MaxWeight: ptr.To(50), MinInterval: "2m", AllowOptOut: ptr.To(false)}
			s.BreakGlassGroups = []string{"admins"}
		}),
	}
	eff, err := r.Resolve(ns("shop", nil, true), policies)
	if err != nil {
		t.Fatal(err)
	}
	want := Effective{
		Managed:           true,
		Policies:          []string{"a", "b"},
		Defaults:          defaultsA,
		MaxWeight:         ptr.To(20),
		MinInterval:       2 * time.Minute,
		AllowSkipAnalysis: false,
		AllowOptOut:       false,
		BreakGlassGroups:  []string{"admins", "sre"},
		StripKeys:         []string{"b/*"},
		MetricsServer:     "http://b",
	}
	if !reflect.DeepEqual(eff, want) {
		t.Fatalf("Resolve =\n%+v\nwant\n%+v", eff, want)
	}
	// The merged cap is a copy: it does not alias the policy.
	*eff.MaxWeight = 99
	if *policies[0].Spec.Bounds.MaxWeight != 20 {
		t.Fatal("Effective.MaxWeight aliases a policy")
	}
}

func TestDefaultsWithoutPolicy(t *testing.T) {
	eff, err := Resolver{DefaultStripKeys: []string{"x/*"}}.Resolve(ns("shop", nil, true), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Without a policy the namespace's owner decides: skipping and opting out are allowed.
	if !eff.AllowSkipAnalysis || !eff.AllowOptOut || eff.MaxWeight != nil || eff.MinInterval != 0 {
		t.Fatalf("%+v", eff)
	}
	if !reflect.DeepEqual(eff.StripKeys, []string{"x/*"}) {
		t.Fatalf("the flag's strip keys must apply: %v", eff.StripKeys)
	}
}

func TestInvalidPolicies(t *testing.T) {
	bad := v1alpha1.CanaryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: v1alpha1.CanaryPolicySpec{
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}},
		Bounds:            v1alpha1.PolicyBounds{AllowOptOut: ptr.To(false)},
	}}
	good := pol("good", map[string]string{"team": "shop"}, func(s *v1alpha1.CanaryPolicySpec) { s.Bounds.MaxWeight = ptr.To(10) })
	eff, err := Resolver{}.Resolve(ns("shop", map[string]string{"team": "shop"}, false), []v1alpha1.CanaryPolicy{bad, good})
	if err == nil {
		t.Fatal("an invalid selector must be reported")
	}
	if !eff.Managed || !reflect.DeepEqual(eff.Policies, []string{"good"}) || *eff.MaxWeight != 10 || !eff.AllowOptOut {
		t.Fatalf("the invalid policy must be skipped and the others applied: %+v", eff)
	}

	badInterval := pol("interval", nil, func(s *v1alpha1.CanaryPolicySpec) { s.Bounds.MinInterval = "1d" })
	eff, err = Resolver{}.Resolve(ns("shop", nil, true), []v1alpha1.CanaryPolicy{badInterval})
	if err == nil || eff.MinInterval != 0 {
		t.Fatalf("an invalid minInterval must be reported and ignored: %v %v", err, eff.MinInterval)
	}
}

func TestDeploymentManaged(t *testing.T) {
	optOut := map[string]string{v1alpha1.OptInKey: v1alpha1.OptOutDisabled}
	cases := []struct {
		eff         Effective
		annotations map[string]string
		want        bool
	}{
		{Effective{Managed: true, AllowOptOut: true}, nil, true},
		{Effective{Managed: true, AllowOptOut: true}, optOut, false},
		{Effective{Managed: true, AllowOptOut: false}, optOut, true},
		{Effective{Managed: true, AllowOptOut: true}, map[string]string{v1alpha1.OptInKey: "enabled"}, true},
		{Effective{Managed: false, AllowOptOut: true}, nil, false},
	}
	for _, tc := range cases {
		if got := tc.eff.DeploymentManaged(tc.annotations); got != tc.want {
			t.Errorf("%+v.DeploymentManaged(%v) = %v, want %v", tc.eff, tc.annotations, got, tc.want)
		}
	}
}

func TestInGroups(t *testing.T) {
	if !InGroups([]string{"system:authenticated", "sre"}, []string{"admins", "sre"}) {
		t.Error("a shared group")
	}
	if InGroups([]string{"dev"}, []string{"admins"}) || InGroups(nil, []string{"admins"}) || InGroups([]string{"admins"}, nil) {
		t.Error("no shared group")
	}
}
