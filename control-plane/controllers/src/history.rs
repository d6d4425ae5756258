//! ControllerRevisions: the template history DaemonSets and StatefulSets keep, so that
//! `kubectl rollout history` lists it and `kubectl rollout undo` can patch an old template back.
//!
//! Pure helpers shared by the DaemonSet and StatefulSet controllers, after
//! `k8s.io/kubernetes/pkg/controller/history`: a revision holds a strategic-merge patch that
//! replaces `spec.template`, is named `<parent>-<hash>`, labelled with the parent's selector
//! labels and `controller.kubernetes.io/hash`, and numbered one above the highest existing one.
//! Revisions that no live pod uses are deleted oldest first beyond `revisionHistoryLimit`.

use std::{cmp::Ordering, collections::BTreeMap, collections::BTreeSet};

use k8s_openapi::{
    api::{apps::v1::ControllerRevision, core::v1::PodTemplateSpec},
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference},
        runtime::RawExtension,
    },
};
use serde_json::{Value, json};

/// The label holding a revision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Kubernetes' safe alphabet for generated name parts (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a (32 bit) of `bytes`, written as its decimal digits mapped through Kubernetes' safe
/// alphabet (as `rand.SafeEncodeString(fmt.Sprint(hash))` does).
pub fn safe_hash(bytes: &[u8]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|d| char::from(SAFE_ALPHABET[usize::from(d) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The hash of a revision's data, salted with the parent's `status.collisionCount` when set (a
/// collision with a revision of different data bumps the count and so the name).
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut text = data.to_string();
    if let Some(count) = collision_count {
        text.push_str(&count.to_string());
    }
    safe_hash(text.as_bytes())
}

/// A revision's data for a pod template: the patch `kubectl rollout undo` applies,
/// `{"spec":{"template":{...,"$patch":"replace"}}}`.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut template {
        map.insert("$patch".to_owned(), Value::String("replace".to_owned()));
    }
    json!({ "spec": { "template": template } })
}

/// The pod template a revision's data holds (the inverse of [`template_patch`]).
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// `<parent>-<hash>`, the parent's name cut so the whole fits in a DNS subdomain.
pub fn revision_name(parent: &str, hash: &str) -> String {
    const MAX: usize = 253;
    let room = MAX.saturating_sub(hash.len() + 1);
    let parent: String = parent.chars().take(room).collect();
    format!("{parent}-{hash}")
}

/// A new revision of `parent` (in its namespace, controlled by `owner`), labelled with `labels`
/// (the parent's selector labels) and [`HASH_LABEL`].
pub fn new_revision(
    parent: &ObjectMeta,
    owner: OwnerReference,
    mut labels: BTreeMap<String, String>,
    data: Value,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let hash = hash(&data, collision_count);
    let name = revision_name(parent.name.as_deref().unwrap_or_default(), &hash);
    labels.insert(HASH_LABEL.to_owned(), hash);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: parent.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// The number the next revision gets: one above the highest, 1 for the first.
pub fn next_revision(revisions: &[ControllerRevision]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Oldest first: by revision number, then creation time, then name.
pub fn compare(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    a.revision
        .cmp(&b.revision)
        .then_with(|| {
            let time = |r: &ControllerRevision| r.metadata.creation_timestamp.clone().map(|t| t.0);
            time(a).cmp(&time(b))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The revisions holding the same data as `data` (Kubernetes compares the raw data, the hash
/// label only narrows the search), oldest first.
pub fn equal_revisions<'a>(
    revisions: &'a [ControllerRevision],
    data: &Value,
) -> Vec<&'a ControllerRevision> {
    let mut equal: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| r.data.as_ref().is_some_and(|d| &d.0 == data))
        .collect();
    equal.sort_by(|a, b| compare(a, b));
    equal
}

/// The names of the revisions to delete: those not in `live` (the current and update revisions
/// and those running pods still use), oldest first, beyond `limit` (`revisionHistoryLimit`,
/// Kubernetes' default 10).
pub fn to_truncate(
    revisions: &[ControllerRevision],
    live: &BTreeSet<String>,
    limit: Option<i32>,
) -> Vec<String> {
    let limit = usize::try_from(limit.unwrap_or(10)).unwrap_or(0);
    let mut history: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| {
            r.metadata
                .name
                .as_ref()
                .is_none_or(|name| !live.contains(name))
        })
        .collect();
    history.sort_by(|a, b| compare(a, b));
    let excess = history.len().saturating_sub(limit);
    history
        .into_iter()
        .take(excess)
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(name: &str, number: i64, image: &str) -> ControllerRevision {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .expect("a template");
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(template_patch(&template))),
            revision: number,
        }
    }

    #[test]
    fn the_patch_replaces_the_template_and_reads_back() {
        let r = revision("ds-1", 1, "nginx:1");
        let data = &r.data.as_ref().expect("data").0;
        assert_eq!(
            data.pointer("/spec/template/$patch"),
            Some(&json!("replace"))
        );
        let template = template_of(&r).expect("a template back");
        let image = template.spec.expect("spec").containers[0].image.clone();
        assert_eq!(image.as_deref(), Some("nginx:1"));
    }

    #[test]
    fn hashes_are_stable_safe_and_salted_by_collisions() {
        let data = json!({"spec": {"template": {"a": 1}}});
        let h = hash(&data, None);
        assert_eq!(h, hash(&data, None));
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert_ne!(h, hash(&data, Some(1)));
        assert_ne!(hash(&data, Some(1)), hash(&data, Some(2)));
        assert_ne!(h, hash(&json!({"spec": {"template": {"a": 2}}}), None));
    }

    #[test]
    fn names_fit_a_dns_subdomain() {
        assert_eq!(revision_name("web", "abc"), "web-abc");
        let long = "a".repeat(300);
        assert_eq!(revision_name(&long, "h1234").len(), 253);
    }

    #[test]
    fn numbering_equality_and_truncation() {
        let revisions = vec![
            revision("r3", 3, "c"),
            revision("r1", 1, "a"),
            revision("r2", 2, "b"),
            revision("r4", 4, "a"),
        ];
        assert_eq!(next_revision(&revisions), 5);
        assert_eq!(next_revision(&[]), 1);
        let data = revisions[1].data.as_ref().expect("data").0.clone();
        let names: Vec<_> = equal_revisions(&revisions, &data)
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        assert_eq!(names, ["r1", "r4"]);
        let live: BTreeSet<String> = ["r4".to_owned()].into();
        assert_eq!(to_truncate(&revisions, &live, Some(1)), ["r1", "r2"]);
        assert_eq!(to_truncate(&revisions, &live, Some(0)), ["r1", "r2", "r3"]);
        assert!(to_truncate(&revisions, &live, None).is_empty());
    }
}
