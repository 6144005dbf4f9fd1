// Package canary is the canary state machine: a pure function from what the controller observed
// (the Canary's status, the Git-owned Deployment, the canary workload, an analysis round) to the
// next status and the ordered actions that get there. It does no I/O, so every transition is
// table-tested; the reconciler gathers the facts, runs the actions and writes the status.
//
// A promotion that stalls is reported, never rolled back. Once the promotion write went through,
// the Git-owned Deployment carries the template Git asks for: writing the old one back would fight
// Git (the GitOps agent re-applies its template, the webhook holds it as a new revision, and the
// Deployment would never settle), and it would not be safer either: the Deployment's rolling update
// keeps its old pods serving until new ones are available, and the traffic stays split between it and
// the canary at the weight the analysis approved. So past the progress deadline the Canary says,
// once, what does not become available (Promoted=False, reason PromotionStalled, and a Warning Event
// on the Canary and the Deployment) and keeps waiting for the rollout; the way out is Git's (a fix
// or a revert, which arrives as a new revision), and the abort action routes all traffic to the
// Deployment meanwhile.
package canary

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

// Settings is the analysis that applies to one Canary once the Canary, the CanaryPolicy defaults,
// the policy bounds and the controller's flags are merged.
type Settings struct {
	// Interval between analysis rounds.
	Interval time.Duration
	// Threshold is the number of failed checks that rolls the canary back.
	Threshold int
	// MaxWeight is the weight at which a passing round promotes (the last stepWeights entry when
	// those are set), already capped by the policy.
	MaxWeight int
	// StepWeight is added by every passing round when StepWeights is empty.
	StepWeight int
	// StepWeights, ascending, are the weights to walk through.
	StepWeights []int
	// SkipAnalysis promotes as soon as the canary workload is ready (only where the policy allows it).
	SkipAnalysis bool
	// Hooks says which webhook types are configured; a gate that is not configured is open.
	Hooks map[v1alpha1.HookType]bool
	// ProgressDeadline is how long the Git-owned Deployment may take to roll out a promoted
	// revision before the Canary reports the promotion stalled; zero means no deadline. (The canary
	// Deployment carries the same deadline itself: see Workload.Failed.)
	ProgressDeadline time.Duration
}

// Workload is what the cache shows of the generated canary Deployment.
type Workload struct {
	// Exists is true when the canary Deployment is in the cache.
	Exists bool
	// Revision is the revision it runs (its canarygate.io/revision annotation).
	Revision string
	// Ready: the current generation is rolled out and all replicas are available.
	Ready bool
	// Failed: the Deployment reports ProgressDeadlineExceeded.
	Failed bool
	// Message describes why it is not ready.
	Message string
}

// Input is everything the machine decides on.
type Input struct {
	Now time.Time
	// Generation of the Canary, recorded as status.observedGeneration.
	Generation int64
	// Suspend is spec.suspend.
	Suspend bool
	// Action is the canarygate.io/action annotation, empty when none.
	Action   string
	Status   v1alpha1.CanaryStatus
	Settings Settings

	// TargetMissing: the Git-owned Deployment does not exist.
	TargetMissing bool
	// StableRevision is the hash of the Git-owned Deployment's spec.template.
	StableRevision string
	// Pending is the desired-revision annotation (empty when none).
	Pending string
	// PendingError says why the pending revision cannot be used (for example its template does not
	// decode); nothing is started or promoted while it is set.
	PendingError string
	// Blocked says why the canary workload cannot be run safely (a Service that would select the
	// canary pods); nothing is started and no round runs while it is set.
	Blocked string
	// TargetRolledOut: the Git-owned Deployment's current generation is fully rolled out and available.
	TargetRolledOut bool
	// TargetMessage says what of the Git-owned Deployment's rollout is not done (its progress and
	// its own conditions' messages); empty when TargetRolledOut.
	TargetMessage string
	// Canary is the generated canary Deployment.
	Canary Workload
	// RouteWeight is the canary weight the routes carry now; nil when not read (the reconciler
	// reads it only where RoutesCanary(Status.Phase)).
	RouteWeight *int

	// Round is the result of the round the previous Decide call asked for; nil on the first call.
	Round *RoundResult
}

