package harness

import (
	"strings"
	"testing"

	"canarygate.io/canarygate/e2e/testbed"
)

// The harness reads what a cluster admin installs; this fails when the base stops giving canarygate
// what the harness needs to run it under its own identity.
func TestLoadInstall(t *testing.T) {
	repo, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	in, err := loadInstall(repo)
	if err != nil {
		t.Fatal(err)
	}
	if in.objects[0].GetKind() != "Namespace" || in.objects[0].GetName() != in.namespace {
		t.Errorf("first object is %s %s, want canarygate's Namespace %s", in.objects[0].GetKind(), in.objects[0].GetName(), in.namespace)
	}
	bound := map[string]bool{}
	for _, o := range in.objects {
		if !strings.HasSuffix(o.GetKind(), "Binding") {
			continue
		}
		subjects, _ := o.Object["subjects"].([]any)
		for _, s := range subjects {
			m, _ := s.(map[string]any)
			if m["kind"] == "ServiceAccount" && m["name"] == in.serviceAccount && m["namespace"] == in.namespace {
				bound[o.GetKind()] = true
			}
		}
	}
	if !bound["ClusterRoleBinding"] || !bound["RoleBinding"] {
		t.Errorf("ServiceAccount %s is bound by %v, want a ClusterRoleBinding and a RoleBinding", in.userName(), bound)
	}
	url := "https://127.0.0.1:9443"
	for _, w := range in.validating[0].Webhooks {
		cc, err := byURL(w.ClientConfig, url)
		if err != nil {
			t.Errorf("%s: %v", w.Name, err)
			continue
		}
		if !strings.HasPrefix(*cc.URL, url+"/validate-") || cc.Service != nil || len(cc.CABundle) != 0 {
			t.Errorf("%s: clientConfig %+v, want only a URL under %s", w.Name, cc, url)
		}
	}
}
