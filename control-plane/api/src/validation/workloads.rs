//! Deployments, ReplicaSets, DaemonSets, StatefulSets, ControllerRevisions and
//! ReplicationControllers (`pkg/apis/apps/validation`, core's RC rules, the apps strategies'
//! selector immutability; v1.33). Absent fields read as the apps/v1 defaults.

use serde_json::Value;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta::{self, NEGATIVE};
use super::pod;
use super::util::{Errs, Path, at, get, go_int_or_string, go_string_map, int_opt, str_opt};

fn non_negative(v: &Value, field: &str, path: &Path, errs: &mut Errs) {
    if let Some(n) = int_opt(v, field)
        && n < 0
    {
        errs.push(FieldError::invalid(path.child(field).as_str(), n, NEGATIVE));
    }
}

fn template_labels(template: &Value) -> Option<&Value> {
    get(at(template, "metadata"), "labels")
}

/// `spec.template.metadata.labels: Invalid value: map[...]: `selector` does not match ...`.
fn selector_mismatch(template: &Value, path: &Path) -> FieldError {
    FieldError::invalid_rendered(
        path.child("metadata").child("labels").as_str(),
        go_string_map(template_labels(template)),
        "`selector` does not match template `labels`",
    )
}

/// The selector rules of Deployments, ReplicaSets and StatefulSets; returns whether the
/// template should be matched against the selector.
fn required_selector(spec: &Value, noun: &str, path: &Path, errs: &mut Errs) -> bool {
    let sel = get(spec, "selector");
    let sp = path.child("selector");
    match sel {
        None => errs.push(FieldError::required(sp.as_str(), "")),
        Some(s) => {
            meta::label_selector(Some(s), &sp, errs);
            if meta::selector_is_empty(s) {
                errs.push(FieldError::invalid_rendered(
                    sp.as_str(),
                    meta::go_label_selector(s),
                    format!("empty selector is invalid for {noun}"),
                ));
            }
        }
    }
    if !meta::selector_parses(sel) {
        let detail = if noun == "statefulset" {
            ""
        } else {
            "invalid label selector"
        };
        errs.push(FieldError::invalid_rendered(
            sp.as_str(),
            sel.map_or_else(|| "nil".to_owned(), meta::go_label_selector),
            detail,
        ));
        return false;
    }
    true
}

/// `ValidatePodTemplateSpecForReplicaSet` (also Deployments and RCs).
fn template_for_replicas(
    spec: &Value,
    kind: &str,
    check_match: bool,
    path: &Path,
    errs: &mut Errs,
) {
    let template = at(spec, "template");
    let tp = path.child("template");
    let sel = get(spec, "selector");
    let empty = sel.is_some_and(meta::selector_is_empty);
    if check_match && !empty && !meta::selector_matches(sel, template_labels(template)) {
        errs.push(selector_mismatch(template, &tp));
    }
    pod::pod_template_spec(template, &tp, errs);
    template_restart_and_deadline(template, kind, &tp, errs);
}

