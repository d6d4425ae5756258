//! CSR approving: kubelet (node agent) client certificate requests are approved automatically
//! when they ask for nothing but a node's client identity — Kubernetes'
//! `pkg/controller/certificates/approver` with its two recognizers:
//!
//! - `nodeclient`: a new node's first request, created by a bootstrap-token user (a member of
//!   `system:bootstrappers`);
//! - `selfnodeclient`: a renewal, created by `system:node:<n>` for that same `<n>`.
//!
//! Kubernetes asks a SubjectAccessReview whether the requester may create the
//! `nodeclient`/`selfnodeclient` subresource; until keelson has RBAC (issue 19) that answer is
//! fixed: bootstrappers may ask for `nodeclient`, nodes (`system:nodes`) for `selfnodeclient`.
//! Requests that match neither are left for an administrator (`kubectl certificate approve`).

use std::sync::Arc;

use k8s_openapi::{
    api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
        CertificateSigningRequestSpec,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use keelson_api::bootstrap_token::{BOOTSTRAP_GROUP, KUBELET_CLIENT_SIGNER};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{ApiContext, Result};

/// The usages a kubelet client certificate may carry; `client auth` is required.
const KUBELET_CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let api = Api::<CertificateSigningRequest>::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let ctx = Arc::new(Ctx { client });
    crate::drive("csrapproving", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// Whether the request already has an `Approved` or `Denied` condition.
pub fn is_decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        })
}

/// Whether `spec` asks for a kubelet client certificate for node `node` (subject
/// `CN=system:node:<node>, O=system:nodes`, no subjectAltNames, usages within the kubelet
/// client ones and including `client auth`): the node name, or why not.
pub fn kubelet_client_node(spec: &CertificateSigningRequestSpec) -> Result<String, String> {
    if spec.signer_name != KUBELET_CLIENT_SIGNER {
        return Err(format!("signer is {}", spec.signer_name));
    }
    let parsed = keelson_api::csr::parse_pem(&spec.request.0).map_err(|e| e.to_string())?;
    if parsed.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    let node = match parsed.common_names.as_slice() {
        [cn] => cn.strip_prefix("system:node:").filter(|n| !n.is_empty()),
        _ => None,
    }
    .ok_or("subject common name does not begin with system:node:")?;
    if parsed.has_subject_alt_names {
        return Err("subjectAltNames are not allowed".into());
    }
    let usages = spec.usages.as_deref().unwrap_or_default();
    if !usages.iter().any(|u| u == "client auth")
        || usages
            .iter()
            .any(|u| !KUBELET_CLIENT_USAGES.contains(&u.as_str()))
    {
        return Err(format!(
            "usages did not match {KUBELET_CLIENT_USAGES:?}: {usages:?}"
        ));
    }
    Ok(node.to_owned())
}

/// The `Approved` condition the controller adds, with Kubernetes' reason and message, or
/// `None` when the request is not one it approves.
pub fn approval(csr: &CertificateSigningRequest) -> Option<(&'static str, &'static str)> {
    if is_decided(csr) {
        return None;
    }
    let spec = &csr.spec;
    let node = kubelet_client_node(spec).ok()?;
    let groups = spec.groups.as_deref().unwrap_or_default();
    let in_group = |g: &str| groups.iter().any(|x| x == g);
    let username = spec.username.as_deref().unwrap_or_default();
    if username == format!("system:node:{node}") && in_group("system:nodes") {
        return Some((
            "AutoApproved",
            "Auto approving self kubelet client certificate after SubjectAccessReview.",
        ));
    }
    if in_group(BOOTSTRAP_GROUP) {
        return Some((
            "AutoApproved",
            "Auto approving kubelet client certificate after SubjectAccessReview.",
        ));
    }
    None
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some((reason, message)) = approval(&csr) else {
        return Ok(Action::await_change());
    };
    let name = csr.name_any();
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    conditions.push(CertificateSigningRequestCondition {
        type_: "Approved".into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    api.patch_approval(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": conditions}})),
    )
    .await
    .action(|| format!("approve CertificateSigningRequest {name}"))?;
    tracing::info!(
        csr = name,
        message,
        "approved a node client certificate request"
    );
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    /// CN=system:node:n1, O=system:nodes.
    const NODE_CSR: &str = include_str!("testdata/node-n1.csr");
    /// CN=system:node:n1, O=system:masters.
    const MASTERS_CSR: &str = include_str!("testdata/masters.csr");

    fn csr(
        request: &str,
        user: &str,
        groups: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(request.as_bytes().to_vec()),
                signer_name: KUBELET_CLIENT_SIGNER.into(),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
                usages: Some(usages.iter().map(|u| (*u).to_owned()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn approves_what_kubernetes_approves() {
        let client = ["digital signature", "key encipherment", "client auth"];
        let boot = ["system:bootstrappers"];
        let nodes = ["system:nodes"];
        let first = Some((
            "AutoApproved",
            "Auto approving kubelet client certificate after SubjectAccessReview.",
        ));
        let renewal = Some((
            "AutoApproved",
            "Auto approving self kubelet client certificate after SubjectAccessReview.",
        ));
        let cases = [
            (
                "bootstrap token",
                csr(NODE_CSR, "system:bootstrap:abcdef", &boot, &client),
                first,
            ),
            (
                "renewal",
                csr(NODE_CSR, "system:node:n1", &nodes, &["client auth"]),
                renewal,
            ),
            (
                "another node",
                csr(NODE_CSR, "system:node:n2", &nodes, &client),
                None,
            ),
            ("no group", csr(NODE_CSR, "alice", &[], &client), None),
            (
                "server auth",
                csr(
                    NODE_CSR,
                    "system:bootstrap:abcdef",
                    &boot,
                    &["client auth", "server auth"],
                ),
                None,
            ),
            (
                "no client auth",
                csr(
                    NODE_CSR,
                    "system:bootstrap:abcdef",
                    &boot,
                    &["digital signature"],
                ),
                None,
            ),
            (
                "masters",
                csr(MASTERS_CSR, "system:bootstrap:abcdef", &boot, &client),
                None,
            ),
        ];
        for (case, request, expected) in cases {
            assert_eq!(approval(&request), expected, "{case}");
        }
        let mut other_signer = csr(NODE_CSR, "system:bootstrap:abcdef", &boot, &client);
        other_signer.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert_eq!(approval(&other_signer), None);
        let mut denied = csr(NODE_CSR, "system:bootstrap:abcdef", &boot, &client);
        denied.status = Some(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Denied".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                certificate: None,
            },
        );
        assert_eq!(approval(&denied), None, "a denied request stays denied");
    }
}
