//! Webhook configurations and ValidatingAdmissionPolicies (`pkg/apis/admissionregistration/
//! validation`, `apiserver/pkg/util/webhook`; v1.33). CEL expressions are compiled by
//! `crate::admission_policy`.

use serde_json::Value;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta;
use super::util::{Errs, Path, arr, at, get, int_opt, str_opt, str_or, strings};

const OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];

/// `validateRuleWithOperations`.
fn rule(r: &Value, path: &Path, errs: &mut Errs) {
    let ops = strings(r, "operations");
    if ops.is_empty() {
        errs.push(FieldError::required(path.child("operations").as_str(), ""));
    }
    if ops.len() > 1 && ops.contains(&"*") {
        errs.push(FieldError::invalid(
            path.child("operations").as_str(),
            r["operations"].clone(),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        if !OPERATIONS.contains(op) {
            errs.push(FieldError::not_supported(
                path.child("operations").index(i).as_str(),
                *op,
                OPERATIONS,
            ));
        }
    }
    for (field, noun) in [("apiGroups", "API groups"), ("apiVersions", "API versions")] {
        let list = strings(r, field);
        if arr(r, field).is_empty() {
            errs.push(FieldError::required(path.child(field).as_str(), ""));
        }
        if list.len() > 1 && list.contains(&"*") {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                r[field].clone(),
                format!("if '*' is present, must not specify other {noun}"),
            ));
        }
    }
    for (i, v) in strings(r, "apiVersions").iter().enumerate() {
        if v.is_empty() {
            errs.push(FieldError::required(
                path.child("apiVersions").index(i).as_str(),
                "",
            ));
        }
    }
    let resources = strings(r, "resources");
    if resources.is_empty() {
        errs.push(FieldError::required(path.child("resources").as_str(), ""));
    }
    for (i, res) in resources.iter().enumerate() {
        if res.is_empty() {
            errs.push(FieldError::required(
                path.child("resources").index(i).as_str(),
                "",
            ));
        }
    }
    if let Some(scope) = str_opt(r, "scope")
        && !SCOPES.contains(&scope)
    {
        errs.push(FieldError::not_supported(
            path.child("scope").as_str(),
            scope,
            SCOPES,
        ));
    }
}

