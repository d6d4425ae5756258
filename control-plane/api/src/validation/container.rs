//! Containers: names, images, ports, env, mounts, probes, lifecycle hooks, resources and the
//! security context, after `pkg/apis/core/validation/validation.go` (v1.33). Fields Kubernetes
//! defaults (protocol, terminationMessagePolicy, probe thresholds, httpGet path/scheme) are
//! read with their defaults when absent.

use serde_json::Value;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta;
use super::resources::{resources, security_context};
use super::util::{Errs, Path, arr, bool_opt, get, int_opt, str_opt, str_or};
use super::volume::{Volumes, local_descending_path};

/// Which list a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `spec.containers`.
    Regular,
    /// `spec.initContainers`.
    Init,
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// `validateContainerCommon` plus the role-specific checks.
pub(crate) fn container(
    c: &Value,
    role: Role,
    vols: &Volumes,
    grace: i64,
    path: &Path,
    errs: &mut Errs,
) {
    let name = str_or(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(path.child("name").as_str(), ""));
    } else {
        for m in formats::dns1123_label(name) {
            errs.push(FieldError::invalid(path.child("name").as_str(), name, m));
        }
    }
    if str_or(c, "image").is_empty() {
        errs.push(FieldError::required(path.child("image").as_str(), ""));
    }
    let tmp = str_opt(c, "terminationMessagePolicy").unwrap_or("File");
    match tmp {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            path.child("terminationMessagePolicy").as_str(),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            path.child("terminationMessagePolicy").as_str(),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    ports(arr(c, "ports"), &path.child("ports"), errs);
    env(arr(c, "env"), &path.child("env"), errs);
    env_from(arr(c, "envFrom"), &path.child("envFrom"), errs);
    volume_mounts(c, vols, &path.child("volumeMounts"), errs);
    if let Some(policy) = str_opt(c, "imagePullPolicy") {
        match policy {
            "Always" | "IfNotPresent" | "Never" => {}
            "" => errs.push(FieldError::required(
                path.child("imagePullPolicy").as_str(),
                "",
            )),
            other => errs.push(FieldError::not_supported(
                path.child("imagePullPolicy").as_str(),
                other,
                &["Always", "IfNotPresent", "Never"],
            )),
        }
    }
    resources(get(c, "resources"), &path.child("resources"), errs);
    security_context(
        get(c, "securityContext"),
        &path.child("securityContext"),
        errs,
    );

    let restartable = str_opt(c, "restartPolicy") == Some("Always");
    match role {
        Role::Init => {
            if let Some(rp) = str_opt(c, "restartPolicy")
                && rp != "Always"
            {
                errs.push(FieldError::not_supported(
                    path.child("restartPolicy").as_str(),
                    rp,
                    &["Always"],
                ));
            }
            if !restartable {
                for field in [
                    "lifecycle",
                    "livenessProbe",
                    "readinessProbe",
                    "startupProbe",
                ] {
                    if get(c, field).is_some() {
                        errs.push(FieldError::forbidden(
                            path.child(field).as_str(),
                            "may not be set for init containers without restartPolicy=Always",
                        ));
                    }
                }
                return;
            }
        }
        Role::Regular => {}
    }
    if let Some(lc) = get(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(lc, hook) {
                handler(h, true, grace, &path.child("lifecycle").child(hook), errs);
            }
        }
    }
    for (field, kind) in [
        ("livenessProbe", ProbeKind::Liveness),
        ("readinessProbe", ProbeKind::Readiness),
        ("startupProbe", ProbeKind::Startup),
    ] {
        if let Some(p) = get(c, field) {
            probe(p, kind, grace, &path.child(field), errs);
        }
    }
    if role == Role::Regular && get(c, "restartPolicy").is_some() {
        errs.push(FieldError::forbidden(
            path.child("restartPolicy").as_str(),
            "may not be set for non-init containers",
        ));
    }
}

