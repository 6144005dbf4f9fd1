// Package trafficsim stands in for the Istio data plane, which cannot run on the test bed: it
// exports the request telemetry Istio's sidecars would, for traffic that follows the
// VirtualServices in the API server, so that a real Prometheus can scrape it and canarygate's
// analysis sees what it would see in a mesh.
//
// # Metrics
//
// GET /metrics serves, in the Prometheus text format, istio_requests_total (counter) and
// istio_request_duration_milliseconds (histogram with Istio's default buckets, see Buckets), with
// Istio's standard labels as the server-side proxy reports them: reporter="destination",
// source_workload, source_workload_namespace, source_principal, source_app, source_version,
// source_canonical_service, source_canonical_revision, source_cluster, destination_workload (the
// Deployment), destination_workload_namespace, destination_principal
// (spiffe://cluster.local/ns/<ns>/sa/<serviceAccount>), destination_app and destination_version
// (pod labels app and version, else "unknown"), destination_service (<svc>.<ns>.svc.cluster.local
// of the Service the request was routed to, so <name>-canary for canary traffic),
// destination_service_name, destination_service_namespace, destination_canonical_service,
// destination_canonical_revision, destination_cluster="Kubernetes", request_protocol="http",
// response_code ("200", or "500" for errors), grpc_response_status="", response_flags="-" and
// connection_security_policy="mutual_tls". As in Istio, a series appears only once a request
// happened: a workload that no weight reaches has none.
//
// # Routing
//
// Requests are addressed to a Service. The simulator watches Services, Deployments and
// networking.istio.io/v1 VirtualServices (all namespaces) and routes as a sidecar would:
//   - the VirtualService that applies is one for the mesh (no gateways, or "mesh") whose hosts name
//     the Service (short name resolved in the VirtualService's namespace, name.ns, name.ns.svc or
//     name.ns.svc.<domain>); with several, the oldest;
//   - its first HTTP route without match conditions (or matching every path, uri prefix "/") is
//     taken, as a request without particular headers would; none means no workload is reached;
//   - destinations split by weight/sum(weights), a lone destination takes everything;
//   - without a VirtualService the Service's own pods serve everything;
//   - a destination Service's requests go to the Deployments whose pod template labels match its
//     selector, in proportion to their spec.replicas (the endpoints a round robin would spread over).
//
// # Accounting
//
// Every tick (100 ms by default) each Service's rate times the elapsed time is split by route.
// Fractions of a request carry over to the next tick per path, and so do fractions of an error, so
// the counts are exact and repeatable: 20 rps split 80/20 for 10 s yields exactly 160 and 40
// requests. Each request takes the workload's latency exactly (one histogram observation per
// request); errors answer 500.
//
// # Control API (JSON)
//
//	PUT    /services/{namespace}/{name}   {"rps": 20}          requests per second to the Service (0 stops)
//	DELETE /services/{namespace}/{name}                        stop sending to the Service
//	PUT    /workloads/{namespace}/{name}  {"errorRatio": 0.1, "latencyMs": 300}
//	                                                           how the Deployment answers: errorRatio 0–1 of
//	                                                           requests fail with 500; every request takes
//	                                                           latencyMs. Omitted fields keep their value.
//	DELETE /workloads/{namespace}/{name}                       back to the defaults (Options.Default)
//	GET    /state                                              settings and current routing (State)
//
// Successful writes answer 204, invalid ones 400 with the reason. Go tests may call
// SetServiceRate and SetWorkload directly instead.
package trafficsim