// RoundKind tells the reconciler which checks a round runs.
type RoundKind string

const (
	// RoundConfirmRollout asks the confirm-rollout webhooks whether a new revision may start.
	RoundConfirmRollout RoundKind = "ConfirmRollout"
	// RoundAnalysis is an analysis round: rollback hooks, pre-rollout hooks or metrics and rollout
	// hooks, then the gate.
	RoundAnalysis RoundKind = "Analysis"
)

// RoundRequest is a round the reconciler must evaluate and pass back in Input.Round. The reconciler
// checks, in this order and stopping at the first that decides: Rollback (a 2xx from a rollback
// webhook → OutcomeRollback), PreRollout (any failure → OutcomeFail), Metrics and the rollout
// webhooks (Fail → OutcomeFail, Wait → OutcomeWait), then Gate (not confirmed → OutcomeHold).
type RoundRequest struct {
	Kind RoundKind
	// Rollback: ask the rollback webhooks whether to roll back.
	Rollback bool
	// PreRollout: run the pre-rollout webhooks (the first round, before any traffic reaches the
	// canary: its metrics would have no data yet, so Metrics is false then).
	PreRollout bool
	// Metrics: run the metric checks and the rollout webhooks.
	Metrics bool
	// Gate is the confirm webhook type to ask once the checks pass, empty when none is configured.
	Gate v1alpha1.HookType
}

// Outcome is what a round decided.
type Outcome string

const (
	// OutcomePass: every check passed and the gate (if any) is open.
	OutcomePass Outcome = "Pass"
	// OutcomeFail: a check failed; it counts toward the threshold.
	OutcomeFail Outcome = "Fail"
	// OutcomeWait: a metric had no data under noData: Wait; nothing changes.
	OutcomeWait Outcome = "Wait"
	// OutcomeHold: the checks passed but a confirm gate is closed; nothing changes.
	OutcomeHold Outcome = "Hold"
	// OutcomeRollback: a rollback webhook asked for a rollback.
	OutcomeRollback Outcome = "Rollback"
)

// RoundResult is what the reconciler found in a round.
type RoundResult struct {
	Outcome Outcome
	// Message explains a non-pass outcome.
	Message string
}

// ActionKind is a step the reconciler performs, in the order given.
type ActionKind string

const (
	// ActEnsureCanary creates or updates the canary Deployment and Service for Revision (a no-op
	// when they already match).
	ActEnsureCanary ActionKind = "EnsureCanary"
	// ActSetWeight routes Weight percent to the canary.
	ActSetWeight ActionKind = "SetWeight"
	// ActFinalize routes everything to stable and restores or deletes the routes.
	ActFinalize ActionKind = "Finalize"
	// ActDeleteGenerated deletes the canary Deployment and Service.
	ActDeleteGenerated ActionKind = "DeleteGenerated"
	// ActPromote writes the desired template of Revision into the Git-owned Deployment.
	ActPromote ActionKind = "Promote"
	// ActCallHooks calls the webhooks of type Hook; their failure is reported, not fatal.
	ActCallHooks ActionKind = "CallHooks"
)

// Action is one step. Revision, Weight and Hook are set for the kinds that use them.
type Action struct {
	Kind     ActionKind
	Revision string
	Weight   int
	Hook     v1alpha1.HookType
}

// Event is a Kubernetes Event to record on the Canary, and on the Deployment when OnTarget; every
// Event, and each NotifyOnly one, also goes to the event webhooks and the log.
type Event struct {
	Warning  bool
	Reason   string
	Message  string
	OnTarget bool
	// NotifyOnly: not recorded as a Kubernetes Event.
	NotifyOnly bool
}

// Decision is what to do next. When Round is set nothing else is: evaluate the round and call
// Decide again with its result.
type Decision struct {
	Round *RoundRequest
	// Status is the next status; write it only when it differs from the current one.
	Status  v1alpha1.CanaryStatus
	Actions []Action
	Events  []Event
	// ActionDone: remove the action annotation (the action was applied or rejected).
	ActionDone bool
	// Requeue immediately (the next phase needs no waiting).
	Requeue bool
	// RequeueAfter is when to look again when nothing else (a watched change) wakes the Canary;
	// zero means only a watched change does.
	RequeueAfter time.Duration
}

