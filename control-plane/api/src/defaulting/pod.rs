//! Pods, pod templates and everything inside a pod spec: containers, probes, volumes.
//!
//! Source: pkg/apis/core/v1/defaults.go and the `+default` markers of
//! staging/src/k8s.io/api/core/v1/types.go, walked in the order
//! pkg/apis/core/v1/zz_generated.defaults.go walks them (`SetObjectDefaults_Pod` for pods,
//! `SetDefaults_PodSpec` and below for the templates of every workload).

use serde_json::{Value, json};

use super::fields::{
    Object, ensure_object, fill, fill_zero, object_mut, objects_mut, path_mut, text, unset, zero,
};
use super::image::default_pull_policy;

/// The taints every pod tolerates for five minutes unless it says otherwise.
const DEFAULT_TOLERATED_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// The seconds of [`DEFAULT_TOLERATED_TAINTS`]: kube-apiserver's
/// `--default-not-ready-toleration-seconds` / `--default-unreachable-toleration-seconds`.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// A Pod: `SetDefaults_Pod` (requests from limits, `enableServiceLinks`, host-network ports),
/// then the pod spec, then the `DefaultTolerationSeconds` admission plugin, which is not
/// defaulting but runs on every pod create and update (plugin/pkg/admission/
/// defaulttolerationseconds/admission.go), and the v1 conversion of `status.podIP(s)`.
pub(super) fn pod(root: &mut Object) {
    if let Some(spec) = ensure_object(root, "spec") {
        pod_only(spec);
        pod_spec(spec);
        default_tolerations(spec);
    }
    if let Some(status) = object_mut(root, "status") {
        mirror_pod_ips(status);
    }
}

/// The pod template at `parent.template`, when there is one: its spec gets the pod spec
/// defaults (not the Pod-only ones).
pub(super) fn template(parent: &mut Object) {
    if let Some(template) = object_mut(parent, "template")
        && let Some(spec) = ensure_object(template, "spec")
    {
        pod_spec(spec);
    }
}

/// pkg/apis/core/v1/defaults.go `SetDefaults_Pod`: what only a Pod gets, not a template.
/// The pod-level resources defaults there are behind `PodLevelResources`, off in v1.33.
fn pod_only(spec: &mut Object) {
    for list in ["containers", "initContainers"] {
        for container in objects_mut(spec, list) {
            requests_from_limits(container);
        }
    }
    fill(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for list in ["containers", "initContainers"] {
            for container in objects_mut(spec, list) {
                for port in objects_mut(container, "ports") {
                    if zero(port, "hostPort")
                        && let Some(number) = port.get("containerPort").cloned()
                    {
                        port.insert("hostPort".into(), number);
                    }
                }
            }
        }
    }
}

/// `SetDefaults_Pod`: a container's requests default to its limits, resource by resource.
fn requests_from_limits(container: &mut Object) {
    let Some(limits) = path_mut(container, &["resources", "limits"])
        .filter(|limits| !limits.is_empty())
        .cloned()
    else {
        return;
    };
    let requests = object_mut(container, "resources").and_then(|r| ensure_object(r, "requests"));
    if let Some(requests) = requests {
        for (resource, quantity) in limits {
            requests.entry(resource).or_insert(quantity);
        }
    }
}

/// pkg/apis/core/v1/defaults.go `SetDefaults_PodSpec` and the defaulters of its volumes and
/// containers; also the v1 conversion's `serviceAccount` alias
/// (pkg/apis/core/v1/conversion.go `Convert_v1_PodSpec_To_core_PodSpec` and back).
pub(super) fn pod_spec(spec: &mut Object) {
    fill_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    fill_zero(spec, "restartPolicy", json!("Always"));
    fill(spec, "securityContext", json!({}));
    fill(spec, "terminationGracePeriodSeconds", json!(30));
    fill_zero(spec, "schedulerName", json!("default-scheduler"));
    service_account_alias(spec);
    for volume in objects_mut(spec, "volumes") {
        self::volume(volume);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for container in objects_mut(spec, list) {
            self::container(container);
        }
    }
}

