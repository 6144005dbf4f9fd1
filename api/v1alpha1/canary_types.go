package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CanarySpec says which Deployment is released through canaries and how the canary is judged.
// The analysis block is field-compatible with Flagger's, so an existing one can be pasted in.
type CanarySpec struct {
	// TargetRef names the Git-owned Deployment in the Canary's namespace.
	TargetRef TargetRef `json:"targetRef"`

	// Service is the Service that routes to the target's pods. Defaults to the target's name.
	// +optional
	Service CanaryService `json:"service,omitempty"`

	// Provider is the traffic router. Only istio is implemented.
	// +kubebuilder:validation:Enum=istio
	// +kubebuilder:default=istio
	// +optional
	Provider string `json:"provider,omitempty"`

	// MetricsServer is the Prometheus address used for this Canary's metrics; it overrides the
	// CanaryPolicy's and the controller's default.
	// +kubebuilder:validation:Pattern=`^https?://`
	// +optional
	MetricsServer string `json:"metricsServer,omitempty"`

	// Analysis is the schedule and the checks. Absent, the CanaryPolicy's defaults apply.
	// +optional
	Analysis *CanaryAnalysis `json:"analysis,omitempty"`

	// SkipAnalysis promotes without running the analysis (a CanaryPolicy may forbid it).
	// +optional
	SkipAnalysis bool `json:"skipAnalysis,omitempty"`

	// Suspend holds new revisions: nothing is started, promoted or rolled back while it is true.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// ProgressDeadlineSeconds is how long the canary Deployment may take to become available before
	// the canary is rolled back, and how long the promotion rollout may take before the Canary
	// reports it stalled (Promoted=False, PromotionStalled; abort routes all traffic to stable).
	// +kubebuilder:validation:Minimum=1
	// +optional
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`
}

// TargetRef points at the Deployment released through this Canary.
type TargetRef struct {
	// +kubebuilder:validation:Enum=apps/v1
	// +kubebuilder:default=apps/v1
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// +kubebuilder:validation:Enum=Deployment
	// +kubebuilder:default=Deployment
	// +optional
	Kind string `json:"kind,omitempty"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=246
	Name string `json:"name"`
}

// CanaryService names the Service in front of the target and the port traffic is routed on.
type CanaryService struct {
	// Name of the Service; defaults to the target's name.
	// +optional
	Name string `json:"name,omitempty"`
	// Port the Service exposes.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// TargetPort of the pods; defaults to the Service's own targetPort.
	// +optional
	TargetPort int32 `json:"targetPort,omitempty"`
}

// NoDataPolicy says what a metric query that returns no samples means.
// +kubebuilder:validation:Enum=Fail;Wait
type NoDataPolicy string

const (
	// NoDataFail counts a query without data as a failed check (the default: missing data is never a pass).
	NoDataFail NoDataPolicy = "Fail"
	// NoDataWait neither passes nor fails the round: the weight stays and no failure is counted.
	NoDataWait NoDataPolicy = "Wait"
)

