//! `labelSelector` and `fieldSelector` query parameters as the API server parses them, then
//! matched against objects.

use std::collections::BTreeMap;

use keelson_api::selectors::{FieldSelector, LabelSelector};
use serde_json::json;

/// `labelSelector=<text>`, matched against a few label sets.
pub(crate) fn labels(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let Ok(selector) = LabelSelector::parse(text) else {
        return;
    };
    let sets: [BTreeMap<String, String>; 3] = [
        BTreeMap::new(),
        BTreeMap::from([("app".into(), "web".into())]),
        BTreeMap::from([
            ("app".into(), "web".into()),
            ("tier".into(), "2".into()),
            ("example.com/role".into(), "".into()),
        ]),
    ];
    for labels in &sets {
        let _ = selector.matches(labels);
    }
}

/// `fieldSelector=<text>` for pods (whose supported fields kube lists), matched against a pod.
pub(crate) fn fields(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let supported = [
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    let Ok(selector) = FieldSelector::parse(text, &supported) else {
        return;
    };
    let pod = json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "n1", "hostNetwork": false, "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIP": "10.0.0.5"}});
    let _ = selector.matches(&pod);
}
