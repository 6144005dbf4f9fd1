// Package integration_test runs the admission webhooks in-process behind real webhook
// configurations: the test bed's kube-apiserver calls them over TLS.
package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/e2e/testbed"
	"canarygate.io/canarygate/revision"
	"canarygate.io/canarygate/webhook"
)

func TestMain(m *testing.M) {
	logf.SetLogger(logr.Discard())
	os.Exit(testbed.Run(m, testbed.Options{NoPrometheus: true}))
}

const serviceAccount = "system:serviceaccount:canarygate-system:canarygate"

// countingServer counts the admission requests that reach the handlers, by namespace.
type countingServer struct {
	ctrlwebhook.Server
	mu    sync.Mutex
	count map[string]int
}

func (s *countingServer) Register(path string, hook http.Handler) {
	s.Server.Register(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			var review struct {
				Request struct {
					Namespace string `json:"namespace"`
				} `json:"request"`
			}
			if json.Unmarshal(body, &review) == nil {
				s.mu.Lock()
				s.count[review.Request.Namespace]++
				s.mu.Unlock()
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		hook.ServeHTTP(w, r)
	}))
}

func (s *countingServer) requests(namespace string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[namespace]
}

// fixture is the webhook server and manager shared by the package's tests.
type fixture struct {
	server *countingServer
	mgr    manager.Manager
	client client.Client
}

var (
	setupOnce sync.Once
	shared    *fixture
	setupErr  error
)

func setup(t *testing.T) *fixture {
	t.Helper()
	setupOnce.Do(func() { shared, setupErr = start() })
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	return shared
}

// start serves the webhooks on 127.0.0.1 with a self-signed certificate and registers the
// generated webhook configurations, pointed at it and limited to opted-in namespaces.
func start() (*fixture, error) {
	env := testbed.Shared()
	certDir, err := os.MkdirTemp("", "canarygate-webhook-")
	if err != nil {
		return nil, err
	}
	caPEM, err := testbed.WriteServingCert(certDir)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	srv := &countingServer{
		Server: ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir}),
		count:  map[string]int{},
	}
	mgr, err := manager.New(env.Config, manager.Options{
		Scheme:        testbed.Scheme,
		WebhookServer: srv,
		Metrics:       metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		return nil, err
	}
	if err := webhook.Register(mgr, webhook.Options{OwnNamespace: "canarygate-system", ServiceAccount: serviceAccount}); err != nil {
		return nil, err
	}
	go func() {
		if err := mgr.Start(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "manager: %v\n", err)
			os.Exit(1)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("cache did not sync")
	}
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return srv.StartedChecker()(nil) == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("webhook server did not start: %w", err)
	}
	c, err := env.Client()
	if err != nil {
		return nil, err
	}
	if err := installConfigurations(ctx, c, fmt.Sprintf("https://127.0.0.1:%d", port), caPEM); err != nil {
		return nil, err
	}
	return &fixture{server: srv, mgr: mgr, client: c}, nil
}

