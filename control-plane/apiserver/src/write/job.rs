//! Jobs' create strategy (Kubernetes' `pkg/registry/batch/job` `generateSelector`): unless the
//! Job asks for a manual selector, the server labels its pod template with the Job's name and
//! uid and selects its pods by that uid, so a Job never adopts another's pods.

use serde_json::{Map, Value, json};

use crate::request::Target;

/// The label with the Job's uid that the generated selector matches.
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The labels with the Job's name and uid on its pods, the current ones and the legacy ones.
const NAME_LABELS: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];
const UID_LABELS: [&str; 2] = ["controller-uid", CONTROLLER_UID];

/// Whether `target` is the built-in Job collection.
pub(super) fn is_job(target: &Target) -> bool {
    target.custom.is_none() && target.resource.group == "batch" && target.resource.plural == "jobs"
}

/// Adds the job-name and controller-uid labels the template lacks and selects
/// `batch.kubernetes.io/controller-uid=<uid>`, when `spec.manualSelector` is not true. A user's
/// conflicting label or selector is left for validation to refuse.
pub(super) fn prepare_for_create(object: &mut Value) {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (Some(name), Some(uid)) = (name, uid) else {
        return;
    };
    if object
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let labels = entry_object(
        entry_object(entry_object(spec, "template"), "metadata"),
        "labels",
    );
    for key in NAME_LABELS {
        labels.entry(key).or_insert_with(|| json!(name));
    }
    for key in UID_LABELS {
        labels.entry(key).or_insert_with(|| json!(uid));
    }
    let selector = entry_object(entry_object(spec, "selector"), "matchLabels");
    selector.entry(CONTROLLER_UID).or_insert_with(|| json!(uid));
}

/// The object at `key`, made one (replacing a `null` or missing value) when needed.
fn entry_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let value = map.entry(key).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    match value {
        Value::Object(object) => object,
        _ => unreachable!("made an object just above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_selector_and_labels() {
        let mut job = json!({
            "metadata": {"name": "pi", "uid": "4f1c"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi", "job-name": "mine"}}}},
        });
        prepare_for_create(&mut job);
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({
                "app": "pi",
                "job-name": "mine",
                "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "4f1c",
                "batch.kubernetes.io/controller-uid": "4f1c",
            })
        );
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "4f1c"}})
        );

        let manual = json!({
            "metadata": {"name": "pi", "uid": "4f1c"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}}},
        });
        let mut same = manual.clone();
        prepare_for_create(&mut same);
        assert_eq!(same, manual, "a manual selector is the user's");
    }
}