// Decide computes the next step. It is deterministic: calling it twice with the same Input gives
// the same Decision, so the reconciler may call it again after evaluating a round.
func Decide(in Input) Decision {
	m := &machine{in: in, st: *in.Status.DeepCopy()}
	m.run()
	m.d.Status = m.st
	if m.d.Round != nil {
		return Decision{Round: m.d.Round, Status: *in.Status.DeepCopy()}
	}
	m.routesFollowStatus()
	return m.d
}

// RoutesCanary reports whether the routes give the canary the status' weight in phase p.
func RoutesCanary(p v1alpha1.CanaryPhase) bool {
	return p == v1alpha1.PhaseProgressing || p == v1alpha1.PhasePromoting
}

// routesFollowStatus sets the routes back to the status' weight when something else changed them
// while a release runs: a GitOps agent re-applying a VirtualService kept in Git, a person, or a
// restart between a route write and the status write. Otherwise the canary would be analysed on
// traffic it does not get, and the next step would start from the wrong weight.
func (m *machine) routesFollowStatus() {
	if m.in.RouteWeight == nil || !RoutesCanary(m.in.Status.Phase) || !RoutesCanary(m.st.Phase) {
		return
	}
	for _, a := range m.d.Actions {
		if a.Kind == ActSetWeight || a.Kind == ActFinalize {
			return // this decision writes the routes anyway
		}
	}
	if have, want := *m.in.RouteWeight, m.st.CanaryWeight; have != want {
		m.act(Action{Kind: ActSetWeight, Weight: want})
		m.event(true, "RoutesRestored", fmt.Sprintf("the routes gave the canary weight %d instead of %d "+
			"(changed outside canarygate, for example by a GitOps agent re-applying a VirtualService); set back to %d", have, want, want), false)
	}
}

type machine struct {
	in      Input
	st      v1alpha1.CanaryStatus
	d       Decision
	pending string
}

func (m *machine) run() {
	in := m.in
	m.st.ObservedGeneration = in.Generation
	// A new Canary starts Initialized without an Event: nothing happened yet, and with ten
	// thousand managed Deployments the Events alone would keep ~90 MiB in the event recorder.
	if m.st.Phase == "" {
		m.setPhase(v1alpha1.PhaseInitialized, "waiting for a new revision")
	}
	if in.TargetMissing {
		m.targetMissing()
		return
	}
	m.st.StableRevision = in.StableRevision
	if in.Pending != in.StableRevision {
		m.pending = in.Pending
	}
	m.readiness()

	if in.Action != "" && !m.action() {
		return
	}

	switch m.st.Phase {
	case v1alpha1.PhaseFinalising:
		m.finalise()
	case v1alpha1.PhasePromoting:
		m.promoting()
	case v1alpha1.PhaseProgressing:
		m.progressing()
	default:
		m.idle()
	}
}

// readiness keeps the Ready condition: False names what stops the canary.
func (m *machine) readiness() {
	switch {
	case m.in.PendingError != "" && m.pending != "":
		m.condition(v1alpha1.ConditionReady, false, "InvalidRevision", m.in.PendingError)
	case m.in.Blocked != "" && m.pending != "":
		m.condition(v1alpha1.ConditionReady, false, "UnsafeLabels", m.in.Blocked)
	default:
		m.condition(v1alpha1.ConditionReady, true, "Ready", "the canary can run")
	}
}

