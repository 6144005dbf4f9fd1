package controller

import (
	"fmt"
	"time"

	"canarygate.io/canarygate/api/v1alpha1"
	"canarygate.io/canarygate/controller/canary"
	"canarygate.io/canarygate/policy"
)

// resolved is the analysis that applies to one Canary.
type resolved struct {
	canary.Settings
	Analysis      v1alpha1.CanaryAnalysis
	MetricsServer string
	// Warning explains a setting that was replaced by a default or a bound (for the logs).
	Warning string
}

// resolveSettings merges, without I/O, the Canary's analysis (else the policy's defaults, else the
// controller's flags) with the flag defaults for unset fields and the policy's bounds.
func resolveSettings(c *v1alpha1.Canary, eff policy.Effective, opts *Options) resolved {
	def := opts.DefaultAnalysis
	var a v1alpha1.CanaryAnalysis
	switch {
	case c.Spec.Analysis != nil:
		a = *c.Spec.Analysis.DeepCopy()
	case eff.Defaults != nil:
		a = *eff.Defaults.DeepCopy()
		// A policy that sets the cadence but no metrics still measures: nothing is promoted
		// unmeasured by default. Only a Canary's own analysis may leave the metrics out.
		if len(a.Metrics) == 0 {
			a.Metrics = def.DeepCopy().Metrics
		}
	default:
		a = *def.DeepCopy()
	}
	r := resolved{Analysis: a, MetricsServer: opts.MetricsServer}
	r.ProgressDeadline = opts.DefaultProgressDeadline

	interval, err := time.ParseDuration(a.Interval)
	if a.Interval == "" || err != nil || interval <= 0 {
		if a.Interval != "" {
			r.Warning = fmt.Sprintf("interval %q is not a duration; using %s", a.Interval, def.Interval)
		}
		interval, _ = time.ParseDuration(def.Interval)
	}
	if interval < eff.MinInterval {
		interval = eff.MinInterval
	}
	if interval <= 0 {
		interval = time.Minute
	}
	r.Interval = interval

	r.Threshold = a.Threshold
	if r.Threshold <= 0 {
		r.Threshold = max(def.Threshold, 1)
	}
	if len(a.StepWeights) > 0 {
		r.StepWeights = a.StepWeights
		r.MaxWeight = a.StepWeights[len(a.StepWeights)-1]
	} else {
		r.MaxWeight, r.StepWeight = a.MaxWeight, a.StepWeight
		if r.MaxWeight == 0 {
			r.MaxWeight = def.MaxWeight
		}
		if r.StepWeight == 0 {
			r.StepWeight = def.StepWeight
		}
	}
	if eff.MaxWeight != nil && r.MaxWeight > *eff.MaxWeight {
		r.MaxWeight = *eff.MaxWeight
	}
	if r.Analysis.NoData == "" {
		r.Analysis.NoData = v1alpha1.NoDataFail
	}
	r.SkipAnalysis = c.Spec.SkipAnalysis && eff.AllowSkipAnalysis
	if c.Spec.SkipAnalysis && !r.SkipAnalysis {
		r.Warning = "skipAnalysis is not allowed by the CanaryPolicy; analysing"
	}
	for _, h := range a.Webhooks {
		if r.Hooks == nil {
			r.Hooks = map[v1alpha1.HookType]bool{}
		}
		t := h.Type
		if t == "" {
			t = v1alpha1.HookRollout
		}
		r.Hooks[t] = true
	}
	if c.Spec.ProgressDeadlineSeconds != nil && *c.Spec.ProgressDeadlineSeconds > 0 {
		r.ProgressDeadline = time.Duration(*c.Spec.ProgressDeadlineSeconds) * time.Second
	}
	switch {
	case c.Spec.MetricsServer != "":
		r.MetricsServer = c.Spec.MetricsServer
	case eff.MetricsServer != "":
		r.MetricsServer = eff.MetricsServer
	}
	return r
}