/// `serviceAccount` is a read-only alias of `serviceAccountName`: the name wins when both are
/// set, the alias fills the name when only it is set, and the alias always mirrors the name.
fn service_account_alias(spec: &mut Object) {
    let name = match text(spec, "serviceAccountName") {
        "" => text(spec, "serviceAccount"),
        name => name,
    }
    .to_owned();
    if !name.is_empty() {
        spec.insert("serviceAccountName".into(), json!(name));
        spec.insert("serviceAccount".into(), json!(name));
    }
}

/// `SetDefaults_Container` (also used for ephemeral containers), the ports' protocol marker,
/// `SetDefaults_ObjectFieldSelector` on env, and the probe and lifecycle-hook defaulters.
fn container(container: &mut Object) {
    if zero(container, "imagePullPolicy") {
        let policy = default_pull_policy(text(container, "image"));
        container.insert("imagePullPolicy".into(), json!(policy));
    }
    fill_zero(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    fill_zero(container, "terminationMessagePolicy", json!("File"));
    for port in objects_mut(container, "ports") {
        fill_zero(port, "protocol", json!("TCP"));
    }
    for env in objects_mut(container, "env") {
        if let Some(field_ref) = path_mut(env, &["valueFrom", "fieldRef"]) {
            field_selector(field_ref);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = object_mut(container, probe) {
            self::probe(probe);
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(http_get) = path_mut(container, &["lifecycle", hook, "httpGet"]) {
            self::http_get(http_get);
        }
    }
}

/// `SetDefaults_Probe`, then its handler: `SetDefaults_HTTPGetAction` and the `+default=""`
/// of `GRPCAction.service`. `exec` and `tcpSocket` have no defaults.
fn probe(probe: &mut Object) {
    fill_zero(probe, "timeoutSeconds", json!(1));
    fill_zero(probe, "periodSeconds", json!(10));
    fill_zero(probe, "successThreshold", json!(1));
    fill_zero(probe, "failureThreshold", json!(3));
    if let Some(http_get) = object_mut(probe, "httpGet") {
        self::http_get(http_get);
    }
    if let Some(grpc) = object_mut(probe, "grpc") {
        fill(grpc, "service", json!(""));
    }
}

/// `SetDefaults_HTTPGetAction`.
fn http_get(action: &mut Object) {
    fill_zero(action, "path", json!("/"));
    fill_zero(action, "scheme", json!("HTTP"));
}

/// `SetDefaults_ObjectFieldSelector`.
fn field_selector(selector: &mut Object) {
    fill_zero(selector, "apiVersion", json!("v1"));
}

/// Every source a volume may name (`VolumeSource` in core/v1 types.go).
const VOLUME_SOURCES: [&str; 30] = [
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// `SetDefaults_Volume` (a volume that names no source is an `emptyDir`; the `image` source's
/// pull policy is behind `ImageVolume`, off in v1.33) and the defaulters of each source.
fn volume(volume: &mut Object) {
    if VOLUME_SOURCES.iter().all(|source| unset(volume, source)) {
        volume.insert("emptyDir".into(), json!({}));
    }
    // SetDefaults_SecretVolumeSource, _ConfigMapVolumeSource, _DownwardAPIVolumeSource,
    // _ProjectedVolumeSource: 0644.
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = object_mut(volume, source) {
            fill(source, "defaultMode", json!(0o644));
        }
    }
    if let Some(downward) = object_mut(volume, "downwardAPI") {
        downward_api_items(downward);
    }
    if let Some(projected) = object_mut(volume, "projected") {
        for source in objects_mut(projected, "sources") {
            if let Some(downward) = object_mut(source, "downwardAPI") {
                downward_api_items(downward);
            }
            // SetDefaults_ServiceAccountTokenProjection: one hour.
            if let Some(token) = object_mut(source, "serviceAccountToken") {
                fill(token, "expirationSeconds", json!(3600));
            }
        }
    }
    persistent_volume_source(volume);
    // SetDefaults_PersistentVolumeClaimSpec on a generic ephemeral volume's claim.
    if let Some(claim) = path_mut(volume, &["ephemeral", "volumeClaimTemplate", "spec"]) {
        claim_spec(claim);
    }
}

/// `fieldRef`s of downward-API items: `SetDefaults_ObjectFieldSelector`.
fn downward_api_items(source: &mut Object) {
    for item in objects_mut(source, "items") {
        if let Some(field_ref) = object_mut(item, "fieldRef") {
            field_selector(field_ref);
        }
    }
}

/// The sources a volume and a PersistentVolume share defaults for: `SetDefaults_HostPathVolumeSource`
/// and the `+default` markers of the iSCSI, RBD, Azure Disk and ScaleIO sources.
pub(super) fn persistent_volume_source(source: &mut Object) {
    if let Some(host_path) = object_mut(source, "hostPath") {
        fill(host_path, "type", json!(""));
    }
    if let Some(iscsi) = object_mut(source, "iscsi") {
        fill_zero(iscsi, "iscsiInterface", json!("default"));
    }
    if let Some(rbd) = object_mut(source, "rbd") {
        fill_zero(rbd, "pool", json!("rbd"));
        fill_zero(rbd, "user", json!("admin"));
        fill_zero(rbd, "keyring", json!("/etc/ceph/keyring"));
    }
    if let Some(azure) = object_mut(source, "azureDisk") {
        fill(azure, "cachingMode", json!("ReadWrite"));
        fill(azure, "fsType", json!("ext4"));
        fill(azure, "readOnly", json!(false));
        fill(azure, "kind", json!("Shared"));
    }
    if let Some(scale_io) = object_mut(source, "scaleIO") {
        fill_zero(scale_io, "storageMode", json!("ThinProvisioned"));
        fill_zero(scale_io, "fsType", json!("xfs"));
    }
}

/// pkg/apis/core/v1/defaults.go `SetDefaults_PersistentVolumeClaimSpec`.
pub(super) fn claim_spec(spec: &mut Object) {
    fill(spec, "volumeMode", json!("Filesystem"));
}

/// The `DefaultTolerationSeconds` admission plugin: a pod that tolerates neither the
/// `not-ready` nor the `unreachable` `NoExecute` taint (a toleration with an empty key or
/// effect counts as tolerating it) gets an `Exists` toleration for it, for 300 seconds.
fn default_tolerations(spec: &mut Object) {
    let tolerates = |taint: &str| {
        spec.get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .any(|toleration| {
                let key = text(toleration, "key");
                let effect = text(toleration, "effect");
                (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
            })
    };
    let missing: Vec<&str> = DEFAULT_TOLERATED_TAINTS
        .into_iter()
        .filter(|taint| !tolerates(taint))
        .collect();
    if missing.is_empty() {
        return;
    }
    if unset(spec, "tolerations") {
        spec.insert("tolerations".into(), json!([]));
    }
    if let Some(tolerations) = spec.get_mut("tolerations").and_then(Value::as_array_mut) {
        for taint in missing {
            tolerations.push(json!({
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

/// pkg/apis/core/v1/conversion.go, `PodStatus` both ways: `podIPs` is the field Kubernetes
/// stores, `podIP` its first entry; when a client sets both and they disagree, `podIP` wins
/// (for older clients' patches).
fn mirror_pod_ips(status: &mut Object) {
    let first = status
        .get("podIPs")
        .and_then(Value::as_array)
        .and_then(|ips| ips.first())
        .and_then(|ip| ip.get("ip"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (text(status, "podIP").to_owned(), first) {
        (single, first) if !single.is_empty() && first.as_deref() != Some(single.as_str()) => {
            status.insert("podIPs".into(), json!([{"ip": single}]));
        }
        (single, Some(first)) if single.is_empty() => {
            status.insert("podIP".into(), json!(first));
        }
        _ => {}
    }
}
