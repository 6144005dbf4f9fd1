package fleet

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestSafeConcatName(t *testing.T) {
	// Vectors from Fleet's own tests (internal/names/safeconcat_test.go).
	a32 := strings.Repeat("a", 32)
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"first", "second", "third"}, "first-second-third"},
		{[]string{strings.Repeat("a", 63)}, strings.Repeat("a", 63)},
		{[]string{strings.Repeat("a", 64)}, strings.Repeat("a", 57) + "-ffe05"},
		{[]string{a32, a32}, a32 + "-" + strings.Repeat("a", 24) + "-da5ed"},
		{[]string{strings.Repeat("a", 56) + "-" + strings.Repeat("a", 7)}, strings.Repeat("a", 56) + "-768c62"},
	}
	for _, tt := range tests {
		if got := safeConcatName(tt.in...); got != tt.want {
			t.Errorf("safeConcatName(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestSetIDAndHash(t *testing.T) {
	b := &Bundle{Name: "canary-demo-app", Namespace: "canary-demo"}
	if got := b.SetID(); got != "default-canary-demo-app" {
		t.Fatalf("SetID = %s", got)
	}
	// sha1("default-canary-demo-app"), computed independently with sha1sum.
	if got := b.Hash(); got != "5762d086a23a758ce2600a81858c38de2989de9e" {
		t.Fatalf("Hash = %s", got)
	}
	other := &Bundle{Name: "other", Namespace: "canary-demo"}
	if other.Hash() == b.Hash() {
		t.Fatal("different bundles share a hash")
	}
}

func TestDecorate(t *testing.T) {
	b := &Bundle{Name: "app", Namespace: "apps"}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "c", "labels": map[string]any{"team": "x"}},
	}}
	d := b.decorate(obj)
	wantLabels := map[string]string{"team": "x", LabelHash: b.Hash(), LabelManagedBy: "Helm"}
	for k, v := range wantLabels {
		if d.GetLabels()[k] != v {
			t.Errorf("label %s = %q, want %q", k, d.GetLabels()[k], v)
		}
	}
	wantAnn := map[string]string{AnnotationID: "default-app", AnnotationReleaseName: "app", AnnotationReleaseNamespace: "apps"}
	for k, v := range wantAnn {
		if d.GetAnnotations()[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, d.GetAnnotations()[k], v)
		}
	}
	if len(obj.GetLabels()) != 1 || obj.GetAnnotations() != nil {
		t.Fatalf("decorate changed its input: %v %v", obj.GetLabels(), obj.GetAnnotations())
	}
}
