//! Container resources (requests, limits, quantities, resource names) and security contexts,
//! after `pkg/apis/core/validation/validation.go` (v1.33).

use serde_json::Value;

use crate::quantity::Quantity;

use super::errors::FieldError;
use super::formats;
use super::meta;
use super::util::{Errs, Path, bool_opt, get, int_opt, str_opt, str_or};
use super::volume::local_descending_path;

/// A quantity field: parseable, non-negative (`ValidateResourceQuantityValue`), whole for
/// integer resources. Returns the parsed value when it parses.
pub(crate) fn quantity_value(
    resource: &str,
    raw: &Value,
    path: &Path,
    errs: &mut Errs,
) -> Option<Quantity> {
    let text = match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let q = match Quantity::parse_trimmed(&text) {
        Ok(q) => q,
        Err(e) => {
            errs.push(FieldError::invalid(path.as_str(), text, e.to_string()));
            return None;
        }
    };
    if q.is_negative() {
        errs.push(FieldError::invalid(
            path.as_str(),
            q.to_string(),
            meta::NEGATIVE,
        ));
    }
    if is_integer_resource(resource) && q.milli_value() % 1000 != 0 {
        errs.push(FieldError::invalid(
            path.as_str(),
            q.to_string(),
            "must be an integer",
        ));
    }
    Some(q)
}

fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_extended(name: &str) -> bool {
    !is_native(name)
        && !name.starts_with("requests.")
        && formats::qualified_name(&format!("requests.{name}")).is_empty()
}

fn is_integer_resource(name: &str) -> bool {
    const INTEGER: &[&str] = &[
        "pods",
        "services",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
    ];
    INTEGER.contains(&name) || name.starts_with("count/") || is_extended(name)
}

fn overcommit_allowed(name: &str) -> bool {
    is_native(name) && !name.starts_with("hugepages-")
}

/// `validateContainerResourceName`.
fn container_resource_name(name: &str, path: &Path, errs: &mut Errs) {
    let msgs = formats::qualified_name(name);
    if !msgs.is_empty() {
        for m in msgs {
            errs.push(FieldError::invalid(path.as_str(), name, m));
        }
        return;
    }
    let standard_container =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !name.contains('/') {
        if !standard_container {
            errs.push(FieldError::invalid(
                path.as_str(),
                name,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native(name) && !is_extended(name) {
        errs.push(FieldError::invalid(
            path.as_str(),
            name,
            "doesn't follow extended resource name standard",
        ));
    }
}

/// `ValidateContainerResourceRequirements`: names, quantities, requests <= limits.
pub(crate) fn resources(res: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(res) = res else {
        return;
    };
    let (lim_path, req_path) = (path.child("limits"), path.child("requests"));
    let mut limits: Vec<(&str, Option<Quantity>)> = Vec::new();
    if let Some(map) = res.get("limits").and_then(Value::as_object) {
        for (name, raw) in map {
            let p = lim_path.key(name);
            container_resource_name(name, &p, errs);
            limits.push((name, quantity_value(name, raw, &p, errs)));
        }
    }
    if let Some(map) = res.get("requests").and_then(Value::as_object) {
        for (name, raw) in map {
            let p = req_path.key(name);
            container_resource_name(name, &p, errs);
            let Some(q) = quantity_value(name, raw, &p, errs) else {
                continue;
            };
            match limits.iter().find(|(n, _)| n == name) {
                Some((_, Some(limit))) => {
                    if q != *limit && !overcommit_allowed(name) {
                        errs.push(FieldError::invalid(
                            req_path.as_str(),
                            q.to_string(),
                            format!("must be equal to {name} limit of {limit}"),
                        ));
                    } else if q > *limit {
                        errs.push(FieldError::invalid(
                            req_path.as_str(),
                            q.to_string(),
                            format!("must be less than or equal to {name} limit of {limit}"),
                        ));
                    }
                }
                Some((_, None)) => {}
                None if !overcommit_allowed(name) => errs.push(FieldError::required(
                    lim_path.as_str(),
                    "Limit must be set for non overcommitable resources",
                )),
                None => {}
            }
        }
    }
}

const MAX_ID: i64 = 0xffff_ffff;

/// `ValidateSecurityContext` (the checks that apply on Linux nodes).
pub(crate) fn security_context(sc: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(sc) = sc else {
        return;
    };
    for field in ["runAsUser", "runAsGroup"] {
        if let Some(id) = int_opt(sc, field)
            && !(0..=MAX_ID).contains(&id)
        {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                id,
                formats::range_error(0, MAX_ID),
            ));
        }
    }
    if let Some(pm) = str_opt(sc, "procMount")
        && pm != "Default"
        && pm != "Unmasked"
    {
        errs.push(FieldError::not_supported(
            path.child("procMount").as_str(),
            pm,
            &["Default", "Unmasked"],
        ));
    }
    seccomp_profile(
        get(sc, "seccompProfile"),
        &path.child("seccompProfile"),
        errs,
    );
    if bool_opt(sc, "allowPrivilegeEscalation") == Some(false) {
        if bool_opt(sc, "privileged") == Some(true) {
            errs.push(FieldError::invalid(
                path.as_str(),
                sc.clone(),
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ));
        }
        let adds = get(sc, "capabilities").map(|c| super::util::strings(c, "add"));
        if adds.is_some_and(|a| a.contains(&"CAP_SYS_ADMIN")) {
            errs.push(FieldError::invalid(
                path.as_str(),
                sc.clone(),
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` \
                 CAP_SYS_ADMIN",
            ));
        }
    }
}

/// `validateSeccompProfileField`.
pub(crate) fn seccomp_profile(sp: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(sp) = sp else {
        return;
    };
    let t = str_or(sp, "type");
    match t {
        "Localhost" | "RuntimeDefault" | "Unconfined" => {}
        "" => errs.push(FieldError::required(
            path.child("type").as_str(),
            "type is required when seccompProfile is set",
        )),
        other => errs.push(FieldError::not_supported(
            path.child("type").as_str(),
            other,
            &["Localhost", "RuntimeDefault", "Unconfined"],
        )),
    }
    let local = str_opt(sp, "localhostProfile");
    if t == "Localhost" {
        match local {
            None => errs.push(FieldError::required(
                path.child("localhostProfile").as_str(),
                "must be set when seccomp type is Localhost",
            )),
            Some(l) => local_descending_path(l, &path.child("localhostProfile"), errs),
        }
    } else if local.is_some() {
        errs.push(FieldError::invalid(
            path.child("localhostProfile").as_str(),
            sp.clone(),
            "can only be set when seccomp type is Localhost",
        ));
    }
}
