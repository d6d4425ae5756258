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
//!
//! Kubernetes approves no `kubernetes.io/kubelet-serving` request by itself (kubeadm clusters
//! add an approver such as kubelet-csr-approver; k3s signs serving certificates without a
//! CSR). keelson approves one when a node asks for its own serving certificate and every name in
//! it is the node's: DNS names among the Node's name and its `Hostname`/`InternalDNS`
//! addresses, IPs among its addresses. The API server then verifies node agents against the
//! cluster CA.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::{
    api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
        CertificateSigningRequestSpec,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use keelson_api::bootstrap_token::{
    BOOTSTRAP_GROUP, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER,
};
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

/// The usages of a kubelet serving certificate: exactly these, or these without `key
/// encipherment` (for non-RSA keys), as Kubernetes' `ValidateKubeletServingCSR` requires.
const KUBELET_SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];

/// What a valid kubelet serving request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingRequest {
    /// The node (the CN without `system:node:`).
    pub node: String,
    /// Its DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// Its IP subjectAltNames.
    pub ip_addresses: Vec<std::net::IpAddr>,
}

/// Whether `spec` is a valid kubelet serving request (Kubernetes' `ValidateKubeletServingCSR`,
/// with its messages): what it asks for, or why not.
pub fn kubelet_serving_request(
    spec: &CertificateSigningRequestSpec,
) -> Result<ServingRequest, String> {
    if spec.signer_name != KUBELET_SERVING_SIGNER {
        return Err(format!("signer is {}", spec.signer_name));
    }
    let parsed = keelson_api::csr::parse_pem(&spec.request.0).map_err(|e| e.to_string())?;
    if parsed.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if parsed.dns_names.is_empty() && parsed.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if parsed.email_addresses > 0 {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if parsed.uris > 0 {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let mut usages: Vec<&str> = spec
        .usages
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    usages.sort_unstable();
    usages.dedup();
    let full: Vec<&str> = {
        let mut all = KUBELET_SERVING_USAGES.to_vec();
        all.sort_unstable();
        all
    };
    let no_rsa: Vec<&str> = full
        .iter()
        .copied()
        .filter(|u| *u != "key encipherment")
        .collect();
    if usages != full && usages != no_rsa {
        return Err(format!("usages did not match {full:?}"));
    }
    let node = match parsed.common_names.as_slice() {
        [cn] => cn.strip_prefix("system:node:").filter(|n| !n.is_empty()),
        _ => None,
    }
    .ok_or("subject common name does not begin with system:node:")?;
    Ok(ServingRequest {
        node: node.to_owned(),
        dns_names: parsed.dns_names,
        ip_addresses: parsed.ip_addresses,
    })
}

/// The `Approved` condition for a kubelet serving request whose requester is that node and
/// whose names are all the node's (`node` is the Node the request names, if it exists), or
/// `None`.
pub fn serving_approval(
    csr: &CertificateSigningRequest,
    node: Option<&Node>,
) -> Option<(&'static str, &'static str)> {
    if is_decided(csr) {
        return None;
    }
    let request = kubelet_serving_request(&csr.spec).ok()?;
    let spec = &csr.spec;
    let is_self = spec.username.as_deref() == Some(&format!("system:node:{}", request.node))
        && spec
            .groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g == "system:nodes");
    let node = node.filter(|n| n.metadata.name.as_deref() == Some(request.node.as_str()))?;
    let addresses: Vec<(&str, &str)> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    let dns_ok = request.dns_names.iter().all(|dns| {
        *dns == request.node
            || addresses
                .iter()
                .any(|(t, a)| matches!(*t, "Hostname" | "InternalDNS" | "ExternalDNS") && a == dns)
    });
    let ips_ok = request.ip_addresses.iter().all(|ip| {
        addresses
            .iter()
            .any(|(_, a)| a.parse::<std::net::IpAddr>().ok() == Some(*ip))
    });
    (is_self && dns_ok && ips_ok).then_some((
        "AutoApproved",
        "Auto approving the node's own serving certificate: every name is the Node's.",
    ))
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
    let decided = if csr.spec.signer_name == KUBELET_SERVING_SIGNER && !is_decided(&csr) {
        let Ok(request) = kubelet_serving_request(&csr.spec) else {
            return Ok(Action::await_change());
        };
        let node = Api::<Node>::all(ctx.client.clone())
            .get_opt(&request.node)
            .await
            .action(|| format!("read Node {}", request.node))?;
        let verdict = serving_approval(&csr, node.as_ref());
        if verdict.is_none() && node.is_none() {
            // The node may register after asking; look again.
            return Ok(Action::requeue(std::time::Duration::from_secs(5)));
        }
        verdict
    } else {
        approval(&csr)
    };
    let Some((reason, message)) = decided else {
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
        signer = csr.spec.signer_name,
        message,
        "approved a node certificate request"
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

    fn serving_pem(names: &[&str], org: &str) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        params
            .serialize_request(&key)
            .expect("request")
            .pem()
            .expect("pem")
    }

    fn serving(pem: &str, user: &str, usages: &[&str]) -> CertificateSigningRequest {
        let mut request = csr(pem, user, &["system:nodes", "system:authenticated"], usages);
        request.spec.signer_name = KUBELET_SERVING_SIGNER.into();
        request
    }

    fn node_n1() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.7"},
                {"type": "Hostname", "address": "n1.lan"},
            ]},
        }))
        .expect("node")
    }

    #[test]
    fn serving_requests_are_checked_as_kubernetes_checks_them() {
        let usages = ["digital signature", "server auth"];
        let good = serving_pem(&["n1", "10.0.0.7"], "system:nodes");
        let cases = [
            (serving(&good, "u", &usages), Ok("n1")),
            (
                serving(
                    &good,
                    "u",
                    &["digital signature", "key encipherment", "server auth"],
                ),
                Ok("n1"),
            ),
            (
                serving(&good, "u", &["server auth"]),
                Err(
                    r#"usages did not match ["digital signature", "key encipherment", "server auth"]"#,
                ),
            ),
            (
                serving(&serving_pem(&["n1"], "system:masters"), "u", &usages),
                Err("subject organization is not system:nodes"),
            ),
            (
                serving(&serving_pem(&[], "system:nodes"), "u", &usages),
                Err("DNS or IP subjectAltName is required"),
            ),
        ];
        for (request, expected) in cases {
            let got = kubelet_serving_request(&request.spec);
            assert_eq!(
                got.as_ref()
                    .map(|r| r.node.as_str())
                    .map_err(String::as_str),
                expected
            );
        }
    }

    #[test]
    fn a_node_gets_its_own_serving_names_approved_and_nothing_else() {
        let usages = ["digital signature", "server auth"];
        let node = node_n1();
        let yes = Some((
            "AutoApproved",
            "Auto approving the node's own serving certificate: every name is the Node's.",
        ));
        let cases = [
            (
                "own names",
                &["n1", "10.0.0.7", "n1.lan"][..],
                "system:node:n1",
                Some(&node),
                yes,
            ),
            (
                "another node asks",
                &["n1", "10.0.0.7"][..],
                "system:node:n2",
                Some(&node),
                None,
            ),
            (
                "an admin asks",
                &["n1"][..],
                "kubernetes-admin",
                Some(&node),
                None,
            ),
            (
                "a foreign IP",
                &["n1", "10.0.0.8"][..],
                "system:node:n1",
                Some(&node),
                None,
            ),
            (
                "a foreign name",
                &["n1", "api.example.com"][..],
                "system:node:n1",
                Some(&node),
                None,
            ),
            ("no Node yet", &["n1"][..], "system:node:n1", None, None),
        ];
        for (case, names, user, node, expected) in cases {
            let request = serving(&serving_pem(names, "system:nodes"), user, &usages);
            assert_eq!(serving_approval(&request, node), expected, "{case}");
        }
    }
}
