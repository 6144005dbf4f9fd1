package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestApplyBootstrapRoundTrip(t *testing.T) {
	sec := newTLSSecret()
	d := decide(t0, pTest, state{}, false)
	if err := apply(t0, pTest, state{}, d, sec); err != nil {
		t.Fatal(err)
	}
	s := readState(sec)
	if s.signer == nil || s.serving == nil || len(s.bundle) != 1 || !s.bundle[0].Equal(s.signer.cert) {
		t.Fatalf("bootstrap Secret does not read back: signer=%v serving=%v bundle=%d", s.signer != nil, s.serving != nil, len(s.bundle))
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sec.Data[bundleKey])
	for _, name := range pTest.dnsNames {
		if _, err := s.serving.cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: t0}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := s.serving.cert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: pool, CurrentTime: t0}); err != nil {
		t.Errorf("IP SAN: %v", err)
	}
	if got := s.serving.cert.NotAfter; !got.Equal(t0.Add(pTest.certValidity).Truncate(time.Second)) {
		t.Errorf("serving NotAfter %s, want %s", got, t0.Add(pTest.certValidity))
	}
	if d := decide(t0, pTest, s, false); d.changes() {
		t.Errorf("a fresh Secret needs changes again: %+v", d)
	}
}

func TestTrustedAnnotation(t *testing.T) {
	sec := newTLSSecret()
	if err := apply(t0, pTest, state{}, decide(t0, pTest, state{}, false), sec); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(3 * time.Second)
	cur := readState(sec)
	if err := apply(at, pTest, cur, decision{markTrusted: true, bundle: cur.bundle}, sec); err != nil {
		t.Fatal(err)
	}
	if got := readState(sec).trustedSince; !got.Equal(at) {
		t.Fatalf("trustedSince %s, want %s", got, at)
	}

	// The mark belongs to one CA: a new signer clears it, and a mark for another CA is ignored.
	stale := sec.Annotations[trustedAnnotation]
	cur = readState(sec)
	if err := apply(at, pTest, cur, decision{newSigner: true, bundle: cur.bundle}, sec); err != nil {
		t.Fatal(err)
	}
	if _, ok := sec.Annotations[trustedAnnotation]; ok {
		t.Error("new signer kept the trusted mark")
	}
	sec.Annotations[trustedAnnotation] = stale
	if got := readState(sec).trustedSince; !got.IsZero() {
		t.Errorf("mark of the previous CA read as trusted since %s", got)
	}
	for _, bad := range []string{"", "nonsense", fingerprint(readState(sec).signer.cert) + " yesterday"} {
		if got := parseTrusted(bad, readState(sec).signer.cert); !got.IsZero() {
			t.Errorf("%q parsed as %s", bad, got)
		}
	}
}

func TestReadStateTreatsDamageAsMissing(t *testing.T) {
	ca := mustCA(t, t0, pTest.caValidity)
	other := mustCA(t, t0, pTest.caValidity)
	leaf := mustServing(t, ca, t0, pTest.certValidity, pTest.dnsNames)
	tests := []struct {
		name            string
		data            map[string][]byte
		signer, serving bool
		bundle          int
	}{
		{name: "nil data"},
		{name: "complete", data: map[string][]byte{
			bundleKey: ca.certPEM, signerCertKey: ca.certPEM, signerKeyKey: ca.keyPEM,
			corev1.TLSCertKey: leaf.certPEM, corev1.TLSPrivateKeyKey: leaf.keyPEM,
		}, signer: true, serving: true, bundle: 1},
		{name: "signer key of another CA", data: map[string][]byte{signerCertKey: ca.certPEM, signerKeyKey: other.keyPEM}},
		{name: "leaf as signer", data: map[string][]byte{signerCertKey: leaf.certPEM, signerKeyKey: leaf.keyPEM}},
		{name: "serving key of another pair", data: map[string][]byte{corev1.TLSCertKey: leaf.certPEM, corev1.TLSPrivateKeyKey: ca.keyPEM}},
		{name: "junk and a leaf in the bundle are skipped", data: map[string][]byte{
			bundleKey: append(append(append([]byte("junk\n"), leaf.certPEM...), ca.certPEM...), other.certPEM...),
		}, bundle: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := readState(&corev1.Secret{Data: tc.data})
			if (s.signer != nil) != tc.signer || (s.serving != nil) != tc.serving || len(s.bundle) != tc.bundle {
				t.Errorf("signer=%v serving=%v bundle=%d, want %v %v %d", s.signer != nil, s.serving != nil, len(s.bundle), tc.signer, tc.serving, tc.bundle)
			}
		})
	}
}

