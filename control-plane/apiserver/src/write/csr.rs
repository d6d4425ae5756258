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

#[cfg(test)]
mod tests {
    use super::*;

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