fn template_restart_and_deadline(template: &Value, kind: &str, tp: &Path, errs: &mut Errs) {
    let spec = at(template, "spec");
    let policy = str_opt(spec, "restartPolicy").unwrap_or("Always");
    if policy != "Always" {
        errs.push(FieldError::not_supported(
            tp.child("spec").child("restartPolicy").as_str(),
            policy,
            &["Always"],
        ));
    }
    if get(spec, "activeDeadlineSeconds").is_some() {
        errs.push(FieldError::forbidden(
            tp.child("spec").child("activeDeadlineSeconds").as_str(),
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

fn int_or_percent_value(v: &Value) -> i64 {
    match v {
        Value::String(s) => {
            if formats::percent(s).is_empty() {
                s.trim_end_matches('%').parse().unwrap_or(0)
            } else {
                0
            }
        }
        other => other.as_i64().unwrap_or(0),
    }
}

/// `ValidatePositiveIntOrPercent`.
fn int_or_percent(v: &Value, path: &Path, errs: &mut Errs) {
    match v {
        Value::String(s) => {
            for m in formats::percent(s) {
                errs.push(FieldError::invalid_rendered(
                    path.as_str(),
                    go_int_or_string(v),
                    m,
                ));
            }
        }
        other => {
            let n = other.as_i64().unwrap_or(0);
            if n < 0 {
                errs.push(FieldError::invalid(path.as_str(), n, NEGATIVE));
            }
        }
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100(v: &Value, path: &Path, errs: &mut Errs) {
    if let Value::String(s) = v
        && formats::percent(s).is_empty()
        && int_or_percent_value(v) > 100
    {
        errs.push(FieldError::invalid_rendered(
            path.as_str(),
            go_int_or_string(v),
            "must not be greater than 100%",
        ));
    }
}

/// Both checks, as PodDisruptionBudgets use them.
pub(crate) fn check_int_or_percent(v: &Value, path: &Path, errs: &mut Errs) {
    int_or_percent(v, path, errs);
    not_more_than_100(v, path, errs);
}

fn deployment_strategy(spec: &Value, path: &Path, errs: &mut Errs) {
    let strategy = at(spec, "strategy");
    let sp = path.child("strategy");
    let kind = str_opt(strategy, "type").unwrap_or("RollingUpdate");
    match kind {
        "Recreate" => {
            if get(strategy, "rollingUpdate").is_some() {
                errs.push(FieldError::forbidden(
                    sp.child("rollingUpdate").as_str(),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = at(strategy, "rollingUpdate");
            let rp = sp.child("rollingUpdate");
            let pct = Value::from("25%");
            let unavailable = get(ru, "maxUnavailable").unwrap_or(&pct);
            let surge = get(ru, "maxSurge").unwrap_or(&pct);
            int_or_percent(unavailable, &rp.child("maxUnavailable"), errs);
            int_or_percent(surge, &rp.child("maxSurge"), errs);
            if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
                errs.push(FieldError::invalid_rendered(
                    rp.child("maxUnavailable").as_str(),
                    go_int_or_string(unavailable),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            not_more_than_100(unavailable, &rp.child("maxUnavailable"), errs);
        }
        other => {
            let ru = if get(strategy, "rollingUpdate").is_some() {
                "(*apps.RollingUpdateDeployment)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDeployment)(nil)"
            };
            let mut e =
                FieldError::not_supported(sp.as_str(), other, &["Recreate", "RollingUpdate"]);
            e.rendered = Some(format!(
                "apps.DeploymentStrategy{{Type:{}, RollingUpdate:{ru}}}",
                super::errors::go_quote(other)
            ));
            errs.push(e);
        }
    }
}

fn deployment_spec(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let path = Path::root("spec");
    non_negative(spec, "replicas", &path, errs);
    let check = required_selector(spec, "deployment", &path, errs);
    template_for_replicas(spec, "ReplicaSet", check, &path, errs);
    deployment_strategy(spec, &path, errs);
    non_negative(spec, "minReadySeconds", &path, errs);
    non_negative(spec, "revisionHistoryLimit", &path, errs);
    if let Some(pds) = int_opt(spec, "progressDeadlineSeconds") {
        if pds < 0 {
            errs.push(FieldError::invalid(
                path.child("progressDeadlineSeconds").as_str(),
                pds,
                NEGATIVE,
            ));
        }
        if pds <= int_opt(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(FieldError::invalid(
                path.child("progressDeadlineSeconds").as_str(),
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
}

/// `ValidateDeployment`.
pub(crate) fn deployment(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    deployment_spec(object, errs);
}

/// The apps strategies' `spec.selector` immutability.
fn selector_immutable(new: &Value, old: &Value, errs: &mut Errs) {
    let (ns, os) = (
        get(at(new, "spec"), "selector"),
        get(at(old, "spec"), "selector"),
    );
    if ns.map(super::normalized) != os.map(super::normalized) {
        errs.push(FieldError::invalid_rendered(
            "spec.selector",
            ns.map_or_else(|| "nil".to_owned(), meta::go_label_selector),
            meta::IMMUTABLE,
        ));
    }
}

/// `ValidateDeploymentUpdate` plus selector immutability.
pub(crate) fn deployment_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    deployment_spec(new, errs);
    selector_immutable(new, old, errs);
}

fn replica_set_spec(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let path = Path::root("spec");
    non_negative(spec, "replicas", &path, errs);
    non_negative(spec, "minReadySeconds", &path, errs);
    let check = required_selector(spec, "deployment", &path, errs);
    template_for_replicas(spec, "ReplicaSet", check, &path, errs);
}

/// `ValidateReplicaSet`.
pub(crate) fn replica_set(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    replica_set_spec(object, errs);
}

/// `ValidateReplicaSetUpdate` plus selector immutability.
pub(crate) fn replica_set_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    replica_set_spec(new, errs);
    selector_immutable(new, old, errs);
}

fn daemon_set_spec(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let path = Path::root("spec");
    let sel = get(spec, "selector");
    meta::label_selector(sel, &path.child("selector"), errs);
    let template = at(spec, "template");
    let tp = path.child("template");
    if meta::selector_parses(sel) {
        let matches = match sel {
            Some(s) if meta::selector_is_empty(s) => true,
            other => meta::selector_matches(other, template_labels(template)),
        };
        if !matches {
            errs.push(selector_mismatch(template, &tp));
        }
    }
    if let Some(s) = sel
        && meta::selector_is_empty(s)
    {
        errs.push(FieldError::invalid_rendered(
            path.child("selector").as_str(),
            meta::go_label_selector(s),
            "empty selector is invalid for daemonset",
        ));
    }
    pod::pod_template_spec(template, &tp, errs);
    template_restart_and_deadline(template, "DaemonSet", &tp, errs);
    non_negative(spec, "minReadySeconds", &path, errs);
    non_negative(spec, "templateGeneration", &path, errs);
    let strategy = at(spec, "updateStrategy");
    let sp = path.child("updateStrategy");
    match str_opt(strategy, "type").unwrap_or("RollingUpdate") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let ru = at(strategy, "rollingUpdate");
            let rp = sp.child("rollingUpdate");
            let one = Value::from(1);
            let zero = Value::from(0);
            let unavailable = get(ru, "maxUnavailable").unwrap_or(&one);
            let surge = get(ru, "maxSurge").unwrap_or(&zero);
            int_or_percent(unavailable, &rp.child("maxUnavailable"), errs);
            int_or_percent(surge, &rp.child("maxSurge"), errs);
            not_more_than_100(unavailable, &rp.child("maxUnavailable"), errs);
            not_more_than_100(surge, &rp.child("maxSurge"), errs);
            let (has_u, has_s) = (
                int_or_percent_value(unavailable) != 0,
                int_or_percent_value(surge) != 0,
            );
            if has_u && has_s {
                errs.push(FieldError::invalid_rendered(
                    rp.child("maxSurge").as_str(),
                    go_int_or_string(surge),
                    "may not be set when maxUnavailable is non-zero",
                ));
            } else if !has_u && !has_s {
                errs.push(FieldError::required(
                    rp.child("maxUnavailable").as_str(),
                    "cannot be 0 when maxSurge is 0",
                ));
            }
        }
        other => {
            let mut e =
                FieldError::not_supported(sp.as_str(), other, &["RollingUpdate", "OnDelete"]);
            e.rendered = Some(format!(
                "apps.DaemonSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}}",
                super::errors::go_quote(other)
            ));
            errs.push(e);
        }
    }
    non_negative(spec, "revisionHistoryLimit", &path, errs);
}

/// `ValidateDaemonSet`.
pub(crate) fn daemon_set(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    daemon_set_spec(object, errs);
}

/// `ValidateDaemonSetUpdate` plus selector immutability.
pub(crate) fn daemon_set_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    daemon_set_spec(new, errs);
    selector_immutable(new, old, errs);
}

fn stateful_set_spec(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let path = Path::root("spec");
    match str_opt(spec, "podManagementPolicy").unwrap_or("OrderedReady") {
        "OrderedReady" | "Parallel" => {}
        "" => errs.push(FieldError::required(
            path.child("podManagementPolicy").as_str(),
            "",
        )),
        other => errs.push(FieldError::invalid(
            path.child("podManagementPolicy").as_str(),
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = at(spec, "updateStrategy");
    let sp = path.child("updateStrategy");
    match str_opt(strategy, "type").unwrap_or("RollingUpdate") {
        "OnDelete" => {
            if let Some(ru) = get(strategy, "rollingUpdate") {
                errs.push(FieldError::invalid(
                    sp.child("rollingUpdate").as_str(),
                    ru.clone(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = get(strategy, "rollingUpdate") {
                let rp = sp.child("rollingUpdate");
                non_negative(ru, "partition", &rp, errs);
                if let Some(mu) = get(ru, "maxUnavailable") {
                    let mp = rp.child("maxUnavailable");
                    int_or_percent(mu, &mp, errs);
                    if int_or_percent_value(mu) == 0 {
                        errs.push(FieldError::invalid_rendered(
                            mp.as_str(),
                            go_int_or_string(mu),
                            "cannot be 0",
                        ));
                    }
                    not_more_than_100(mu, &mp, errs);
                }
            }
        }
        other => errs.push(FieldError::invalid_rendered(
            sp.as_str(),
            format!(
                "apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}",
                super::errors::go_quote(other)
            ),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(policy) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        for field in ["whenDeleted", "whenScaled"] {
            let v = str_opt(policy, field).unwrap_or("Retain");
            if v != "Retain" && v != "Delete" {
                errs.push(FieldError::not_supported(
                    path.child("persistentVolumeClaimRetentionPolicy")
                        .child(field)
                        .as_str(),
                    v,
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    non_negative(spec, "replicas", &path, errs);
    non_negative(spec, "minReadySeconds", &path, errs);
    if let Some(o) = get(spec, "ordinals") {
        non_negative(o, "start", &path.child("ordinals"), errs);
    }
    let check = required_selector(spec, "statefulset", &path, errs);
    let template = at(spec, "template");
    let tp = path.child("template");
    if check
        && !get(spec, "selector").is_some_and(meta::selector_is_empty)
        && !meta::selector_matches(get(spec, "selector"), template_labels(template))
    {
        errs.push(selector_mismatch(template, &tp));
    }
    // StatefulSets check only the template's labels and annotations, not its pod spec.
    let tmeta = at(template, "metadata");
    meta::labels(get(tmeta, "labels"), &tp.child("labels"), errs);
    meta::annotations(get(tmeta, "annotations"), &tp.child("annotations"), errs);
    template_restart_and_deadline(template, "StatefulSet", &tp, errs);
}

/// `ValidateStatefulSet` (names are DNS labels).
pub(crate) fn stateful_set(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Label, true, errs);
    stateful_set_spec(object, errs);
}

/// `ValidateStatefulSetUpdate`: only replicas, ordinals, template, updateStrategy,
/// persistentVolumeClaimRetentionPolicy and minReadySeconds may change.
pub(crate) fn stateful_set_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    stateful_set_spec(new, errs);
    let strip = |v: &Value| {
        let mut spec = super::normalized(at(v, "spec"));
        if let Some(m) = spec.as_object_mut() {
            for f in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ] {
                m.remove(f);
            }
        }
        spec
    };
    if strip(new) != strip(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
             'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
             'minReadySeconds' are forbidden",
        ));
    }
}

/// `ValidateControllerRevision`.
pub(crate) fn controller_revision(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    if get(object, "data").is_none() {
        errs.push(FieldError::required("data", "data is mandatory"));
    }
    if let Some(n) = int_opt(object, "revision")
        && n < 0
    {
        errs.push(FieldError::invalid("revision", n, NEGATIVE));
    }
}

/// `ValidateControllerRevisionUpdate`: data is immutable.
pub(crate) fn controller_revision_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    controller_revision(new, errs);
    meta::immutable(
        get(new, "data"),
        get(old, "data"),
        &Path::root("data"),
        errs,
    );
}

/// `ValidateReplicationController`.
pub(crate) fn replication_controller(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    let path = Path::root("spec");
    non_negative(spec, "minReadySeconds", &path, errs);
    let selector = get(spec, "selector").filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    if selector.is_none() {
        errs.push(FieldError::required(path.child("selector").as_str(), ""));
    }
    non_negative(spec, "replicas", &path, errs);
    let tp = path.child("template");
    let Some(template) = get(spec, "template") else {
        errs.push(FieldError::required(tp.as_str(), ""));
        return;
    };
    if let Some(sel) = selector {
        let labels = template_labels(template);
        let matched = sel.as_object().is_some_and(|m| {
            m.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
        if !matched {
            errs.push(selector_mismatch(template, &tp));
        }
    }
    pod::pod_template_spec(template, &tp, errs);
    template_restart_and_deadline(template, "ReplicationController", &tp, errs);
}