/// `validateContainerPorts`.
fn ports(list: &[Value], path: &Path, errs: &mut Errs) {
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in list.iter().enumerate() {
        let p = path.index(i);
        let name = str_or(port, "name");
        if !name.is_empty() {
            let msgs = formats::port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(p.child("name").as_str(), name, m));
                }
            } else if names.contains(&name) {
                errs.push(FieldError::duplicate(p.child("name").as_str(), name));
            } else {
                names.push(name);
            }
        }
        let cp = int_opt(port, "containerPort").unwrap_or(0);
        if cp == 0 {
            errs.push(FieldError::required(p.child("containerPort").as_str(), ""));
        } else {
            for m in formats::port_num(cp) {
                errs.push(FieldError::invalid(
                    p.child("containerPort").as_str(),
                    cp,
                    m,
                ));
            }
        }
        if let Some(hp) = int_opt(port, "hostPort").filter(|h| *h != 0) {
            for m in formats::port_num(hp) {
                errs.push(FieldError::invalid(p.child("hostPort").as_str(), hp, m));
            }
        }
        protocol(port, &p, errs);
    }
}

/// A `protocol` field (default TCP): required, one of TCP, UDP, SCTP.
pub(crate) fn protocol(port: &Value, path: &Path, errs: &mut Errs) {
    match str_opt(port, "protocol").unwrap_or("TCP") {
        "TCP" | "UDP" | "SCTP" => {}
        "" => errs.push(FieldError::required(path.child("protocol").as_str(), "")),
        other => errs.push(FieldError::not_supported(
            path.child("protocol").as_str(),
            other,
            PROTOCOLS,
        )),
    }
}

