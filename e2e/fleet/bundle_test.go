package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadDirDemoApp(t *testing.T) {
	b, err := LoadDir("../testdata/demo-app", "canary-demo-app", "canary-demo")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range b.Objects {
		got = append(got, refOf(o).String())
	}
	// File-name order; fleet.yaml is not a manifest.
	want := []string{"Canary fleet-simple-app", "Deployment fleet-simple-app", "Namespace canary-demo", "Service fleet-simple-app"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("objects = %v, want %v", got, want)
	}
	if b.Namespace != "canary-demo" || b.Name != "canary-demo-app" {
		t.Fatalf("bundle = %s in %s", b.Name, b.Namespace)
	}
}

func TestLoadDirMultiDocument(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"b.yml": "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\n---\n# only a comment\n---\n" +
			"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: three\n  namespace: other\n",
		"a.yaml":    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\ndata:\n  k: v\n",
		"fleet.yml": "defaultNamespace: ignored\n",
		"notes.txt": "not a manifest",
	})
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "c.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nested\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := LoadDir(dir, "app", "apps")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range b.Objects {
		names = append(names, o.GetNamespace()+"/"+o.GetName())
	}
	if got := strings.Join(names, ","); got != "/one,/two,other/three" {
		t.Fatalf("objects = %s", got)
	}
	if v, _, _ := unstructured.NestedString(b.Objects[0].Object, "data", "k"); v != "v" {
		t.Fatalf("data.k = %q", v)
	}
}

func TestLoadDirErrors(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n"
	tests := []struct {
		name, bundle, ns string
		files            map[string]string
		want             string
	}{
		{"duplicate across files", "app", "apps", map[string]string{"a.yaml": cm, "b.yaml": cm}, "declared twice"},
		{"only fleet.yaml", "app", "apps", map[string]string{"fleet.yaml": "defaultNamespace: x\n"}, "no manifests"},
		{"missing name", "app", "apps", map[string]string{"a.yaml": "apiVersion: v1\nkind: ConfigMap\n"}, "no metadata.name"},
		{"broken yaml", "app", "apps", map[string]string{"a.yaml": "apiVersion: v1\nkind: [\n"}, "document 1"},
		{"list", "app", "apps", map[string]string{"a.yaml": "apiVersion: v1\nkind: List\nitems: []\n"}, "lists are not supported"},
		{"bundle name too long for a release", strings.Repeat("a", 54), "apps", map[string]string{"a.yaml": cm}, "at most 53"},
		{"bad namespace", "app", "Apps", map[string]string{"a.yaml": cm}, "not a valid namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadDir(writeFiles(t, tt.files), tt.bundle, tt.ns)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestWithImage(t *testing.T) {
	b, err := LoadDir("../testdata/demo-app", "canary-demo-app", "canary-demo")
	if err != nil {
		t.Fatal(err)
	}
	image := func(b *Bundle) string {
		for _, o := range b.Objects {
			if o.GetKind() == "Deployment" {
				cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				return cs[0].(map[string]any)["image"].(string)
			}
		}
		return ""
	}
	next, err := b.WithImage("fleet-simple-app", "fleet-simple-app", "ghcr.io/stefanprodan/podinfo:6.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if got := image(next); got != "ghcr.io/stefanprodan/podinfo:6.0.1" {
		t.Fatalf("new bundle image = %s", got)
	}
	if got := image(b); got != "ghcr.io/stefanprodan/podinfo:6.0.0" {
		t.Fatalf("original bundle changed: image = %s", got)
	}

	for _, tt := range []struct{ deploy, container, image, want string }{
		{"nope", "fleet-simple-app", "x:1", "no Deployment"},
		{"fleet-simple-app", "nope", "x:1", "no container"},
		{"fleet-simple-app", "fleet-simple-app", "", "must not be empty"},
	} {
		if _, err := b.WithImage(tt.deploy, tt.container, tt.image); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("WithImage(%s, %s, %q) err = %v, want %q", tt.deploy, tt.container, tt.image, err, tt.want)
		}
	}
}
