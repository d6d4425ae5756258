//! Where a pod may run and how it resolves names: affinity, tolerations, topology spread,
//! DNS config, node selectors and taints (`pkg/apis/core/validation/validation.go`, v1.33).

use serde_json::Value;

use super::errors::FieldError;
use super::formats;
use super::meta;
use super::util::{Errs, Path, arr, get, int_opt, str_opt, str_or, strings};

/// `ValidateNodeSelectorRequirement`.
fn node_selector_requirement(rq: &Value, path: &Path, errs: &mut Errs) {
    let values = strings(rq, "values");
    let op = str_or(rq, "operator");
    match op {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(FieldError::required(
                    path.child("values").as_str(),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(FieldError::forbidden(
                    path.child("values").as_str(),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                errs.push(FieldError::required(
                    path.child("values").as_str(),
                    "must be specified single value when `operator` is 'Lt' or 'Gt'",
                ));
            }
        }
        other => errs.push(FieldError::invalid(
            path.child("operator").as_str(),
            other,
            "not a valid selector operator",
        )),
    }
    meta::label_name(str_or(rq, "key"), &path.child("key"), errs);
}

/// `ValidateNodeSelectorTerm`.
fn node_selector_term(term: &Value, path: &Path, errs: &mut Errs) {
    for (j, rq) in arr(term, "matchExpressions").iter().enumerate() {
        node_selector_requirement(rq, &path.child("matchExpressions").index(j), errs);
    }
    for (j, rq) in arr(term, "matchFields").iter().enumerate() {
        let p = path.child("matchFields").index(j);
        let op = str_or(rq, "operator");
        if op == "In" || op == "NotIn" {
            if arr(rq, "values").len() != 1 {
                errs.push(FieldError::required(
                    p.child("values").as_str(),
                    "must be only one value when `operator` is 'In' or 'NotIn' for node field \
                     selector",
                ));
            }
        } else {
            errs.push(FieldError::invalid(
                p.child("operator").as_str(),
                op,
                "not a valid selector operator",
            ));
        }
        let key = str_or(rq, "key");
        if key != "metadata.name" {
            errs.push(FieldError::invalid(
                p.child("key").as_str(),
                key,
                "not a valid field selector key",
            ));
        }
    }
}

/// `ValidateNodeSelector` (a required node affinity).
pub(crate) fn node_selector(sel: &Value, path: &Path, errs: &mut Errs) {
    let terms_path = path.child("nodeSelectorTerms");
    let terms = arr(sel, "nodeSelectorTerms");
    if terms.is_empty() {
        errs.push(FieldError::required(
            terms_path.as_str(),
            "must have at least one node selector term",
        ));
        return;
    }
    for (i, term) in terms.iter().enumerate() {
        node_selector_term(term, &terms_path.index(i), errs);
    }
}

fn weight(term: &Value, path: &Path, errs: &mut Errs) {
    let w = int_opt(term, "weight").unwrap_or(0);
    if !(1..=100).contains(&w) {
        errs.push(FieldError::invalid(
            path.child("weight").as_str(),
            w,
            "must be in the range 1-100",
        ));
    }
}

fn pod_affinity_term(term: &Value, path: &Path, errs: &mut Errs) {
    meta::label_selector(
        get(term, "labelSelector"),
        &path.child("labelSelector"),
        errs,
    );
    meta::label_selector(
        get(term, "namespaceSelector"),
        &path.child("namespaceSelector"),
        errs,
    );
    for ns in strings(term, "namespaces") {
        for m in formats::dns1123_label(ns) {
            errs.push(FieldError::invalid(path.child("namespace").as_str(), ns, m));
        }
    }
    let key = str_or(term, "topologyKey");
    if key.is_empty() {
        errs.push(FieldError::required(
            path.child("topologyKey").as_str(),
            "can not be empty",
        ));
    }
    meta::label_name(key, &path.child("topologyKey"), errs);
}

/// `validateAffinity`.
pub(crate) fn affinity(aff: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(aff) = aff else {
        return;
    };
    if let Some(na) = get(aff, "nodeAffinity") {
        let p = path.child("nodeAffinity");
        if let Some(req) = get(na, "requiredDuringSchedulingIgnoredDuringExecution") {
            node_selector(
                req,
                &p.child("requiredDuringSchedulingIgnoredDuringExecution"),
                errs,
            );
        }
        let pref = p.child("preferredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in arr(na, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            weight(term, &pref.index(i), errs);
            if let Some(pr) = get(term, "preference") {
                node_selector_term(pr, &pref.index(i).child("preference"), errs);
            }
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = get(aff, kind) else {
            continue;
        };
        let p = path.child(kind);
        let req = p.child("requiredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in arr(pa, "requiredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            pod_affinity_term(term, &req.index(i), errs);
        }
        let pref = p.child("preferredDuringSchedulingIgnoredDuringExecution");
        for (i, term) in arr(pa, "preferredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .enumerate()
        {
            weight(term, &pref.index(i), errs);
            if let Some(t) = get(term, "podAffinityTerm") {
                pod_affinity_term(t, &pref.index(i).child("podAffinityTerm"), errs);
            }
        }
    }
}

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `ValidateTolerations`.
pub(crate) fn tolerations(list: &[Value], path: &Path, errs: &mut Errs) {
    for (i, t) in list.iter().enumerate() {
        let p = path.index(i);
        let key = str_or(t, "key");
        let op = str_or(t, "operator");
        let effect = str_or(t, "effect");
        let value = str_or(t, "value");
        if !key.is_empty() {
            meta::label_name(key, &p.child("key"), errs);
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                p.child("operator").as_str(),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values \
                 and all keys\"",
            ));
        }
        if t.get("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                p.child("effect").as_str(),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = formats::label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        p.child("operator").as_str(),
                        value,
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        p.child("operator").as_str(),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                p.child("operator").as_str(),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                p.child("effect").as_str(),
                effect,
                TAINT_EFFECTS,
            ));
        }
    }
}

