package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// fieldOwner is the field manager of everything the harness installs.
const fieldOwner = "canarygate-e2e"

// installKinds are the objects of the install manifests that the harness applies: what canarygate
// needs to run under its own identity. CRDs come with the test bed; the Deployment, Services and
// certificate objects are for a cluster, where canarygate runs as a pod.
var installKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true,
	"ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
}

// install is what the install manifests say about running canarygate.
type install struct {
	objects        []*unstructured.Unstructured // installKinds, in manifest order (Namespaces first)
	namespace      string                       // canarygate's namespace (the ServiceAccount's)
	serviceAccount string
	mutating       []admissionregistrationv1.MutatingWebhookConfiguration
	validating     []admissionregistrationv1.ValidatingWebhookConfiguration
}

// loadInstall builds the kustomize base manifests/default, as a cluster admin installs canarygate.
func loadInstall(repo string) (*install, error) {
	base := filepath.Join(repo, "manifests", "default")
	out, err := kustomize(base)
	if err != nil {
		return nil, err
	}
	docs, err := decodeAll(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", base, err)
	}
	in := &install{}
	for _, u := range docs {
		switch kind := u.GetKind(); {
		case installKinds[kind]:
			in.objects = append(in.objects, u)
			if kind == "ServiceAccount" {
				if in.serviceAccount != "" {
					return nil, fmt.Errorf("the install manifests declare more than one ServiceAccount (%s and %s)", in.serviceAccount, u.GetName())
				}
				in.serviceAccount, in.namespace = u.GetName(), u.GetNamespace()
			}
		case kind == "MutatingWebhookConfiguration":
			var c admissionregistrationv1.MutatingWebhookConfiguration
			if err := fromUnstructured(u, &c); err != nil {
				return nil, err
			}
			in.mutating = append(in.mutating, c)
		case kind == "ValidatingWebhookConfiguration":
			var c admissionregistrationv1.ValidatingWebhookConfiguration
			if err := fromUnstructured(u, &c); err != nil {
				return nil, err
			}
			in.validating = append(in.validating, c)
		}
	}
	if len(in.mutating) != 1 || len(in.validating) != 1 {
		return nil, fmt.Errorf("want one mutating and one validating webhook configuration in %s, found %d and %d", base, len(in.mutating), len(in.validating))
	}
	if in.serviceAccount == "" {
		return nil, fmt.Errorf("%s declares no ServiceAccount for canarygate", base)
	}
	// Namespaces first, as kubectl and Helm order them.
	slices.SortStableFunc(in.objects, func(a, b *unstructured.Unstructured) int {
		return boolRank(a.GetKind() != "Namespace") - boolRank(b.GetKind() != "Namespace")
	})
	return in, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// kustomize builds a kustomization as `kustomize build` does.
func kustomize(dir string) ([]byte, error) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return res.AsYaml()
}

func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// applyInstall server-side applies the install objects.
func applyInstall(ctx context.Context, c client.Client, in *install) error {
	for _, u := range in.objects {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

// registerWebhooks creates (or replaces) the webhook configurations with every webhook pointed at
// url+path. The caBundle is left empty: canarygate injects its own CA (--cert-management=self).
func registerWebhooks(ctx context.Context, cs kubernetes.Interface, in *install, url string) error {
	m := in.mutating[0].DeepCopy()
	for i := range m.Webhooks {
		cc, err := byURL(m.Webhooks[i].ClientConfig, url)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Webhooks[i].Name, err)
		}
		m.Webhooks[i].ClientConfig = cc
	}
	v := in.validating[0].DeepCopy()
	for i := range v.Webhooks {
		cc, err := byURL(v.Webhooks[i].ClientConfig, url)
		if err != nil {
			return fmt.Errorf("%s: %w", v.Webhooks[i].Name, err)
		}
		v.Webhooks[i].ClientConfig = cc
	}
	m.ResourceVersion, v.ResourceVersion = "", ""
	mc := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	vc := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	// Replaced rather than updated: a previous run's CA bundle must not survive into this one.
	for _, del := range []func() error{
		func() error { return mc.Delete(ctx, m.Name, metav1.DeleteOptions{}) },
		func() error { return vc.Delete(ctx, v.Name, metav1.DeleteOptions{}) },
	} {
		if err := del(); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	if _, err := mc.Create(ctx, m, metav1.CreateOptions{FieldManager: fieldOwner}); err != nil {
		return fmt.Errorf("creating MutatingWebhookConfiguration %s: %w", m.Name, err)
	}
	if _, err := vc.Create(ctx, v, metav1.CreateOptions{FieldManager: fieldOwner}); err != nil {
		return fmt.Errorf("creating ValidatingWebhookConfiguration %s: %w", v.Name, err)
	}
	return nil
}

func byURL(cc admissionregistrationv1.WebhookClientConfig, url string) (admissionregistrationv1.WebhookClientConfig, error) {
	if cc.Service == nil || cc.Service.Path == nil {
		return cc, errors.New("the manifest's clientConfig names no Service path")
	}
	return admissionregistrationv1.WebhookClientConfig{URL: ptr.To(url + *cc.Service.Path)}, nil
}

// unregisterWebhooks deletes the webhook configurations, so that a test bed that outlives canarygate
// (make run-local, then stopping it) is not left blocking updates in managed namespaces.
func unregisterWebhooks(ctx context.Context, cs kubernetes.Interface, in *install) error {
	err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, in.mutating[0].Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, in.validating[0].Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// tokenLifetime bounds the ServiceAccount token canarygate runs with; a run-local session longer
// than this needs a restart.
const tokenLifetime = 7 * 24 * time.Hour

// writeServiceAccountKubeconfig mints a token for canarygate's ServiceAccount (TokenRequest) and
// writes a kubeconfig that authenticates with it: canarygate then has exactly the permissions the
// install manifests grant.
func writeServiceAccountKubeconfig(ctx context.Context, cs kubernetes.Interface, in *install, server, caFile, path string) error {
	tr, err := cs.CoreV1().ServiceAccounts(in.namespace).CreateToken(ctx, in.serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(tokenLifetime.Seconds()))},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", in.namespace, in.serviceAccount, err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("reading the test bed's CA: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testbed"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[in.serviceAccount] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["canarygate"] = &clientcmdapi.Context{Cluster: "testbed", AuthInfo: in.serviceAccount, Namespace: in.namespace}
	cfg.CurrentContext = "canarygate"
	return clientcmd.WriteToFile(*cfg, path)
}

// userName is the ServiceAccount's user name as the API server sees it.
func (in *install) userName() string {
	return "system:serviceaccount:" + in.namespace + ":" + in.serviceAccount
}
