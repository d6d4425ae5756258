//! ObjectMeta, labels, annotations and label selectors, after apimachinery's
//! `api/validation/objectmeta.go` and `apis/meta/v1/validation` (v1.33).

use serde_json::Value;

use super::errors::{FieldError, go_quote};
use super::formats::{self, NameRule};
use super::util::{Errs, Path, arr, at, get, int_or, str_or, string_map, strings};

/// Total size of all annotation keys and values.
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `ValidateLabels`: keys are qualified names, values label values; errors on the map path.
pub(crate) fn labels(v: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(map) = v.and_then(Value::as_object) else {
        return;
    };
    for (k, val) in map {
        label_name(k, path, errs);
        let val = val.as_str().unwrap_or_default();
        for m in formats::label_value(val) {
            errs.push(FieldError::invalid(path.as_str(), val, m));
        }
    }
}

/// `ValidateLabelName`.
pub(crate) fn label_name(k: &str, path: &Path, errs: &mut Errs) {
    for m in formats::qualified_name(k) {
        errs.push(FieldError::invalid(path.as_str(), k, m));
    }
}

/// `ValidateQualifiedName`.
pub(crate) fn qualified_name(v: &str, path: &Path, errs: &mut Errs) {
    label_name(v, path, errs);
}

/// `ValidateAnnotations`: keys are qualified names (case-insensitive), 256 KiB in total.
pub(crate) fn annotations(v: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(map) = v.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, val) in map {
        for m in formats::qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path.as_str(), k.as_str(), m));
        }
        total += k.len() + val.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(
            path.as_str(),
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
}

/// `ValidateObjectMeta` for a create, with the kind's name rule. The namespace itself is the
/// server's business; a namespace on a cluster-scoped kind is reported.
pub(crate) fn object_meta(object: &Value, rule: NameRule, namespaced: bool, errs: &mut Errs) {
    let meta = at(object, "metadata");
    let path = Path::root("metadata");
    let generate_name = str_or(meta, "generateName");
    if !generate_name.is_empty() {
        for m in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(
                path.child("generateName").as_str(),
                generate_name,
                m,
            ));
        }
    }
    let name = str_or(meta, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            path.child("name").as_str(),
            "name or generateName is required",
        ));
    } else {
        for m in rule.check(name, false) {
            errs.push(FieldError::invalid(path.child("name").as_str(), name, m));
        }
    }
    common_meta(meta, namespaced, &path, errs);
}

/// The part of ObjectMeta validation shared by create and update.
fn common_meta(meta: &Value, namespaced: bool, path: &Path, errs: &mut Errs) {
    if !namespaced && !str_or(meta, "namespace").is_empty() {
        errs.push(FieldError::forbidden(
            path.child("namespace").as_str(),
            "not allowed on this type",
        ));
    }
    let generation = int_or(meta, "generation");
    if generation < 0 {
        errs.push(FieldError::invalid(
            path.child("generation").as_str(),
            generation,
            NEGATIVE,
        ));
    }
    labels(get(meta, "labels"), &path.child("labels"), errs);
    annotations(get(meta, "annotations"), &path.child("annotations"), errs);
    owner_references(meta, &path.child("ownerReferences"), errs);
    finalizers(meta, &path.child("finalizers"), errs);
}

/// `IsNegativeErrorMsg`.
pub(crate) const NEGATIVE: &str = "must be greater than or equal to 0";