// action applies the manual action; it reports whether the normal flow continues afterwards.
func (m *machine) action() bool {
	m.d.ActionDone = true
	switch a := m.in.Action; a {
	case v1alpha1.ActionPause:
		m.condition(v1alpha1.ConditionPaused, true, "Paused", "paused by the canarygate.io/action annotation")
		m.event(false, "Paused", "paused by action", false)
	case v1alpha1.ActionResume:
		if m.paused() {
			m.condition(v1alpha1.ConditionPaused, false, "Resumed", "resumed by the canarygate.io/action annotation")
		}
		m.event(false, "Resumed", "resumed by action", false)
	case v1alpha1.ActionRetry:
		if m.st.FailedRevision == "" {
			m.event(true, "ActionIgnored", "retry: no failed revision to retry", false)
			break
		}
		m.event(false, "Retry", fmt.Sprintf("retrying revision %s by action", m.st.FailedRevision), false)
		m.st.FailedRevision = ""
	case v1alpha1.ActionAbort:
		switch m.st.Phase {
		case v1alpha1.PhasePromoting:
			if m.promotionWritten() {
				m.abortPromotion()
				return false
			}
		case v1alpha1.PhaseProgressing, v1alpha1.PhaseWaiting:
		default:
			m.event(true, "ActionIgnored", fmt.Sprintf("abort: nothing to abort in phase %s", m.st.Phase), false)
			return true
		}
		m.rollback("aborted by action")
		return false
	case v1alpha1.ActionPromote:
		if m.st.Phase == v1alpha1.PhasePromoting || m.st.Phase == v1alpha1.PhaseFinalising || m.in.Pending == "" || m.in.Pending == m.in.StableRevision {
			m.event(true, "ActionIgnored", fmt.Sprintf("promote: no pending revision to promote in phase %s", m.st.Phase), false)
			break
		}
		if m.in.PendingError != "" {
			m.event(true, "ActionIgnored", "promote: "+m.in.PendingError, false)
			break
		}
		// A promote also accepts a held failed revision: the operator overrides the analysis.
		m.event(false, "PromoteRequested", fmt.Sprintf("promoting revision %s by action", m.in.Pending), false)
		m.st.CanaryRevision = m.in.Pending
		m.toPromoting("promotion requested by action")
		return false
	default:
		m.event(true, "ActionIgnored", fmt.Sprintf("unknown action %q (want promote, abort, retry, pause or resume)", a), false)
	}
	return true
}

// idle handles Initialized, Waiting, Succeeded and Failed: start a pending revision, or stay.
func (m *machine) idle() {
	p := m.pending
	if p == "" {
		if m.st.Phase == v1alpha1.PhaseWaiting {
			m.st.CanaryRevision = ""
			m.setPhase(v1alpha1.PhaseInitialized, "the pending revision was withdrawn")
			m.event(false, "Withdrawn", "the pending revision was withdrawn", false)
		}
		return
	}
	if p == m.st.FailedRevision {
		// A Failed Canary keeps the rollback's reason as its message.
		if m.st.Phase != v1alpha1.PhaseFailed {
			m.st.Message = fmt.Sprintf("revision %s failed its analysis; it is held until a newer revision or a retry action", p)
		}
		return
	}
	if m.in.PendingError != "" || m.in.Blocked != "" {
		m.st.Message = "cannot start revision " + p + ": " + m.in.PendingError + m.in.Blocked
		m.requeueAfter(m.in.Settings.Interval)
		return
	}
	if hold := m.holdReason(); hold != "" {
		m.st.CanaryRevision = p
		m.enterWaiting(fmt.Sprintf("revision %s waits: %s", p, hold))
		return
	}
	if m.in.Settings.Hooks[v1alpha1.HookConfirmRollout] {
		waiting := m.st.Phase == v1alpha1.PhaseWaiting && m.st.CanaryRevision == p
		if waiting && !m.roundDue() {
			return
		}
		if m.in.Round == nil {
			m.d.Round = &RoundRequest{Kind: RoundConfirmRollout}
			return
		}
		if m.in.Round.Outcome != OutcomePass {
			m.st.CanaryRevision = p
			m.st.LastAnalysisTime = m.now()
			m.enterWaiting(fmt.Sprintf("revision %s waits for confirm-rollout: %s", p, m.in.Round.Message))
			m.requeueAfter(m.in.Settings.Interval)
			return
		}
	}
	m.start(p)
}

