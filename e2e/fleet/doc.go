// Package fleet applies a folder of manifests the way Rancher Fleet's agent does, so that tests and
// the demo meet canarygate exactly as a real Fleet install would, without running Fleet.
//
// What is emulated, and where it comes from (rancher/fleet internal/helmdeployer and
// internal/cmd/agent/deployer, helm/helm v4 pkg/action and pkg/kube):
//
//   - Ownership metadata. Fleet's Helm post-renderer adds the label objectset.rio.cattle.io/hash and
//     the annotation objectset.rio.cattle.io/id to every object. The id is the "set ID"
//     SafeConcatName(<agent default namespace "default">, <bundle deployment name>); the hash is the
//     hex SHA-1 of the id followed by the (empty) owner-gvk, owner-name and owner-namespace values,
//     so it is the same for every object of a bundle deployment and Fleet finds its objects by it.
//     Helm then adds meta.helm.sh/release-name, meta.helm.sh/release-namespace and the label
//     app.kubernetes.io/managed-by: Helm. The release is named after the bundle and lives in the
//     bundle's default namespace.
//   - A deploy (Apply). Fleet runs Helm v4 with server-side apply. Helm applies every object as the
//     field manager given to it, which is "fleet" here, and does not force conflicts: Helm's
//     Upgrade.ForceConflicts and Install.ForceConflicts default to false and Fleet leaves them alone.
//     Applier.ForceConflicts exists for experiments; it is off by default for that reason.
//   - Drift correction (CorrectDrift). Fleet calls Helm's rollback to the current release version.
//     Which write that makes depends on the release and on fleet.yaml's correctDrift.force:
//     (a) without force, Helm v4 keeps the release's apply method ("auto"): for a release installed
//     with server-side apply that is a server-side apply of the manifest, the same request as
//     Apply, so scenarios use Apply for it; (b) without force, for a release installed client-side
//     (Fleet with helm.takeOwnership, or releases from before Helm v4) it is Helm's client-side
//     path: for kinds Helm knows (the Kubernetes scheme) a strategic three-way merge patch of the
//     release manifest against itself and the live object, i.e. exactly the declared fields that
//     differ, sent as a PATCH the API server records as an Update; for custom resources a two-way
//     JSON merge patch between the old and the new manifest, which are the same release here, so
//     nothing is sent and drift in a Canary or VirtualService stays; (c) with correctDrift.force,
//     Helm turns server-side apply off and replaces every object with its manifest (a PUT carrying
//     the live resourceVersion), which drops everything the manifest does not set, annotations
//     other controllers added included. CorrectDrift does (b), or (c) when
//     Applier.ForceDriftCorrection is set; missing objects are created in both. All writes use
//     field manager "fleet".
//   - Status (Check). Fleet lists, per kind of the bundle, the live objects carrying the bundle's
//     hash label in the bundle's namespaces; declared objects not among them are "missing",
//     listed objects not declared are orphaned ("extra"), unless labeled
//     objectset.rio.cattle.io/prune: "false". Declared objects are "modified" when Argo CD's diff
//     (vendored by Fleet) finds a difference: a three-way diff with the manifest as both the last
//     applied and the desired state, so only fields the manifest sets are compared. Fields the live
//     object has and the manifest does not (status, server defaults, metadata the server fills in,
//     and annotations other controllers add, such as canarygate's desired-revision,
//     desired-template and promoted-revision) are never reported, exactly like Fleet's default.
//
// Deliberate differences from Fleet, each stricter for the tests: Check also lists Deployments,
// Services, ConfigMaps and Istio VirtualServices when the bundle declares none (Fleet only lists the
// kinds of its bundle), and reports extra objects whether or not an earlier release contained them
// (since fleet#1141 Fleet hides orphans that no previous release contained; Flagger's copies of the
// label used to show up, and a canary controller must never cause them). Fleet's per-bundle diff
// options (comparePatches, jsonPointers) and its scheme-defaulting of both sides are not emulated:
// manifests should be written the way the API server stores them (for example canonical resource
// quantities).
package fleet
