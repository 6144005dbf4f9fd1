package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// served is the serving certificate this replica presents. The webhook server reads it on every
// TLS handshake, so a swap takes effect for the next connection while connections (and requests)
// already in flight finish on the certificate they started with.
type served struct {
	cert atomic.Pointer[tls.Certificate]
}

// load takes the Secret's serving pair if it is valid now and differs from the current one. It
// returns the newly loaded certificate, or nil when the served one did not change.
func (s *served) load(sec *corev1.Secret, now time.Time) (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: serving certificate: %w", sec.Namespace, sec.Name, err)
	}
	if !validAt(pair.Leaf, now) {
		return nil, fmt.Errorf("secret %s/%s: serving certificate not valid at %s (valid %s to %s)",
			sec.Namespace, sec.Name, now.UTC().Format(time.RFC3339), pair.Leaf.NotBefore.UTC().Format(time.RFC3339), pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if cur := s.cert.Load(); cur != nil && bytes.Equal(cur.Certificate[0], pair.Certificate[0]) {
		return nil, nil
	}
	s.cert.Store(&pair)
	return pair.Leaf, nil
}

// getCertificate is the webhook server's tls.Config.GetCertificate. Until a certificate is
// loaded handshakes fail, which the API server reports like an unreachable webhook.
func (s *served) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate loaded yet")
}

// ready is the readiness check: a serving certificate is loaded and valid now. The key is known
// to match because load only keeps pairs that tls.X509KeyPair accepted.
func (s *served) ready(*http.Request) error {
	c := s.cert.Load()
	if c == nil {
		return errors.New("no serving certificate loaded yet")
	}
	if now := time.Now(); !validAt(c.Leaf, now) {
		return fmt.Errorf("serving certificate expired at %s", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// CertFileReady is the readiness check for certificates managed by someone else (cert-manager, a
// mounted Secret): the webhook server's default certificate watcher reads tls.crt and tls.key in
// certDir, and the check fails until that pair exists, matches and is valid now.
func CertFileReady(certDir string) healthz.Checker {
	certPath, keyPath := filepath.Join(certDir, corev1.TLSCertKey), filepath.Join(certDir, corev1.TLSPrivateKeyKey)
	return func(*http.Request) error {
		pair, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("serving certificate in %s: %w", certDir, err)
		}
		if now := time.Now(); !validAt(pair.Leaf, now) {
			return fmt.Errorf("serving certificate in %s not valid now (valid %s to %s)", certDir,
				pair.Leaf.NotBefore.UTC().Format(time.RFC3339), pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	}
}
