package fleet

import (
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func obj(t *testing.T, s string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	js, err := yaml.YAMLToJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	return u
}

const desiredDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
  labels: {app: web, objectset.rio.cattle.io/hash: abc}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: web:1
        ports: [{name: http, containerPort: 8080}]
`

// liveDeployment is desiredDeployment as the API server returns it, after canarygate's webhook
// recorded a pending revision and the server added defaults and status.
const liveDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
  uid: 1234
  resourceVersion: "42"
  generation: 3
  creationTimestamp: "2026-01-01T00:00:00Z"
  managedFields: [{manager: fleet, operation: Apply}]
  labels: {app: web, objectset.rio.cattle.io/hash: abc}
  annotations:
    canarygate.io/desired-revision: 5f00
    canarygate.io/desired-template: '{"spec":{}}'
    canarygate.io/promoted-revision: 4e00
    deployment.kubernetes.io/revision: "1"
spec:
  replicas: 1
  revisionHistoryLimit: 10
  progressDeadlineSeconds: 600
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {creationTimestamp: null, labels: {app: web}}
    spec:
      restartPolicy: Always
      dnsPolicy: ClusterFirst
      containers:
      - name: web
        image: web:1
        imagePullPolicy: IfNotPresent
        terminationMessagePath: /dev/termination-log
        ports: [{name: http, containerPort: 8080, protocol: TCP}]
        resources: {}
      - name: istio-proxy
        image: istio/proxyv2:1.32.0
status:
  replicas: 1
  availableReplicas: 1
`

const desiredCanary = `
apiVersion: canarygate.io/v1alpha1
kind: Canary
metadata: {name: web, namespace: apps}
spec:
  targetRef: {name: web}
  service: {port: 8080}
  analysis:
    interval: 10s
    threshold: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
`

const liveCanary = `
apiVersion: canarygate.io/v1alpha1
kind: Canary
metadata: {name: web, namespace: apps, uid: x, generation: 1, annotations: {a: b}}
spec:
  provider: istio
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  service: {port: 8080}
  analysis:
    interval: 10s
    threshold: 10
    metrics:
    - name: request-success-rate
      thresholdRange: {min: 99}
      defaulted: true
status: {phase: Progressing, canaryWeight: 20}
`

func TestDiff(t *testing.T) {
	edit := func(base, old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	tests := []struct {
		name          string
		desired, live string
		want          []string // nil: not modified
	}{
		{"live has only additions: defaults, status, other controllers' annotations, a sidecar", desiredDeployment, liveDeployment, nil},
		{"image changed by hand", desiredDeployment, edit(liveDeployment, "image: web:1", "image: web:2"),
			[]string{`spec.template.spec.containers[name=web].image: "web:2" → "web:1"`}},
		{"replicas scaled", desiredDeployment, edit(liveDeployment, "replicas: 1\n  revision", "replicas: 3\n  revision"),
			[]string{`spec.replicas: 3 → 1`}},
		{"Fleet's label removed", desiredDeployment, edit(liveDeployment, "objectset.rio.cattle.io/hash: abc}", "}"),
			[]string{`metadata.labels["objectset.rio.cattle.io/hash"]: <absent> → "abc"`}},
		{"declared container missing", desiredDeployment, edit(liveDeployment, "- name: web\n", "- name: other\n"),
			[]string{`spec.template.spec.containers[name=web]: <absent> → {"image":"web:1","name":"web","ports":[{"containerPort":8080,"name":"htt…`}},
		{"custom resource with server defaults and status", desiredCanary, liveCanary, nil},
		{"custom resource field changed", desiredCanary, edit(liveCanary, "threshold: 10", "threshold: 2"),
			[]string{`spec.analysis.threshold: 2 → 10`}},
		{"custom resource list element changed: lists are atomic", desiredCanary, edit(liveCanary, "min: 99", "min: 90"),
			[]string{`spec.analysis.metrics: [{"name":"request-success-rate","thresholdRange":{"min":90}}] → [{"name":"request-success-rate","thresholdRange":{"min":99}}]`}},
		{"custom resource list grew", desiredCanary, edit(liveCanary, "      defaulted: true\n", "      defaulted: true\n    - name: extra\n"),
			[]string{`spec.analysis.metrics: [{"name":"request-success-rate","thresholdRange":{"min":99}},{"name":"ex… → [{"name":"request-success-rate","thresholdRange":{"min":99}}]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := diff(obj(t, tt.desired), obj(t, tt.live))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(d.changes, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("changes:\n%s\nwant:\n%s\npatch: %s", strings.Join(d.changes, "\n"), strings.Join(tt.want, "\n"), d.patch)
			}
			// Without changes, a patch may still carry strategic-merge directives (Helm sends those;
			// they change nothing), never a field.
			var p map[string]any
			if err := json.Unmarshal(d.patch, &p); err != nil {
				t.Fatal(err)
			}
			if len(tt.want) == 0 && !onlyDirectives(p) {
				t.Fatalf("unchanged object, but the patch sets fields: %s", d.patch)
			}
		})
	}
}

func onlyDirectives(patch map[string]any) bool {
	for k, v := range patch {
		if strings.HasPrefix(k, "$") {
			continue
		}
		if m, ok := v.(map[string]any); !ok || !onlyDirectives(m) {
			return false
		}
	}
	return true
}

func TestDiffPatchTypes(t *testing.T) {
	d, err := diff(obj(t, desiredDeployment), obj(t, strings.Replace(liveDeployment, "image: web:1", "image: web:2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d.patchType != "application/strategic-merge-patch+json" || !strings.Contains(string(d.patch), `"image":"web:1"`) {
		t.Fatalf("deployment patch %s %s", d.patchType, d.patch)
	}
	c, err := diff(obj(t, desiredCanary), obj(t, strings.Replace(liveCanary, "threshold: 10", "threshold: 2", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.patchType != "application/merge-patch+json" || string(c.patch) != `{"spec":{"analysis":{"threshold":10}}}` {
		t.Fatalf("canary patch %s %s", c.patchType, c.patch)
	}
}

func TestCompare(t *testing.T) {
	b := &Bundle{Name: "app", Namespace: "apps"}
	dep := b.decorate(obj(t, desiredDeployment))
	cm := b.decorate(obj(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: apps}\n"))
	liveDep := b.decorate(obj(t, strings.Replace(liveDeployment, "image: web:1", "image: web:2", 1)))
	canary := b.decorate(obj(t, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-canary, namespace: apps}\n"))
	kept := obj(t, "apiVersion: v1\nkind: Service\nmetadata: {name: kept, namespace: apps, labels: {objectset.rio.cattle.io/prune: \"false\"}}\n")
	live := map[string]*unstructured.Unstructured{}
	for _, u := range []*unstructured.Unstructured{liveDep, canary, kept} {
		live[identity(u)] = u
	}
	r, err := compare([]*unstructured.Unstructured{dep, cm}, live)
	if err != nil {
		t.Fatal(err)
	}
	want := `missing  ConfigMap apps/settings
extra    Deployment apps/web-canary
modified Deployment apps/web
         spec.template.spec.containers[name=web].image: "web:2" → "web:1"`
	if r.String() != want {
		t.Fatalf("report:\n%s\nwant:\n%s", r, want)
	}
	if r.Clean() {
		t.Fatal("a drifted report is clean")
	}

	clean, err := compare([]*unstructured.Unstructured{dep}, map[string]*unstructured.Unstructured{identity(dep): b.decorate(obj(t, liveDeployment))})
	if err != nil {
		t.Fatal(err)
	}
	if !clean.Clean() {
		t.Fatalf("report of an untouched deployment: %s", clean)
	}
}
