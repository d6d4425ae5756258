//! Roles, ClusterRoles and their bindings (`pkg/apis/rbac/validation`, v1.33). Names are
//! path segments; a subject's `apiGroup` reads as its v1 default when absent.

use serde_json::Value;

use super::errors::{FieldError, go_quote};
use super::formats::{self, NameRule};
use super::meta;
use super::util::{Errs, Path, arr, at, get, str_opt, str_or};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// `ValidatePolicyRule`.
fn policy_rule(rule: &Value, namespaced: bool, path: &Path, errs: &mut Errs) {
    if arr(rule, "verbs").is_empty() {
        errs.push(FieldError::required(
            path.child("verbs").as_str(),
            "verbs must contain at least one value",
        ));
    }
    if !arr(rule, "nonResourceURLs").is_empty() {
        let urls = rule["nonResourceURLs"].clone();
        if namespaced {
            errs.push(FieldError::invalid(
                path.child("nonResourceURLs").as_str(),
                urls.clone(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !arr(rule, "apiGroups").is_empty()
            || !arr(rule, "resources").is_empty()
            || !arr(rule, "resourceNames").is_empty()
        {
            errs.push(FieldError::invalid(
                path.child("nonResourceURLs").as_str(),
                urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if arr(rule, "apiGroups").is_empty() {
        errs.push(FieldError::required(
            path.child("apiGroups").as_str(),
            "resource rules must supply at least one api group",
        ));
    }
    if arr(rule, "resources").is_empty() {
        errs.push(FieldError::required(
            path.child("resources").as_str(),
            "resource rules must supply at least one resource",
        ));
    }
}

fn rules(object: &Value, namespaced: bool, errs: &mut Errs) {
    for (i, rule) in arr(object, "rules").iter().enumerate() {
        policy_rule(rule, namespaced, &Path::root("rules").index(i), errs);
    }
}

/// `ValidateRole`.
pub(crate) fn role(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::PathSegment, true, errs);
    rules(object, true, errs);
}

/// `ValidateClusterRole`: rules plus the aggregation rule's selectors.
pub(crate) fn cluster_role(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::PathSegment, false, errs);
    rules(object, false, errs);
    if let Some(agg) = get(object, "aggregationRule") {
        let sp = Path::root("aggregationRule").child("clusterRoleSelectors");
        let selectors = arr(agg, "clusterRoleSelectors");
        if selectors.is_empty() {
            errs.push(FieldError::required(
                sp.as_str(),
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, s) in selectors.iter().enumerate() {
            meta::label_selector(Some(s), &sp.index(i), errs);
        }
    }
}

fn role_ref(object: &Value, kinds: &[&str], errs: &mut Errs) {
    let r = at(object, "roleRef");
    let group = str_or(r, "apiGroup");
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            group,
            &[RBAC_GROUP],
        ));
    }
    let kind = str_or(r, "kind");
    if !kinds.contains(&kind) {
        errs.push(FieldError::not_supported("roleRef.kind", kind, kinds));
    }
    let name = str_or(r, "name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for m in formats::path_segment_name(name) {
            errs.push(FieldError::invalid("roleRef.name", name, m));
        }
    }
}

/// `ValidateRoleBindingSubject`.
fn subject(s: &Value, namespaced: bool, path: &Path, errs: &mut Errs) {
    let name = str_or(s, "name");
    if name.is_empty() {
        errs.push(FieldError::required(path.child("name").as_str(), ""));
    }
    let kind = str_or(s, "kind");
    match kind {
        "ServiceAccount" => {
            if !name.is_empty() {
                for m in formats::dns1123_subdomain(name) {
                    errs.push(FieldError::invalid(path.child("name").as_str(), name, m));
                }
            }
            let group = str_or(s, "apiGroup");
            if !group.is_empty() {
                errs.push(FieldError::not_supported(
                    path.child("apiGroup").as_str(),
                    group,
                    &[""],
                ));
            }
            if !namespaced && str_or(s, "namespace").is_empty() {
                errs.push(FieldError::required(path.child("namespace").as_str(), ""));
            }
        }
        "User" | "Group" => {
            let group = str_opt(s, "apiGroup").unwrap_or(RBAC_GROUP);
            if group != RBAC_GROUP {
                errs.push(FieldError::not_supported(
                    path.child("apiGroup").as_str(),
                    group,
                    &[RBAC_GROUP],
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            path.child("kind").as_str(),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

fn subjects(object: &Value, namespaced: bool, errs: &mut Errs) {
    for (i, s) in arr(object, "subjects").iter().enumerate() {
        subject(s, namespaced, &Path::root("subjects").index(i), errs);
    }
}

/// `ValidateRoleBinding`.
pub(crate) fn role_binding(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::PathSegment, true, errs);
    role_ref(object, &["Role", "ClusterRole"], errs);
    subjects(object, true, errs);
}

/// `ValidateClusterRoleBinding`.
pub(crate) fn cluster_role_binding(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::PathSegment, false, errs);
    role_ref(object, &["ClusterRole"], errs);
    subjects(object, false, errs);
}

fn role_ref_unchanged(new: &Value, old: &Value, errs: &mut Errs) {
    let (n, o) = (at(new, "roleRef"), at(old, "roleRef"));
    let fields = ["apiGroup", "kind", "name"];
    if fields.iter().any(|f| str_or(n, f) != str_or(o, f)) {
        errs.push(FieldError::invalid_rendered(
            "roleRef",
            format!(
                "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                go_quote(str_or(n, "apiGroup")),
                go_quote(str_or(n, "kind")),
                go_quote(str_or(n, "name"))
            ),
            "cannot change roleRef",
        ));
    }
}

/// `ValidateRoleBindingUpdate`: the roleRef is immutable.
pub(crate) fn role_binding_update(new: &Value, old: &Value, errs: &mut Errs) {
    role_binding(new, errs);
    meta::object_meta_update(new, old, errs);
    role_ref_unchanged(new, old, errs);
}

/// `ValidateClusterRoleBindingUpdate`: the roleRef is immutable.
pub(crate) fn cluster_role_binding_update(new: &Value, old: &Value, errs: &mut Errs) {
    cluster_role_binding(new, errs);
    meta::object_meta_update(new, old, errs);
    role_ref_unchanged(new, old, errs);
}
