package canary

import (
	"fmt"
	"k8s.io/utils/ptr"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *metav1.Time { t := metav1.NewTime(t0.Add(d)); return &t }

func settings() Settings {
	return Settings{Interval: 5 * time.Second, Threshold: 2, MaxWeight: 50, StepWeight: 10, ProgressDeadline: time.Minute}
}

// base is a Deployment at stable revision "s1" with nothing pending and an idle Canary.
func base() Input {
	return Input{
		Now:            t0,
		Generation:     1,
		Settings:       settings(),
		StableRevision: "s1",
		Status:         v1alpha1.CanaryStatus{Phase: v1alpha1.PhaseInitialized, StableRevision: "s1", ObservedGeneration: 1},
	}
}

// flight is revision "p1" under analysis at weight w, its last round d ago, its canary ready.
func flight(w int, d time.Duration) Input {
	in := base()
	in.Pending = "p1"
	in.Status.Phase = v1alpha1.PhaseProgressing
	in.Status.CanaryRevision = "p1"
	in.Status.CanaryWeight = w
	if w > 0 {
		in.Status.Iterations = w / 10
	}
	in.Status.LastAnalysisTime = at(-d)
	in.Status.LastTransitionTime = *at(-d)
	in.Canary = Workload{Exists: true, Revision: "p1", Ready: true}
	return in
}

// promoted is revision "p1" written into the Deployment by a promotion that began d ago, its rollout
// not done.
func promoted(d time.Duration) Input {
	in := flight(50, d)
	in.Status.Phase = v1alpha1.PhasePromoting
	in.StableRevision, in.Pending = "p1", ""
	in.TargetMessage = `1 of 2 replicas updated; Progressing: ReplicaSet "web-7d9" is progressing.`
	return in
}

// stalledCondition is the Promoted condition of a promotion whose stall was reported.
var stalledCondition = []metav1.Condition{{Type: v1alpha1.ConditionPromoted, Status: metav1.ConditionFalse, Reason: ReasonPromotionStalled, Message: "stalled"}}

func actions(d Decision) string {
	var out []string
	for _, a := range d.Actions {
		s := string(a.Kind)
		switch a.Kind {
		case ActEnsureCanary, ActPromote:
			s += " " + a.Revision
		case ActSetWeight:
			s += fmt.Sprintf(" %d", a.Weight)
		case ActCallHooks:
			s += " " + string(a.Hook)
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func events(d Decision) string {
	var out []string
	for _, e := range d.Events {
		s := e.Reason
		if e.OnTarget {
			s += "+target"
		}
		if e.NotifyOnly {
			s += "(notify)"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

type want struct {
	round        *RoundRequest
	phase        v1alpha1.CanaryPhase
	actions      string
	events       string
	weight       int
	failedChecks int
	iterations   int
	canaryRev    string
	failedRev    string
	requeue      bool
	requeueAfter time.Duration
	actionDone   bool
	message      string // substring
	analysedNow  bool   // lastAnalysisTime == now
	conditions   map[string]metav1.ConditionStatus
	reasons      map[string]string // condition type → reason
}

func TestDecide(t *testing.T) {
	withHooks := func(in Input, hooks ...v1alpha1.HookType) Input {
		in.Settings.Hooks = map[v1alpha1.HookType]bool{}
		for _, h := range hooks {
			in.Settings.Hooks[h] = true
		}
		return in
	}
	with := func(in Input, f func(*Input)) Input { f(&in); return in }
	round := func(o Outcome, msg string) *RoundResult { return &RoundResult{Outcome: o, Message: msg} }
	paused := []metav1.Condition{{Type: v1alpha1.ConditionPaused, Status: metav1.ConditionTrue, Reason: "Paused"}}

	tests := []struct {
		name string
		in   Input
		want want
	}{
		{
			name: "idle: nothing pending, nothing to do",
			in:   base(),
			want: want{phase: v1alpha1.PhaseInitialized},
		},
		{
			name: "new status starts Initialized with the stable revision",
			in:   with(base(), func(in *Input) { in.Status = v1alpha1.CanaryStatus{} }),
			want: want{phase: v1alpha1.PhaseInitialized},
		},
		{
			name: "pending revision starts the canary",
			in:   with(base(), func(in *Input) { in.Pending = "p1" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", actions: "EnsureCanary p1", events: "Started+target",
				requeueAfter: 5 * time.Second, analysedNow: true,
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionPromoted: metav1.ConditionFalse, v1alpha1.ConditionReady: metav1.ConditionTrue}},
		},
		{
			name: "a new revision after a success starts again",
			in:   with(base(), func(in *Input) { in.Status.Phase = v1alpha1.PhaseSucceeded; in.Pending = "p2" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p2", actions: "EnsureCanary p2", events: "Started+target", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "pending equal to stable is nothing pending",
			in:   with(base(), func(in *Input) { in.Pending = "s1" }),
			want: want{phase: v1alpha1.PhaseInitialized},
		},
		{
			name: "failed revision stays held",
			in: with(base(), func(in *Input) {
				in.Pending = "p1"
				in.Status.Phase = v1alpha1.PhaseFailed
				in.Status.FailedRevision = "p1"
				in.Status.Message = "revision p1 rolled back: 2 failed checks"
			}),
			want: want{phase: v1alpha1.PhaseFailed, failedRev: "p1", message: "rolled back: 2 failed checks"},
		},
		{
			name: "failed revision held after a restart from another phase",
			in: with(base(), func(in *Input) {
				in.Pending = "p1"
				in.Status.FailedRevision = "p1"
			}),
			want: want{phase: v1alpha1.PhaseInitialized, failedRev: "p1", message: "held"},
		},
		{
			name: "unsafe labels: not started, Ready=False",
			in:   with(base(), func(in *Input) { in.Pending = "p1"; in.Blocked = "Service shop selects the canary pods" }),
			want: want{phase: v1alpha1.PhaseInitialized, requeueAfter: 5 * time.Second, message: "Service shop",
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionReady: metav1.ConditionFalse}},
		},
		{
			name: "undecodable template: not started, Ready=False",
			in:   with(base(), func(in *Input) { in.Pending = "p1"; in.PendingError = "bad template" }),
			want: want{phase: v1alpha1.PhaseInitialized, requeueAfter: 5 * time.Second,
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionReady: metav1.ConditionFalse}},
		},
		{
			name: "suspended: a pending revision waits",
			in:   with(base(), func(in *Input) { in.Pending = "p1"; in.Suspend = true }),
			want: want{events: "Waiting", phase: v1alpha1.PhaseWaiting, canaryRev: "p1", message: "suspended"},
		},
		{
			name: "paused: a pending revision waits",
			in:   with(base(), func(in *Input) { in.Pending = "p1"; in.Status.Conditions = paused }),
			want: want{events: "Waiting", phase: v1alpha1.PhaseWaiting, canaryRev: "p1", message: "paused"},
		},
		{
			name: "Waiting without a pending revision any more: back to Initialized",
			in:   with(base(), func(in *Input) { in.Status.Phase = v1alpha1.PhaseWaiting; in.Status.CanaryRevision = "p1" }),
			want: want{events: "Withdrawn", phase: v1alpha1.PhaseInitialized, message: "withdrawn"},
		},
		{
			name: "confirm-rollout configured: ask it first",
			in:   withHooks(with(base(), func(in *Input) { in.Pending = "p1" }), v1alpha1.HookConfirmRollout),
			want: want{round: &RoundRequest{Kind: RoundConfirmRollout}},
		},
		{
			name: "confirm-rollout says not yet: Waiting",
			in: withHooks(with(base(), func(in *Input) {
				in.Pending = "p1"
				in.Round = round(OutcomeHold, "hook gate said no")
			}), v1alpha1.HookConfirmRollout),
			want: want{events: "Waiting", phase: v1alpha1.PhaseWaiting, canaryRev: "p1", requeueAfter: 5 * time.Second, analysedNow: true, message: "gate said no"},
		},
		{
			name: "Waiting on confirm-rollout: not asked again before the interval",
			in: withHooks(with(base(), func(in *Input) {
				in.Pending = "p1"
				in.Status.Phase = v1alpha1.PhaseWaiting
				in.Status.CanaryRevision = "p1"
				in.Status.LastAnalysisTime = at(-2 * time.Second)
			}), v1alpha1.HookConfirmRollout),
			want: want{phase: v1alpha1.PhaseWaiting, canaryRev: "p1", requeueAfter: 3 * time.Second},
		},
		{
			name: "confirm-rollout confirms: Progressing",
			in: withHooks(with(base(), func(in *Input) {
				in.Pending = "p1"
				in.Status.Phase = v1alpha1.PhaseWaiting
				in.Status.CanaryRevision = "p1"
				in.Status.LastAnalysisTime = at(-6 * time.Second)
				in.Round = round(OutcomePass, "")
			}), v1alpha1.HookConfirmRollout),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", actions: "EnsureCanary p1", events: "Started+target", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "round not due: sleep until it is",
			in:   flight(20, 2*time.Second),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, iterations: 2, actions: "EnsureCanary p1", requeueAfter: 3 * time.Second},
		},
		{
			name: "restart mid-flight resumes at its weight: no weight is written before the next round",
			in:   flight(30, 4500*time.Millisecond),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 30, iterations: 3, actions: "EnsureCanary p1", requeueAfter: 500 * time.Millisecond},
		},
		{
			name: "restart mid-flight, round overdue: the round continues from the recorded weight",
			in:   with(flight(30, time.Hour), func(in *Input) { in.Round = round(OutcomePass, "") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 40, iterations: 4, actions: "EnsureCanary p1, SetWeight 40",
				events: "WeightAdvanced(notify)", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "routes changed outside canarygate mid-flight are set back to the status' weight",
			in:   with(flight(30, 4500*time.Millisecond), func(in *Input) { in.RouteWeight = ptr.To(0) }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 30, iterations: 3, actions: "EnsureCanary p1, SetWeight 30",
				events: "RoutesRestored", requeueAfter: 500 * time.Millisecond},
		},
		{
			name: "routes that carry the status' weight are left alone",
			in:   with(flight(30, 4500*time.Millisecond), func(in *Input) { in.RouteWeight = ptr.To(30) }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 30, iterations: 3, actions: "EnsureCanary p1", requeueAfter: 500 * time.Millisecond},
		},
		{
			name: "a round that moves the weight writes the routes once",
			in:   with(flight(30, time.Hour), func(in *Input) { in.Round = round(OutcomePass, ""); in.RouteWeight = ptr.To(0) }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 40, iterations: 4, actions: "EnsureCanary p1, SetWeight 40",
				events: "WeightAdvanced(notify)", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "a release that ends takes the routes back whatever they carry",
			in:   with(flight(30, 4500*time.Millisecond), func(in *Input) { in.Pending = ""; in.RouteWeight = ptr.To(70) }),
			want: want{phase: v1alpha1.PhaseInitialized, iterations: 3, actions: "Finalize, DeleteGenerated", events: "Withdrawn+target"},
		},
		{
			name: "canary not ready: wait, no round",
			in:   with(flight(0, 6*time.Second), func(in *Input) { in.Canary.Ready = false; in.Canary.Message = "0 of 1 available" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", actions: "EnsureCanary p1", requeueAfter: 5 * time.Second, message: "waiting for the canary Deployment"},
		},
		{
			name: "canary cache still shows the previous revision: not ready",
			in:   with(flight(0, 6*time.Second), func(in *Input) { in.Canary.Revision = "p0" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", actions: "EnsureCanary p1", requeueAfter: 5 * time.Second, message: "waiting for the canary"},
		},
		{
			name: "canary past its progress deadline: rollback",
			in:   with(flight(10, 6*time.Second), func(in *Input) { in.Canary.Ready = false; in.Canary.Failed = true }),
			want: want{phase: v1alpha1.PhaseFailed, failedRev: "p1", iterations: 1, actions: "EnsureCanary p1, Finalize, DeleteGenerated", events: "RolledBack+target", message: "progress deadline"},
		},
		{
			name: "first round: pre-rollout hooks, no metrics (no traffic yet), gate for the first increase",
			in:   withHooks(flight(0, 6*time.Second), v1alpha1.HookPreRollout, v1alpha1.HookRollback, v1alpha1.HookConfirmTrafficIncrease),
			want: want{round: &RoundRequest{Kind: RoundAnalysis, Rollback: true, PreRollout: true, Gate: v1alpha1.HookConfirmTrafficIncrease}},
		},
		{
			name: "first round without hooks: an empty round",
			in:   flight(0, 6*time.Second),
			want: want{round: &RoundRequest{Kind: RoundAnalysis}},
		},
		{
			name: "first round passes: first step",
			in:   with(flight(0, 6*time.Second), func(in *Input) { in.Round = round(OutcomePass, "") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 10, actions: "EnsureCanary p1, SetWeight 10", events: "WeightAdvanced(notify)", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "pre-rollout fails: a failed check, and the first round is retried",
			in:   with(flight(0, 6*time.Second), func(in *Input) { in.Round = round(OutcomeFail, "pre-rollout hook load: 500") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", failedChecks: 1, actions: "EnsureCanary p1", events: "CheckFailed", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "later rounds run metrics",
			in:   withHooks(flight(20, 5*time.Second), v1alpha1.HookPreRollout, v1alpha1.HookConfirmTrafficIncrease),
			want: want{round: &RoundRequest{Kind: RoundAnalysis, Metrics: true, Gate: v1alpha1.HookConfirmTrafficIncrease}},
		},
		{
			name: "at maxWeight the gate is confirm-promotion",
			in:   withHooks(flight(50, 5*time.Second), v1alpha1.HookConfirmTrafficIncrease, v1alpha1.HookConfirmPromotion),
			want: want{round: &RoundRequest{Kind: RoundAnalysis, Metrics: true, Gate: v1alpha1.HookConfirmPromotion}},
		},
		{
			name: "pass: weight steps up",
			in:   with(flight(20, 5*time.Second), func(in *Input) { in.Round = round(OutcomePass, "") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 30, iterations: 3, actions: "EnsureCanary p1, SetWeight 30", events: "WeightAdvanced(notify)", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "pass: the step is capped at maxWeight",
			in: with(flight(40, 5*time.Second), func(in *Input) {
				in.Settings.StepWeight = 15
				in.Round = round(OutcomePass, "")
			}),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 50, iterations: 5, actions: "EnsureCanary p1, SetWeight 50", events: "WeightAdvanced(notify)", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "stepWeights: the next entry above the current weight",
			in: with(flight(20, 5*time.Second), func(in *Input) {
				in.Settings.StepWeights = []int{5, 20, 60}
				in.Settings.MaxWeight = 60
				in.Round = round(OutcomePass, "")
			}),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 60, iterations: 3, actions: "EnsureCanary p1, SetWeight 60", events: "WeightAdvanced(notify)", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "pass at maxWeight: promote",
			in:   with(flight(50, 5*time.Second), func(in *Input) { in.Round = round(OutcomePass, "") }),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 6, actions: "EnsureCanary p1, Promote p1", events: "Promoting+target", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "fail below threshold: counted",
			in:   with(flight(20, 5*time.Second), func(in *Input) { in.Round = round(OutcomeFail, "request-success-rate 90 < 99") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, failedChecks: 1, iterations: 3, actions: "EnsureCanary p1", events: "CheckFailed", requeueAfter: 5 * time.Second, analysedNow: true, message: "(1 of 2)"},
		},
		{
			name: "fail at threshold: rollback",
			in: with(flight(20, 5*time.Second), func(in *Input) {
				in.Status.FailedChecks = 1
				in.Round = round(OutcomeFail, "request-duration 900 > 500")
			}),
			want: want{phase: v1alpha1.PhaseFailed, failedRev: "p1", failedChecks: 2, iterations: 3, actions: "EnsureCanary p1, Finalize, DeleteGenerated", events: "RolledBack+target", analysedNow: true, message: "request-duration 900 > 500",
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionPromoted: metav1.ConditionFalse}},
		},
		{
			name: "no data under NoData=Wait: nothing changes but the round time",
			in:   with(flight(20, 5*time.Second), func(in *Input) { in.Round = round(OutcomeWait, "request-success-rate: no data") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, iterations: 2, actions: "EnsureCanary p1", requeueAfter: 5 * time.Second, analysedNow: true, message: "no data"},
		},
		{
			name: "gate closed: hold",
			in:   with(flight(20, 5*time.Second), func(in *Input) { in.Round = round(OutcomeHold, "confirm-traffic-increase said no") }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, iterations: 2, actions: "EnsureCanary p1", requeueAfter: 5 * time.Second, analysedNow: true, message: "approval"},
		},
		{
			name: "rollback webhook: rollback",
			in:   with(flight(20, 5*time.Second), func(in *Input) { in.Round = round(OutcomeRollback, "rollback hook stop") }),
			want: want{phase: v1alpha1.PhaseFailed, failedRev: "p1", iterations: 2, actions: "EnsureCanary p1, Finalize, DeleteGenerated", events: "RolledBack+target", analysedNow: true, message: "rollback hook stop"},
		},
		{
			name: "skipAnalysis: promote once the canary is ready",
			in:   with(flight(0, 5*time.Second), func(in *Input) { in.Settings.SkipAnalysis = true }),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", actions: "EnsureCanary p1, Promote p1", events: "Promoting+target", requeueAfter: 5 * time.Second},
		},
		{
			name: "skipAnalysis: still waits for the canary to be ready",
			in:   with(flight(0, 5*time.Second), func(in *Input) { in.Settings.SkipAnalysis = true; in.Canary.Ready = false }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", actions: "EnsureCanary p1", requeueAfter: 5 * time.Second},
		},
		{
			name: "suspended mid-flight: hold the weight, no round",
			in:   with(flight(20, time.Minute), func(in *Input) { in.Suspend = true }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, iterations: 2, actions: "EnsureCanary p1", message: "suspended"},
		},
		{
			name: "unsafe labels mid-flight: hold",
			in:   with(flight(20, time.Minute), func(in *Input) { in.Blocked = "Service x selects the canary pods" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, iterations: 2, requeueAfter: 5 * time.Second, message: "Service x",
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionReady: metav1.ConditionFalse}},
		},
		{
			name: "newer revision mid-flight: traffic back to stable first, then the new canary",
			in: with(flight(30, 2*time.Second), func(in *Input) {
				in.Pending = "p2"
				in.Status.FailedChecks = 1
			}),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p2", actions: "SetWeight 0, EnsureCanary p2", events: "NewRevision+target", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "newer revision that cannot run: traffic back to stable, no canary workload",
			in:   with(flight(30, 2*time.Second), func(in *Input) { in.Pending = "p2"; in.Blocked = "Service x selects the canary pods" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p2", actions: "SetWeight 0", events: "NewRevision+target", requeueAfter: 5 * time.Second, analysedNow: true,
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionReady: metav1.ConditionFalse}},
		},
		{
			name: "newer revision at weight 0: no weight write",
			in:   with(flight(0, 2*time.Second), func(in *Input) { in.Pending = "p2" }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p2", actions: "EnsureCanary p2", events: "NewRevision+target", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "a held failed revision comes back mid-flight: the release ends",
			in: with(flight(30, 2*time.Second), func(in *Input) {
				in.Pending = "p0"
				in.Status.FailedRevision = "p0"
			}),
			want: want{phase: v1alpha1.PhaseInitialized, failedRev: "p0", iterations: 3, actions: "Finalize, DeleteGenerated", events: "Withdrawn+target", message: "held"},
		},
		{
			name: "Git revert mid-flight (annotations removed): withdraw",
			in:   with(flight(30, 2*time.Second), func(in *Input) { in.Pending = "" }),
			want: want{phase: v1alpha1.PhaseInitialized, iterations: 3, actions: "Finalize, DeleteGenerated", events: "Withdrawn+target", message: "withdrawn"},
		},
		{
			name: "Git revert mid-flight (pending equals stable): withdraw",
			in:   with(flight(30, 2*time.Second), func(in *Input) { in.Pending = "s1" }),
			want: want{phase: v1alpha1.PhaseInitialized, iterations: 3, actions: "Finalize, DeleteGenerated", events: "Withdrawn+target", message: "withdrawn"},
		},
		{
			name: "Promoting: write the template",
			in:   with(flight(50, time.Second), func(in *Input) { in.Status.Phase = v1alpha1.PhasePromoting }),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, actions: "Promote p1", requeueAfter: 5 * time.Second},
		},
		{
			name: "Promoting: written, rollout under way",
			in: with(flight(50, time.Second), func(in *Input) {
				in.Status.Phase = v1alpha1.PhasePromoting
				in.StableRevision, in.Pending = "p1", ""
			}),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 5 * time.Second},
		},
		{
			name: "Promoting: rollout under way, the deadline nearer than an interval: wake at the deadline",
			in:   promoted(58 * time.Second),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 2 * time.Second},
		},
		{
			name: "Promoting: past the progress deadline: the stall is reported, the release keeps waiting",
			in:   promoted(61 * time.Second),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 5 * time.Second,
				events: "PromotionStalled+target", message: `did not roll out within 1m0s: 1 of 2 replicas updated; Progressing: ReplicaSet "web-7d9" is progressing.`,
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionPromoted: metav1.ConditionFalse},
				reasons:    map[string]string{v1alpha1.ConditionPromoted: ReasonPromotionStalled}},
		},
		{
			name: "Promoting: a reported stall is not reported again",
			in:   with(promoted(10*time.Minute), func(in *Input) { in.Status.Conditions = stalledCondition }),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 5 * time.Second,
				reasons: map[string]string{v1alpha1.ConditionPromoted: ReasonPromotionStalled}},
		},
		{
			name: "Promoting: without a progress deadline the rollout is awaited without a stall",
			in:   with(promoted(time.Hour), func(in *Input) { in.Settings.ProgressDeadline = 0 }),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 5 * time.Second},
		},
		{
			name: "Promoting: a stalled rollout that completes after all is promoted",
			in: with(promoted(10*time.Minute), func(in *Input) {
				in.Status.Conditions = stalledCondition
				in.TargetRolledOut, in.TargetMessage = true, ""
			}),
			want: want{events: "Finalising", phase: v1alpha1.PhaseFinalising, canaryRev: "p1", weight: 50, iterations: 5, requeue: true},
		},
		{
			name: "Promoting: a newer revision waits while a stalled promotion waits",
			in: with(promoted(10*time.Minute), func(in *Input) {
				in.Status.Conditions = stalledCondition
				in.Pending = "p2"
			}),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 5 * time.Second},
		},
		{
			name: "action abort of a stalled promotion: all traffic to the Deployment, which keeps Git's template",
			in: with(promoted(10*time.Minute), func(in *Input) {
				in.Status.Conditions = stalledCondition
				in.Action = v1alpha1.ActionAbort
			}),
			want: want{phase: v1alpha1.PhaseFailed, iterations: 5, actions: "Finalize, DeleteGenerated", events: "PromotionAborted+target", actionDone: true,
				message: `keeps the template of revision p1 that Git asks for (canarygate does not write an older template over Git's; revert it in Git to go back); its rollout: 1 of 2 replicas updated`,
				reasons: map[string]string{v1alpha1.ConditionPromoted: "PromotionAborted"}},
		},
		{
			name: "action abort in Promoting before the write: a rollback, the revision held",
			in:   with(flight(50, time.Second), func(in *Input) { in.Status.Phase = v1alpha1.PhasePromoting; in.Action = v1alpha1.ActionAbort }),
			want: want{phase: v1alpha1.PhaseFailed, iterations: 5, failedRev: "p1", actions: "Finalize, DeleteGenerated", events: "RolledBack+target", actionDone: true, message: "aborted by action"},
		},
		{
			name: "action abort while Finalising: ignored, the promotion completes",
			in: with(promoted(time.Second), func(in *Input) {
				in.Status.Phase = v1alpha1.PhaseFinalising
				in.TargetRolledOut = true
				in.Action = v1alpha1.ActionAbort
			}),
			want: want{phase: v1alpha1.PhaseSucceeded, iterations: 5, actions: "Finalize, DeleteGenerated", events: "ActionIgnored, Promoted+target", actionDone: true,
				reasons: map[string]string{v1alpha1.ConditionPromoted: "Succeeded"}},
		},
		{
			name: "Promoting: rolled out, Finalising next",
			in: with(flight(50, time.Second), func(in *Input) {
				in.Status.Phase = v1alpha1.PhasePromoting
				in.StableRevision, in.Pending = "p1", ""
				in.TargetRolledOut = true
			}),
			want: want{events: "Finalising", phase: v1alpha1.PhaseFinalising, canaryRev: "p1", weight: 50, iterations: 5, requeue: true},
		},
		{
			name: "Promoting after the write, a newer revision waits until this one finishes",
			in: with(flight(50, time.Second), func(in *Input) {
				in.Status.Phase = v1alpha1.PhasePromoting
				in.StableRevision, in.Pending = "p1", "p2"
				in.TargetRolledOut = true
			}),
			want: want{events: "Finalising", phase: v1alpha1.PhaseFinalising, canaryRev: "p1", weight: 50, iterations: 5, requeue: true},
		},
		{
			name: "Promoting before the write, a newer revision restarts the analysis",
			in: with(flight(50, time.Second), func(in *Input) {
				in.Status.Phase = v1alpha1.PhasePromoting
				in.Pending = "p2"
			}),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p2", actions: "SetWeight 0, EnsureCanary p2", events: "NewRevision+target", requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "Promoting before the write, a revert withdraws",
			in:   with(flight(50, time.Second), func(in *Input) { in.Status.Phase = v1alpha1.PhasePromoting; in.Pending = "" }),
			want: want{phase: v1alpha1.PhaseInitialized, iterations: 5, actions: "Finalize, DeleteGenerated", events: "Withdrawn+target"},
		},
		{
			name: "Progressing but the Deployment already runs the canary revision (status write lost): promotion continues",
			in:   with(flight(50, time.Second), func(in *Input) { in.StableRevision, in.Pending = "p1", "" }),
			want: want{events: "Promoting+target", phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 50, iterations: 5, requeueAfter: 5 * time.Second},
		},
		{
			name: "Finalising: routes back, generated objects removed, post-rollout hooks, Succeeded",
			in: withHooks(with(flight(50, time.Second), func(in *Input) {
				in.Status.Phase = v1alpha1.PhaseFinalising
				in.StableRevision, in.Pending = "p1", ""
			}), v1alpha1.HookPostRollout),
			want: want{phase: v1alpha1.PhaseSucceeded, iterations: 5, actions: "Finalize, DeleteGenerated, CallHooks post-rollout", events: "Promoted+target",
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionPromoted: metav1.ConditionTrue}},
		},
		{
			name: "target Deployment deleted mid-flight: clean up",
			in:   with(flight(20, time.Second), func(in *Input) { in.TargetMissing = true }),
			want: want{phase: v1alpha1.PhaseInitialized, iterations: 2, actions: "Finalize, DeleteGenerated", events: "Withdrawn+target", message: "does not exist",
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionReady: metav1.ConditionFalse}},
		},

		// Manual actions.
		{
			name: "action pause: condition set, analysis held",
			in:   with(flight(20, time.Minute), func(in *Input) { in.Action = v1alpha1.ActionPause }),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 20, iterations: 2, actions: "EnsureCanary p1", events: "Paused", actionDone: true, message: "paused",
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionPaused: metav1.ConditionTrue}},
		},
		{
			name: "action resume: the overdue round runs",
			in: with(flight(20, time.Minute), func(in *Input) {
				in.Action = v1alpha1.ActionResume
				in.Status.Conditions = paused
				in.Round = round(OutcomePass, "")
			}),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", weight: 30, iterations: 3, actions: "EnsureCanary p1, SetWeight 30", events: "Resumed, WeightAdvanced(notify)", actionDone: true, requeueAfter: 5 * time.Second, analysedNow: true,
				conditions: map[string]metav1.ConditionStatus{v1alpha1.ConditionPaused: metav1.ConditionFalse}},
		},
		{
			name: "action abort mid-flight: rollback",
			in:   with(flight(20, time.Second), func(in *Input) { in.Action = v1alpha1.ActionAbort }),
			want: want{phase: v1alpha1.PhaseFailed, failedRev: "p1", iterations: 2, actions: "Finalize, DeleteGenerated", events: "RolledBack+target", actionDone: true, message: "aborted"},
		},
		{
			name: "action abort when idle: ignored, annotation removed",
			in:   with(base(), func(in *Input) { in.Action = v1alpha1.ActionAbort }),
			want: want{phase: v1alpha1.PhaseInitialized, events: "ActionIgnored", actionDone: true},
		},
		{
			name: "action retry: the held revision starts again",
			in: with(base(), func(in *Input) {
				in.Action = v1alpha1.ActionRetry
				in.Pending = "p1"
				in.Status.Phase = v1alpha1.PhaseFailed
				in.Status.FailedRevision = "p1"
			}),
			want: want{phase: v1alpha1.PhaseProgressing, canaryRev: "p1", actions: "EnsureCanary p1", events: "Retry, Started+target", actionDone: true, requeueAfter: 5 * time.Second, analysedNow: true},
		},
		{
			name: "action promote mid-flight: straight to Promoting",
			in:   with(flight(20, time.Second), func(in *Input) { in.Action = v1alpha1.ActionPromote }),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", weight: 20, iterations: 2, actions: "Promote p1", events: "PromoteRequested, Promoting+target", actionDone: true, requeueAfter: 5 * time.Second},
		},
		{
			name: "action promote of a held failed revision: the operator overrides",
			in: with(base(), func(in *Input) {
				in.Action = v1alpha1.ActionPromote
				in.Pending = "p1"
				in.Status.Phase = v1alpha1.PhaseFailed
				in.Status.FailedRevision = "p1"
			}),
			want: want{phase: v1alpha1.PhasePromoting, canaryRev: "p1", failedRev: "p1", actions: "Promote p1", events: "PromoteRequested, Promoting+target", actionDone: true, requeueAfter: 5 * time.Second},
		},
		{
			name: "action promote with nothing pending: ignored",
			in:   with(base(), func(in *Input) { in.Action = v1alpha1.ActionPromote }),
			want: want{phase: v1alpha1.PhaseInitialized, events: "ActionIgnored", actionDone: true},
		},
		{
			name: "unknown action: ignored, annotation removed",
			in:   with(base(), func(in *Input) { in.Action = "explode" }),
			want: want{phase: v1alpha1.PhaseInitialized, events: "ActionIgnored", actionDone: true},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if !reflect.DeepEqual(d, Decide(tc.in)) {
				t.Fatal("Decide is not deterministic")
			}
			if tc.want.round != nil || d.Round != nil {
				if !reflect.DeepEqual(d.Round, tc.want.round) {
					t.Fatalf("round = %+v, want %+v", d.Round, tc.want.round)
				}
				if len(d.Actions)+len(d.Events) > 0 || d.ActionDone || !reflect.DeepEqual(d.Status, tc.in.Status) {
					t.Fatalf("a round request must carry nothing else: %+v", d)
				}
				return
			}
			st := d.Status
			w := tc.want
			check := func(what string, got, want any) {
				t.Helper()
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("phase", st.Phase, w.phase)
			check("actions", actions(d), w.actions)
			check("events", events(d), w.events)
			check("weight", st.CanaryWeight, w.weight)
			check("failedChecks", st.FailedChecks, w.failedChecks)
			check("iterations", st.Iterations, w.iterations)
			check("canaryRevision", st.CanaryRevision, w.canaryRev)
			check("failedRevision", st.FailedRevision, w.failedRev)
			check("requeue", d.Requeue, w.requeue)
			check("requeueAfter", d.RequeueAfter, w.requeueAfter)
			check("actionDone", d.ActionDone, w.actionDone)
			// Once the promotion is written, the Deployment's template is the promoted revision.
			wantStable := tc.in.StableRevision
			if strings.Contains(w.actions, "Promote ") {
				wantStable = w.canaryRev
			}
			check("stableRevision", st.StableRevision, wantStable)
			check("observedGeneration", st.ObservedGeneration, tc.in.Generation)
			if w.message != "" && !strings.Contains(st.Message, w.message) {
				t.Errorf("message %q does not contain %q", st.Message, w.message)
			}
			analysedNow := st.LastAnalysisTime != nil && st.LastAnalysisTime.Time.Equal(t0)
			check("lastAnalysisTime is now", analysedNow, w.analysedNow)
			if st.Phase != tc.in.Status.Phase || st.CanaryWeight != tc.in.Status.CanaryWeight {
				check("lastTransitionTime", st.LastTransitionTime.Time, t0)
			}
			for typ, s := range w.conditions {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil || c.Status != s {
					t.Errorf("condition %s = %+v, want %s", typ, c, s)
				}
			}
			for typ, reason := range w.reasons {
				if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Reason != reason {
					t.Errorf("condition %s = %+v, want reason %s", typ, c, reason)
				}
			}
		})
	}
}

// A Decision applied to the status it produced, with the world unchanged, changes nothing: the
// reconciler writes no status while a Canary is idle or waits for its next round.
func TestDecideIsStableWhenNothingChanges(t *testing.T) {
	for name, in := range map[string]Input{
		"idle":          base(),
		"waiting round": flight(20, 2*time.Second),
		"held failure": func() Input {
			in := base()
			in.Pending = "p1"
			in.Status.FailedRevision = "p1"
			in.Status.Phase = v1alpha1.PhaseFailed
			return in
		}(),
		"suspended wait":    func() Input { in := base(); in.Pending = "p1"; in.Suspend = true; return in }(),
		"stalled promotion": promoted(2 * time.Minute),
	} {
		t.Run(name, func(t *testing.T) {
			first := Decide(in)
			in.Status = first.Status
			in.Now = in.Now.Add(time.Second)
			second := Decide(in)
			if !reflect.DeepEqual(first.Status, second.Status) {
				t.Errorf("status changed without a change in the world:\n%+v\n%+v", first.Status, second.Status)
			}
			for _, a := range second.Actions {
				if a.Kind != ActEnsureCanary {
					t.Errorf("unexpected action %v", a)
				}
			}
			if len(second.Events) > 0 {
				t.Errorf("events repeated without a change in the world: %+v", second.Events)
			}
		})
	}
}

// A whole release, driven the way the reconciler drives it: the weights walk to maxWeight and the
// revision is promoted.
func TestDecideWalksARelease(t *testing.T) {
	in := base()
	in.Pending = "p1"
	var weights []int
	for step := 0; step < 30; step++ {
		d := Decide(in)
		if d.Round != nil {
			in.Round = &RoundResult{Outcome: OutcomePass}
			d = Decide(in)
			in.Round = nil
		}
		for _, a := range d.Actions {
			switch a.Kind {
			case ActSetWeight:
				weights = append(weights, a.Weight)
			case ActEnsureCanary:
				in.Canary = Workload{Exists: true, Revision: a.Revision, Ready: true}
			case ActPromote:
				in.StableRevision, in.Pending, in.TargetRolledOut = a.Revision, "", true
			}
		}
		in.Status = d.Status
		if in.Status.Phase == v1alpha1.PhaseSucceeded {
			break
		}
		if d.RequeueAfter > 0 {
			in.Now = in.Now.Add(d.RequeueAfter)
		}
	}
	if in.Status.Phase != v1alpha1.PhaseSucceeded || in.Status.StableRevision != "p1" {
		t.Fatalf("release did not succeed: %+v", in.Status)
	}
	if want := []int{10, 20, 30, 40, 50}; !reflect.DeepEqual(weights, want) {
		t.Errorf("weights = %v, want %v", weights, want)
	}
}