/// `ValidateWebhookURL` (https only).
fn webhook_url(url: &str, path: &Path, errs: &mut Errs) {
    const FORM: &str = "; desired format: https://host[/path]";
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if scheme != "https" {
        errs.push(FieldError::invalid(
            path.as_str(),
            scheme,
            format!("'https' is the only allowed URL scheme{FORM}"),
        ));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = if url.contains("://") {
        &rest[..authority_end]
    } else {
        ""
    };
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() {
        errs.push(FieldError::invalid(
            path.as_str(),
            host,
            format!("host must be specified{FORM}"),
        ));
    }
    if let Some(u) = user {
        errs.push(FieldError::invalid(
            path.as_str(),
            u,
            "user information is not permitted in the URL",
        ));
    }
    if let Some((_, fragment)) = url.split_once('#')
        && !fragment.is_empty()
    {
        errs.push(FieldError::invalid(
            path.as_str(),
            fragment,
            "fragments are not permitted in the URL",
        ));
    }
    let before_fragment = url.split('#').next().unwrap_or_default();
    if let Some((_, query)) = before_fragment.split_once('?')
        && !query.is_empty()
    {
        errs.push(FieldError::invalid(
            path.as_str(),
            query,
            "query parameters are not permitted in the URL",
        ));
    }
}

/// `ValidateWebhookService`.
fn webhook_service(svc: &Value, path: &Path, errs: &mut Errs) {
    if str_or(svc, "name").is_empty() {
        errs.push(FieldError::required(
            path.child("name").as_str(),
            "service name is required",
        ));
    }
    if str_or(svc, "namespace").is_empty() {
        errs.push(FieldError::required(
            path.child("namespace").as_str(),
            "service namespace is required",
        ));
    }
    let port = int_opt(svc, "port").unwrap_or(443);
    let msgs = formats::port_num(port);
    if !msgs.is_empty() {
        errs.push(FieldError::invalid(
            path.child("port").as_str(),
            port,
            format!("port is not valid: {}", msgs.join(", ")),
        ));
    }
    let Some(url_path) = str_opt(svc, "path") else {
        return;
    };
    let pp = path.child("path");
    if url_path == "/" || url_path.is_empty() {
        return;
    }
    if url_path == "//" {
        errs.push(FieldError::invalid(
            pp.as_str(),
            url_path,
            "segment[0] may not be empty",
        ));
        return;
    }
    if !url_path.starts_with('/') {
        errs.push(FieldError::invalid(
            pp.as_str(),
            url_path,
            "must start with a '/'",
        ));
    }
    let check = url_path.get(1..).unwrap_or_default();
    let check = check.strip_suffix('/').unwrap_or(check);
    for (i, step) in check.split('/').enumerate() {
        if step.is_empty() {
            errs.push(FieldError::invalid(
                pp.as_str(),
                url_path,
                format!("segment[{i}] may not be empty"),
            ));
            continue;
        }
        for m in formats::dns1123_subdomain(step) {
            errs.push(FieldError::invalid(
                pp.as_str(),
                url_path,
                format!("segment[{i}]: {m}"),
            ));
        }
    }
}

fn webhook(hook: &Value, mutating: bool, path: &Path, errs: &mut Errs) {
    let name = str_or(hook, "name");
    let np = path.child("name");
    if name.is_empty() {
        errs.push(FieldError::required(np.as_str(), ""));
    } else {
        for m in formats::fully_qualified_name(name) {
            errs.push(FieldError::invalid(np.as_str(), name, m));
        }
    }
    for (i, r) in arr(hook, "rules").iter().enumerate() {
        rule(r, &path.child("rules").index(i), errs);
    }
    errs.extend(crate::admission_policy::match_condition_errors(
        hook,
        path.as_str(),
    ));
    if let Some(fp) = str_opt(hook, "failurePolicy")
        && fp != "Fail"
        && fp != "Ignore"
    {
        errs.push(FieldError::not_supported(
            path.child("failurePolicy").as_str(),
            fp,
            &["Fail", "Ignore"],
        ));
    }
    if let Some(mp) = str_opt(hook, "matchPolicy")
        && mp != "Equivalent"
        && mp != "Exact"
    {
        errs.push(FieldError::not_supported(
            path.child("matchPolicy").as_str(),
            mp,
            &["Equivalent", "Exact"],
        ));
    }
    match str_opt(hook, "sideEffects") {
        None => errs.push(FieldError::required(
            path.child("sideEffects").as_str(),
            "must specify one of None, NoneOnDryRun",
        )),
        Some("None" | "NoneOnDryRun") => {}
        Some(other) => errs.push(FieldError::not_supported(
            path.child("sideEffects").as_str(),
            other,
            &["None", "NoneOnDryRun"],
        )),
    }
    if let Some(t) = int_opt(hook, "timeoutSeconds")
        && !(1..=30).contains(&t)
    {
        errs.push(FieldError::invalid(
            path.child("timeoutSeconds").as_str(),
            t,
            "the timeout value must be between 1 and 30 seconds",
        ));
    }
    for sel in ["namespaceSelector", "objectSelector"] {
        meta::label_selector(get(hook, sel), &path.child(sel), errs);
    }
    if mutating
        && let Some(rp) = str_opt(hook, "reinvocationPolicy")
        && rp != "IfNeeded"
        && rp != "Never"
    {
        errs.push(FieldError::not_supported(
            path.child("reinvocationPolicy").as_str(),
            rp,
            &["IfNeeded", "Never"],
        ));
    }
    let cc = at(hook, "clientConfig");
    let cp = path.child("clientConfig");
    match (str_opt(cc, "url"), get(cc, "service")) {
        (Some(_), Some(_)) | (None, None) => errs.push(FieldError::required(
            cp.as_str(),
            "exactly one of url or service is required",
        )),
        (Some(url), None) => webhook_url(url, &cp.child("url"), errs),
        (None, Some(svc)) => webhook_service(svc, &cp.child("service"), errs),
    }
    let versions = strings(hook, "admissionReviewVersions");
    let vp = path.child("admissionReviewVersions");
    if versions.is_empty() {
        errs.push(FieldError::required(
            vp.as_str(),
            "must specify one of v1, v1beta1",
        ));
    } else {
        let mut seen: Vec<&str> = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            if seen.contains(v) {
                errs.push(FieldError::invalid(
                    vp.index(i).as_str(),
                    *v,
                    "duplicate version",
                ));
                continue;
            }
            seen.push(v);
            for m in formats::dns1035_label(v) {
                errs.push(FieldError::invalid(vp.index(i).as_str(), *v, m));
            }
        }
        if !versions.iter().any(|v| *v == "v1" || *v == "v1beta1") {
            errs.push(FieldError::invalid(
                vp.as_str(),
                hook["admissionReviewVersions"].clone(),
                "must include at least one of v1, v1beta1",
            ));
        }
    }
}

fn webhooks(object: &Value, mutating: bool, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let mut names: Vec<&str> = Vec::new();
    for (i, hook) in arr(object, "webhooks").iter().enumerate() {
        let p = Path::root("webhooks").index(i);
        webhook(hook, mutating, &p, errs);
        let name = str_or(hook, "name");
        if !name.is_empty() {
            if names.contains(&name) {
                errs.push(FieldError::duplicate(p.child("name").as_str(), name));
            } else {
                names.push(name);
            }
        }
    }
}

