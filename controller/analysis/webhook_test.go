package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"canarygate.io/canarygate/api/v1alpha1"
)

func TestHooksOfType(t *testing.T) {
	hooks := []v1alpha1.CanaryWebhook{
		{Name: "untyped"},
		{Name: "gate", Type: v1alpha1.HookConfirmRollout},
		{Name: "load", Type: v1alpha1.HookRollout},
		{Name: "rb", Type: v1alpha1.HookRollback},
		{Name: "gate2", Type: v1alpha1.HookConfirmRollout},
		{Name: "ev", Type: v1alpha1.HookEvent},
	}
	cases := []struct {
		t    v1alpha1.HookType
		want []string
	}{
		{v1alpha1.HookRollout, []string{"untyped", "load"}},
		{v1alpha1.HookConfirmRollout, []string{"gate", "gate2"}},
		{v1alpha1.HookRollback, []string{"rb"}},
		{v1alpha1.HookEvent, []string{"ev"}},
		{v1alpha1.HookPostRollout, nil},
	}
	for _, tc := range cases {
		var got []string
		for _, h := range HooksOfType(hooks, tc.t) {
			got = append(got, h.Name)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.t, got, tc.want)
		}
	}
}

func TestNewPayload(t *testing.T) {
	c := &v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"},
		Status:     v1alpha1.CanaryStatus{CanaryRevision: "abc123", StableRevision: "old"},
	}
	got := NewPayload(c, v1alpha1.PhaseProgressing)
	want := Payload{Name: "podinfo", Namespace: "test", Phase: v1alpha1.PhaseProgressing, Checksum: "abc123"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// hookServer records the requests it gets and answers with status and body.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	status int
	body   string
}

func newHookServer(t *testing.T, status int, body string) *hookServer {
	s := &hookServer{status: status, body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with Content-Type %q, want POST application/json", r.Method, r.Header.Get("Content-Type"))
		}
		raw, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Errorf("body %q is not JSON: %v", raw, err)
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, m)
		s.mu.Unlock()
		w.WriteHeader(s.status)
		_, _ = io.WriteString(w, s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *hookServer) received() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.bodies...)
}

var testPayload = Payload{Name: "podinfo", Namespace: "test", Phase: v1alpha1.PhaseProgressing, Checksum: "abc123"}

func TestCallWebhookSendsFlaggerPayload(t *testing.T) {
	// flagger-loadtester answers 202 to a queued command and reads metadata.type and metadata.cmd.
	srv := newHookServer(t, http.StatusAccepted, "")
	hook := v1alpha1.CanaryWebhook{Name: "load-test", URL: srv.URL + "/", Metadata: map[string]string{
		"type": "cmd", "cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/",
	}}
	if err := CallWebhook(context.Background(), hook, testPayload); err != nil {
		t.Fatal(err)
	}
	got := srv.received()
	want := []map[string]any{{
		"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "abc123",
		"metadata": map[string]any{"type": "cmd", "cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got %v\nwant %v", got, want)
	}

	// Without metadata the key is left out, as Flagger does (omitempty).
	if err := CallWebhook(context.Background(), v1alpha1.CanaryWebhook{Name: "gate", URL: srv.URL}, testPayload); err != nil {
		t.Fatal(err)
	}
	if _, has := srv.received()[1]["metadata"]; has {
		t.Errorf("metadata sent without hook metadata: %v", srv.received()[1])
	}
}

func TestCallWebhookStatus(t *testing.T) {
	long := strings.Repeat("x", 1000)
	cases := []struct {
		status int
		body   string
		err    string
	}{
		{http.StatusOK, "Approved", ""},
		{http.StatusNoContent, "", ""},
		{http.StatusForbidden, "Forbidden", "webhook h: 403 Forbidden: Forbidden"},
		{http.StatusInternalServerError, "command failed: exit status 1\n", "webhook h: 500 Internal Server Error: command failed: exit status 1"},
		{http.StatusBadGateway, long, "webhook h: 502 Bad Gateway: " + long[:maxBodyExcerpt] + "…"},
		{http.StatusNotFound, "", "webhook h: 404 Not Found"},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			srv := newHookServer(t, tc.status, tc.body)
			err := CallWebhook(context.Background(), v1alpha1.CanaryWebhook{Name: "h", URL: srv.URL}, testPayload)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != tc.status {
				t.Fatalf("error %v, want a StatusError with %d", err, tc.status)
			}
			if err.Error() != tc.err {
				t.Errorf("error\n got %q\nwant %q", err, tc.err)
			}
		})
	}
}

func TestCallWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	// The hook's own timeout ends the call, and the error says so.
	err := CallWebhook(context.Background(), v1alpha1.CanaryWebhook{Name: "slow", URL: srv.URL, Timeout: "100ms"}, testPayload)
	if err == nil || err.Error() != "webhook slow: no answer within 100ms" {
		t.Errorf("error %v, want the hook's timeout", err)
	}

	// The caller's deadline, when shorter, ends the call too; the default timeout is not waited out.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = CallWebhook(ctx, v1alpha1.CanaryWebhook{Name: "slow", URL: srv.URL}, testPayload)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the caller's deadline", err)
	}
}

func TestCallWebhookInvalidHook(t *testing.T) {
	cases := []struct {
		hook v1alpha1.CanaryWebhook
		err  string
	}{
		{v1alpha1.CanaryWebhook{Name: "h", URL: "http://127.0.0.1:1/", Timeout: "soon"}, `webhook h: invalid timeout "soon"`},
		{v1alpha1.CanaryWebhook{Name: "h", URL: "http://127.0.0.1:1/", Timeout: "-1s"}, `webhook h: invalid timeout "-1s"`},
		{v1alpha1.CanaryWebhook{Name: "h", URL: "ftp://example.com/"}, `webhook h: invalid URL "ftp://example.com/"`},
		{v1alpha1.CanaryWebhook{Name: "h", URL: "://"}, `webhook h: invalid URL`},
		{v1alpha1.CanaryWebhook{Name: "h", URL: "http://127.0.0.1:1/"}, `webhook h: Post "http://127.0.0.1:1/"`},
	}
	for _, tc := range cases {
		err := CallWebhook(context.Background(), tc.hook, testPayload)
		if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want prefix %q", tc.hook, err, tc.err)
		}
	}
}