func TestOptionsPolicy(t *testing.T) {
	valid := Options{Namespace: "ns", SecretName: "s", ServiceName: "svc"}
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{name: "defaults", mutate: func(*Options) {}},
		{name: "seconds-scale rotation", mutate: func(o *Options) {
			o.CAValidity, o.CertValidity, o.RenewBefore, o.TrustDelay = 20*time.Second, 10*time.Second, 5*time.Second, time.Second
		}},
		{name: "missing names", mutate: func(o *Options) { *o = Options{} }, wantErr: "Namespace is required"},
		{name: "certificate outlives CA", mutate: func(o *Options) { o.CAValidity, o.CertValidity = time.Hour, 2*time.Hour }, wantErr: "exceeds CAValidity"},
		{name: "renewal window covers the lifetime", mutate: func(o *Options) { o.CertValidity, o.RenewBefore = time.Hour, time.Hour }, wantErr: "RenewBefore"},
		{name: "trust delay longer than the renewal window", mutate: func(o *Options) { o.RenewBefore, o.TrustDelay = time.Minute, time.Minute }, wantErr: "TrustDelay"},
		{name: "negative", mutate: func(o *Options) { o.TrustDelay = -time.Second }, wantErr: "negative"},
		{name: "bad IP", mutate: func(o *Options) { o.ExtraIPs = []string{"127.0.0.1", "not-an-ip"} }, wantErr: `"not-an-ip" is not an IP address`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.mutate(&o)
			p, err := o.policy()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if want := []string{"svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"}; !sameSet(p.dnsNames, want) {
					t.Errorf("DNS names %v, want %v", p.dnsNames, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestServedLoadAndReady(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, now, time.Hour)
	leaf := mustServing(t, ca, now, 30*time.Minute, pTest.dnsNames)
	expired := mustServing(t, ca, now.Add(-2*time.Hour), time.Hour, pTest.dnsNames)
	secret := func(k *keyPair, key []byte) *corev1.Secret {
		return &corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: k.certPEM, corev1.TLSPrivateKeyKey: key}}
	}

	var s served
	if s.ready(nil) == nil {
		t.Error("ready before anything was loaded")
	}
	if _, err := s.getCertificate(nil); err == nil {
		t.Error("handshake would succeed without a certificate")
	}
	if _, err := s.load(secret(leaf, ca.keyPEM), now); err == nil {
		t.Error("mismatched key loaded")
	}
	if _, err := s.load(secret(expired, expired.keyPEM), now); err == nil {
		t.Error("expired certificate loaded")
	}
	if s.ready(nil) == nil {
		t.Error("ready after only invalid certificates")
	}
	if got, err := s.load(secret(leaf, leaf.keyPEM), now); err != nil || got == nil {
		t.Fatalf("valid certificate not loaded: %v", err)
	}
	if got, err := s.load(secret(leaf, leaf.keyPEM), now); err != nil || got != nil {
		t.Errorf("reloading the same certificate reported a change (%v)", err)
	}
	if err := s.ready(nil); err != nil {
		t.Errorf("not ready with a valid certificate: %v", err)
	}
	if c, err := s.getCertificate(nil); err != nil || !c.Leaf.Equal(leaf.cert) {
		t.Errorf("handshake certificate is not the loaded one (%v)", err)
	}
}

func TestCertFileReady(t *testing.T) {
	now := time.Now()
	ca := mustCA(t, now, time.Hour)
	leaf := mustServing(t, ca, now, 30*time.Minute, pTest.dnsNames)
	expired := mustServing(t, ca, now.Add(-2*time.Hour), time.Hour, pTest.dnsNames)
	tests := []struct {
		name      string
		cert, key []byte
		ready     bool
	}{
		{name: "missing"},
		{name: "valid pair", cert: leaf.certPEM, key: leaf.keyPEM, ready: true},
		{name: "key of another certificate", cert: leaf.certPEM, key: ca.keyPEM},
		{name: "expired", cert: expired.certPEM, key: expired.keyPEM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.cert != nil {
				if err := os.WriteFile(filepath.Join(dir, "tls.crt"), tc.cert, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "tls.key"), tc.key, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := CertFileReady(dir)(nil); (err == nil) != tc.ready {
				t.Errorf("ready error %v, want ready=%v", err, tc.ready)
			}
		})
	}
}
