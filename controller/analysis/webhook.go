package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"canarygate.io/canarygate/api/v1alpha1"
)

// DefaultWebhookTimeout bounds a webhook call that sets no timeout, as in Flagger.
const DefaultWebhookTimeout = 10 * time.Second

// maxBodyExcerpt is how much of a failing webhook's response goes into the error: enough for
// flagger-loadtester's command output summary, short enough for a status message.
const maxBodyExcerpt = 256

// Payload is the JSON body POSTed to webhooks: Flagger's CanaryWebhookPayload, field for field, so
// flagger-loadtester and other Flagger webhook receivers work unchanged.
type Payload struct {
	// Name and Namespace of the Canary.
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Phase of the Canary when the hook is called.
	Phase v1alpha1.CanaryPhase `json:"phase"`
	// Checksum identifies the revision under analysis (Flagger: a hash of the applied spec), so a
	// receiver can tell a new release from a repeated call for the same one.
	Checksum string `json:"checksum"`
	// Metadata is the hook's metadata (for event hooks merged with the event fields).
	Metadata map[string]string `json:"metadata,omitempty"`
}

// NewPayload returns the payload for a Canary in a phase; the checksum is the canary revision.
func NewPayload(c *v1alpha1.Canary, phase v1alpha1.CanaryPhase) Payload {
	return Payload{Name: c.Name, Namespace: c.Namespace, Phase: phase, Checksum: c.Status.CanaryRevision}
}

// StatusError is a webhook's answer outside 2xx. For confirm-* gates it means "not yet"; for
// rollback hooks it means "no rollback"; elsewhere it is a failed check.
type StatusError struct {
	Hook       string
	StatusCode int
	// Body is the start of the response body, trimmed.
	Body string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("webhook %s: %d %s", e.Hook, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// webhookClient carries no timeout of its own: every call is bounded by the hook's timeout.
var webhookClient = &http.Client{}

// HooksOfType returns the hooks of type t in their order; a hook without a type is a rollout hook.
func HooksOfType(hooks []v1alpha1.CanaryWebhook, t v1alpha1.HookType) []v1alpha1.CanaryWebhook {
	var out []v1alpha1.CanaryWebhook
	for _, h := range hooks {
		ht := h.Type
		if ht == "" {
			ht = v1alpha1.HookRollout
		}
		if ht == t {
			out = append(out, h)
		}
	}
	return out
}

// CallWebhook POSTs payload, with the hook's metadata, to the hook's URL and waits at most the
// hook's timeout (DefaultWebhookTimeout when unset). Any answer outside 2xx is a *StatusError.
// (Flagger itself treats 203–299 as failures too; canarygate accepts every 2xx.)
func CallWebhook(ctx context.Context, hook v1alpha1.CanaryWebhook, payload Payload) error {
	payload.Metadata = hook.Metadata
	return post(ctx, hook, payload)
}

// CallEventWebhook sends an event to an event hook the way Flagger does: the metadata carries
// eventMessage, eventType (Normal or Warning) and timestamp (Unix milliseconds), plus the hook's
// own metadata for keys the event does not set.
func CallEventWebhook(ctx context.Context, hook v1alpha1.CanaryWebhook, payload Payload, message, eventType string) error {
	md := map[string]string{
		"eventMessage": message,
		"eventType":    eventType,
		"timestamp":    strconv.FormatInt(time.Now().UnixMilli(), 10),
	}
	for k, v := range hook.Metadata {
		if _, taken := md[k]; !taken {
			md[k] = v
		}
	}
	payload.Metadata = md
	return post(ctx, hook, payload)
}

// CallHooks calls every hook of type t in order and stops at the first failure, which it returns.
// It fits the gates (confirm-rollout, confirm-traffic-increase, confirm-promotion: an error means
// "not yet"), pre-rollout and rollout hooks (an error is a failed check) and post-rollout hooks
// (an error is only reported).
func CallHooks(ctx context.Context, hooks []v1alpha1.CanaryWebhook, t v1alpha1.HookType, payload Payload) error {
	for _, h := range HooksOfType(hooks, t) {
		if err := CallWebhook(ctx, h, payload); err != nil {
			return err
		}
	}
	return nil
}

// RollbackRequested calls the rollback hooks in order and reports the first that answers 2xx,
// which asks for a rollback. Other answers and transport errors mean "no rollback", as in Flagger;
// they are returned joined so the caller can log them.
func RollbackRequested(ctx context.Context, hooks []v1alpha1.CanaryWebhook, payload Payload) (hook string, requested bool, errs error) {
	var all []error
	for _, h := range HooksOfType(hooks, v1alpha1.HookRollback) {
		err := CallWebhook(ctx, h, payload)
		if err == nil {
			return h.Name, true, errors.Join(all...)
		}
		all = append(all, err)
	}
	return "", false, errors.Join(all...)
}

// RolloutHookResults calls every rollout hook and judges each as a check of the round: 2xx passes,
// anything else fails with the error. Combine them with the metric results in Round.
func RolloutHookResults(ctx context.Context, hooks []v1alpha1.CanaryWebhook, payload Payload) []MetricResult {
	var results []MetricResult
	for _, h := range HooksOfType(hooks, v1alpha1.HookRollout) {
		r := MetricResult{Name: h.Name, Verdict: Pass}
		if err := CallWebhook(ctx, h, payload); err != nil {
			r.Verdict, r.Message = Fail, err.Error()
		}
		results = append(results, r)
	}
	return results
}

func post(ctx context.Context, hook v1alpha1.CanaryWebhook, payload Payload) error {
	timeout := DefaultWebhookTimeout
	if hook.Timeout != "" {
		d, err := time.ParseDuration(hook.Timeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("webhook %s: invalid timeout %q", hook.Name, hook.Timeout)
		}
		timeout = d
	}
	u, err := url.Parse(hook.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %s: invalid URL %q: want http(s)://host/path", hook.Name, hook.URL)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("webhook %s: encoding payload: %w", hook.Name, err)
	}

	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(callCtx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", hook.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := webhookClient.Do(req)
	if err != nil {
		// Name the hook's own timeout when it, not the caller's context, ended the call.
		if callCtx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("webhook %s: no answer within %s", hook.Name, timeout)
		}
		return fmt.Errorf("webhook %s: %w", hook.Name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	// Read a little more than the excerpt to know whether it was cut.
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyExcerpt+1))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &StatusError{Hook: hook.Name, StatusCode: resp.StatusCode, Body: shorten(excerpt)}
}

// shorten trims a response body to maxBodyExcerpt bytes, dropping bytes that are not UTF-8 (such
// as a rune the cut split), and marks a cut with "…".
func shorten(b []byte) string {
	cut := len(b) > maxBodyExcerpt
	if cut {
		b = b[:maxBodyExcerpt]
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), ""))
	if cut {
		s += "…"
	}
	return s
}