// CanaryAnalysis is the analysis schedule, its limits and its checks.
// +kubebuilder:validation:XValidation:rule="!has(self.stepWeight) || !has(self.maxWeight) || self.stepWeight <= self.maxWeight",message="stepWeight must not exceed maxWeight"
// +kubebuilder:validation:XValidation:rule="!has(self.stepWeights) || self.stepWeights.all(i, w, i == 0 || self.stepWeights[i - 1] < w)",message="stepWeights must be strictly ascending"
// +kubebuilder:validation:XValidation:rule="!has(self.stepWeights) || !has(self.maxWeight) || self.stepWeights.all(w, w <= self.maxWeight)",message="stepWeights must not exceed maxWeight"
type CanaryAnalysis struct {
	// Interval between analysis rounds, a duration of at least 5s (for example 30s or 1m).
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s')",message="interval must be at least 5s"
	// +optional
	Interval string `json:"interval,omitempty"`

	// Threshold is the number of failed checks after which the canary is rolled back.
	// +kubebuilder:validation:Minimum=1
	// +optional
	Threshold int `json:"threshold,omitempty"`

	// MaxWeight is the largest share of traffic, in percent, the canary gets before promotion.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxWeight int `json:"maxWeight,omitempty"`

	// StepWeight is the weight added by every passing round.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	StepWeight int `json:"stepWeight,omitempty"`

	// StepWeights, when set, are the weights to walk through instead of equal steps.
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=100
	// +optional
	StepWeights []int `json:"stepWeights,omitempty"`

	// NoData says what a metric without samples means: Fail (default) or Wait.
	// +optional
	NoData NoDataPolicy `json:"noData,omitempty"`

	// Metrics are checked in order every round.
	// +kubebuilder:validation:MaxItems=50
	// +listType=map
	// +listMapKey=name
	// +optional
	Metrics []CanaryMetric `json:"metrics,omitempty"`

	// Webhooks are called at their stage of the rollout, with Flagger's payload.
	// +kubebuilder:validation:MaxItems=50
	// +listType=map
	// +listMapKey=name
	// +optional
	Webhooks []CanaryWebhook `json:"webhooks,omitempty"`
}

// Built-in metric names: Istio's request success rate (percent) and p99 request duration (ms).
const (
	MetricRequestSuccessRate = "request-success-rate"
	MetricRequestDuration    = "request-duration"
)

// CanaryMetric is one metric check: a built-in or a PromQL query, and the range it must fall in.
// +kubebuilder:validation:XValidation:rule="self.name == 'request-success-rate' || self.name == 'request-duration' || (has(self.query) && size(self.query) > 0)",message="a metric must name a built-in (request-success-rate, request-duration) or carry a query"
type CanaryMetric struct {
	// Name of the metric; request-success-rate and request-duration are built in.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// ThresholdRange is the range the value must lie in to pass.
	// +optional
	ThresholdRange *CanaryThresholdRange `json:"thresholdRange,omitempty"`

	// Interval is the range of the query, for example 1m.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	Interval string `json:"interval,omitempty"`

	// Query is a PromQL template. It may use {{ namespace }}, {{ name }}, {{ target }},
	// {{ service }} and {{ interval }} (Flagger's variables).
	// +kubebuilder:validation:MaxLength=8192
	// +optional
	Query string `json:"query,omitempty"`
}

// CanaryThresholdRange bounds a metric value; either side may be open.
// +kubebuilder:validation:XValidation:rule="!has(self.min) || !has(self.max) || self.min <= self.max",message="thresholdRange.min must not exceed thresholdRange.max"
type CanaryThresholdRange struct {
	// +optional
	Min *float64 `json:"min,omitempty"`
	// +optional
	Max *float64 `json:"max,omitempty"`
}

// HookType is when a webhook runs; an empty type is a rollout webhook, as in Flagger.
// +kubebuilder:validation:Enum=confirm-rollout;pre-rollout;rollout;confirm-traffic-increase;confirm-promotion;post-rollout;rollback;event
type HookType string

// Webhook types, as in Flagger.
const (
	HookConfirmRollout         HookType = "confirm-rollout"
	HookPreRollout             HookType = "pre-rollout"
	HookRollout                HookType = "rollout"
	HookConfirmTrafficIncrease HookType = "confirm-traffic-increase"
	HookConfirmPromotion       HookType = "confirm-promotion"
	HookPostRollout            HookType = "post-rollout"
	HookRollback               HookType = "rollback"
	HookEvent                  HookType = "event"
)

// CanaryWebhook is an HTTP call made at a stage of the rollout.
type CanaryWebhook struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// Type is the stage; empty means rollout.
	// +optional
	Type HookType `json:"type,omitempty"`
	// URL receives a POST with Flagger's JSON payload.
	// +kubebuilder:validation:Pattern=`^https?://`
	URL string `json:"url"`
	// Timeout of the call, for example 5s; defaults to 10s.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	Timeout string `json:"timeout,omitempty"`
	// Metadata is passed to the webhook as is.
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
}

