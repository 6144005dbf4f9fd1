// Package harness runs the real canarygate binary against a test bed (package e2e/testbed) the way a
// cluster admin installs it, for the end-to-end scenarios, `make run-local` and `make demo`:
//
//   - canarygate's Namespace, ServiceAccount and RBAC come from the install manifests (the kustomize
//     base manifests/default), never from copies;
//   - canarygate runs under its ServiceAccount's identity (a kubeconfig holding a TokenRequest
//     token), so every scenario also proves that the RBAC is sufficient;
//   - the webhook configurations are the generated ones (with the base's selectors and match
//     conditions), pointed by URL at https://127.0.0.1:PORT, and canarygate manages their CA
//     itself (--cert-management=self), as in a real install;
//   - the traffic simulator (e2e/trafficsim) stands in for the Istio data plane, and Prometheus
//     scrapes it and canarygate's metrics endpoint.
//
// Everything listens on loopback on free ports; Stop (or the death of the calling process) ends it.
package harness
