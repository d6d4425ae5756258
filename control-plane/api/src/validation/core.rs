//! Namespaces, Nodes, Events, ConfigMaps, Secrets, ServiceAccounts, LimitRanges and
//! ResourceQuotas (`pkg/apis/core/validation`, `events.go`; v1.33).

use serde_json::Value;

use crate::quantity::Quantity;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta::{self, IMMUTABLE};
use super::placement;
use super::resources::quantity_value;
use super::util::{
    Errs, Path, arr, at, bool_opt, get, go_string_slice, obj, str_opt, str_or, strings,
};

/// `core.MaxSecretSize`: the data of a Secret or ConfigMap.
const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// `ValidateNamespace` (names are DNS labels).
pub(crate) fn namespace(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Label, false, errs);
    let path = Path::root("spec").child("finalizers");
    for f in strings(at(object, "spec"), "finalizers") {
        for m in formats::qualified_name(f) {
            errs.push(FieldError::invalid(path.as_str(), f, m));
        }
        if !f.contains('/') && f != "kubernetes" {
            errs.push(FieldError::invalid(
                path.as_str(),
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

/// `ValidateNamespaceUpdate`: only the ObjectMeta rules.
pub(crate) fn namespace_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
}

fn node_spec(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    placement::taints(
        arr(spec, "taints"),
        &Path::root("metadata").child("taints"),
        errs,
    );
    let cidrs = strings(spec, "podCIDRs");
    let cp = Path::root("spec").child("podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        if formats::parse_cidr(c).is_none() {
            errs.push(FieldError::invalid(
                cp.index(i).as_str(),
                *c,
                formats::CIDR_MSG,
            ));
        }
    }
    if cidrs.len() > 1 {
        let v6: Vec<bool> = cidrs
            .iter()
            .map(|c| formats::parse_cidr(c).is_some_and(|(ip, _)| ip.is_ipv6()))
            .collect();
        if cidrs.len() > 2 || v6[0] == v6[1] {
            errs.push(FieldError::invalid_rendered(
                cp.as_str(),
                go_string_slice(get(spec, "podCIDRs")),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        for (i, c) in cidrs.iter().enumerate() {
            if cidrs[..i].contains(c) {
                errs.push(FieldError::duplicate(cp.index(i).as_str(), *c));
            }
        }
    }
}

/// `ValidateNode`.
pub(crate) fn node(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    node_spec(object, errs);
}

/// `ValidateNodeUpdate`: podCIDRs and providerID may only be set once.
pub(crate) fn node_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    node_spec(new, errs);
    let (ns, os) = (at(new, "spec"), at(old, "spec"));
    let old_cidrs = strings(os, "podCIDRs");
    if !old_cidrs.is_empty() && old_cidrs != strings(ns, "podCIDRs") {
        errs.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let old_provider = str_or(os, "providerID");
    if !old_provider.is_empty() && old_provider != str_or(ns, "providerID") {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

/// core/v1 Events (`legacyValidateEvent`): the involved object's namespace must match.
pub(crate) fn event(object: &Value, errs: &mut Errs) {
    let ns = str_or(at(object, "metadata"), "namespace");
    let involved = str_or(at(object, "involvedObject"), "namespace");
    let event_time = get(object, "eventTime").is_some();
    let mismatch = if !event_time {
        if involved.is_empty() {
            !ns.is_empty() && ns != "default"
        } else {
            ns != involved
        }
    } else {
        involved.is_empty() && ns != "default" && ns != "kube-system"
    };
    if mismatch {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        ));
    }
    if event_time {
        reporting_fields(object, "reportingComponent", "source", errs);
    }
}

/// The reporting fields of new-style events; `key` is the JSON name of the reporting
/// controller (`reportingComponent` in core/v1), `controller_field` the path Kubernetes prints.
fn reporting_fields(object: &Value, key: &str, controller_field: &str, errs: &mut Errs) {
    let controller = str_or(object, key);
    if controller.is_empty() {
        errs.push(FieldError::required(controller_field, ""));
    }
    meta::qualified_name(controller, &Path::root(controller_field), errs);
    let instance = str_or(object, "reportingInstance");
    if instance.is_empty() {
        errs.push(FieldError::required("reportingInstance", ""));
    } else if instance.len() > 128 {
        errs.push(FieldError::invalid(
            "reportingInstance",
            "",
            "can have at most 128 characters",
        ));
    }
    let action = str_or(object, "action");
    if action.is_empty() {
        errs.push(FieldError::required("action", ""));
    } else if action.len() > 128 {
        errs.push(FieldError::invalid(
            "action",
            "",
            "can have at most 128 characters",
        ));
    }
    let reason = str_or(object, "reason");
    if reason.is_empty() {
        errs.push(FieldError::required("reason", ""));
    } else if reason.len() > 128 {
        errs.push(FieldError::invalid(
            "reason",
            "",
            "can have at most 128 characters",
        ));
    }
    let note_field = if object.get("note").is_some() {
        "note"
    } else {
        "message"
    };
    if str_or(object, note_field).len() > 1024 {
        errs.push(FieldError::invalid(
            note_field,
            "",
            "can have at most 1024 characters",
        ));
    }
}

/// events.k8s.io/v1 Events: the strict rules for new-style events.
pub(crate) fn events_v1(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    if get(object, "eventTime").is_none() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let kind = str_or(object, "type");
    if kind != "Normal" && kind != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            "",
            format!("has invalid value: {kind}"),
        ));
    }
    if get(object, "deprecatedFirstTimestamp").is_some() {
        errs.push(FieldError::invalid(
            "firstTimestamp",
            "",
            "needs to be unset",
        ));
    }
    if get(object, "deprecatedLastTimestamp").is_some() {
        errs.push(FieldError::invalid(
            "lastTimestamp",
            "",
            "needs to be unset",
        ));
    }
    reporting_fields(object, "reportingController", "reportingController", errs);
}

/// `ValidateConfigMap`: keys, no key in both `data` and `binaryData`, 1 MiB in total.
pub(crate) fn config_map(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let mut total = 0usize;
    let binary = obj(object, "binaryData");
    if let Some(data) = obj(object, "data") {
        for (k, v) in data {
            let p = Path::root("data").key(k);
            for m in formats::config_map_key(k) {
                errs.push(FieldError::invalid(p.as_str(), k.as_str(), m));
            }
            if binary.is_some_and(|b| b.contains_key(k)) {
                errs.push(FieldError::invalid(
                    p.as_str(),
                    k.as_str(),
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(bin) = binary {
        for (k, v) in bin {
            for m in formats::config_map_key(k) {
                errs.push(FieldError::invalid(
                    Path::root("binaryData").key(k).as_str(),
                    k.as_str(),
                    m,
                ));
            }
            total += v.as_str().map_or(0, base64_decoded_len);
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(
            Path::root("").as_str(),
            MAX_SECRET_SIZE,
        ));
    }
}

fn immutable_data(new: &Value, old: &Value, fields: &[&str], errs: &mut Errs) {
    if bool_opt(old, "immutable") != Some(true) {
        return;
    }
    if bool_opt(new, "immutable") != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for f in fields {
        if get(new, f) != get(old, f) {
            errs.push(FieldError::forbidden(
                f,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

/// `ValidateConfigMapUpdate`: an immutable ConfigMap keeps its data.
pub(crate) fn config_map_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    immutable_data(new, old, &["data", "binaryData"], errs);
    config_map(new, errs);
}

/// Decodes standard base64 (padding optional); `None` when malformed.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
        }
    }
    Some(out)
}

fn base64_decoded_len(s: &str) -> usize {
    base64_decode(s).map_or(s.len(), |d| d.len())
}

/// The Secret's data as Kubernetes sees it: `data` (decoded sizes) merged with `stringData`.
fn secret_data(object: &Value) -> Vec<(String, Vec<u8>)> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(map) = obj(object, "data") {
        for (k, v) in map {
            let raw = v.as_str().unwrap_or_default();
            data.push((
                k.clone(),
                base64_decode(raw).unwrap_or_else(|| raw.as_bytes().to_vec()),
            ));
        }
    }
    if let Some(map) = obj(object, "stringData") {
        for (k, v) in map {
            let bytes = v.as_str().unwrap_or_default().as_bytes().to_vec();
            match data.iter_mut().find(|(dk, _)| dk == k) {
                Some(entry) => entry.1 = bytes,
                None => data.push((k.clone(), bytes)),
            }
        }
    }
    data
}

/// `ValidateSecret`: keys, 1 MiB of data, and the keys each well-known type requires.
pub(crate) fn secret(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let data = secret_data(object);
    let dp = Path::root("data");
    let mut total = 0;
    for (k, v) in &data {
        for m in formats::config_map_key(k) {
            errs.push(FieldError::invalid(dp.key(k).as_str(), k.as_str(), m));
        }
        total += v.len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(dp.as_str(), MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.iter().any(|(dk, _)| dk == k);
    let value = |k: &str| {
        data.iter()
            .find(|(dk, _)| dk == k)
            .map(|(_, v)| v.as_slice())
    };
    match str_opt(object, "type").unwrap_or("Opaque") {
        "kubernetes.io/service-account-token" => {
            let annotations = at(at(object, "metadata"), "annotations");
            if str_or(annotations, "kubernetes.io/service-account.name").is_empty() {
                errs.push(FieldError::required(
                    Path::root("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name")
                        .as_str(),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => json_key(value(".dockercfg"), ".dockercfg", &dp, errs),
        "kubernetes.io/dockerconfigjson" => {
            json_key(value(".dockerconfigjson"), ".dockerconfigjson", &dp, errs);
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required(dp.key("username").as_str(), ""));
            errs.push(FieldError::required(dp.key("password").as_str(), ""));
        }
        "kubernetes.io/ssh-auth" if value("ssh-privatekey").is_none_or(<[u8]>::is_empty) => {
            errs.push(FieldError::required(dp.key("ssh-privatekey").as_str(), ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(dp.key(k).as_str(), ""));
                }
            }
        }
        _ => {}
    }
}

fn json_key(value: Option<&[u8]>, key: &str, dp: &Path, errs: &mut Errs) {
    let Some(bytes) = value else {
        errs.push(FieldError::required(dp.key(key).as_str(), ""));
        return;
    };
    let parsed: Result<serde_json::Map<String, Value>, _> = serde_json::from_slice(bytes);
    if let Err(e) = parsed {
        errs.push(FieldError::invalid(
            dp.key(key).as_str(),
            "<secret contents redacted>",
            go_json_error(&e, bytes),
        ));
    }
}

/// Go's `encoding/json` wording for the common failures.
fn go_json_error(e: &serde_json::Error, bytes: &[u8]) -> String {
    let trimmed: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match trimmed.first() {
        None => "unexpected end of JSON input".to_owned(),
        Some(b'{') if e.is_eof() => "unexpected end of JSON input".to_owned(),
        Some(b'{') => format!("invalid character in JSON object: {e}"),
        Some(c) if c.is_ascii_graphic() => format!(
            "invalid character '{}' looking for beginning of value",
            char::from(*c)
        ),
        Some(_) => {
            "json: cannot unmarshal value into Go value of type map[string]interface {}".to_owned()
        }
    }
}

/// `ValidateSecretUpdate`: the type never changes; an immutable Secret keeps its data.
pub(crate) fn secret_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    let (nt, ot) = (
        str_opt(new, "type").unwrap_or("Opaque"),
        str_opt(old, "type").unwrap_or("Opaque"),
    );
    if nt != ot {
        errs.push(FieldError::invalid("type", nt, IMMUTABLE));
    }
    if bool_opt(old, "immutable") == Some(true) {
        if bool_opt(new, "immutable") != Some(true) {
            errs.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        if secret_data(new) != secret_data(old) {
            errs.push(FieldError::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    secret(new, errs);
}

/// `ValidateServiceAccount`: only its metadata.
pub(crate) fn service_account(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
}

const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "storage",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
];

fn is_hugepages_quota(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
        || name.starts_with("limits.hugepages-")
}

/// `validateResourceName` (and quota's stricter standard-name rule).
fn resource_name(name: &str, quota: bool, path: &Path, errs: &mut Errs) -> bool {
    let msgs = formats::qualified_name(name);
    if !msgs.is_empty() {
        for m in msgs {
            errs.push(FieldError::invalid(path.as_str(), name, m));
        }
        return false;
    }
    if !name.contains('/') {
        let standard = STANDARD_RESOURCES.contains(&name) || is_hugepages_quota(name);
        if !standard {
            errs.push(FieldError::invalid(
                path.as_str(),
                name,
                "must be a standard resource type or fully qualified",
            ));
            return false;
        }
        if quota && name == "storage" {
            errs.push(FieldError::invalid(
                path.as_str(),
                name,
                "must be a standard resource for quota",
            ));
        }
    }
    true
}

/// `ValidateLimitRange`.
pub(crate) fn limit_range(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let lp = Path::root("spec").child("limits");
    let mut types: Vec<&str> = Vec::new();
    for (i, limit) in arr(at(object, "spec"), "limits").iter().enumerate() {
        let p = lp.index(i);
        let kind = str_or(limit, "type");
        let tmsgs = formats::qualified_name(kind);
        if !tmsgs.is_empty() {
            for m in tmsgs {
                errs.push(FieldError::invalid(p.child("type").as_str(), kind, m));
            }
        } else if !kind.contains('/')
            && !matches!(kind, "Pod" | "Container" | "PersistentVolumeClaim")
        {
            errs.push(FieldError::invalid(
                p.child("type").as_str(),
                kind,
                "must be a standard limit type or fully qualified",
            ));
        }
        if types.contains(&kind) {
            errs.push(FieldError::duplicate(p.child("type").as_str(), kind));
        }
        types.push(kind);
        if kind == "Pod" {
            for f in ["default", "defaultRequest"] {
                if obj(limit, f).is_some_and(|m| !m.is_empty()) {
                    errs.push(FieldError::forbidden(
                        p.child(f).as_str(),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        let mut parsed: Vec<(&str, &str, Quantity)> = Vec::new();
        for section in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            if kind == "Pod" && (section == "default" || section == "defaultRequest") {
                continue;
            }
            if let Some(map) = obj(limit, section) {
                for (name, raw) in map {
                    let rp = p.child(section).key(name);
                    resource_name(name, false, &rp, errs);
                    if let Some(q) = quantity_value(name, raw, &rp, &mut Vec::new()) {
                        parsed.push((section, name, q));
                    }
                }
            }
        }
        if kind == "PersistentVolumeClaim"
            && !["min", "max"]
                .iter()
                .any(|s| obj(limit, s).is_some_and(|m| m.contains_key("storage")))
        {
            errs.push(FieldError::required(
                p.child("limits").as_str(),
                "either minimum or maximum storage value is required, but neither was provided",
            ));
        }
        let find = |section: &str, name: &str| {
            parsed
                .iter()
                .find(|(s, n, _)| *s == section && *n == name)
                .map(|(_, _, q)| *q)
        };
        let mut names: Vec<&str> = parsed.iter().map(|(_, n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let (min, max) = (find("min", name), find("max", name));
            let (def, req) = (find("default", name), find("defaultRequest", name));
            let c = |q: Quantity| q.to_string();
            if let (Some(a), Some(b)) = (min, max)
                && a > b
            {
                errs.push(FieldError::invalid(
                    p.child("min").key(name).as_str(),
                    c(a),
                    format!("min value {} is greater than max value {}", c(a), c(b)),
                ));
            }
            if let (Some(r), Some(a)) = (req, min)
                && a > r
            {
                errs.push(FieldError::invalid(
                    p.child("defaultRequest").key(name).as_str(),
                    c(r),
                    format!(
                        "min value {} is greater than default request value {}",
                        c(a),
                        c(r)
                    ),
                ));
            }
            if let (Some(r), Some(b)) = (req, max)
                && r > b
            {
                errs.push(FieldError::invalid(
                    p.child("defaultRequest").key(name).as_str(),
                    c(r),
                    format!(
                        "default request value {} is greater than max value {}",
                        c(r),
                        c(b)
                    ),
                ));
            }
            if let (Some(r), Some(d)) = (req, def)
                && r > d
            {
                errs.push(FieldError::invalid(
                    p.child("defaultRequest").key(name).as_str(),
                    c(r),
                    format!(
                        "default request value {} is greater than default limit value {}",
                        c(r),
                        c(d)
                    ),
                ));
            }
            if let (Some(d), Some(a)) = (def, min)
                && a > d
            {
                errs.push(FieldError::invalid(
                    p.child("default").key(name).as_str(),
                    c(a),
                    format!("min value {} is greater than default value {}", c(a), c(d)),
                ));
            }
            if let (Some(d), Some(b)) = (def, max)
                && d > b
            {
                errs.push(FieldError::invalid(
                    p.child("default").key(name).as_str(),
                    c(b),
                    format!("default value {} is greater than max value {}", c(d), c(b)),
                ));
            }
        }
    }
}

/// `ValidateResourceQuota`: resource names for quota, quantities, scopes.
pub(crate) fn resource_quota(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    let hp = Path::root("spec").child("hard");
    if let Some(hard) = obj(spec, "hard") {
        for (name, raw) in hard {
            let p = hp.key(name);
            resource_name(name, true, &p, errs);
            quantity_value(name, raw, &p, errs);
        }
    }
    const SCOPES: &[&str] = &[
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
    ];
    let scopes = strings(spec, "scopes");
    let sp = Path::root("spec").child("scopes");
    for s in &scopes {
        if !SCOPES.contains(s) {
            errs.push(FieldError::invalid_rendered(
                sp.as_str(),
                go_string_slice(get(spec, "scopes")),
                "unsupported scope",
            ));
        }
    }
    for (a, b) in [
        ("BestEffort", "NotBestEffort"),
        ("Terminating", "NotTerminating"),
    ] {
        if scopes.contains(&a) && scopes.contains(&b) {
            errs.push(FieldError::invalid_rendered(
                sp.as_str(),
                go_string_slice(get(spec, "scopes")),
                "conflicting scopes",
            ));
        }
    }
}

/// `ValidateResourceQuotaUpdate`: scopes are immutable.
pub(crate) fn resource_quota_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    resource_quota(new, errs);
    let mut n = strings(at(new, "spec"), "scopes");
    let mut o = strings(at(old, "spec"), "scopes");
    n.sort_unstable();
    n.dedup();
    o.sort_unstable();
    o.dedup();
    if n != o {
        errs.push(FieldError::invalid_rendered(
            "spec.scopes",
            go_string_slice(get(at(new, "spec"), "scopes")),
            IMMUTABLE,
        ));
    }
}