func (m *machine) start(p string) {
	m.st.CanaryRevision = p
	m.st.CanaryWeight = 0
	m.st.FailedChecks = 0
	m.st.Iterations = 0
	m.st.LastAnalysisTime = m.now()
	m.setPhase(v1alpha1.PhaseProgressing, fmt.Sprintf("analysing revision %s", p))
	m.condition(v1alpha1.ConditionPromoted, false, "Progressing", fmt.Sprintf("revision %s is under analysis", p))
	m.act(Action{Kind: ActEnsureCanary, Revision: p})
	m.event(false, "Started", fmt.Sprintf("new revision %s: starting canary analysis", p), true)
	m.requeueAfter(m.in.Settings.Interval)
}

func (m *machine) progressing() {
	p := m.pending
	switch {
	case m.st.CanaryRevision != "" && m.in.StableRevision == m.st.CanaryRevision:
		// The promotion write went through but the status did not record it (a conflict or a
		// restart in between): carry on with the promotion.
		m.setPhase(v1alpha1.PhasePromoting, fmt.Sprintf("promoting revision %s", m.st.CanaryRevision))
		m.event(false, "Promoting", fmt.Sprintf("revision %s was written into the Deployment; waiting for its rollout", m.st.CanaryRevision), true)
		m.promoting()
		return
	case p == "":
		m.withdraw()
		return
	case p != m.st.CanaryRevision:
		m.newer(p)
		return
	}

	if m.in.Blocked != "" || m.in.PendingError != "" {
		m.st.Message = "analysis held: " + m.in.Blocked + m.in.PendingError
		m.requeueAfter(m.in.Settings.Interval)
		return
	}
	// Ensured on every pass so a deleted or edited canary workload is repaired; the reconciler
	// writes nothing when it already matches.
	m.act(Action{Kind: ActEnsureCanary, Revision: p})
	if hold := m.holdReason(); hold != "" {
		m.st.Message = fmt.Sprintf("analysis of revision %s held: %s", p, hold)
		return
	}
	if !m.roundDue() {
		return
	}

	c := m.in.Canary
	if !(c.Exists && c.Revision == p && c.Ready) {
		if c.Exists && c.Revision == p && c.Failed {
			m.rollback("the canary Deployment did not become available within its progress deadline: " + c.Message)
			return
		}
		// The message leaves out the replica counts: they change often and each change would be a
		// status write.
		m.st.Message = "waiting for the canary Deployment to become available"
		// The canary Deployment's watch wakes the Canary earlier when it becomes ready.
		m.requeueAfter(m.in.Settings.Interval)
		return
	}
	if m.in.Settings.SkipAnalysis {
		m.toPromoting("analysis skipped")
		return
	}

	s := m.in.Settings
	atMax := m.st.CanaryWeight >= s.MaxWeight
	// The first round runs before any traffic reaches the canary, so it has no metrics to judge:
	// it runs the pre-rollout webhooks only, and stays the first round until it passes (as in Flagger).
	first := m.st.CanaryWeight == 0 && m.st.Iterations == 0
	if m.in.Round == nil {
		req := &RoundRequest{Kind: RoundAnalysis, Rollback: s.Hooks[v1alpha1.HookRollback]}
		if first {
			req.PreRollout = s.Hooks[v1alpha1.HookPreRollout]
		} else {
			req.Metrics = true
		}
		gate := v1alpha1.HookConfirmTrafficIncrease
		if atMax {
			gate = v1alpha1.HookConfirmPromotion
		}
		if s.Hooks[gate] {
			req.Gate = gate
		}
		m.d.Round = req
		return
	}

	r := m.in.Round
	m.st.LastAnalysisTime = m.now()
	switch r.Outcome {
	case OutcomeRollback:
		m.rollback("a rollback webhook asked for it: " + r.Message)
		return
	case OutcomeFail:
		m.st.FailedChecks++
		if !first {
			m.st.Iterations++
		}
		if m.st.FailedChecks >= s.Threshold {
			m.rollback(fmt.Sprintf("%d failed checks reached the threshold %d: %s", m.st.FailedChecks, s.Threshold, r.Message))
			return
		}
		m.st.Message = fmt.Sprintf("check failed (%d of %d): %s", m.st.FailedChecks, s.Threshold, r.Message)
		m.event(true, "CheckFailed", m.st.Message, false)
	case OutcomeWait:
		m.st.Message = "waiting for metric data: " + r.Message
	case OutcomeHold:
		m.st.Message = "waiting for approval: " + r.Message
	case OutcomePass:
		if !first {
			m.st.Iterations++
		}
		if atMax {
			m.toPromoting(fmt.Sprintf("analysis passed at weight %d", m.st.CanaryWeight))
			return
		}
		w := m.nextWeight()
		m.act(Action{Kind: ActSetWeight, Weight: w})
		m.st.CanaryWeight = w
		m.st.LastTransitionTime = *m.now()
		m.st.Message = fmt.Sprintf("analysing revision %s at weight %d", p, w)
		m.notify("WeightAdvanced", fmt.Sprintf("advance %s canary weight to %d", p, w))
	default:
		m.st.Message = fmt.Sprintf("unknown round outcome %q", r.Outcome)
	}
	m.requeueAfter(s.Interval)
}

