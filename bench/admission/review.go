// Package admission measures canarygate's admission path: the handlers' Go benchmarks, and an
// HTTPS load of realistic AdmissionReviews against canarygate's webhook server next to a no-op
// controller-runtime webhook server on the same TLS setup (the floor).
package admission

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// imageMarker stands for the new image in the review template; every request gets its own image,
// so each one is a revision the webhook has not seen (its memo does not answer).
const imageMarker = "bench.invalid/image-marker"

// Reviews renders the AdmissionReviews a Fleet deploy of a new image causes: an UPDATE (Helm v4's
// server-side apply as field manager "fleet") of the realistic Fleet-applied Deployment of
// webhook/testdata, moved to namespace ns, whose only change is the container image.
type Reviews struct {
	template []byte
}

// NewReviews reads the Deployment from the repository at repo.
func NewReviews(repo, ns string) (*Reviews, error) {
	raw, err := os.ReadFile(filepath.Join(repo, "webhook", "testdata", "fleet-deployment.json"))
	if err != nil {
		return nil, err
	}
	var old appsv1.Deployment
	if err := json.Unmarshal(raw, &old); err != nil {
		return nil, fmt.Errorf("fleet-deployment.json: %w", err)
	}
	old.Namespace = ns
	if len(old.Spec.Template.Spec.Containers) == 0 {
		return nil, fmt.Errorf("fleet-deployment.json has no container")
	}
	updated := old.DeepCopy()
	updated.Spec.Template.Spec.Containers[0].Image = imageMarker
	oldRaw, err := json.Marshal(&old)
	if err != nil {
		return nil, err
	}
	newRaw, err := json.Marshal(updated)
	if err != nil {
		return nil, err
	}
	opts, err := json.Marshal(metav1.PatchOptions{
		TypeMeta:     metav1.TypeMeta{Kind: "PatchOptions", APIVersion: "meta.k8s.io/v1"},
		FieldManager: "fleet",
	})
	if err != nil {
		return nil, err
	}
	dryRun := false
	kind := metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("705ab4f5-6393-11e8-b7cc-42010a800002"),
			Kind:      kind,
			Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
			Name:      old.Name,
			Namespace: ns,
			Operation: admissionv1.Update,
			UserInfo: authenticationv1.UserInfo{
				Username: "system:serviceaccount:cattle-fleet-system:fleet-agent",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:cattle-fleet-system", "system:authenticated"},
			},
			Object:    runtime.RawExtension{Raw: newRaw},
			OldObject: runtime.RawExtension{Raw: oldRaw},
			DryRun:    &dryRun,
			Options:   runtime.RawExtension{Raw: opts},
		},
	}
	body, err := json.Marshal(ar)
	if err != nil {
		return nil, err
	}
	if bytes.Count(body, []byte(imageMarker)) != 1 {
		return nil, fmt.Errorf("the review template must hold the image marker exactly once")
	}
	return &Reviews{template: body}, nil
}

// Body is request i's review: its own image, so every request is a new revision.
func (r *Reviews) Body(i int) []byte {
	return bytes.Replace(r.template, []byte(imageMarker), []byte("registry.example.com/shop/frontend:bench-"+strconv.Itoa(i)), 1)
}

// Size is the length of a review in bytes.
func (r *Reviews) Size() int { return len(r.Body(0)) }

// checkDiverted accepts an AdmissionReview response that allows the update and patches the
// template back: what canarygate answers to a new revision.
func checkDiverted(body []byte) error {
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil {
		return fmt.Errorf("decoding the AdmissionReview response: %w", err)
	}
	if ar.Response == nil || !ar.Response.Allowed || len(ar.Response.Patch) == 0 {
		return fmt.Errorf("not diverted: %s", body)
	}
	return nil
}

// checkAllowed accepts any allowing response (the floor).
func checkAllowed(body []byte) error {
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil {
		return fmt.Errorf("decoding the AdmissionReview response: %w", err)
	}
	if ar.Response == nil || !ar.Response.Allowed {
		return fmt.Errorf("not allowed: %s", body)
	}
	return nil
}