// installConfigurations creates the configurations of manifests/webhook (what the markers
// generate) with a URL client config and the opt-in namespaceSelector kustomize adds.
func installConfigurations(ctx context.Context, c client.Client, base string, caPEM []byte) error {
	repo, err := testbed.RepoRoot()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(repo, "manifests", "webhook", "manifests.yaml"))
	if err != nil {
		return err
	}
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}}
	clientConfig := func(cc admissionregistrationv1.WebhookClientConfig) admissionregistrationv1.WebhookClientConfig {
		url := base + *cc.Service.Path
		return admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		js, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		var obj client.Object
		switch doc["kind"] {
		case "MutatingWebhookConfiguration":
			var m admissionregistrationv1.MutatingWebhookConfiguration
			if err := json.Unmarshal(js, &m); err != nil {
				return err
			}
			for i := range m.Webhooks {
				m.Webhooks[i].ClientConfig = clientConfig(m.Webhooks[i].ClientConfig)
				// The Namespace label keeper selects by object (its marker's objectSelector): a
				// namespaceSelector on a Namespace matches only the new object.
				if !slices.ContainsFunc(m.Webhooks[i].Rules, func(r admissionregistrationv1.RuleWithOperations) bool {
					return slices.Contains(r.Resources, "namespaces")
				}) {
					m.Webhooks[i].NamespaceSelector = selector
				}
			}
			obj = &m
		case "ValidatingWebhookConfiguration":
			var v admissionregistrationv1.ValidatingWebhookConfiguration
			if err := json.Unmarshal(js, &v); err != nil {
				return err
			}
			for i := range v.Webhooks {
				v.Webhooks[i].ClientConfig = clientConfig(v.Webhooks[i].ClientConfig)
				v.Webhooks[i].NamespaceSelector = selector
			}
			obj = &v
		default:
			continue
		}
		obj.SetName("canarygate-" + obj.GetName())
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %s: %w", obj.GetName(), err)
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// gitManifest is the Deployment as Git (a Helm chart deployed by Fleet) states it.
func gitManifest(namespace, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: %[1]s
  labels:
    app.kubernetes.io/name: frontend
    app.kubernetes.io/managed-by: Helm
    objectset.rio.cattle.io/hash: 4b6a1f9e0b2c7d8e3f4a5b6c7d8e9f0a1b2c3d4e
  annotations:
    meta.helm.sh/release-name: frontend
    meta.helm.sh/release-namespace: %[1]s
    objectset.rio.cattle.io/id: default-frontend
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: frontend
  template:
    metadata:
      labels:
        app.kubernetes.io/name: frontend
    spec:
      containers:
      - name: frontend
        image: %[2]s
        resources:
          limits:
            cpu: "0.5"
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
`, namespace, image)
}

// kubectl runs kubectl against the test bed with a manifest on stdin.
func kubectl(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kubectl", append([]string{"--kubeconfig", testbed.Shared().Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// fleetApply applies a manifest the way Fleet's agent does: server-side, field manager fleet.
func fleetApply(t *testing.T, manifest string, extra ...string) string {
	t.Helper()
	out, err := kubectl(t, manifest, append([]string{"apply", "--server-side", "--force-conflicts", "--field-manager=fleet", "-f", "-"}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newNamespace(t *testing.T, f *fixture, optIn bool) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "webhook-"}}
	if optIn {
		ns.Labels = map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
		ns.Annotations = map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}
	}
	if err := f.client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	// The webhooks read namespaces from the manager's cache: wait until it has this one.
	poll(t, "the cache to see namespace "+ns.Name, func(ctx context.Context) error {
		return f.mgr.GetCache().Get(ctx, client.ObjectKey{Name: ns.Name}, &corev1.Namespace{})
	})
	return ns.Name
}

func poll(t *testing.T, what string, cond func(ctx context.Context) error) {
	t.Helper()
	var last error
	if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		last = cond(ctx)
		return last == nil, nil
	}); err != nil {
		t.Fatalf("waiting for %s: %v", what, last)
	}
}

func getDeployment(t *testing.T, f *fixture, namespace string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := f.client.Get(t.Context(), client.ObjectKey{Namespace: namespace, Name: "frontend"}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// settled waits until the Deployment controller has caught up, so that resourceVersions only
// change through the test's own writes.
func settled(t *testing.T, f *fixture, namespace string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	poll(t, "the Deployment to roll out", func(ctx context.Context) error {
		if err := f.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "frontend"}, &d); err != nil {
			return err
		}
		if d.Status.ObservedGeneration != d.Generation || d.Status.UpdatedReplicas != 1 || d.Status.AvailableReplicas != 1 || d.Status.Replicas != 1 {
			return fmt.Errorf("status %+v at generation %d", d.Status, d.Generation)
		}
		return nil
	})
	return &d
}

func image(d *appsv1.Deployment) string { return d.Spec.Template.Spec.Containers[0].Image }

// expectedRevision is the revision of the stored template with another image: what the API
// server sends the webhook for a Git change of the image only.
func expectedRevision(t *testing.T, d *appsv1.Deployment, img string) string {
	t.Helper()
	tmpl := d.Spec.Template.DeepCopy()
	tmpl.Spec.Containers[0].Image = img
	h, err := revision.Hash(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

const (
	v1Image = "registry.example.com/frontend:1.0.0"
	v2Image = "registry.example.com/frontend:2.0.0"
	v3Image = "registry.example.com/frontend:3.0.0"
)

func TestGitOpsFlowOnTheAPIServer(t *testing.T) {
	f := setup(t)
	ns := newNamespace(t, f, true)

	fleetApply(t, gitManifest(ns, v1Image))
	stable := settled(t, f, ns)
	if image(stable) != v1Image {
		t.Fatalf("CREATE must pass unchanged, image %s", image(stable))
	}

	t.Run("an image update is diverted into a pending revision", func(t *testing.T) {
		fleetApply(t, gitManifest(ns, v2Image))
		// The generation moves (Deployments count annotation changes), the ReplicaSets do not.
		d := settled(t, f, ns)
		if image(d) != v1Image {
			t.Fatalf("running template changed: image %s", image(d))
		}
		var sets appsv1.ReplicaSetList
		if err := f.client.List(t.Context(), &sets, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(sets.Items) != 1 || sets.Items[0].Spec.Template.Spec.Containers[0].Image != v1Image {
			t.Fatalf("%d ReplicaSets: the running template was rolled out", len(sets.Items))
		}
		if got, want := d.Annotations[v1alpha1.DesiredRevisionAnnotation], expectedRevision(t, stable, v2Image); got != want {
			t.Fatalf("desired-revision %q, want %q", got, want)
		}
		tmpl, err := revision.Decode(d.Annotations[v1alpha1.DesiredTemplateAnnotation])
		if err != nil || tmpl.Spec.Containers[0].Image != v2Image {
			t.Fatalf("desired-template %v: %v", tmpl, err)
		}
		for k, v := range map[string]string{"objectset.rio.cattle.io/id": "default-frontend", "meta.helm.sh/release-name": "frontend"} {
			if d.Annotations[k] != v {
				t.Errorf("Fleet's annotation %s lost", k)
			}
		}
	})

	t.Run("a server-side dry-run answers the same and stores nothing", func(t *testing.T) {
		before := settled(t, f, ns)
		out := fleetApply(t, gitManifest(ns, v3Image), "--dry-run=server", "-o", "json")
		var dry appsv1.Deployment
		if err := json.Unmarshal([]byte(out), &dry); err != nil {
			t.Fatalf("dry-run output: %v\n%s", err, out)
		}
		if image(&dry) != v1Image || dry.Annotations[v1alpha1.DesiredRevisionAnnotation] != expectedRevision(t, before, v3Image) {
			t.Fatalf("dry-run answered image %s, desired %s", image(&dry), dry.Annotations[v1alpha1.DesiredRevisionAnnotation])
		}
		after := getDeployment(t, f, ns)
		if after.ResourceVersion != before.ResourceVersion {
			t.Fatalf("a dry-run wrote: resourceVersion %s -> %s", before.ResourceVersion, after.ResourceVersion)
		}
	})

	t.Run("re-applying the same Git state writes nothing", func(t *testing.T) {
		before := settled(t, f, ns)
		for range 3 {
			fleetApply(t, gitManifest(ns, v2Image))
		}
		if after := getDeployment(t, f, ns); after.ResourceVersion != before.ResourceVersion {
			t.Fatalf("server-side re-apply wrote: resourceVersion %s -> %s", before.ResourceVersion, after.ResourceVersion)
		}
		// A drift correction without server-side apply (a Helm rollback): the Git template, and
		// none of canarygate's annotations. The API server records the PUT's manager in
		// managedFields before admission; the mutator puts the stored ones back, so no PUT writes.
		for range 2 {
			put := getDeployment(t, f, ns)
			rv := put.ResourceVersion
			put.Spec.Template.Spec.Containers[0].Image = v2Image
			delete(put.Annotations, v1alpha1.DesiredRevisionAnnotation)
			delete(put.Annotations, v1alpha1.DesiredTemplateAnnotation)
			if err := f.client.Update(t.Context(), put, client.FieldOwner("helm")); err != nil {
				t.Fatal(err)
			}
			if image(put) != v1Image || put.Annotations[v1alpha1.DesiredRevisionAnnotation] != before.Annotations[v1alpha1.DesiredRevisionAnnotation] ||
				!reflect.DeepEqual(put.Spec, before.Spec) || !reflect.DeepEqual(put.Annotations, before.Annotations) || !reflect.DeepEqual(put.Labels, before.Labels) {
				t.Fatalf("a PUT of the Git state changed the object: image %s, annotations %v", image(put), put.Annotations)
			}
			if put.ResourceVersion != rv {
				t.Fatalf("a repeated PUT of the Git state wrote: resourceVersion %s -> %s", rv, put.ResourceVersion)
			}
		}
	})

	t.Run("an unrelated update keeps the pending revision", func(t *testing.T) {
		if _, err := kubectl(t, "", "-n", ns, "label", "deployment", "frontend", "tier=web"); err != nil {
			t.Fatal(err)
		}
		d := getDeployment(t, f, ns)
		if d.Labels["tier"] != "web" || d.Annotations[v1alpha1.DesiredRevisionAnnotation] != expectedRevision(t, stable, v2Image) {
			t.Fatalf("labels %v, annotations %v", d.Labels, d.Annotations)
		}
	})

	t.Run("a Git revert clears the pending revision", func(t *testing.T) {
		fleetApply(t, gitManifest(ns, v1Image))
		d := getDeployment(t, f, ns)
		if _, ok := d.Annotations[v1alpha1.DesiredRevisionAnnotation]; ok || image(d) != v1Image {
			t.Fatalf("image %s, annotations %v", image(d), d.Annotations)
		}
		if _, ok := d.Annotations[v1alpha1.DesiredTemplateAnnotation]; ok {
			t.Fatalf("desired-template left: %v", d.Annotations)
		}
	})

	t.Run("canarygate's generated objects are canarygate's", func(t *testing.T) {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "frontend-canary", Namespace: ns, Labels: map[string]string{v1alpha1.GeneratedForLabel: "frontend"}},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: []corev1.ServicePort{{Port: 80}}},
		}
		err := f.client.Create(t.Context(), svc)
		if err == nil || !strings.Contains(err.Error(), "generated by canarygate") {
			t.Fatalf("creating a generated Service as admin: %v", err)
		}
	})
}

func TestNamespaceThatDidNotOptInIsNeverSent(t *testing.T) {
	f := setup(t)
	ns := newNamespace(t, f, false)
	fleetApply(t, gitManifest(ns, v1Image))
	fleetApply(t, gitManifest(ns, v2Image))
	if d := getDeployment(t, f, ns); image(d) != v2Image {
		t.Fatalf("unmanaged Deployment not updated: %s", image(d))
	}
	if n := f.server.requests(ns); n != 0 {
		t.Fatalf("the webhook got %d requests for a namespace that did not opt in", n)
	}
}

// A GitOps agent replacing a managed Namespace with a manifest that lacks the opt-in label
// (Fleet's correctDrift.force) does not take the namespace out of the webhooks' view: the API
// server's call to /mutate-namespaces keeps the label. No controller runs here that could put it
// back, so the label in the answer to the replace is the webhook's doing. Opting out (the
// annotation gone as well) lets it go.
func TestNamespaceReplaceKeepsOptInLabel(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	name := newNamespace(t, f, true)
	replace := func(annotations map[string]string) *corev1.Namespace {
		t.Helper()
		var live corev1.Namespace
		if err := f.client.Get(ctx, client.ObjectKey{Name: name}, &live); err != nil {
			t.Fatal(err)
		}
		fromGit := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: name, ResourceVersion: live.ResourceVersion,
			Labels: map[string]string{"istio-injection": "enabled"}, Annotations: annotations,
		}}
		if err := f.client.Update(ctx, fromGit); err != nil {
			t.Fatal(err)
		}
		return fromGit
	}
	if ns := replace(map[string]string{v1alpha1.OptInKey: v1alpha1.OptInEnabled}); ns.Labels[v1alpha1.OptInKey] != v1alpha1.OptInEnabled || ns.Labels["istio-injection"] != "enabled" {
		t.Errorf("after a replace of the opted-in Namespace, labels %v: want the opt-in label kept next to Git's", ns.Labels)
	}
	if ns := replace(nil); ns.Labels[v1alpha1.OptInKey] != "" {
		t.Errorf("after opting out by replace, labels %v: want the opt-in label gone", ns.Labels)
	}
}
