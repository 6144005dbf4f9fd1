package testbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	istionetworkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	canarygatev1alpha1 "canarygate.io/canarygate/api/v1alpha1"
)

const (
	// kwokNodeAnnotation marks the nodes kwok manages (with value "fake").
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	// FakeNodeName is the kwok node every pod of the test bed lands on.
	FakeNodeName = "kwok-node-0"
	// podCIDR hands out pod IPs; a /16 so thousands of pods get one.
	podCIDR = "10.244.0.0/16"
)

var getOpts = metav1.GetOptions{}

// Scheme has the client-go kinds, canarygate.io/v1alpha1, Istio networking.istio.io/v1 and
// apiextensions.k8s.io/v1 (for CRDs).
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(canarygatev1alpha1.AddToScheme(s))
	utilruntime.Must(istionetworkingv1.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

// errNoControlPlane is what Client and Clientset return for a test bed started with PrometheusOnly.
var errNoControlPlane = errors.New("test bed runs Prometheus only, without Kubernetes")

// Client returns a controller-runtime client for the admin user, using Scheme.
func (e *Env) Client() (client.Client, error) {
	if e.Config == nil {
		return nil, errNoControlPlane
	}
	return client.New(e.Config, client.Options{Scheme: Scheme})
}

// Clientset returns a client-go clientset for the admin user.
func (e *Env) Clientset() (kubernetes.Interface, error) {
	if e.Config == nil {
		return nil, errNoControlPlane
	}
	return newClientset(e.Config)
}

func newClientset(cfg *rest.Config) (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(cfg)
}

// restConfig authenticates with a client certificate. Rate limits are raised above client-go's 5 QPS
// because tests create objects in bulk against a server that only they use.
func restConfig(server string, caPEM []byte, kp *keyPair) *rest.Config {
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   caPEM,
			CertData: kp.CertPEM,
			KeyData:  kp.KeyPEM,
		},
		QPS:   100,
		Burst: 200,
	}
}

// writeKubeconfig writes a self-contained kubeconfig (certificates embedded).
func writeKubeconfig(path, server string, caPEM []byte, kp *keyPair) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testbed"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["testbed"] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
	cfg.Contexts["testbed"] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: "testbed"}
	cfg.CurrentContext = "testbed"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// insecureLoopbackClient reads the health endpoints of kube-controller-manager and kube-scheduler, which
// serve self-signed certificates on 127.0.0.1.
var insecureLoopbackClient = &http.Client{Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health probe only
}}

// HTTPOK GETs url with c and fails unless the answer is 200 OK; readiness probes use it.
func HTTPOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// createNode registers the fake node, waits for kwok to report it Ready and removes the not-ready taint
// (added on creation by the TaintNodesByCondition admission plugin, and normally removed by the node
// lifecycle controller, which the test bed does not run).
func createNode(ctx context.Context, cs kubernetes.Interface, kwok *process) (string, error) {
	big := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("10000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        FakeNodeName,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": FakeNodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
		},
		Spec:   corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status: corev1.NodeStatus{Capacity: big, Allocatable: big},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create node %s: %w", FakeNodeName, err)
	}
	if err := waitUntil(ctx, kwok, "kwok node Ready", func(ctx context.Context) error {
		n, err := cs.CoreV1().Nodes().Get(ctx, FakeNodeName, getOpts)
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node not Ready yet")
	}); err != nil {
		return "", err
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, FakeNodeName, getOpts)
		if err != nil {
			return err
		}
		taints := n.Spec.Taints[:0]
		for _, t := range n.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady && t.Key != corev1.TaintNodeUnreachable {
				taints = append(taints, t)
			}
		}
		if len(taints) == len(n.Spec.Taints) {
			return nil
		}
		n.Spec.Taints = taints
		_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("untaint node %s: %w", FakeNodeName, err)
	}
	return FakeNodeName, nil
}

// crdFiles lists canarygate's generated CRDs and Istio's, from the istio.io/api module in use.
func crdFiles(ctx context.Context, repo, crdDir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in %s", crdDir)
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("locate istio.io/api module: %w: %s", err, stderr.String())
	}
	istio := filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml")
	return append(files, istio), nil
}

// installCRDs creates (or updates) every CRD in files and waits until all are Established.
func installCRDs(ctx context.Context, cfg *rest.Config, apiserver *process, files []string) error {
	c, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return err
	}
	var names []string
	for _, f := range files {
		crds, err := readCRDs(f)
		if err != nil {
			return err
		}
		for _, crd := range crds {
			if err := applyCRD(ctx, c, crd); err != nil {
				return fmt.Errorf("install CRD %s from %s: %w", crd.Name, f, err)
			}
			names = append(names, crd.Name)
		}
	}
	for _, name := range names {
		if err := waitUntil(ctx, apiserver, "CRD "+name+" Established", func(ctx context.Context) error {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return errors.New("not Established yet")
		}); err != nil {
			return err
		}
	}
	return nil
}

func applyCRD(ctx context.Context, c client.Client, crd *apiextensionsv1.CustomResourceDefinition) error {
	err := c.Create(ctx, crd)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var existing apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKeyFromObject(crd), &existing); err != nil {
			return err
		}
		crd.ResourceVersion = existing.ResourceVersion
		return c.Update(ctx, crd)
	})
}

// readCRDs decodes every CustomResourceDefinition in a multi-document YAML file, skipping empty documents.
func readCRDs(path string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := dec.Decode(crd); err != nil {
			if errors.Is(err, io.EOF) {
				return crds, nil
			}
			return nil, fmt.Errorf("decode %s: %w", path, err)
		}
		if crd.Kind == "" && crd.Name == "" {
			continue // empty document
		}
		if crd.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s: unexpected %s %q among CRDs", path, crd.Kind, crd.Name)
		}
		crds = append(crds, crd)
	}
}
