// Package apiproxy is a counting reverse proxy in front of kube-apiserver: a client pointed at it
// (one process' kubeconfig) has every request it sends counted by verb and resource, with no help
// from the client.
package apiproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Proxy forwards plain-HTTP loopback requests to the API server over TLS, adding a bearer token.
type Proxy struct {
	// URL is where clients send requests, http://127.0.0.1:PORT.
	URL string

	mu        sync.Mutex
	counts    Counts
	perSec    map[int64]int64 // requests by Unix second
	latencies []timed         // every request but watches, in the order they ended
	srv       *http.Server
}

// timed is one request's latency at the proxy, when it ended, and its "verb resource".
type timed struct {
	end     time.Time
	latency time.Duration
	key     string
}

// Counts are requests by "verb resource", for example "patch canaries/status" or "watch pods".
type Counts map[string]int64

// Total is the number of requests.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// ByVerb sums the counts per verb.
func (c Counts) ByVerb() map[string]int64 {
	out := map[string]int64{}
	for k, v := range c {
		verb, _, _ := strings.Cut(k, " ")
		out[verb] += v
	}
	return out
}

// Sub returns c minus earlier, dropping zeros.
func (c Counts) Sub(earlier Counts) Counts {
	out := Counts{}
	for k, v := range c {
		if d := v - earlier[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Start serves the proxy on a free loopback port. token is called for every request until it
// succeeds (the client's credentials may be written after the proxy starts).
func Start(upstream, caFile string, token func() (string, error)) (*Proxy, error) {
	target, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("apiproxy: no certificate in " + caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     90 * time.Second,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{URL: "http://" + l.Addr().String(), counts: Counts{}, perSec: map[int64]int64{}}
	var (
		tokMu  sync.Mutex
		cached string
	)
	bearer := func() (string, error) {
		tokMu.Lock()
		defer tokMu.Unlock()
		if cached == "" {
			t, err := token()
			if err != nil {
				return "", err
			}
			cached = t
		}
		return cached, nil
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport: tr,
		// Watches stream: pass every event on at once.
		FlushInterval: -1,
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t, err := bearer()
			if err != nil {
				http.Error(w, "apiproxy: no token yet: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			key := Classify(r.Method, r.URL)
			p.count(key)
			r.Header.Set("Authorization", "Bearer "+t)
			began := time.Now()
			rp.ServeHTTP(w, r)
			if !strings.HasPrefix(key, "watch ") {
				p.timed(key, began)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *Proxy) count(key string) {
	now := time.Now().Unix()
	p.mu.Lock()
	p.counts[key]++
	p.perSec[now]++
	p.mu.Unlock()
}

func (p *Proxy) timed(key string, began time.Time) {
	end := time.Now()
	p.mu.Lock()
	p.latencies = append(p.latencies, timed{end: end, latency: end.Sub(began), key: key})
	p.mu.Unlock()
}

// Latencies are the latencies, as the proxy saw them (the API server's answer, its queueing under
// API priority and fairness and its calls to admission webhooks included, plus the loopback hop),
// of the requests other than watches that ended between from and to, by "verb resource".
func (p *Proxy) Latencies(from, to time.Time) map[string][]time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]time.Duration{}
	for _, t := range p.latencies {
		if !t.end.Before(from) && !t.end.After(to) {
			out[t.key] = append(out[t.key], t.latency)
		}
	}
	return out
}

// Rate summarises the requests per second between from and to: the busiest second, and how many
// seconds carried at least atLeast requests (a client held at its rate limit shows a plateau).
func (p *Proxy) Rate(from, to time.Time, atLeast int64) (peak int64, secondsAtLeast int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := from.Unix(); s <= to.Unix(); s++ {
		n := p.perSec[s]
		peak = max(peak, n)
		if n >= atLeast {
			secondsAtLeast++
		}
	}
	return peak, secondsAtLeast
}

// Counts is a snapshot of the requests so far.
func (p *Proxy) Counts() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(Counts, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Close stops the proxy, ending the streams it carries.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		return p.srv.Close()
	}
	return nil
}

// Classify names a Kubernetes API request "verb resource", with the verbs the API server's audit
// log uses (get, list, watch, create, update, patch, delete, deletecollection) and the resource
// with its subresource ("canaries/status"); requests outside resources are "get discovery".
func Classify(method string, u *url.URL) string {
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	// /api/v1/... or /apis/<group>/<version>/...
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		rest = parts[3:]
	}
	if len(rest) >= 2 && rest[0] == "namespaces" && len(rest) != 2 {
		// namespaces/<ns>/<resource>...; a bare namespaces/<ns> is the Namespace object itself.
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return strings.ToLower(method) + " discovery"
	}
	resource := rest[0]
	named := len(rest) >= 2
	if len(rest) >= 3 {
		resource += "/" + rest[2]
	}
	q := u.Query()
	var verb string
	switch method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if !named {
			verb = "deletecollection"
		}
	default:
		verb = strings.ToLower(method)
	}
	return verb + " " + resource
}
