package revision

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func template(image string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "frontend"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "frontend",
				Image: image,
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")},
				}},
			}},
		},
	}
}

func mustHash(t *testing.T, tmpl *corev1.PodTemplateSpec) string {
	t.Helper()
	h, err := Hash(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The revision of a template is part of the stored state (annotations, Canary status): it must
// never change with a canarygate, Go or Kubernetes library upgrade. A change of this value is a
// breaking change that re-triggers every canary.
func TestHashIsStable(t *testing.T) {
	// The hash is the first 16 hex digits of `printf '%s' "$canonical" | sha256sum`.
	const (
		canonical = `{"metadata":{"labels":{"app":"frontend"}},"spec":{"containers":[{"image":"registry.example.com/frontend:1.0.0",` +
			`"name":"frontend","ports":[{"containerPort":8080}],"readinessProbe":{"httpGet":{"path":"/ready","port":"http"}},` +
			`"resources":{"limits":{"cpu":"500m"}}}]}}`
		hash = "2e6fbf46b381ef69"
	)
	tmpl := template("registry.example.com/frontend:1.0.0")
	if got := mustCanonical(t, tmpl); got != canonical {
		t.Fatalf("Canonical changed:\n got %s\nwant %s", got, canonical)
	}
	if got := mustHash(t, tmpl); got != hash {
		t.Fatalf("Hash changed: got %s, want %s", got, hash)
	}
}

func mustCanonical(t *testing.T, tmpl *corev1.PodTemplateSpec) string {
	t.Helper()
	c, err := Canonical(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return string(c)
}

func TestHashDistinguishesTemplates(t *testing.T) {
	base := template("frontend:1")
	changes := map[string]func(*corev1.PodTemplateSpec){
		"image":            func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Image = "frontend:2" },
		"env":              func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "1"}} },
		"pod label":        func(p *corev1.PodTemplateSpec) { p.Labels["v"] = "2" },
		"pod annotation":   func(p *corev1.PodTemplateSpec) { p.Annotations = map[string]string{"restartedAt": "now"} },
		"false is a value": func(p *corev1.PodTemplateSpec) { p.Spec.AutomountServiceAccountToken = new(bool) },
		"zero is a value":  func(p *corev1.PodTemplateSpec) { p.Spec.TerminationGracePeriodSeconds = new(int64) },
	}
	seen := map[string]string{mustHash(t, base): "base"}
	for name, change := range changes {
		tmpl := base.DeepCopy()
		change(tmpl)
		h := mustHash(t, tmpl)
		if other, dup := seen[h]; dup {
			t.Errorf("%s has the same revision as %s", name, other)
		}
		seen[h] = name
	}
}

// Values a library leaves unset or renders empty do not count: an upgrade that adds a field
// (rendered as "" or {} or null) invents no new revision.
func TestHashIgnoresEmptyValues(t *testing.T) {
	base := template("frontend:1")
	padded := base.DeepCopy()
	padded.Annotations = map[string]string{}
	padded.Spec.Containers[0].Env = []corev1.EnvVar{}
	padded.Spec.SecurityContext = &corev1.PodSecurityContext{}
	padded.Spec.Containers[0].Resources.Requests = corev1.ResourceList{}
	if mustHash(t, base) != mustHash(t, padded) {
		t.Fatalf("empty values changed the revision:\n%s\n%s", mustCanonical(t, base), mustCanonical(t, padded))
	}
}

