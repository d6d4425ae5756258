//! Every patch type on live objects: merge, strategic merge and JSON patch bodies through the
//! API server's own decoding and `patch_document`, and server-side apply configurations
//! through `managed_fields::apply` (first apply, a second manager without and with force).

use keelson_api::managed_fields::{Apply, SchemaRef, apply as ssa};
use keelson_apiserver::fuzzing::{decode_body, patch};
use serde_json::{Value, json};

/// Objects as a client sees them, one per shape of schema: a Pod (lists merged by key), a
/// Deployment (nested templates) and a Service (ports keyed by port and protocol).
fn live_objects() -> [Value; 3] {
    [
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                "resourceVersion": "7", "uid": "0b5e3c2e-4c6f-4cc3-9a55-1d2f1f0e7a10"},
            "spec": {"containers": [
                {"name": "app", "image": "busybox", "ports": [{"containerPort": 80}],
                 "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "busybox", "args": ["sleep", "1d"]}],
                "tolerations": [{"key": "k", "operator": "Exists"}]},
            "status": {"phase": "Running"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    ]
}

/// Applies the body as `content_type` to every live object; a patched object is then decoded
/// as the handler decodes it before validation.
fn patch_all(content_type: &str, data: &[u8]) {
    for mut object in live_objects() {
        if patch(content_type, &mut object, data).is_ok() {
            let bytes = serde_json::to_vec(&object).expect("a JSON value serializes");
            let _ = decode_body("application/json", &bytes);
        }
    }
}

/// `application/merge-patch+json`.
pub(crate) fn merge(data: &[u8]) {
    patch_all("application/merge-patch+json", data);
}

/// `application/strategic-merge-patch+json`.
pub(crate) fn strategic(data: &[u8]) {
    patch_all("application/strategic-merge-patch+json", data);
}

/// `application/json-patch+json`.
pub(crate) fn json(data: &[u8]) {
    patch_all("application/json-patch+json", data);
}

/// `application/apply-patch+yaml`: the configuration decoded as the apply handler decodes
/// it, then applied to nothing (create) and to the live object of its kind, by a first
/// manager and by a second one without and with `force`.
pub(crate) fn apply(data: &[u8]) {
    let Some(Ok(config)) = decode_body("application/apply-patch+yaml", data)
        .into_iter()
        .nth(1)
    else {
        return;
    };
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let schema = SchemaRef::builtin(group, kind).unwrap_or_else(SchemaRef::deduced);
    let options = |manager, force| Apply {
        manager,
        api_version,
        kind,
        time: "2026-01-01T00:00:00Z",
        subresource: None,
        has_status: true,
        force,
        schema,
    };
    let live = live_objects()
        .into_iter()
        .find(|o| o["apiVersion"] == api_version && o["kind"] == kind);
    let _ = ssa(None, &config, &options("first", false));
    if let Some(live) = live
        && let Ok(applied) = ssa(Some(&live), &config, &options("first", false))
    {
        let mut changed = config.clone();
        if let Some(meta) = changed.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("labels".into(), json!({"app": "other"}));
        }
        let _ = ssa(Some(&applied), &changed, &options("second", false));
        let _ = ssa(Some(&applied), &changed, &options("kubectl", true));
    }
}
