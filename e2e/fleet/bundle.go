package fleet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// maxReleaseName is Helm's limit on release names; Fleet names the release after the bundle.
const maxReleaseName = 53

// Bundle is a folder of manifests deployed as one Fleet bundle deployment.
type Bundle struct {
	// Name is the bundle deployment's name; it is also the Helm release name.
	Name string
	// Namespace is fleet.yaml's defaultNamespace: namespaced objects without a namespace go there,
	// and the Helm release lives there.
	Namespace string
	// Objects are the manifests as written, in file order. They never carry Fleet's metadata: the
	// applier adds it when it writes.
	Objects []*unstructured.Unstructured
}

// ObjectRef names one object.
type ObjectRef struct {
	APIVersion string
	Kind       string
	Namespace  string // empty for cluster-scoped objects
	Name       string
}

func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return fmt.Sprintf("%s %s", r.Kind, r.Name)
	}
	return fmt.Sprintf("%s %s/%s", r.Kind, r.Namespace, r.Name)
}

func refOf(u *unstructured.Unstructured) ObjectRef {
	return ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
}

// LoadDir reads every *.yaml and *.yml file directly in dir (multi-document files included, sorted
// by file name) as the bundle name deployed to defaultNamespace. fleet.yaml / fleet.yml are Fleet's
// own configuration and are skipped, as are empty documents. Subdirectories are not read.
func LoadDir(dir, name, defaultNamespace string) (*Bundle, error) {
	if err := validateNames(name, defaultNamespace); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading bundle directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		n := e.Name()
		ext := strings.ToLower(filepath.Ext(n))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		if base := strings.ToLower(strings.TrimSuffix(n, filepath.Ext(n))); base == "fleet" {
			continue
		}
		files = append(files, n)
	}
	sort.Strings(files)

	b := &Bundle{Name: name, Namespace: defaultNamespace}
	seen := map[string]string{}
	for _, f := range files {
		path := filepath.Join(dir, f)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		objs, err := decodeManifests(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, o := range objs {
			key := identity(o)
			if prev, dup := seen[key]; dup {
				return nil, fmt.Errorf("%s: %s is declared twice (first in %s)", path, refOf(o), prev)
			}
			seen[key] = f
			b.Objects = append(b.Objects, o)
		}
	}
	if len(b.Objects) == 0 {
		return nil, fmt.Errorf("no manifests in %s", dir)
	}
	return b, nil
}

func validateNames(name, namespace string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 || len(name) > maxReleaseName {
		return fmt.Errorf("bundle name %q must be a DNS label of at most %d characters (it names the Helm release)", name, maxReleaseName)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("default namespace %q is not a valid namespace name: %s", namespace, strings.Join(errs, "; "))
	}
	return nil
}

// identity keys an object by group, kind, namespace and name: Fleet treats two versions of one
// kind as the same object.
func identity(u *unstructured.Unstructured) string {
	gk := u.GroupVersionKind().GroupKind()
	return gk.String() + "/" + u.GetNamespace() + "/" + u.GetName()
}

// decodeManifests splits a YAML stream into objects.
func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "{}" || s == "" {
			continue
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if o.IsList() {
			return nil, fmt.Errorf("document %d: lists are not supported, write one object per document", i)
		}
		if o.GetName() == "" {
			return nil, fmt.Errorf("document %d: %s has no metadata.name", i, o.GetKind())
		}
		if _, err := schema.ParseGroupVersion(o.GetAPIVersion()); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, o)
	}
}

// DeepCopy returns a bundle whose objects can be changed without touching b's.
func (b *Bundle) DeepCopy() *Bundle {
	out := &Bundle{Name: b.Name, Namespace: b.Namespace, Objects: make([]*unstructured.Unstructured, len(b.Objects))}
	for i, o := range b.Objects {
		out.Objects[i] = o.DeepCopy()
	}
	return out
}

// WithImage returns a copy of b in which the named container of the named Deployment runs image:
// what a Git commit bumping the image does to the bundle.
func (b *Bundle) WithImage(deployment, container, image string) (*Bundle, error) {
	if image == "" {
		return nil, errors.New("image must not be empty")
	}
	out := b.DeepCopy()
	for _, o := range out.Objects {
		if o.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "apps", Kind: "Deployment"}) || o.GetName() != deployment {
			continue
		}
		containers, found, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if err != nil {
			return nil, fmt.Errorf("deployment %s: %w", deployment, err)
		}
		if !found {
			return nil, fmt.Errorf("deployment %s has no containers", deployment)
		}
		for i, c := range containers {
			m, ok := c.(map[string]any)
			if !ok || m["name"] != container {
				continue
			}
			m["image"] = image
			containers[i] = m
			if err := unstructured.SetNestedSlice(o.Object, containers, "spec", "template", "spec", "containers"); err != nil {
				return nil, fmt.Errorf("deployment %s: %w", deployment, err)
			}
			return out, nil
		}
		return nil, fmt.Errorf("deployment %s has no container %q", deployment, container)
	}
	return nil, fmt.Errorf("bundle %s declares no Deployment %q", b.Name, deployment)
}