func TestCanonicalJSON(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"b":1,"a":{"d":"","c":[1,2]}}`, `{"a":{"c":[1,2]},"b":1}`},
		{`{"a":null,"b":{},"c":[],"d":{"e":{"f":null}}}`, `{}`},
		{`{"n":12345678901234567890,"f":1.50}`, `{"f":1.50,"n":12345678901234567890}`},
		{`{"a":[{},{"b":""},{"c":1}]}`, `{"a":[{},{},{"c":1}]}`},
		{`{"html":"<a&b>","u":"é"}`, `{"html":"<a&b>","u":"é"}`},
		{`{"t":true,"f":false,"z":0}`, `{"f":false,"t":true,"z":0}`},
	}
	for _, tc := range cases {
		got, err := CanonicalJSON([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if string(got) != tc.want {
			t.Errorf("CanonicalJSON(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if _, err := CanonicalJSON([]byte(`{"a":`)); err == nil {
		t.Error("truncated JSON accepted")
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	tmpl := template("frontend:1")
	decoded, err := Decode(mustCanonical(t, tmpl))
	if err != nil {
		t.Fatal(err)
	}
	if mustHash(t, decoded) != mustHash(t, tmpl) {
		t.Fatal("a decoded canonical template has another revision")
	}
	for _, bad := range []string{``, `{`, `[]`, `{"spec":{"containers":"x"}}`, `{"spec":{"unknownField":1}}`} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%q) accepted garbage", bad)
		} else if !strings.Contains(err.Error(), "not a valid pod template") {
			t.Errorf("Decode(%q): unclear error %v", bad, err)
		}
	}
}

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern, key, value string
		want                bool
	}{
		{"objectset.rio.cattle.io/*", "objectset.rio.cattle.io/hash", "x", true},
		{"objectset.rio.cattle.io/*", "objectset.rio.cattle.io.evil/hash", "x", false},
		{"meta.helm.sh/", "meta.helm.sh/release-name", "x", true},
		{"app.kubernetes.io/managed-by=Helm", "app.kubernetes.io/managed-by", "Helm", true},
		{"app.kubernetes.io/managed-by=Helm", "app.kubernetes.io/managed-by", "kustomize", false},
		{"*.toolkit.fluxcd.io/*", "kustomize.toolkit.fluxcd.io/name", "x", true},
		{"*.toolkit.fluxcd.io/*", "toolkit.fluxcd.io/name", "x", false},
		{"*.toolkit.fluxcd.io/*", "kustomize.toolkit.fluxcd.io", "x", false},
		{"*.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io/name", "x", true},
		{"app.kubernetes.io/instance", "app.kubernetes.io/instance", "x", true},
		{"app.kubernetes.io/instance", "app.kubernetes.io/instances", "x", false},
		{"helm.sh/chart", "helm.sh/chart-version", "x", false},
	}
	for _, tc := range cases {
		if got := Match(tc.pattern, tc.key, tc.value); got != tc.want {
			t.Errorf("Match(%q, %q, %q) = %v, want %v", tc.pattern, tc.key, tc.value, got, tc.want)
		}
	}
}

func TestStripOwnership(t *testing.T) {
	in := map[string]string{
		"app.kubernetes.io/name":           "frontend",
		"app.kubernetes.io/managed-by":     "Helm",
		"app.kubernetes.io/instance":       "shop",
		"objectset.rio.cattle.io/hash":     "abc",
		"meta.helm.sh/release-name":        "shop",
		"argocd.argoproj.io/tracking-id":   "x",
		"kustomize.toolkit.fluxcd.io/name": "x",
		"helm.sh/chart":                    "frontend-1.0.0",
	}
	got := StripOwnership(DefaultOwnershipKeys, in)
	if len(got) != 1 || got["app.kubernetes.io/name"] != "frontend" {
		t.Fatalf("StripOwnership = %v", got)
	}
	if len(in) != 8 {
		t.Fatal("StripOwnership modified its input")
	}
	if keys := OwnershipKeysIn(DefaultOwnershipKeys, in); len(keys) != 7 || keys[0] != "app.kubernetes.io/instance" {
		t.Fatalf("OwnershipKeysIn = %v (want 7, sorted)", keys)
	}
	if got := StripOwnership(DefaultOwnershipKeys, map[string]string{"meta.helm.sh/release-name": "x"}); got != nil {
		t.Fatalf("nothing left must be nil, got %v", got)
	}
	// Helm's managed-by is ownership; another tool's is the user's own label.
	if got := StripOwnership(DefaultOwnershipKeys, map[string]string{"app.kubernetes.io/managed-by": "kustomize"}); len(got) != 1 {
		t.Fatalf("managed-by=kustomize stripped")
	}
}