// nextWeight is the weight after a passing round, never above MaxWeight.
func (m *machine) nextWeight() int {
	s, cur := m.in.Settings, m.st.CanaryWeight
	next := s.MaxWeight
	if len(s.StepWeights) > 0 {
		for _, w := range s.StepWeights {
			if w > cur {
				next = w
				break
			}
		}
	} else if s.StepWeight > 0 {
		next = cur + s.StepWeight
	}
	return min(next, s.MaxWeight)
}

func (m *machine) toPromoting(why string) {
	m.setPhase(v1alpha1.PhasePromoting, fmt.Sprintf("promoting revision %s (%s); waiting for the Deployment to roll it out", m.st.CanaryRevision, why))
	m.condition(v1alpha1.ConditionPromoted, false, "Promoting", fmt.Sprintf("revision %s is being promoted", m.st.CanaryRevision))
	m.event(false, "Promoting", fmt.Sprintf("promoting revision %s: %s", m.st.CanaryRevision, why), true)
	m.promoting()
}

// promotionWritten reports whether the Git-owned Deployment already carries the revision in flight.
func (m *machine) promotionWritten() bool {
	return m.st.CanaryRevision != "" && m.in.StableRevision == m.st.CanaryRevision
}

func (m *machine) promoting() {
	rev := m.st.CanaryRevision
	if m.promotionWritten() {
		if !m.in.TargetRolledOut {
			m.awaitRollout(rev)
			return
		}
		m.setPhase(v1alpha1.PhaseFinalising, fmt.Sprintf("revision %s rolled out; routing all traffic to it", rev))
		m.event(false, "Finalising", fmt.Sprintf("revision %s rolled out; routing all traffic to it", rev), false)
		m.d.Requeue = true
		return
	}
	switch p := m.pending; {
	case p == "":
		m.withdraw()
		return
	case p != rev:
		m.newer(p)
		return
	case m.in.PendingError != "":
		m.st.Message = fmt.Sprintf("cannot promote revision %s: %s", rev, m.in.PendingError)
		return
	}
	m.act(Action{Kind: ActPromote, Revision: rev})
	// The status is written only once the promotion went through, and then the Deployment's
	// template is this revision: recording it now saves a status write on the next pass.
	m.st.StableRevision = rev
	m.requeueAfter(m.in.Settings.Interval)
}

// awaitRollout waits for the Git-owned Deployment to roll out the promoted revision. Past the
// progress deadline, counted from entering Promoting, it reports the stall once and keeps waiting
// (see the package doc for why it never rolls back). The message stays the one set on entering
// Promoting, or on stalling, so the replica counts moving do not each cost a status write; the
// Deployment's watch wakes the Canary when its rollout completes.
func (m *machine) awaitRollout(rev string) {
	s := m.in.Settings
	m.requeueAfter(s.Interval)
	if s.ProgressDeadline <= 0 || m.stalled() {
		return
	}
	if left := m.st.LastTransitionTime.Add(s.ProgressDeadline).Sub(m.in.Now); left > 0 {
		m.requeueAfter(min(s.Interval, left))
		return
	}
	msg := fmt.Sprintf("revision %s was written into the Deployment but did not roll out within %s: %s. "+
		"Still waiting, with no automatic rollback: the Deployment carries the template Git asks for. "+
		"Fix or revert it in Git, or set %s: %s to route all traffic to the Deployment",
		rev, s.ProgressDeadline, m.in.TargetMessage, v1alpha1.ActionAnnotation, v1alpha1.ActionAbort)
	m.st.Message = msg
	m.condition(v1alpha1.ConditionPromoted, false, ReasonPromotionStalled, msg)
	m.event(true, ReasonPromotionStalled, msg, true)
}