func TestCallEventWebhook(t *testing.T) {
	srv := newHookServer(t, http.StatusOK, "")
	hook := v1alpha1.CanaryWebhook{Name: "events", Type: v1alpha1.HookEvent, URL: srv.URL,
		Metadata: map[string]string{"channel": "#releases", "eventType": "overridden?"}}
	before := time.Now().UnixMilli()
	if err := CallEventWebhook(context.Background(), hook, testPayload, "Advance podinfo.test canary weight 10", "Normal"); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()

	got := srv.received()[0]
	md, _ := got["metadata"].(map[string]any)
	ts, err := strconv.ParseInt(md["timestamp"].(string), 10, 64)
	if err != nil || ts < before || ts > after {
		t.Errorf("timestamp %v, want Unix milliseconds in [%d, %d]", md["timestamp"], before, after)
	}
	delete(md, "timestamp")
	want := map[string]any{
		"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "abc123",
		"metadata": map[string]any{
			"eventMessage": "Advance podinfo.test canary weight 10",
			"eventType":    "Normal", // the event's own fields win over the hook's metadata
			"channel":      "#releases",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got %v\nwant %v", got, want)
	}
	if hook.Metadata["eventType"] != "overridden?" || len(hook.Metadata) != 2 {
		t.Errorf("hook metadata was modified: %v", hook.Metadata)
	}
}

func TestCallHooks(t *testing.T) {
	ok1 := newHookServer(t, http.StatusOK, "")
	halt := newHookServer(t, http.StatusForbidden, "Forbidden")
	ok2 := newHookServer(t, http.StatusOK, "")
	other := newHookServer(t, http.StatusOK, "")
	hooks := []v1alpha1.CanaryWebhook{
		{Name: "approve", Type: v1alpha1.HookConfirmPromotion, URL: ok1.URL},
		{Name: "load", URL: other.URL},
		{Name: "halt", Type: v1alpha1.HookConfirmPromotion, URL: halt.URL},
		{Name: "later", Type: v1alpha1.HookConfirmPromotion, URL: ok2.URL},
	}
	err := CallHooks(context.Background(), hooks, v1alpha1.HookConfirmPromotion, testPayload)
	var se *StatusError
	if !errors.As(err, &se) || se.Hook != "halt" {
		t.Fatalf("error %v, want the halt gate's StatusError", err)
	}
	if len(ok1.received()) != 1 || len(halt.received()) != 1 || len(ok2.received()) != 0 || len(other.received()) != 0 {
		t.Errorf("calls: approve %d, halt %d, later %d, rollout %d; want 1, 1, 0, 0",
			len(ok1.received()), len(halt.received()), len(ok2.received()), len(other.received()))
	}
	if err := CallHooks(context.Background(), hooks, v1alpha1.HookPreRollout, testPayload); err != nil {
		t.Errorf("no pre-rollout hooks: %v", err)
	}
}

func TestRollbackRequested(t *testing.T) {
	no := newHookServer(t, http.StatusForbidden, "Forbidden")
	yes := newHookServer(t, http.StatusOK, "Approved")
	after := newHookServer(t, http.StatusOK, "")

	hook, requested, errs := RollbackRequested(context.Background(), []v1alpha1.CanaryWebhook{
		{Name: "closed", Type: v1alpha1.HookRollback, URL: no.URL},
		{Name: "gate", Type: v1alpha1.HookConfirmRollout, URL: after.URL},
		{Name: "open", Type: v1alpha1.HookRollback, URL: yes.URL},
		{Name: "after", Type: v1alpha1.HookRollback, URL: after.URL},
	}, testPayload)
	if hook != "open" || !requested || errs == nil || !strings.Contains(errs.Error(), "webhook closed: 403") {
		t.Errorf("got %q %v %v, want the open hook requesting, the closed one reported", hook, requested, errs)
	}
	if len(after.received()) != 0 {
		t.Errorf("hooks after the first request were called")
	}

	hook, requested, errs = RollbackRequested(context.Background(), []v1alpha1.CanaryWebhook{
		{Name: "closed", Type: v1alpha1.HookRollback, URL: no.URL},
	}, testPayload)
	if hook != "" || requested || errs == nil {
		t.Errorf("got %q %v %v, want no rollback", hook, requested, errs)
	}
}

func TestRolloutHookResults(t *testing.T) {
	pass := newHookServer(t, http.StatusAccepted, "")
	fail := newHookServer(t, http.StatusInternalServerError, "smoke test failed")
	results := RolloutHookResults(context.Background(), []v1alpha1.CanaryWebhook{
		{Name: "load", URL: pass.URL},
		{Name: "smoke", Type: v1alpha1.HookRollout, URL: fail.URL},
		{Name: "gate", Type: v1alpha1.HookConfirmRollout, URL: fail.URL},
	}, testPayload)
	want := []MetricResult{
		{Name: "load", Verdict: Pass},
		{Name: "smoke", Verdict: Fail, Message: "webhook smoke: 500 Internal Server Error: smoke test failed"},
	}
	if !reflect.DeepEqual(results, want) {
		t.Errorf("got %+v, want %+v", results, want)
	}
	if r := Round(results); r.Verdict != Fail || r.Message != want[1].Message {
		t.Errorf("round %+v", r)
	}
}