/// `checkHostPortConflicts` across a list of containers.
pub(crate) fn host_port_conflicts(containers: &[Value], path: &Path, errs: &mut Errs) {
    let mut seen: Vec<String> = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in arr(c, "ports").iter().enumerate() {
            let hp = int_opt(port, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{hp}",
                str_opt(port, "protocol").unwrap_or("TCP"),
                str_or(port, "hostIP")
            );
            let p = path.index(ci).child("ports").index(pi).child("hostPort");
            if seen.contains(&key) {
                errs.push(FieldError::duplicate(p.as_str(), key));
            } else {
                seen.push(key);
            }
        }
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// Field labels `ConvertDownwardAPIFieldLabel` knows for v1 pods.
const CONVERTIBLE_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.serviceAccountName",
    "spec.schedulerName",
    "status.phase",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// `ValidateEnv`: names (relaxed rule), and `valueFrom` with exactly one source.
fn env(list: &[Value], path: &Path, errs: &mut Errs) {
    for (i, ev) in list.iter().enumerate() {
        let p = path.index(i);
        let name = str_or(ev, "name");
        if name.is_empty() {
            errs.push(FieldError::required(p.child("name").as_str(), ""));
        } else {
            for m in formats::env_var_name(name) {
                errs.push(FieldError::invalid(p.child("name").as_str(), name, m));
            }
        }
        let Some(from) = get(ev, "valueFrom") else {
            continue;
        };
        let fp = p.child("valueFrom");
        let mut sources = 0;
        if let Some(fr) = get(from, "fieldRef") {
            sources += 1;
            object_field_selector(fr, ENV_FIELD_PATHS, &fp.child("fieldRef"), errs);
        }
        if let Some(rf) = get(from, "resourceFieldRef") {
            sources += 1;
            let rp = fp.child("resourceFieldRef");
            if str_or(rf, "resource").is_empty() {
                errs.push(FieldError::required(rp.child("resource").as_str(), ""));
            } else {
                resource_field_selector(rf, &rp, errs);
            }
        }
        for kind in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = get(from, kind) {
                sources += 1;
                key_selector(r, &fp.child(kind), errs);
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                fp.as_str(),
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or \
                 `secretKeyRef`",
            ));
        } else if !str_or(ev, "value").is_empty() {
            errs.push(FieldError::invalid(
                fp.as_str(),
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                fp.as_str(),
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

/// `validateObjectFieldSelector`.
pub(crate) fn object_field_selector(fs: &Value, allowed: &[&str], path: &Path, errs: &mut Errs) {
    let version = str_opt(fs, "apiVersion").unwrap_or("v1");
    if version.is_empty() {
        errs.push(FieldError::required(path.child("apiVersion").as_str(), ""));
        return;
    }
    let field_path = str_or(fs, "fieldPath");
    if field_path.is_empty() {
        errs.push(FieldError::required(path.child("fieldPath").as_str(), ""));
        return;
    }
    let (base, subscript) = match field_path.split_once('[') {
        Some((b, rest)) if rest.ends_with(']') => {
            let inner = &rest[..rest.len() - 1];
            let inner = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .unwrap_or(inner);
            (b, Some(inner))
        }
        _ => (field_path, None),
    };
    let conversion_error = if version != "v1" {
        Some(format!("unsupported pod version: {version}"))
    } else if !CONVERTIBLE_FIELD_PATHS.contains(&base)
        || (subscript.is_some() && !base.starts_with("metadata."))
    {
        Some(format!("field label not supported: {field_path}"))
    } else {
        None
    };
    if let Some(e) = conversion_error {
        errs.push(FieldError::invalid(
            path.child("fieldPath").as_str(),
            field_path,
            format!("error converting fieldPath: {e}"),
        ));
        return;
    }
    match subscript {
        Some(key) => match base {
            "metadata.annotations" => meta::qualified_name(&key.to_lowercase(), path, errs),
            "metadata.labels" => meta::qualified_name(key, path, errs),
            other => errs.push(FieldError::invalid(
                path.as_str(),
                other,
                "does not support subscript",
            )),
        },
        None => {
            if !allowed.contains(&base) {
                errs.push(FieldError::not_supported(
                    path.child("fieldPath").as_str(),
                    base,
                    allowed,
                ));
            }
        }
    }
}

const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
];

/// `validateContainerResourceFieldSelector` (without the divisor checks).
pub(crate) fn resource_field_selector(rf: &Value, path: &Path, errs: &mut Errs) {
    let resource = str_or(rf, "resource");
    if resource.is_empty() {
        errs.push(FieldError::required(path.child("resource").as_str(), ""));
    } else if !RESOURCE_FIELDS.contains(&resource)
        && !resource.starts_with("requests.hugepages-")
        && !resource.starts_with("limits.hugepages-")
    {
        errs.push(FieldError::not_supported(
            path.child("resource").as_str(),
            resource,
            RESOURCE_FIELDS,
        ));
    }
}

/// `validateConfigMapKeySelector` / `validateSecretKeySelector`.
fn key_selector(r: &Value, path: &Path, errs: &mut Errs) {
    let name = str_or(r, "name");
    for m in NameRule::Subdomain.check(name, false) {
        errs.push(FieldError::invalid(path.child("name").as_str(), name, m));
    }
    let key = str_or(r, "key");
    if key.is_empty() {
        errs.push(FieldError::required(path.child("key").as_str(), ""));
    } else {
        for m in formats::config_map_key(key) {
            errs.push(FieldError::invalid(path.child("key").as_str(), key, m));
        }
    }
}

/// `ValidateEnvFrom`.
fn env_from(list: &[Value], path: &Path, errs: &mut Errs) {
    for (i, ev) in list.iter().enumerate() {
        let p = path.index(i);
        let prefix = str_or(ev, "prefix");
        if !prefix.is_empty() {
            for m in formats::env_var_name(prefix) {
                errs.push(FieldError::invalid(p.child("prefix").as_str(), prefix, m));
            }
        }
        let mut sources = 0;
        for kind in ["configMapRef", "secretRef"] {
            if let Some(r) = get(ev, kind) {
                sources += 1;
                let name = str_or(r, "name");
                let np = p.child(kind).child("name");
                if name.is_empty() {
                    errs.push(FieldError::required(np.as_str(), ""));
                } else {
                    for m in NameRule::Subdomain.check(name, true) {
                        errs.push(FieldError::invalid(np.as_str(), name, m));
                    }
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                path.as_str(),
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                path.as_str(),
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

/// `ValidateVolumeMounts`.
fn volume_mounts(c: &Value, vols: &Volumes, path: &Path, errs: &mut Errs) {
    let privileged =
        get(c, "securityContext").and_then(|sc| bool_opt(sc, "privileged")) == Some(true);
    let mut mount_points: Vec<&str> = Vec::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let p = path.index(i);
        let name = str_or(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(p.child("name").as_str(), ""));
        }
        if vols.source(name).is_none() {
            errs.push(FieldError::not_found(p.child("name").as_str(), name));
        }
        let mount_path = str_or(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(p.child("mountPath").as_str(), ""));
        }
        if mount_points.contains(&mount_path) {
            errs.push(FieldError::invalid(
                p.child("mountPath").as_str(),
                mount_path,
                "must be unique",
            ));
        }
        mount_points.push(mount_path);
        let sub_path = str_or(m, "subPath");
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &path.child("subPath"), errs);
        }
        let sub_path_expr = str_or(m, "subPathExpr");
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(FieldError::invalid(
                    p.child("subPathExpr").as_str(),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(sub_path_expr, &path.child("subPathExpr"), errs);
        }
        if let Some(mp) = str_opt(m, "mountPropagation") {
            const MODES: &[&str] = &["Bidirectional", "HostToContainer", "None"];
            let mpp = path.child("mountPropagation");
            if !MODES.contains(&mp) {
                errs.push(FieldError::not_supported(mpp.as_str(), mp, MODES));
            }
            if mp == "Bidirectional" && !privileged {
                errs.push(FieldError::forbidden(
                    mpp.as_str(),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// `validateProbe` and the per-kind rules (successThreshold 1 for liveness and startup).
fn probe(p: &Value, kind: ProbeKind, grace: i64, path: &Path, errs: &mut Errs) {
    handler(p, false, grace, path, errs);
    for (field, default) in [
        ("initialDelaySeconds", 0),
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        let v = int_opt(p, field).filter(|v| *v != 0).unwrap_or(default);
        if v < 0 {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                v,
                meta::NEGATIVE,
            ));
        }
    }
    if let Some(t) = int_opt(p, "terminationGracePeriodSeconds") {
        if kind == ProbeKind::Readiness {
            errs.push(FieldError::invalid(
                path.child("terminationGracePeriodSeconds").as_str(),
                t,
                "must not be set for readinessProbes",
            ));
        }
        if t <= 0 {
            errs.push(FieldError::invalid(
                path.child("terminationGracePeriodSeconds").as_str(),
                t,
                "must be greater than 0",
            ));
        }
    }
    let success = int_opt(p, "successThreshold")
        .filter(|v| *v != 0)
        .unwrap_or(1);
    if kind != ProbeKind::Readiness && success != 1 {
        errs.push(FieldError::invalid(
            path.child("successThreshold").as_str(),
            success,
            "must be 1",
        ));
    }
}

/// `validateHandler`: exactly one of exec, httpGet, tcpSocket, grpc (probes) or sleep (hooks).
fn handler(h: &Value, lifecycle: bool, grace: i64, path: &Path, errs: &mut Errs) {
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut count = 0;
    for &k in kinds {
        let Some(body) = get(h, k) else {
            continue;
        };
        let p = path.child(k);
        if count > 0 {
            errs.push(FieldError::forbidden(
                p.as_str(),
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match k {
            "exec" => {
                if arr(body, "command").is_empty() {
                    errs.push(FieldError::required(p.child("command").as_str(), ""));
                }
            }
            "httpGet" => {
                port_num_or_name(body.get("port"), &p.child("port"), errs);
                let scheme = str_opt(body, "scheme").unwrap_or("HTTP");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    errs.push(FieldError::not_supported(
                        p.child("scheme").as_str(),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
                for header in arr(body, "httpHeaders") {
                    let name = str_or(header, "name");
                    for m in formats::http_header_name(name) {
                        errs.push(FieldError::invalid(
                            p.child("httpHeaders").as_str(),
                            name,
                            m,
                        ));
                    }
                }
            }
            "tcpSocket" => port_num_or_name(body.get("port"), &p.child("port"), errs),
            "grpc" => {
                let port = int_opt(body, "port").unwrap_or(0);
                for m in formats::port_num(port) {
                    errs.push(FieldError::invalid(p.child("port").as_str(), port, m));
                }
            }
            _ => {
                let seconds = int_opt(body, "seconds").unwrap_or(0);
                if seconds < 0 || seconds > grace {
                    errs.push(FieldError::invalid(
                        p.as_str(),
                        seconds,
                        format!(
                            "must be non-negative and less than terminationGracePeriodSeconds \
                             ({grace})"
                        ),
                    ));
                }
            }
        }
    }
    if count == 0 {
        errs.push(FieldError::required(
            path.as_str(),
            "must specify a handler type",
        ));
    }
}

/// `ValidatePortNumOrName` for an int-or-string port.
pub(crate) fn port_num_or_name(port: Option<&Value>, path: &Path, errs: &mut Errs) {
    match port {
        Some(Value::String(s)) => {
            for m in formats::port_name(s) {
                errs.push(FieldError::invalid(path.as_str(), s.as_str(), m));
            }
        }
        other => {
            let n = other.and_then(Value::as_i64).unwrap_or(0);
            for m in formats::port_num(n) {
                errs.push(FieldError::invalid(path.as_str(), n, m));
            }
        }
    }
}
