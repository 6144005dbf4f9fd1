// Package integration runs the controllers in an in-process manager against the test bed: a real
// kube-apiserver (kwok rolling Deployments out), a real Prometheus scraping the traffic simulator,
// which follows the VirtualService weights. The mutating webhook does not run here, so the tests
// write the desired-* annotations themselves, exactly as the webhook would.
package integration
