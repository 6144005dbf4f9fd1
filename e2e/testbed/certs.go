package testbed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// frontProxyClientName is the only front-proxy client kube-apiserver accepts.
const frontProxyClientName = "front-proxy-client"

// certLifetime outlives any test run or a developer's long-lived `testbed up`.
const certLifetime = 365 * 24 * time.Hour

// keyPair is a certificate with its key, in PEM.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer

	CertPEM []byte
	KeyPEM  []byte
}

// pki holds everything the control plane authenticates with; all of it lives in Dir/pki.
type pki struct {
	CA      *keyPair
	Serving *keyPair // kube-apiserver
	Admin   *keyPair // system:masters
	KCM     *keyPair // system:kube-controller-manager
	Sched   *keyPair // system:kube-scheduler

	CAFile, CAKeyFile               string
	ServingCertFile, ServingKeyFile string
	SAKeyFile, SAPubFile            string
	// The front proxy (aggregation layer) identity; configuring it also gives kube-controller-manager and
	// kube-scheduler the request-header CA they otherwise complain about in their logs forever.
	FrontProxyCAFile, FrontProxyCertFile, FrontProxyKeyFile string
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := newCert(nil, x509.Certificate{
		Subject:               pkix.Name{CommonName: "canarygate-testbed-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return nil, err
	}
	serving, err := newCert(ca, x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
	})
	if err != nil {
		return nil, err
	}
	client := func(user string, groups ...string) (*keyPair, error) {
		return newCert(ca, x509.Certificate{
			Subject:     pkix.Name{CommonName: user, Organization: groups},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
	}
	p := &pki{CA: ca, Serving: serving}
	if p.Admin, err = client("canarygate-testbed-admin", "system:masters"); err != nil {
		return nil, err
	}
	if p.KCM, err = client("system:kube-controller-manager"); err != nil {
		return nil, err
	}
	if p.Sched, err = client("system:kube-scheduler"); err != nil {
		return nil, err
	}

	frontCA, err := newCert(nil, x509.Certificate{
		Subject:               pkix.Name{CommonName: "canarygate-testbed-front-proxy-ca"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return nil, err
	}
	frontClient, err := newCert(frontCA, x509.Certificate{
		Subject:     pkix.Name{CommonName: frontProxyClientName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}

	// Service-account tokens are signed with RSA, the one algorithm every verifier accepts.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}

	p.CAFile = filepath.Join(dir, "ca.crt")
	p.CAKeyFile = filepath.Join(dir, "ca.key")
	p.ServingCertFile = filepath.Join(dir, "apiserver.crt")
	p.ServingKeyFile = filepath.Join(dir, "apiserver.key")
	p.SAKeyFile = filepath.Join(dir, "sa.key")
	p.SAPubFile = filepath.Join(dir, "sa.pub")
	p.FrontProxyCAFile = filepath.Join(dir, "front-proxy-ca.crt")
	p.FrontProxyCertFile = filepath.Join(dir, "front-proxy-client.crt")
	p.FrontProxyKeyFile = filepath.Join(dir, "front-proxy-client.key")
	files := map[string][]byte{
		p.FrontProxyCAFile:   frontCA.CertPEM,
		p.FrontProxyCertFile: frontClient.CertPEM,
		p.FrontProxyKeyFile:  frontClient.KeyPEM,
		p.CAFile:             ca.CertPEM,
		p.CAKeyFile:          ca.KeyPEM,
		p.ServingCertFile:    serving.CertPEM,
		p.ServingKeyFile:     serving.KeyPEM,
		p.SAKeyFile:          pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		p.SAPubFile:          pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newCert creates a certificate from tmpl signed by parent, or self-signed when parent is nil.
func newCert(parent *keyPair, tmpl x509.Certificate) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	// Backdated so that a clock a little behind never rejects a fresh certificate.
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(certLifetime)
	signerCert, signerKey := &tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}