/// `validateNodeTaints` (taints of a Node; Kubernetes reports them under `metadata.taints`).
pub(crate) fn taints(list: &[Value], path: &Path, errs: &mut Errs) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let p = path.index(i);
        let key = str_or(t, "key");
        meta::label_name(key, &p.child("key"), errs);
        let value = str_or(t, "value");
        let msgs = formats::label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                p.child("value").as_str(),
                value,
                msgs.join(";"),
            ));
        }
        let effect = str_or(t, "effect");
        if effect.is_empty() {
            errs.push(FieldError::required(p.child("effect").as_str(), ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                p.child("effect").as_str(),
                effect,
                TAINT_EFFECTS,
            ));
        }
        if seen.contains(&(key, effect)) {
            let mut e = FieldError::duplicate(p.as_str(), t.clone());
            e.detail = "taints must be unique by key and effect pair".to_owned();
            errs.push(e);
            continue;
        }
        seen.push((key, effect));
    }
}

/// `validatePodDNSConfig`.
pub(crate) fn dns_config(config: Option<&Value>, policy: &str, path: &Path, errs: &mut Errs) {
    if policy == "None" {
        let Some(cfg) = config else {
            errs.push(FieldError::required(
                path.as_str(),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
            return;
        };
        if arr(cfg, "nameservers").is_empty() {
            errs.push(FieldError::required(
                path.child("nameservers").as_str(),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ));
            return;
        }
    }
    let Some(cfg) = config else {
        return;
    };
    let servers = strings(cfg, "nameservers");
    if servers.len() > 3 {
        errs.push(FieldError::invalid(
            path.child("nameservers").as_str(),
            cfg["nameservers"].clone(),
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in servers.iter().enumerate() {
        if formats::parse_ip(ns).is_none() {
            errs.push(FieldError::invalid(
                path.child("nameservers").index(i).as_str(),
                *ns,
                formats::IP_MSG,
            ));
        }
    }
    let searches = strings(cfg, "searches");
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            path.child("searches").as_str(),
            cfg["searches"].clone(),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            path.child("searches").as_str(),
            cfg["searches"].clone(),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        if *s == "." {
            continue;
        }
        let s = s.strip_suffix('.').unwrap_or(s);
        for m in formats::dns1123_subdomain_underscore(s) {
            errs.push(FieldError::invalid(
                path.child("searches").index(i).as_str(),
                s,
                m,
            ));
        }
    }
    for (i, o) in arr(cfg, "options").iter().enumerate() {
        if str_or(o, "name").is_empty() {
            errs.push(FieldError::required(
                path.child("options").index(i).as_str(),
                "must not be empty",
            ));
        }
    }
}

/// `validateTopologySpreadConstraints`.
pub(crate) fn topology_spread(list: &[Value], path: &Path, errs: &mut Errs) {
    for (i, c) in list.iter().enumerate() {
        let p = path.index(i);
        let skew = int_opt(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(FieldError::invalid(
                p.child("maxSkew").as_str(),
                skew,
                "must be greater than zero",
            ));
        }
        let key = str_or(c, "topologyKey");
        if key.is_empty() {
            errs.push(FieldError::required(
                p.child("topologyKey").as_str(),
                "can not be empty",
            ));
        }
        let when = str_or(c, "whenUnsatisfiable");
        if when != "DoNotSchedule" && when != "ScheduleAnyway" {
            errs.push(FieldError::not_supported(
                p.child("whenUnsatisfiable").as_str(),
                when,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        if list[i + 1..].iter().any(|other| {
            str_or(other, "topologyKey") == key && str_or(other, "whenUnsatisfiable") == when
        }) {
            errs.push(FieldError::duplicate(
                p.child("{topologyKey, whenUnsatisfiable}").as_str(),
                format!("{{{key}, {when}}}"),
            ));
        }
        if let Some(min) = int_opt(c, "minDomains") {
            if min <= 0 {
                errs.push(FieldError::invalid(
                    p.child("minDomains").as_str(),
                    min,
                    "must be greater than zero",
                ));
            }
            if when != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    p.child("minDomains").as_str(),
                    min,
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when}"
                    ),
                ));
            }
        }
        for field in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if let Some(v) = str_opt(c, field)
                && v != "Honor"
                && v != "Ignore"
            {
                errs.push(FieldError::not_supported(
                    p.child(field).as_str(),
                    v,
                    &["Honor", "Ignore"],
                ));
            }
        }
        meta::label_selector(get(c, "labelSelector"), &p.child("labelSelector"), errs);
    }
}