/// `ValidateValidatingWebhookConfiguration`.
pub(crate) fn validating_webhooks(object: &Value, errs: &mut Errs) {
    webhooks(object, false, errs);
}

/// `ValidateMutatingWebhookConfiguration`.
pub(crate) fn mutating_webhooks(object: &Value, errs: &mut Errs) {
    webhooks(object, true, errs);
}

/// `ValidateValidatingAdmissionPolicy`; expressions are compiled by `admission_policy`.
pub(crate) fn policy(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    if let Some(fp) = str_opt(spec, "failurePolicy")
        && fp != "Fail"
        && fp != "Ignore"
    {
        errs.push(FieldError::not_supported(
            sp.child("failurePolicy").as_str(),
            fp,
            &["Fail", "Ignore"],
        ));
    }
    if let Some(pk) = get(spec, "paramKind") {
        for field in ["apiVersion", "kind"] {
            if str_or(pk, field).is_empty() {
                errs.push(FieldError::required(
                    sp.child("paramKind").child(field).as_str(),
                    "",
                ));
            }
        }
    }
    match get(spec, "matchConstraints") {
        None => errs.push(FieldError::required(
            sp.child("matchConstraints").as_str(),
            "",
        )),
        Some(mc) => {
            let mp = sp.child("matchConstraints");
            let rules = arr(mc, "resourceRules");
            if rules.is_empty() {
                errs.push(FieldError::required(mp.child("resourceRules").as_str(), ""));
            }
            for (i, r) in rules.iter().enumerate() {
                rule(r, &mp.child("resourceRules").index(i), errs);
            }
        }
    }
    errs.extend(crate::admission_policy::policy_errors(
        str_or(at(object, "metadata"), "name"),
        spec,
    ));
}

/// `ValidateValidatingAdmissionPolicyBinding`.
pub(crate) fn policy_binding(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let name = str_or(spec, "policyName");
    if name.is_empty() {
        errs.push(FieldError::required(sp.child("policyName").as_str(), ""));
    } else {
        for m in formats::dns1123_subdomain(name) {
            errs.push(FieldError::invalid(
                sp.child("policyName").as_str(),
                name,
                m,
            ));
        }
    }
    if let Some(pr) = get(spec, "paramRef") {
        param_ref(pr, &sp.child("paramRef"), errs);
    }
    let actions = strings(spec, "validationActions");
    let ap = sp.child("validationActions");
    if actions.is_empty() {
        errs.push(FieldError::required(
            ap.as_str(),
            "at least one validation action is required",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if seen.contains(a) {
            errs.push(FieldError::duplicate(ap.index(i).as_str(), *a));
        }
        seen.push(a);
        if !matches!(*a, "Audit" | "Deny" | "Warn") {
            errs.push(FieldError::not_supported(
                ap.index(i).as_str(),
                *a,
                &["Audit", "Deny", "Warn"],
            ));
        }
    }
    if seen.contains(&"Deny") && seen.contains(&"Warn") {
        errs.push(FieldError::invalid(
            ap.as_str(),
            spec["validationActions"].clone(),
            "must not contain both Deny and Warn (repeating the same validation failure \
             information in the API response and headers serves no purpose)",
        ));
    }
}

/// `validateParamRef`.
fn param_ref(pr: &Value, path: &Path, errs: &mut Errs) {
    let name = str_or(pr, "name");
    let selector = get(pr, "selector");
    const EXCLUSIVE: &str = "name and selector are mutually exclusive";
    if !name.is_empty() {
        for m in formats::path_segment_name(name) {
            errs.push(FieldError::invalid(path.child("name").as_str(), name, m));
        }
        if selector.is_some() {
            errs.push(FieldError::forbidden(
                path.child("name").as_str(),
                EXCLUSIVE,
            ));
        }
    }
    if selector.is_some() && !name.is_empty() {
        errs.push(FieldError::forbidden(
            path.child("selector").as_str(),
            EXCLUSIVE,
        ));
    }
    if name.is_empty() && selector.is_none() {
        errs.push(FieldError::required(
            path.as_str(),
            "one of name or selector must be specified",
        ));
    }
    let action = str_or(pr, "parameterNotFoundAction");
    let at = path.child("parameterNotFoundAction");
    if action.is_empty() {
        errs.push(FieldError::required(at.as_str(), ""));
    } else if action != "Deny" && action != "Allow" {
        errs.push(FieldError::not_supported(
            at.as_str(),
            action,
            &["Deny", "Allow"],
        ));
    }
}
