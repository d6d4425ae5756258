//! Pod and object helpers the controllers share: readiness, ownership, selector queries.

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
};
use keelson_api::selectors;

use crate::{Error, Result};

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// The pod's condition of `type_`.
pub fn condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the object has a `deletionTimestamp`.
pub fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The pod's phase (`Pending` when unset).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Not finished (Succeeded/Failed) and not being deleted: what counts towards replicas.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminating(&pod.metadata) && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference to an object.
pub fn owner_reference(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A workload's `spec.selector` as the `labelSelector` query of its list calls
/// ([`keelson_api::selectors::LabelSelector::from_label_selector`]); `object` names the
/// workload in the error when Kubernetes would refuse the selector.
pub fn selector_query(selector: &LabelSelector, object: impl FnOnce() -> String) -> Result<String> {
    parse_selector(selector, object).map(|s| s.to_string())
}

/// A workload's `spec.selector`, parsed for matching labels; `object` names the workload in
/// the error when Kubernetes would refuse the selector.
pub fn parse_selector(
    selector: &LabelSelector,
    object: impl FnOnce() -> String,
) -> Result<selectors::LabelSelector> {
    selectors::LabelSelector::from_label_selector(selector).map_err(|source| Error::Selector {
        object: object(),
        source,
    })
}

/// Seconds since the Unix epoch of a timestamp (0 when absent).
pub fn seconds(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    time.map_or(0, |t| t.0.as_second())
}

/// Now, as a Kubernetes `Time`.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selector_queries() {
        let mut selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["b".into(), "a".into()]),
            }]),
        };
        let query = selector_query(&selector, || "ReplicaSet default/web".into());
        assert_eq!(query.expect("valid"), "app=web,tier in (a,b)");
        selector.match_expressions.as_mut().unwrap()[0].operator = "Matches".into();
        let error = selector_query(&selector, || "ReplicaSet default/web".into())
            .expect_err("unknown operator");
        assert_eq!(
            crate::error_chain(&error),
            "invalid spec.selector of ReplicaSet default/web: \"Matches\" is not a valid label \
             selector operator"
        );
    }
}