fn owner_references(meta: &Value, path: &Path, errs: &mut Errs) {
    let mut first_controller = String::new();
    for r in arr(meta, "ownerReferences") {
        let api_version = str_or(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() || api_version.split('/').count() > 2 {
            errs.push(FieldError::invalid(
                path.child("apiVersion").as_str(),
                api_version,
                "version must not be empty",
            ));
        }
        for field in ["kind", "name", "uid"] {
            let v = str_or(r, field);
            if v.is_empty() {
                errs.push(FieldError::invalid(
                    path.child(field).as_str(),
                    v,
                    "must not be empty",
                ));
            }
        }
        if api_version == "v1" && str_or(r, "kind") == "Event" {
            errs.push(FieldError::invalid_rendered(
                path.as_str(),
                format!("{r}"),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{}/{}", str_or(r, "kind"), str_or(r, "name"));
            if first_controller.is_empty() {
                first_controller = current;
            } else {
                errs.push(FieldError::invalid_rendered(
                    path.as_str(),
                    format!("{}", at(meta, "ownerReferences")),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in \
                         references for {first_controller} and {current}"
                    ),
                ));
            }
        }
    }
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateFinalizers` plus core's `validateKubeFinalizerName`.
fn finalizers(meta: &Value, path: &Path, errs: &mut Errs) {
    let list = strings(meta, "finalizers");
    for (i, f) in list.iter().enumerate() {
        for m in formats::qualified_name(f) {
            errs.push(FieldError::invalid(path.as_str(), *f, m));
        }
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(f) {
            errs.push(FieldError::invalid(
                path.index(i).as_str(),
                *f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if list.contains(&"orphan") && list.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            path.as_str(),
            at(meta, "finalizers").clone(),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// The generic ObjectMeta pass every create gets after the kind's own checks pass
/// (`rest.BeforeCreate`): path-segment names and the common fields.
pub(crate) fn generic_meta(object: &Value, namespaced: bool, errs: &mut Errs) {
    object_meta(object, NameRule::PathSegment, namespaced, errs);
}

/// `ValidateObjectMetaUpdate`: identity fields may not change; labels and annotations are
/// checked again. `resourceVersion` and `generation` are the server's, not checked here.
pub(crate) fn object_meta_update(new: &Value, old: &Value, errs: &mut Errs) {
    let (nm, om) = (at(new, "metadata"), at(old, "metadata"));
    let path = Path::root("metadata");
    // creationTimestamp is reset to the old value by `rest.BeforeUpdate`, not reported.
    for field in ["name", "namespace", "uid"] {
        let (n, o) = (str_or(nm, field), str_or(om, field));
        if n != o && !(field != "name" && n.is_empty()) {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                n,
                IMMUTABLE,
            ));
        }
    }
    if get(om, "deletionTimestamp").is_some() {
        let old_f = strings(om, "finalizers");
        let extra: Vec<&str> = strings(nm, "finalizers")
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !extra.is_empty() {
            let mut extra = extra;
            extra.sort_unstable();
            extra.dedup();
            let quoted: Vec<String> = extra.iter().map(|f| go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                path.child("finalizers").as_str(),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new \
                     finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            ));
        }
    }
    labels(get(nm, "labels"), &path.child("labels"), errs);
    annotations(get(nm, "annotations"), &path.child("annotations"), errs);
    owner_references(nm, &path.child("ownerReferences"), errs);
    finalizers(nm, &path.child("finalizers"), errs);
}

/// `FieldImmutableErrorMsg`.
pub(crate) const IMMUTABLE: &str = "field is immutable";

/// `ValidateImmutableField` for a JSON value (absent and `null` are the same).
pub(crate) fn immutable(new: Option<&Value>, old: Option<&Value>, path: &Path, errs: &mut Errs) {
    if new != old {
        let value = new.cloned().unwrap_or(Value::Null);
        errs.push(FieldError::invalid(path.as_str(), value, IMMUTABLE));
    }
}

/// `ValidateLabelSelector` (values are checked: AllowInvalidLabelValueInSelector is off for
/// new objects).
pub(crate) fn label_selector(sel: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(sel) = sel else {
        return;
    };
    labels(get(sel, "matchLabels"), &path.child("matchLabels"), errs);
    for (i, expr) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let op = str_or(expr, "operator");
        let values = strings(expr, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        p.child("values").as_str(),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        p.child("values").as_str(),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(
                p.child("operator").as_str(),
                op,
                "not a valid selector operator",
            )),
        }
        label_name(str_or(expr, "key"), &p.child("key"), errs);
        for (j, v) in values.iter().enumerate() {
            for m in formats::label_value(v) {
                errs.push(FieldError::invalid(
                    p.child("values").index(j).as_str(),
                    *v,
                    m,
                ));
            }
        }
    }
}

/// A selector `metav1.LabelSelectorAsSelector` can convert (no invalid requirement).
pub(crate) fn selector_parses(sel: Option<&Value>) -> bool {
    let mut e = Vec::new();
    label_selector(sel, &Path::root("s"), &mut e);
    e.is_empty()
}

/// Whether a selector has no requirement at all.
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    string_map(sel, "matchLabels").is_empty() && arr(sel, "matchExpressions").is_empty()
}

/// Whether `labels` satisfy `sel` (`nil` matches nothing, `{}` everything).
pub(crate) fn selector_matches(sel: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(sel) = sel else {
        return false;
    };
    let labels: Vec<(&str, &str)> = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
                .collect()
        })
        .unwrap_or_default();
    let get_label = |k: &str| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v);
    let matches_labels = string_map(sel, "matchLabels")
        .iter()
        .all(|(k, v)| get_label(k) == Some(*v));
    matches_labels
        && arr(sel, "matchExpressions").iter().all(|e| {
            let key = str_or(e, "key");
            let values = strings(e, "values");
            match str_or(e, "operator") {
                "In" => get_label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get_label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get_label(key).is_some(),
                "DoesNotExist" => get_label(key).is_none(),
                _ => false,
            }
        })
}

/// `%#v` of a `*metav1.LabelSelector` as Go prints it in `Invalid value:` messages.
pub(crate) fn go_label_selector(sel: &Value) -> String {
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_owned(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(str_or(e, "key")),
                        go_quote(str_or(e, "operator")),
                        super::util::go_string_slice(e.get("values")),
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        super::util::go_string_map(sel.get("matchLabels"))
    )
}
