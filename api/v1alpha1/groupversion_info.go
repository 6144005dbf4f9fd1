// Package v1alpha1 holds the canarygate.io/v1alpha1 API: Canary and CanaryPolicy.
// +kubebuilder:object:generate=true
// +groupName=canarygate.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "canarygate.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's kinds with a runtime.Scheme. Only apimachinery is
	// needed, so clients can import the API without controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Canary{}, &CanaryList{}, &CanaryPolicy{}, &CanaryPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
