//! Pods, pod specs and pod templates (`ValidatePodSpec`, `ValidatePodCreate`,
//! `ValidatePodUpdate`, `ValidatePodTemplateSpec`; pkg/apis/core/validation, v1.33).

use serde_json::Value;

use super::container::{self, Role};
use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta;
use super::placement;
use super::util::{Errs, Path, arr, at, bool_opt, get, int_opt, str_opt, str_or, strings};
use super::volume;

const MAX_INT32: i64 = 2_147_483_647;

/// `ValidatePodSpec`; `is_pod` marks a real Pod (not a template) for the hostNetwork rule.
pub(crate) fn pod_spec(spec: &Value, path: &Path, is_pod: bool, errs: &mut Errs) {
    let grace = int_opt(spec, "terminationGracePeriodSeconds").unwrap_or(30);
    let vols = volume::volumes(arr(spec, "volumes"), &path.child("volumes"), errs);

    let containers = arr(spec, "containers");
    let cpath = path.child("containers");
    if containers.is_empty() {
        errs.push(FieldError::required(cpath.as_str(), ""));
    } else {
        let mut names: Vec<&str> = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let p = cpath.index(i);
            container::container(c, Role::Regular, &vols, grace, &p, errs);
            let name = str_or(c, "name");
            if names.contains(&name) {
                errs.push(FieldError::duplicate(p.child("name").as_str(), name));
            } else {
                names.push(name);
            }
        }
        container::host_port_conflicts(containers, &cpath, errs);
    }
    let ipath = path.child("initContainers");
    let mut all_names: Vec<&str> = containers.iter().map(|c| str_or(c, "name")).collect();
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        let p = ipath.index(i);
        container::container(c, Role::Init, &vols, grace, &p, errs);
        let name = str_or(c, "name");
        if all_names.contains(&name) {
            errs.push(FieldError::duplicate(p.child("name").as_str(), name));
        } else if !name.is_empty() {
            all_names.push(name);
        }
    }

    if bool_opt(spec, "hostNetwork") == Some(true) {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in arr(c, "ports").iter().enumerate() {
                let cp = int_opt(port, "containerPort").unwrap_or(0);
                let hp = int_opt(port, "hostPort").unwrap_or(if is_pod { cp } else { 0 });
                if (is_pod || hp != 0) && hp != cp {
                    errs.push(FieldError::invalid(
                        cpath
                            .index(i)
                            .child("ports")
                            .index(j)
                            .child("hostPort")
                            .as_str(),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }

    match str_opt(spec, "restartPolicy").unwrap_or("Always") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(
            path.child("restartPolicy").as_str(),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            path.child("restartPolicy").as_str(),
            other,
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns_policy = str_opt(spec, "dnsPolicy").unwrap_or("ClusterFirst");
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(path.child("dnsPolicy").as_str(), "")),
        other => errs.push(FieldError::not_supported(
            path.child("dnsPolicy").as_str(),
            other,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    meta::labels(get(spec, "nodeSelector"), &path.child("nodeSelector"), errs);
    pod_security_context(get(spec, "securityContext"), spec, path, errs);
    for (i, s) in arr(spec, "imagePullSecrets").iter().enumerate() {
        let extra = s.as_object().is_some_and(|m| m.keys().any(|k| k != "name"));
        if extra {
            errs.push(FieldError::invalid(
                path.child("imagePullSecrets").index(i).as_str(),
                s.clone(),
                "only name may be set",
            ));
        }
    }
    placement::affinity(get(spec, "affinity"), &path.child("affinity"), errs);
    placement::dns_config(
        get(spec, "dnsConfig"),
        dns_policy,
        &path.child("dnsConfig"),
        errs,
    );
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        meta::qualified_name(
            str_or(g, "conditionType"),
            &path.child("readinessGates").index(i).child("conditionType"),
            errs,
        );
    }
    let gates = path.child("schedulingGates");
    let mut seen_gates: Vec<&str> = Vec::new();
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let name = str_or(g, "name");
        meta::qualified_name(name, &gates.index(i), errs);
        if seen_gates.contains(&name) {
            errs.push(FieldError::duplicate(gates.index(i).as_str(), name));
        }
        seen_gates.push(name);
    }
    placement::topology_spread(
        arr(spec, "topologySpreadConstraints"),
        &path.child("topologySpreadConstraints"),
        errs,
    );
    for (field, rule) in [
        ("serviceAccountName", NameRule::Subdomain),
        ("nodeName", NameRule::Subdomain),
        ("priorityClassName", NameRule::Subdomain),
    ] {
        let v = str_or(spec, field);
        if !v.is_empty() {
            for m in rule.check(v, false) {
                errs.push(FieldError::invalid(path.child(field).as_str(), v, m));
            }
        }
    }
    if let Some(ads) = int_opt(spec, "activeDeadlineSeconds")
        && !(1..=MAX_INT32).contains(&ads)
    {
        errs.push(FieldError::invalid(
            path.child("activeDeadlineSeconds").as_str(),
            ads,
            formats::range_error(1, MAX_INT32),
        ));
    }
    for field in ["hostname", "subdomain"] {
        let v = str_or(spec, field);
        if !v.is_empty() {
            for m in formats::dns1123_label(v) {
                errs.push(FieldError::invalid(path.child(field).as_str(), v, m));
            }
        }
    }
    placement::tolerations(arr(spec, "tolerations"), &path.child("tolerations"), errs);
    for (i, alias) in arr(spec, "hostAliases").iter().enumerate() {
        let p = path.child("hostAliases").index(i);
        let ip = str_or(alias, "ip");
        if formats::parse_ip(ip).is_none() {
            errs.push(FieldError::invalid(
                p.child("ip").as_str(),
                ip,
                formats::IP_MSG,
            ));
        }
        for (j, host) in strings(alias, "hostnames").iter().enumerate() {
            for m in formats::dns1123_subdomain(host) {
                errs.push(FieldError::invalid(
                    p.child("hostnames").index(j).as_str(),
                    *host,
                    m,
                ));
            }
        }
    }
    if let Some(rc) = str_opt(spec, "runtimeClassName") {
        for m in formats::dns1123_subdomain(rc) {
            errs.push(FieldError::invalid(
                path.child("runtimeClassName").as_str(),
                rc,
                m,
            ));
        }
    }
    if let Some(pp) = str_opt(spec, "preemptionPolicy") {
        preemption_policy(pp, &path.child("preemptionPolicy"), errs);
    }
    if let Some(os) = get(spec, "os") {
        let name = str_or(os, "name");
        if name.is_empty() {
            errs.push(FieldError::required(
                path.child("os").child("name").as_str(),
                "cannot be empty",
            ));
        } else if name != "linux" && name != "windows" {
            errs.push(FieldError::not_supported(
                path.child("os").as_str(),
                name,
                &["linux", "windows"],
            ));
        }
    }
}

/// `ValidatePreemptionPolicy`.
pub(crate) fn preemption_policy(pp: &str, path: &Path, errs: &mut Errs) {
    match pp {
        "PreemptLowerPriority" | "Never" => {}
        "" => errs.push(FieldError::required(path.as_str(), "")),
        other => errs.push(FieldError::not_supported(
            path.as_str(),
            other,
            &["PreemptLowerPriority", "Never"],
        )),
    }
}

fn pod_security_context(sc: Option<&Value>, spec: &Value, path: &Path, errs: &mut Errs) {
    let Some(sc) = sc else {
        return;
    };
    let p = path.child("securityContext");
    let max = 0xffff_ffff;
    for field in ["fsGroup", "runAsUser", "runAsGroup"] {
        if let Some(id) = int_opt(sc, field)
            && !(0..=max).contains(&id)
        {
            errs.push(FieldError::invalid(
                p.child(field).as_str(),
                id,
                formats::range_error(0, max),
            ));
        }
    }
    for (i, g) in arr(sc, "supplementalGroups").iter().enumerate() {
        let id = g.as_i64().unwrap_or(0);
        if !(0..=max).contains(&id) {
            errs.push(FieldError::invalid(
                p.child("supplementalGroups").index(i).as_str(),
                id,
                formats::range_error(0, max),
            ));
        }
    }
    if bool_opt(sc, "shareProcessNamespace") == Some(true)
        && bool_opt(spec, "hostPID") == Some(true)
    {
        errs.push(FieldError::invalid(
            p.child("shareProcessNamespace").as_str(),
            true,
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    if let Some(policy) = str_opt(sc, "fsGroupChangePolicy")
        && policy != "Always"
        && policy != "OnRootMismatch"
    {
        errs.push(FieldError::not_supported(
            p.child("fsGroupChangePolicy").as_str(),
            policy,
            &["Always", "OnRootMismatch"],
        ));
    }
    let mut sysctl_names: Vec<&str> = Vec::new();
    for (i, s) in arr(sc, "sysctls").iter().enumerate() {
        let np = p.child("sysctls").index(i).child("name");
        let name = str_or(s, "name");
        if name.is_empty() {
            errs.push(FieldError::required(np.as_str(), ""));
        } else if sysctl_names.contains(&name) {
            errs.push(FieldError::duplicate(np.as_str(), name));
        }
        sysctl_names.push(name);
    }
    super::resources::seccomp_profile(get(sc, "seccompProfile"), &p.child("seccompProfile"), errs);
}

/// `ValidatePodTemplateSpec`: labels and annotations (Kubernetes reports them at
/// `<template>.labels`), the pod spec, no ephemeral containers.
pub(crate) fn pod_template_spec(template: &Value, path: &Path, errs: &mut Errs) {
    let tmeta = at(template, "metadata");
    meta::labels(get(tmeta, "labels"), &path.child("labels"), errs);
    meta::annotations(get(tmeta, "annotations"), &path.child("annotations"), errs);
    let spec = at(template, "spec");
    pod_spec(spec, &path.child("spec"), false, errs);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            path.child("spec").child("ephemeralContainers").as_str(),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

fn pod_only_containers(spec: &Value, errs: &mut Errs) {
    for list in ["containers", "initContainers"] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            let image = str_or(c, "image");
            if image.trim() != image {
                errs.push(FieldError::invalid(
                    Path::root("spec")
                        .child(list)
                        .index(i)
                        .child("image")
                        .as_str(),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
}

/// `ValidatePodCreate`.
pub(crate) fn pod(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    pod_spec(spec, &Path::root("spec"), true, errs);
    pod_only_containers(spec, errs);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    if !str_or(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.nodeName",
            "cannot be set until all schedulingGates have been cleared",
        ));
    }
}

const UPDATABLE_POD_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,\
`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate`: only images, activeDeadlineSeconds, added tolerations and removed
/// scheduling gates may change. The diff after the message lists the changed spec fields (Go
/// prints a `cmp.Diff` there).
pub(crate) fn pod_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    meta::object_meta(new, NameRule::Subdomain, true, errs);
    let (ns, os) = (at(new, "spec"), at(old, "spec"));
    pod_spec(ns, &Path::root("spec"), true, errs);
    pod_only_containers(ns, errs);
    for list in ["containers", "initContainers"] {
        let (nl, ol) = (arr(ns, list), arr(os, list));
        if nl.len() != ol.len() {
            errs.push(FieldError::forbidden(
                Path::root("spec").child(list).as_str(),
                "pod updates may not add or remove containers",
            ));
            return;
        }
    }
    let ads_path = "spec.activeDeadlineSeconds";
    match (
        int_opt(ns, "activeDeadlineSeconds"),
        int_opt(os, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(FieldError::invalid(
                ads_path,
                n,
                formats::range_error(0, MAX_INT32),
            ));
            return;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                ads_path,
                n,
                "must be less than or equal to previous value",
            ));
            return;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            ads_path,
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    for t in arr(os, "tolerations") {
        let kept = arr(ns, "tolerations").iter().any(|n| {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("tolerationSeconds");
                }
                v
            };
            strip(n) == strip(t)
        });
        if !kept {
            errs.push(FieldError::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    let mut munged = super::normalized(ns);
    let old_norm = super::normalized(os);
    if let Some(m) = munged.as_object_mut() {
        for list in ["containers", "initContainers"] {
            if let Some(items) = m.get_mut(list).and_then(Value::as_array_mut) {
                for (i, c) in items.iter_mut().enumerate() {
                    let old_image = at(&old_norm[list][i], "image").clone();
                    if let Some(cm) = c.as_object_mut() {
                        cm.insert("image".into(), old_image);
                    }
                }
            }
        }
        for field in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match old_norm.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
    }
    if munged != old_norm {
        let changed = super::changed_fields(&old_norm, &munged);
        errs.push(FieldError::forbidden(
            "spec",
            format!(
                "pod updates may not change fields other than {UPDATABLE_POD_FIELDS}\n{}",
                changed.join("\n")
            ),
        ));
    }
}

/// `ValidatePodTemplate` (the PodTemplate kind).
pub(crate) fn pod_template(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    pod_template_spec(at(object, "template"), &Path::root("template"), errs);
}
