package scale

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRuntimeMetrics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`# HELP go_memstats_heap_alloc_bytes Number of heap bytes allocated and currently in use.
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes 1.2345678e+08
go_memstats_heap_inuse_bytes 1.5e+08
go_memstats_sys_bytes 2.5e+08
go_memstats_heap_alloc_bytes_total 9e+12
rest_client_requests_total{code="200",host="x",method="GET"} 3
controller_runtime_reconcile_total{controller="canary",result="success"} 120
controller_runtime_reconcile_total{controller="canary",result="requeue_after"} 30
controller_runtime_reconcile_total{controller="optin",result="success"} 7
`))
	}))
	defer srv.Close()
	got, err := RuntimeMetrics(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"go_memstats_heap_alloc_bytes": 123456780, "go_memstats_heap_inuse_bytes": 150000000, "go_memstats_sys_bytes": 250000000, "reconciles canary": 150, "reconciles optin": 7}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}
