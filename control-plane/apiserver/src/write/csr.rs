//! CertificateSigningRequests' create strategy (Kubernetes' `pkg/registry/certificates`
//! `PrepareForCreate`): who asks is recorded by the server, never taken from the body, and a new
//! request starts without a status.

use serde_json::{Value, json};

use crate::{auth::UserInfo, request::Target};

/// Whether `target` is the built-in CertificateSigningRequest collection.
pub(super) fn is_csr(target: &Target) -> bool {
    target.custom.is_none()
        && target.resource.group == "certificates.k8s.io"
        && target.resource.plural == "certificatesigningrequests"
}

/// Sets `spec.username` and `spec.groups` from the requester, drops `spec.uid` and
/// `spec.extra` (keelson's users have neither) and the status.
pub(super) fn prepare_for_create(object: &mut Value, user: &UserInfo) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    root.remove("status");
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("username".into(), json!(user.name));
        spec.insert("groups".into(), json!(user.groups));
        spec.remove("uid");
        spec.remove("extra");
    }
}

/// An update through `/approval` changes the conditions only: the certificate stays what it
/// was (Kubernetes' approval strategy).
pub(super) fn keep_certificate(new: &mut Value, current: &Value) {
    let certificate = current.pointer("/status/certificate").cloned();
    let Some(root) = new.as_object_mut() else {
        return;
    };
    let status = root.entry("status").or_insert_with(|| json!({}));
    if let Some(status) = status.as_object_mut() {
        match certificate {
            Some(c) => status.insert("certificate".into(), c),
            None => status.remove("certificate"),
        };
    }
}

/// The checks Kubernetes' certificates validation makes on a status or approval update, as
/// `field: message` lines (empty when valid): `Approved`, `Denied` and `Failed` appear at
/// most once, `Approved`/`Denied` only with status `True` and never together, are never
/// removed, and an issued certificate never changes.
pub(super) fn status_update_errors(old: &Value, new: &Value) -> Vec<String> {
    let conditions = |o: &Value| -> Vec<(String, String)> {
        o.pointer("/status/conditions")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .map(|c| {
                        let field =
                            |f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
                        (field("type"), field("status"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (conditions(old), conditions(new));
    let mut errors = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, (type_, status)) in after.iter().enumerate() {
        let field = format!("status.conditions[{i}]");
        if matches!(type_.as_str(), "Approved" | "Denied" | "Failed")
            && seen.contains(&type_.as_str())
        {
            errors.push(format!("{field}.type: Duplicate value: \"{type_}\""));
        }
        seen.push(type_);
        if matches!(type_.as_str(), "Approved" | "Denied") && status != "True" {
            errors.push(format!(
                "{field}.status: Unsupported value: \"{status}\": supported values: \"True\""
            ));
        }
        if type_ == "Denied" && after.iter().any(|(t, _)| t == "Approved") {
            errors.push(format!(
                "{field}.type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
            ));
        }
    }
    for kept in ["Approved", "Denied"] {
        if before.iter().any(|(t, _)| t == kept) && !after.iter().any(|(t, _)| t == kept) {
            errors.push(format!(
                "status.conditions: Forbidden: updates may not remove a condition of type \"{kept}\""
            ));
        }
    }
    let certificate = |o: &Value| {
        o.pointer("/status/certificate")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let old_certificate = certificate(old);
    if !old_certificate.is_empty() && certificate(new) != old_certificate {
        errors.push(
            "status.certificate: Forbidden: updates may not modify existing certificate content"
                .to_owned(),
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_updates_follow_kubernetes_condition_rules() {
        let csr = |conditions: Value, certificate: &str| json!({"status": {"conditions": conditions, "certificate": certificate}});
        let approved = json!([{"type": "Approved", "status": "True"}]);
        let cases = [
            (csr(json!([]), ""), csr(approved.clone(), ""), vec![]),
            (
                csr(json!([]), ""),
                csr(json!([{"type": "Approved", "status": "False"}]), ""),
                vec![
                    "status.conditions[0].status: Unsupported value: \"False\": supported values: \"True\"",
                ],
            ),
            (
                csr(approved.clone(), ""),
                csr(
                    json!([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]),
                    "",
                ),
                vec![
                    "status.conditions[1].type: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive",
                ],
            ),
            (
                csr(approved.clone(), ""),
                csr(
                    json!([{"type": "Approved", "status": "True"}, {"type": "Approved", "status": "True"}]),
                    "",
                ),
                vec!["status.conditions[1].type: Duplicate value: \"Approved\""],
            ),
            (
                csr(approved.clone(), ""),
                csr(json!([]), ""),
                vec![
                    "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\"",
                ],
            ),
            (
                csr(approved.clone(), "Zm9v"),
                csr(approved.clone(), "YmFy"),
                vec![
                    "status.certificate: Forbidden: updates may not modify existing certificate content",
                ],
            ),
            (csr(approved.clone(), ""), csr(approved, "Zm9v"), vec![]),
        ];
        for (old, new, expected) in cases {
            assert_eq!(status_update_errors(&old, &new), expected, "{new}");
        }
    }

    #[test]
    fn the_requester_replaces_what_the_body_claims() {
        let mut csr = json!({
            "metadata": {"name": "node-csr-1"},
            "spec": {"username": "kubernetes-admin", "groups": ["system:masters"], "uid": "1",
                     "extra": {"a": ["b"]}, "signerName": "kubernetes.io/kube-apiserver-client-kubelet"},
            "status": {"certificate": "Zm9v"},
        });
        let user = UserInfo::new("system:bootstrap:abcdef", &["system:bootstrappers"]);
        prepare_for_create(&mut csr, &user);
        assert_eq!(
            csr,
            json!({
                "metadata": {"name": "node-csr-1"},
                "spec": {"username": "system:bootstrap:abcdef", "groups": ["system:bootstrappers"],
                         "signerName": "kubernetes.io/kube-apiserver-client-kubelet"},
            })
        );
    }
}
