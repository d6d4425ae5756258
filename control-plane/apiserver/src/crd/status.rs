//! The status kube's CRD controllers write: the naming controller's `acceptedNames` and
//! `NamesAccepted` condition (`apiextensions-apiserver/pkg/controller/status/
//! naming_controller.go`), the establishing controller's `Established` condition, and
//! `storedVersions`.

use keelson_store::Store;
use serde_json::{Map, Value, json};

use crate::object::{encode, meta_str, now_rfc3339, set_resource_version};

/// The names other CRDs of the same group have been given: resource names (plural,
/// singular, short names) and kinds (kind, list kind) are each one namespace.
#[derive(Debug, Default)]
struct Taken {
    resources: Vec<String>,
    kinds: Vec<String>,
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

impl Taken {
    fn of(accepted: &Value) -> Self {
        let mut taken = Self::default();
        for key in ["plural", "singular"] {
            taken.resources.push(text(accepted, key).to_owned());
        }
        taken.resources.extend(strings(accepted, "shortNames"));
        for key in ["kind", "listKind"] {
            taken.kinds.push(text(accepted, key).to_owned());
        }
        taken.resources.retain(|s| !s.is_empty());
        taken.kinds.retain(|s| !s.is_empty());
        taken
    }

    fn has_resource(&self, name: &str) -> bool {
        !name.is_empty() && self.resources.iter().any(|n| n == name)
    }

    fn has_kind(&self, name: &str) -> bool {
        !name.is_empty() && self.kinds.iter().any(|n| n == name)
    }
}

/// The accepted names and the `NamesAccepted` condition's (reason, message) — `None` when
/// there is no conflict — of `crd` given what the other CRDs of its group have taken. A
/// name in conflict keeps its previously accepted value; the last conflict found names the
/// condition (kube's order: plural, singular, short names, kind, list kind).
pub(crate) fn accepted_names(crd: &Value, others: &[&Value]) -> (Value, Option<(String, String)>) {
    let spec = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let old = crd
        .pointer("/status/acceptedNames")
        .cloned()
        .unwrap_or(Value::Null);
    let mut taken = Taken::default();
    for other in others {
        let t = Taken::of(
            other
                .pointer("/status/acceptedNames")
                .unwrap_or(&Value::Null),
        );
        taken.resources.extend(t.resources);
        taken.kinds.extend(t.kinds);
    }
    let mut names = Map::new();
    let mut conflict = None;
    let mut pick = |names: &mut Map<String, Value>, key: &str, taken: bool, reason: &str| {
        let wanted = text(&spec, key);
        let value = if taken {
            conflict = Some((reason.to_owned(), format!("\"{wanted}\" is already in use")));
            text(&old, key)
        } else {
            wanted
        };
        if !value.is_empty() {
            names.insert(key.into(), json!(value));
        }
    };
    pick(
        &mut names,
        "plural",
        taken.has_resource(text(&spec, "plural")),
        "PluralConflict",
    );
    pick(
        &mut names,
        "singular",
        taken.has_resource(text(&spec, "singular")),
        "SingularConflict",
    );
    let short = strings(&spec, "shortNames");
    let (short, short_conflict) = match short.iter().find(|s| taken.has_resource(s)) {
        Some(name) => (
            strings(&old, "shortNames"),
            Some((
                "ShortNamesConflict".to_owned(),
                format!("\"{name}\" is already in use"),
            )),
        ),
        None => (short, None),
    };
    if !short.is_empty() {
        names.insert("shortNames".into(), json!(short));
    }
    let mut conflict = short_conflict.or(conflict);
    let mut pick_kind = |names: &mut Map<String, Value>, key: &str, reason: &str| {
        let wanted = text(&spec, key);
        let value = if taken.has_kind(wanted) {
            conflict = Some((reason.to_owned(), format!("\"{wanted}\" is already in use")));
            text(&old, key)
        } else {
            wanted
        };
        if !value.is_empty() {
            names.insert(key.into(), json!(value));
        }
    };
    pick_kind(&mut names, "kind", "KindConflict");
    pick_kind(&mut names, "listKind", "ListKindConflict");
    let categories = strings(&spec, "categories");
    if !categories.is_empty() {
        names.insert("categories".into(), json!(categories));
    }
    (Value::Object(names), conflict)
}

/// Sets condition `kind` in `conditions`, keeping its transition time when its status does
/// not change.
fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let time = match conditions.iter().find(|c| c["type"] == kind) {
        Some(old) if old["status"] == status => old["lastTransitionTime"].clone(),
        _ => json!(now_rfc3339(0)),
    };
    let condition = json!({
        "type": kind,
        "status": status,
        "lastTransitionTime": time,
        "reason": reason,
        "message": message,
    });
    match conditions.iter_mut().find(|c| c["type"] == kind) {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// `crd`'s status given the other CRDs of its group.
pub(crate) fn desired_status(crd: &Value, others: &[&Value]) -> Value {
    let (names, conflict) = accepted_names(crd, others);
    let mut conditions: Vec<Value> = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let was_established = super::condition_true(crd, "Established");
    match &conflict {
        None => set_condition(
            &mut conditions,
            "NamesAccepted",
            "True",
            "NoConflicts",
            "no conflicts found",
        ),
        Some((reason, message)) => {
            set_condition(&mut conditions, "NamesAccepted", "False", reason, message);
        }
    }
    if !was_established {
        if conflict.is_none() {
            set_condition(
                &mut conditions,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            );
        } else {
            set_condition(
                &mut conditions,
                "Established",
                "False",
                "NotAccepted",
                "not all names are accepted",
            );
        }
    }
    let mut stored = strings(crd.get("status").unwrap_or(&Value::Null), "storedVersions");
    let storage = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str());
    if let Some(storage) = storage
        && !stored.iter().any(|s| s == storage)
    {
        stored.push(storage.to_owned());
    }
    json!({
        "conditions": conditions,
        "acceptedNames": names,
        "storedVersions": stored,
    })
}

/// Brings the status of every CRD (key, object as decoded) up to date in the store and
/// returns the CRDs as they now are. A write that conflicts is left to the next rebuild
/// (the CRD changed meanwhile, which triggers one).
pub(crate) async fn reconcile(store: &dyn Store, mut crds: Vec<(String, Value)>) -> Vec<Value> {
    crds.sort_by(|(ka, a), (kb, b)| {
        (meta_str(a, "creationTimestamp"), ka).cmp(&(meta_str(b, "creationTimestamp"), kb))
    });
    for i in 0..crds.len() {
        let group = crds[i].1.pointer("/spec/group").cloned();
        let others: Vec<&Value> = crds
            .iter()
            .enumerate()
            .filter(|(j, (_, o))| *j != i && o.pointer("/spec/group").cloned() == group)
            .map(|(_, (_, o))| o)
            .collect();
        let status = desired_status(&crds[i].1, &others);
        let (key, crd) = &mut crds[i];
        if crd.get("status") == Some(&status) {
            continue;
        }
        let Some(revision) = meta_str(crd, "resourceVersion").and_then(|rv| rv.parse().ok()) else {
            continue;
        };
        if let Some(root) = crd.as_object_mut() {
            root.insert("status".into(), status);
        }
        match store.update(key, encode(crd), revision).await {
            Ok(new_revision) => set_resource_version(crd, new_revision),
            Err(e) => tracing::debug!(key = %key, error = %e, "CRD status not written"),
        }
    }
    crds.into_iter().map(|(_, crd)| crd).collect()
}
