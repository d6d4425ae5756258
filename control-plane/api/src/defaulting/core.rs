//! The core group (`""`, v1) apart from what lives in [`super::pod`] and [`super::service`].
//!
//! Source: pkg/apis/core/v1/defaults.go and its zz_generated.defaults.go, plus the v1 conversions
//! of pkg/apis/core/v1/conversion.go where a deprecated field mirrors another.

use serde_json::{Value, json};

use super::fields::{
    Object, empty, ensure_object, fill, fill_zero, object_mut, objects_mut, text, unset,
};
use super::{pod, service};

/// Applies the defaults of core/v1 kind `kind`.
pub(super) fn apply(kind: &str, root: &mut Object) {
    match kind {
        "Pod" => pod::pod(root),
        "PodTemplate" => pod::template(root),
        "Service" => service::service(root),
        "ReplicationController" => replication_controller(root),
        "Namespace" => namespace(root),
        "Node" => node(root),
        "PersistentVolume" => persistent_volume(root),
        "PersistentVolumeClaim" => persistent_volume_claim(root),
        "Endpoints" => endpoints(root),
        "LimitRange" => limit_range(root),
        "Secret" => secret(root),
        // ConfigMap: SetDefaults_ConfigMap makes `data` an empty map, which v1 JSON omits.
        // Event, ServiceAccount, ResourceQuota: no defaults (ResourceQuota only rounds
        // quantities, see the module docs of `defaulting`).
        _ => {}
    }
}

/// `SetDefaults_ReplicationController`: the selector and the object's labels default to the
/// template's labels; one replica; the template gets the pod spec defaults.
fn replication_controller(root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    fill(spec, "replicas", json!(1));
    let labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|labels| labels.as_object().is_some_and(|l| !l.is_empty()))
        .cloned();
    pod::template(spec);
    if let Some(labels) = labels {
        if empty(spec, "selector") {
            spec.insert("selector".into(), labels.clone());
        }
        default_labels(root, labels);
    }
}

/// `metadata.labels` becomes `labels` when the object has none (RC and Job defaulting).
pub(super) fn default_labels(root: &mut Object, labels: Value) {
    if let Some(metadata) = ensure_object(root, "metadata")
        && empty(metadata, "labels")
    {
        metadata.insert("labels".into(), labels);
    }
}

/// `SetDefaults_Namespace`: the `kubernetes.io/metadata.name` label always equals the name (a
/// different value the client sent is replaced, as Kubernetes does); `SetDefaults_NamespaceStatus`:
/// phase `Active`.
fn namespace(root: &mut Object) {
    if let Some(metadata) = object_mut(root, "metadata") {
        let name = text(metadata, "name").to_owned();
        if !name.is_empty()
            && let Some(labels) = ensure_object(metadata, "labels")
        {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(status) = ensure_object(root, "status") {
        fill_zero(status, "phase", json!("Active"));
    }
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity. The v1 conversion of `NodeSpec`:
/// `podCIDRs` is stored, `podCIDR` is its first entry, and `podCIDR` wins when a client sets both
/// and they disagree.
fn node(root: &mut Object) {
    if let Some(spec) = object_mut(root, "spec") {
        let single = text(spec, "podCIDR").to_owned();
        let first = spec
            .get("podCIDRs")
            .and_then(Value::as_array)
            .and_then(|cidrs| cidrs.first())
            .and_then(Value::as_str)
            .map(str::to_owned);
        match first {
            Some(first) if single.is_empty() => {
                spec.insert("podCIDR".into(), json!(first));
            }
            first if !single.is_empty() && first.as_deref() != Some(single.as_str()) => {
                spec.insert("podCIDRs".into(), json!([single]));
            }
            _ => {}
        }
    }
    if let Some(status) = object_mut(root, "status")
        && unset(status, "allocatable")
        && let Some(capacity) = status
            .get("capacity")
            .filter(|c| c.as_object().is_some_and(|c| !c.is_empty()))
            .cloned()
    {
        status.insert("allocatable".into(), capacity);
    }
}

/// `SetDefaults_PersistentVolume`: phase `Pending`, reclaim policy `Retain`, volume mode
/// `Filesystem`; and the defaults of its volume source.
fn persistent_volume(root: &mut Object) {
    if let Some(spec) = ensure_object(root, "spec") {
        fill_zero(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        fill(spec, "volumeMode", json!("Filesystem"));
        pod::persistent_volume_source(spec);
    }
    if let Some(status) = ensure_object(root, "status") {
        fill_zero(status, "phase", json!("Pending"));
    }
}

/// `SetDefaults_PersistentVolumeClaim` (phase `Pending`) and `_PersistentVolumeClaimSpec`
/// (volume mode `Filesystem`). Also used for StatefulSet claim templates.
pub(super) fn persistent_volume_claim(root: &mut Object) {
    if let Some(spec) = ensure_object(root, "spec") {
        pod::claim_spec(spec);
    }
    if let Some(status) = ensure_object(root, "status") {
        fill_zero(status, "phase", json!("Pending"));
    }
}

/// `SetDefaults_Endpoints`: ports are TCP.
fn endpoints(root: &mut Object) {
    for subset in objects_mut(root, "subsets") {
        for port in objects_mut(subset, "ports") {
            fill_zero(port, "protocol", json!("TCP"));
        }
    }
}

/// `SetDefaults_LimitRangeItem`, for items of type `Container`: the default limit comes from
/// `max`, the default request from the default limit, else from `min`, resource by resource.
fn limit_range(root: &mut Object) {
    let Some(spec) = object_mut(root, "spec") else {
        return;
    };
    for item in objects_mut(spec, "limits") {
        if text(item, "type") != "Container" {
            continue;
        }
        let resources = |item: &Object, key: &str| {
            item.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let mut default = resources(item, "default");
        for (name, quantity) in resources(item, "max") {
            default.entry(name).or_insert(quantity);
        }
        let mut request = resources(item, "defaultRequest");
        for (name, quantity) in default.iter().chain(&resources(item, "min")) {
            request
                .entry(name.clone())
                .or_insert_with(|| quantity.clone());
        }
        // Kubernetes makes both maps even when they stay empty; v1 JSON omits empty maps.
        if !default.is_empty() {
            item.insert("default".into(), Value::Object(default));
        }
        if !request.is_empty() {
            item.insert("defaultRequest".into(), Value::Object(request));
        }
    }
}

/// `SetDefaults_Secret`: type `Opaque`. The v1 conversion (`Convert_v1_Secret_To_core_Secret`):
/// `stringData` is write-only; its entries overwrite `data` (base64-encoded) and it is dropped.
fn secret(root: &mut Object) {
    fill_zero(root, "type", json!("Opaque"));
    // Anything but an object (or null) is left for validation to report.
    if !matches!(root.get("stringData"), Some(Value::Object(_) | Value::Null)) {
        return;
    }
    let Some(Value::Object(strings)) = root.remove("stringData") else {
        return;
    };
    if strings.is_empty() {
        return;
    }
    if let Some(data) = ensure_object(root, "data") {
        for (key, value) in strings {
            if let Value::String(text) = value {
                data.insert(key, Value::String(base64(text.as_bytes())));
            }
        }
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