// ReasonPromotionStalled is the Promoted condition's reason, and the Event's, when the promoted
// revision did not roll out within the progress deadline.
const ReasonPromotionStalled = "PromotionStalled"

// stalled reports whether the stall of the current promotion was already reported.
func (m *machine) stalled() bool {
	c := meta.FindStatusCondition(m.st.Conditions, v1alpha1.ConditionPromoted)
	return c != nil && c.Reason == ReasonPromotionStalled
}

// abortPromotion ends a promotion whose write went through: all traffic goes to the Deployment and
// the canary workload is removed. The Deployment keeps Git's template (the package doc says why), so
// the revision is not held as failed: it is already the stable one.
func (m *machine) abortPromotion() {
	rev := m.st.CanaryRevision
	msg := fmt.Sprintf("promotion of revision %s aborted by action: all traffic goes to the Deployment, "+
		"which keeps the template of revision %s that Git asks for (canarygate does not write an older template over Git's; revert it in Git to go back)", rev, rev)
	if !m.in.TargetRolledOut && m.in.TargetMessage != "" {
		msg += "; its rollout: " + m.in.TargetMessage
	}
	m.end(v1alpha1.PhaseFailed, false, "PromotionAborted", "PromotionAborted", msg, true)
}

// end closes the release in flight: all traffic to stable, the canary workload removed, and the
// outcome in the phase, the Promoted condition and an Event on the Canary and the Deployment.
func (m *machine) end(phase v1alpha1.CanaryPhase, promoted bool, conditionReason, eventReason, msg string, warning bool) {
	m.act(Action{Kind: ActFinalize})
	m.act(Action{Kind: ActDeleteGenerated})
	m.st.CanaryRevision = ""
	m.st.CanaryWeight = 0
	m.setPhase(phase, msg)
	m.condition(v1alpha1.ConditionPromoted, promoted, conditionReason, msg)
	m.event(warning, eventReason, msg, true)
}

func (m *machine) finalise() {
	rev := m.st.CanaryRevision
	if m.st.FailedRevision == rev {
		m.st.FailedRevision = ""
	}
	m.end(v1alpha1.PhaseSucceeded, true, "Succeeded", "Promoted", fmt.Sprintf("revision %s promoted", rev), false)
	if m.in.Settings.Hooks[v1alpha1.HookPostRollout] {
		m.act(Action{Kind: ActCallHooks, Hook: v1alpha1.HookPostRollout})
	}
}

// rollback routes all traffic back to stable, removes the canary and holds the revision.
func (m *machine) rollback(why string) {
	rev := m.st.CanaryRevision
	if rev == "" {
		rev = m.pending
	}
	m.st.FailedRevision = rev
	m.end(v1alpha1.PhaseFailed, false, "Failed", "RolledBack", fmt.Sprintf("revision %s rolled back: %s", rev, why), true)
}

// withdraw ends a release whose revision left the Deployment (a Git revert).
func (m *machine) withdraw() {
	rev := m.st.CanaryRevision
	m.end(v1alpha1.PhaseInitialized, false, "Withdrawn", "Withdrawn",
		fmt.Sprintf("revision %s was withdrawn (the Deployment no longer asks for it)", rev), false)
}

