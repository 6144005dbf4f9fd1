package v1alpha1

// Annotation and label keys: a contract with users and tests (DESIGN.md "Names").
const (
	// OptInKey is the namespace annotation (opt-in), the mirrored namespace label the webhook
	// configurations select on, and the Deployment annotation that opts out.
	OptInKey = "canarygate.io/canary"
	// OptInEnabled and OptOutDisabled are OptInKey's values.
	OptInEnabled   = "enabled"
	OptOutDisabled = "disabled"

	// DesiredRevisionAnnotation holds the hash of the pending pod template on the Git-owned Deployment.
	DesiredRevisionAnnotation = "canarygate.io/desired-revision"
	// DesiredTemplateAnnotation holds the pending pod template as canonical JSON.
	DesiredTemplateAnnotation = "canarygate.io/desired-template"
	// PromotedRevisionAnnotation approves the controller's own promotion write of that revision.
	PromotedRevisionAnnotation = "canarygate.io/promoted-revision"
	// BreakGlassAnnotation on a Deployment lets a template change through without a canary.
	BreakGlassAnnotation = "canarygate.io/break-glass"

	// GeneratedForLabel marks every object canarygate generates with the Deployment it serves.
	GeneratedForLabel = "canarygate.io/generated-for"
	// ActionAnnotation on a Canary requests a manual action; the controller removes it once done.
	ActionAnnotation = "canarygate.io/action"
	// RevisionAnnotation on a generated canary Deployment is the revision of the template it runs.
	RevisionAnnotation = "canarygate.io/revision"
	// CreatedByLabel marks a Canary that the controller created (and may therefore rewrite).
	CreatedByLabel = "canarygate.io/created-by"
	// CreatedByController is CreatedByLabel's value.
	CreatedByController = "canarygate"
)

// Manual actions accepted in ActionAnnotation.
const (
	ActionPromote = "promote"
	ActionAbort   = "abort"
	ActionRetry   = "retry"
	ActionPause   = "pause"
	ActionResume  = "resume"
)

// GeneratedName is the name of the canary Deployment, Service and VirtualService for a target.
func GeneratedName(target string) string { return target + "-canary" }