// CanaryPhase is where a Canary is in its release.
// +kubebuilder:validation:Enum=Initialized;Waiting;Progressing;Promoting;Finalising;Succeeded;Failed
type CanaryPhase string

// Phases, as in Flagger.
const (
	PhaseInitialized CanaryPhase = "Initialized"
	PhaseWaiting     CanaryPhase = "Waiting"
	PhaseProgressing CanaryPhase = "Progressing"
	PhasePromoting   CanaryPhase = "Promoting"
	PhaseFinalising  CanaryPhase = "Finalising"
	PhaseSucceeded   CanaryPhase = "Succeeded"
	PhaseFailed      CanaryPhase = "Failed"
)

// CanaryStatus is the controller's account of the release; it is enough to resume after a restart.
type CanaryStatus struct {
	// +optional
	Phase CanaryPhase `json:"phase,omitempty"`
	// CanaryWeight is the share of traffic, in percent, routed to the canary now.
	// +optional
	CanaryWeight int `json:"canaryWeight,omitempty"`
	// FailedChecks counts the failed analysis rounds of the current revision.
	// +optional
	FailedChecks int `json:"failedChecks,omitempty"`
	// Iterations counts the analysis rounds of the current revision.
	// +optional
	Iterations int `json:"iterations,omitempty"`
	// StableRevision is the hash of the template the Git-owned Deployment runs.
	// +optional
	StableRevision string `json:"stableRevision,omitempty"`
	// CanaryRevision is the hash of the template under analysis.
	// +optional
	CanaryRevision string `json:"canaryRevision,omitempty"`
	// FailedRevision is the last revision rolled back; it is held until a newer revision or a retry.
	// +optional
	FailedRevision string `json:"failedRevision,omitempty"`
	// LastAnalysisTime is when the last analysis round ran; the next is due one interval later.
	// +optional
	LastAnalysisTime *metav1.Time `json:"lastAnalysisTime,omitempty"`
	// LastTransitionTime is when the phase or the weight last changed.
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// Message explains the phase in a sentence.
	// +optional
	Message string `json:"message,omitempty"`
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types.
const (
	// ConditionPromoted is True when the last revision was promoted, False while one is under way or failed.
	ConditionPromoted = "Promoted"
	// ConditionReady is False when the canary cannot run (for example no safe pod labels can be chosen).
	ConditionReady = "Ready"
	// ConditionPaused is True while a pause action holds the release (set by canarygate.io/action).
	ConditionPaused = "Paused"
)

// Canary releases a Deployment's pod-template changes through a measured canary.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cg;canaries
// +kubebuilder:printcolumn:name="STATUS",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="WEIGHT",type=integer,JSONPath=`.status.canaryWeight`
// +kubebuilder:printcolumn:name="FAILEDCHECKS",type=integer,JSONPath=`.status.failedChecks`,priority=1
// +kubebuilder:printcolumn:name="INTERVAL",type=string,JSONPath=`.spec.analysis.interval`,priority=1
// +kubebuilder:printcolumn:name="STEPWEIGHT",type=integer,JSONPath=`.spec.analysis.stepWeight`,priority=1
// +kubebuilder:printcolumn:name="MAXWEIGHT",type=integer,JSONPath=`.spec.analysis.maxWeight`,priority=1
// +kubebuilder:printcolumn:name="LASTTRANSITIONTIME",type=string,JSONPath=`.status.lastTransitionTime`
type Canary struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CanarySpec   `json:"spec"`
	Status CanaryStatus `json:"status,omitempty"`
}

// CanaryList is a list of Canaries.
// +kubebuilder:object:root=true
type CanaryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Canary `json:"items"`
}