// newer restarts the analysis on a newer pending revision, traffic back to stable first.
func (m *machine) newer(p string) {
	old := m.st.CanaryRevision
	if p == m.st.FailedRevision {
		// An earlier failed revision came back: it stays held, so this release simply ends.
		m.withdraw()
		m.st.Message = fmt.Sprintf("revision %s was replaced by %s, which failed before and is held", old, p)
		return
	}
	if m.st.CanaryWeight > 0 {
		m.act(Action{Kind: ActSetWeight, Weight: 0})
	}
	// A newer revision that cannot run yet still takes the traffic back; its analysis is held
	// (see progressing) until the reason goes away.
	if m.in.PendingError == "" && m.in.Blocked == "" {
		m.act(Action{Kind: ActEnsureCanary, Revision: p})
	}
	m.st.CanaryRevision = p
	m.st.CanaryWeight = 0
	m.st.FailedChecks = 0
	m.st.Iterations = 0
	m.st.LastAnalysisTime = m.now()
	m.st.Phase = v1alpha1.PhaseProgressing
	m.st.LastTransitionTime = *m.now()
	m.st.Message = fmt.Sprintf("analysing revision %s (replaced %s)", p, old)
	m.condition(v1alpha1.ConditionPromoted, false, "Progressing", fmt.Sprintf("revision %s is under analysis", p))
	m.event(false, "NewRevision", fmt.Sprintf("revision %s replaces %s mid-flight: restarting the analysis", p, old), true)
	m.requeueAfter(m.in.Settings.Interval)
}

func (m *machine) targetMissing() {
	m.condition(v1alpha1.ConditionReady, false, "TargetNotFound", "the target Deployment does not exist")
	switch m.st.Phase {
	case v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting, v1alpha1.PhaseFinalising, v1alpha1.PhaseWaiting:
		m.withdraw()
	}
	m.st.Message = "the target Deployment does not exist"
	if m.in.Action != "" {
		m.d.ActionDone = true
		m.event(true, "ActionIgnored", "the target Deployment does not exist", false)
	}
}

// holdReason says why nothing may progress now, empty when nothing holds.
func (m *machine) holdReason() string {
	switch {
	case m.in.Suspend:
		return "the Canary is suspended"
	case m.paused():
		return "the Canary is paused"
	}
	return ""
}

func (m *machine) paused() bool {
	return meta.IsStatusConditionTrue(m.st.Conditions, v1alpha1.ConditionPaused)
}

// roundDue reports whether an interval passed since the last round, and otherwise asks to be woken
// when it will have.
func (m *machine) roundDue() bool {
	if m.st.LastAnalysisTime == nil {
		return true
	}
	due := m.st.LastAnalysisTime.Add(m.in.Settings.Interval)
	if !m.in.Now.Before(due) {
		return true
	}
	m.requeueAfter(due.Sub(m.in.Now))
	return false
}

func (m *machine) requeueAfter(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	m.d.RequeueAfter = d
}

func (m *machine) now() *metav1.Time {
	t := metav1.NewTime(m.in.Now)
	return &t
}

func (m *machine) setPhase(p v1alpha1.CanaryPhase, msg string) {
	if m.st.Phase != p {
		m.st.Phase = p
		m.st.LastTransitionTime = *m.now()
	}
	m.st.Message = msg
}

func (m *machine) condition(t string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&m.st.Conditions, metav1.Condition{
		Type: t, Status: s, Reason: reason, Message: msg,
		ObservedGeneration: m.in.Generation, LastTransitionTime: *m.now(),
	})
}

func (m *machine) act(a Action) { m.d.Actions = append(m.d.Actions, a) }

func (m *machine) event(warning bool, reason, msg string, onTarget bool) {
	m.d.Events = append(m.d.Events, Event{Warning: warning, Reason: reason, Message: msg, OnTarget: onTarget})
}

// notify records a weight step for the event webhooks and the log only. Every phase transition is
// a Kubernetes Event; a weight step is in the status, the metrics and the routes, and at a
// thousand canaries an Event per step would add a sixth to the controller's API writes and, in
// the scale benchmark, pushed its peak memory past 150 MiB.
func (m *machine) notify(reason, msg string) {
	m.d.Events = append(m.d.Events, Event{Reason: reason, Message: msg, NotifyOnly: true})
}

// enterWaiting holds the pending revision; the Event marks the transition only, not every
// reconcile that finds the hold still in place.
func (m *machine) enterWaiting(msg string) {
	if m.st.Phase != v1alpha1.PhaseWaiting {
		m.event(false, "Waiting", msg, false)
	}
	m.setPhase(v1alpha1.PhaseWaiting, msg)
}
