package loadgen

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsEveryRequest(t *testing.T) {
	var served, h2 atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		if served.Add(1)%10 == 0 {
			http.Error(w, "every tenth fails", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	// The server offers HTTP/2; the client must still speak HTTP/1.1.
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := HTTP1Client(caPEM, 5*time.Second, 64)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Config{
		URL: srv.URL, Rate: 200, Duration: 500 * time.Millisecond, Client: c,
		Body: func(int) []byte { return []byte("{}") },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 100 || res.OK != 90 || res.Failed != 10 || served.Load() != 100 {
		t.Errorf("sent %d ok %d failed %d served %d, want 100, 90, 10, 100", res.Sent, res.OK, res.Failed, served.Load())
	}
	if res.FirstError == "" || res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
		t.Errorf("implausible summary %+v", res)
	}
	if h2.Load() != 0 {
		t.Errorf("%d requests used HTTP/2; the API server calls webhooks over HTTP/1.1", h2.Load())
	}
}

func TestRunChecksBodies(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("no")) }))
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := HTTP1Client(caPEM, 5*time.Second, 64)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), Config{
		URL: srv.URL, Rate: 100, Duration: 100 * time.Millisecond, Client: c,
		Body:  func(int) []byte { return nil },
		Check: func(b []byte) error { return errors.New("rejected " + string(b)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Failed != res.Sent || res.FirstError != "rejected no" {
		t.Errorf("checked bodies not counted as failures: %+v", res)
	}
	if _, err := Run(context.Background(), Config{URL: srv.URL}); err == nil {
		t.Error("a config without rate, body or client was accepted")
	}
}
