//! APIServices, CertificateSigningRequests, FlowSchemas and PriorityLevelConfigurations: the
//! basic structural checks of kube-aggregator's and `pkg/apis/{certificates,flowcontrol}/
//! validation` (v1.33).

use serde_json::Value;

use super::core::base64_decode;
use super::errors::{FieldError, go_quote};
use super::formats::{self, NameRule};
use super::meta;
use super::util::{Errs, Path, arr, at, bool_opt, get, int_opt, str_opt, str_or, strings};

/// `ValidateAPIService`: the name is `<version>.<group>`, priorities are in range, a remote
/// service is fully specified.
pub(crate) fn api_service(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let (group, version) = (str_or(spec, "group"), str_or(spec, "version"));
    let required = format!("{version}.{group}");
    let name = str_or(at(object, "metadata"), "name");
    meta::object_meta(object, NameRule::PathSegment, false, errs);
    if !name.is_empty() && formats::path_segment_name(name).is_empty() && name != required {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            format!(
                "must be `spec.version+\".\"+spec.group`: {}",
                go_quote(&required)
            ),
        ));
    }
    if group.is_empty() && version != "v1" {
        errs.push(FieldError::required(
            "spec.group",
            "only v1 may have an empty group and it better be legacy kube",
        ));
    }
    if !group.is_empty() {
        for m in formats::dns1123_subdomain(group) {
            errs.push(FieldError::invalid("spec.group", group, m));
        }
    }
    for m in formats::dns1035_label(version) {
        errs.push(FieldError::invalid("spec.version", version, m));
    }
    let gpm = int_opt(spec, "groupPriorityMinimum").unwrap_or(0);
    if gpm <= 0 || gpm > 20000 {
        errs.push(FieldError::invalid(
            "spec.groupPriorityMinimum",
            gpm,
            "must be positive and less than 20000",
        ));
    }
    let vp = int_opt(spec, "versionPriority").unwrap_or(0);
    if vp <= 0 || vp > 1000 {
        errs.push(FieldError::invalid(
            "spec.versionPriority",
            vp,
            "must be positive and less than 1000",
        ));
    }
    let ca_len = str_opt(spec, "caBundle")
        .and_then(base64_decode)
        .map_or(0, |b| b.len());
    let insecure = bool_opt(spec, "insecureSkipTLSVerify") == Some(true);
    let Some(svc) = get(spec, "service") else {
        if ca_len != 0 {
            errs.push(FieldError::invalid(
                "spec.caBundle",
                format!("{ca_len} bytes"),
                "local APIServices may not have a caBundle",
            ));
        }
        if insecure {
            errs.push(FieldError::invalid(
                "spec.insecureSkipTLSVerify",
                true,
                "local APIServices may not have insecureSkipTLSVerify",
            ));
        }
        return;
    };
    for field in ["namespace", "name"] {
        if str_or(svc, field).is_empty() {
            errs.push(FieldError::required(&format!("spec.service.{field}"), ""));
        }
    }
    let port = int_opt(svc, "port").unwrap_or(443);
    let msgs = formats::port_num(port);
    if !msgs.is_empty() {
        errs.push(FieldError::invalid(
            "spec.service.port",
            port,
            format!("port is not valid: {}", msgs.join(", ")),
        ));
    }
    if insecure && ca_len > 0 {
        errs.push(FieldError::invalid(
            "spec.insecureSkipTLSVerify",
            true,
            "may not be true if caBundle is present",
        ));
    }
}

const USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// `ValidateCertificateSigningRequestCreate`: a PEM request, usages, a signer name.
pub(crate) fn csr(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::PathSegment, false, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let request = str_or(spec, "request");
    let pem = base64_decode(request).unwrap_or_default();
    // The request must parse and its self-signature verify (Kubernetes' `ParseCSR` +
    // `CheckSignature`).
    if let Err(error) = crate::csr::parse_pem(&pem) {
        errs.push(FieldError::invalid(
            sp.child("request").as_str(),
            request,
            error.to_string(),
        ));
    }
    let usages = strings(spec, "usages");
    if usages.is_empty() {
        errs.push(FieldError::required(sp.child("usages").as_str(), ""));
    }
    for (i, u) in usages.iter().enumerate() {
        if !USAGES.contains(u) {
            errs.push(FieldError::not_supported(
                sp.child("usages").index(i).as_str(),
                *u,
                USAGES,
            ));
        }
        if usages[..i].contains(u) {
            errs.push(FieldError::duplicate(
                sp.child("usages").index(i).as_str(),
                *u,
            ));
        }
    }
    signer_name(str_or(spec, "signerName"), &sp.child("signerName"), errs);
    if let Some(exp) = int_opt(spec, "expirationSeconds")
        && exp < 600
    {
        errs.push(FieldError::invalid(
            sp.child("expirationSeconds").as_str(),
            exp,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
}

fn signer_name(name: &str, path: &Path, errs: &mut Errs) {
    if name.is_empty() {
        errs.push(FieldError::required(path.as_str(), ""));
        return;
    }
    let Some((domain, rest)) = name.split_once('/').filter(|(_, r)| !r.contains('/')) else {
        errs.push(FieldError::invalid(
            path.as_str(),
            name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    };
    if domain.len() > 253 {
        errs.push(FieldError::too_long(path.as_str(), 253));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for l in &labels {
        let msgs = formats::dns1123_label(l);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(FieldError::invalid(
                    path.as_str(),
                    domain,
                    format!("validating label {}: {m}", go_quote(l)),
                ));
            }
            break;
        }
    }
    if labels.len() < 2 {
        errs.push(FieldError::invalid(
            path.as_str(),
            domain,
            "should be a domain with at least two segments separated by dots",
        ));
    }
    if rest.len() > 253 + 63 + 1 {
        errs.push(FieldError::too_long(path.as_str(), 253 + 63 + 1));
    }
    for m in formats::dns1123_subdomain(rest) {
        errs.push(FieldError::invalid(
            path.as_str(),
            rest,
            format!("validating path {}: {m}", go_quote(rest)),
        ));
    }
}

/// CSR updates: the spec is restored by the strategy; only the ObjectMeta rules apply.
pub(crate) fn csr_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
}

/// `ValidateFlowSchema` (structure).
pub(crate) fn flow_schema(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    if str_or(at(spec, "priorityLevelConfiguration"), "name").is_empty() {
        errs.push(FieldError::required(
            sp.child("priorityLevelConfiguration")
                .child("name")
                .as_str(),
            "must reference a priority level",
        ));
    }
    if let Some(p) = int_opt(spec, "matchingPrecedence") {
        if p <= 0 {
            errs.push(FieldError::invalid(
                sp.child("matchingPrecedence").as_str(),
                p,
                "must be a positive value",
            ));
        }
        if p > 10000 {
            errs.push(FieldError::invalid(
                sp.child("matchingPrecedence").as_str(),
                p,
                "must not be greater than 10000",
            ));
        }
    }
    if let Some(dm) = get(spec, "distinguisherMethod") {
        let t = str_or(dm, "type");
        if t != "ByUser" && t != "ByNamespace" {
            errs.push(FieldError::not_supported(
                sp.child("distinguisherMethod").child("type").as_str(),
                t,
                &["ByNamespace", "ByUser"],
            ));
        }
    }
    for (i, rule) in arr(spec, "rules").iter().enumerate() {
        let rp = sp.child("rules").index(i);
        if arr(rule, "subjects").is_empty() {
            errs.push(FieldError::required(
                rp.child("subjects").as_str(),
                "subjects must contain at least one value",
            ));
        }
        if arr(rule, "resourceRules").is_empty() && arr(rule, "nonResourceRules").is_empty() {
            errs.push(FieldError::required(
                rp.as_str(),
                "at least one of resourceRules and nonResourceRules has to be non-empty",
            ));
        }
    }
}

/// `ValidatePriorityLevelConfiguration` (structure).
pub(crate) fn priority_level(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    match str_or(spec, "type") {
        "Exempt" => {
            if get(spec, "limited").is_some() {
                errs.push(FieldError::forbidden(
                    sp.child("limited").as_str(),
                    "must be nil if the type is not Limited",
                ));
            }
        }
        "Limited" => {
            if get(spec, "limited").is_none() {
                errs.push(FieldError::required(
                    sp.child("limited").as_str(),
                    "must not be empty when type is Limited",
                ));
            }
            if get(spec, "exempt").is_some() {
                errs.push(FieldError::forbidden(
                    sp.child("exempt").as_str(),
                    "must be nil if the type is Limited",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            sp.child("type").as_str(),
            other,
            &["Exempt", "Limited"],
        )),
    }
}
