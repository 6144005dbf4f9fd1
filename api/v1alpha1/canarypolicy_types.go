package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CanaryPolicySpec is a cluster admin's say over canaries: where they apply, their defaults and bounds.
type CanaryPolicySpec struct {
	// NamespaceSelector picks the namespaces this policy covers; they are managed even without the
	// opt-in annotation. Absent, the policy covers only namespaces that opted in themselves.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// Defaults is the analysis of a Canary that has none of its own. Without metrics, the
	// controller's default metrics (--default-* flags) apply: nothing is promoted unmeasured.
	// +optional
	Defaults *CanaryAnalysis `json:"defaults,omitempty"`

	// Bounds limit what a Canary in a covered namespace may ask for.
	// +optional
	Bounds PolicyBounds `json:"bounds,omitempty"`

	// BreakGlassGroups may set the break-glass annotation, opt a Deployment out where that is not
	// otherwise allowed, and edit generated objects.
	// +optional
	BreakGlassGroups []string `json:"breakGlassGroups,omitempty"`

	// StripMetadataKeys lists the ownership metadata keys kept off generated objects. An entry ending
	// in "/" or "*" is a prefix; "*." at the start matches any key whose domain ends with the rest.
	// Absent, the built-in list (Fleet, Helm, Argo CD, Flux) applies.
	// +optional
	StripMetadataKeys []string `json:"stripMetadataKeys,omitempty"`

	// MetricsServer is the Prometheus address for canaries in covered namespaces.
	// +kubebuilder:validation:Pattern=`^https?://`
	// +optional
	MetricsServer string `json:"metricsServer,omitempty"`
}

// PolicyBounds are the limits a Canary must stay within.
type PolicyBounds struct {
	// MaxWeight is the largest maxWeight a Canary may ask for.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxWeight *int `json:"maxWeight,omitempty"`

	// MinInterval is the shortest analysis interval a Canary may ask for.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	MinInterval string `json:"minInterval,omitempty"`

	// AllowSkipAnalysis permits skipAnalysis: true. Default false.
	// +optional
	AllowSkipAnalysis bool `json:"allowSkipAnalysis,omitempty"`

	// AllowOptOut permits the per-Deployment opt-out annotation to anyone. Default true.
	// +kubebuilder:default=true
	// +optional
	AllowOptOut *bool `json:"allowOptOut,omitempty"`
}

// CanaryPolicyStatus reports what the policy covers.
type CanaryPolicyStatus struct {
	// Namespaces is the number of namespaces the policy covers.
	// +optional
	Namespaces int `json:"namespaces,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CanaryPolicy is the cluster-wide policy for canaries.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cgp
// +kubebuilder:printcolumn:name="NAMESPACES",type=integer,JSONPath=`.status.namespaces`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type CanaryPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CanaryPolicySpec   `json:"spec"`
	Status CanaryPolicyStatus `json:"status,omitempty"`
}

// CanaryPolicyList is a list of CanaryPolicies.
// +kubebuilder:object:root=true
type CanaryPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CanaryPolicy `json:"items"`
}
