//! Joining with a bootstrap token: the token authenticates while its Secret allows it, may
//! create and read CertificateSigningRequests and nothing else; anonymous clients read
//! `kube-public/cluster-info` only; the server records who asked for a CSR.

use super::*;

/// A request for CN=system:node:n1, O=system:nodes (P-256), made once with openssl.
const NODE_CSR: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlIcU1JR1NBZ0VBTURBeEZUQVRCZ05WQkFvTURITjVjM1JsYlRwdWIyUmxjekVYTUJVR0ExVUVBd3dPYzNsegpkR1Z0T201dlpHVTZiakV3V1RBVEJnY3Foa2pPUFFJQkJnZ3Foa2pPUFFNQkJ3TkNBQVJ5aEZwMDVmSE9CMlFLCjg0WlBYV0NTSVBKVFB5YUFRNnNiVUlTRFpEU2I3bXpQSlNDZVgwdHRsMTQ4R1Mrcmdvc1ZtZzRIUGFxTGgzeWoKUEhibDdqUW5vQUF3Q2dZSUtvWkl6ajBFQXdJRFJ3QXdSQUlnVXJITmo1VzhGZkZuNW1MOHFqS0RYOHg3UnNwOQo1K2ZDdDZacnNuRk42MDRDSUZYT25uQlZQR1FJUHV5cm51bG1ONWRvL3JVcmhEVXpiemNnSTlyZm9PdmkKLS0tLS1FTkQgQ0VSVElGSUNBVEUgUkVRVUVTVC0tLS0tCg==";
const TOKEN: &str = "abcdef.0123456789abcdef";
const CSRS: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

fn token_secret(expiration: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
        "stringData": {
            "token-id": "abcdef", "token-secret": "0123456789abcdef", "expiration": expiration,
            "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
        },
    })
}

fn node_csr(name: &str) -> Value {
    json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": NODE_CSR, "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                 "usages": ["digital signature", "client auth"],
                 "username": "kubernetes-admin", "groups": ["system:masters"]},
    })
}

async fn as_token(
    server: &Server,
    token: &str,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    server
        .raw_as(token, method, uri, "application/json", bytes)
        .await
}

#[tokio::test]
async fn a_bootstrap_token_creates_csrs_while_its_secret_is_valid() {
    let server = server().await;
    let secrets = "/api/v1/namespaces/kube-system/secrets";
    server
        .ok(
            Method::POST,
            secrets,
            Some(token_secret("2999-01-01T00:00:00Z")),
        )
        .await;

    let (status, created) = as_token(
        &server,
        TOKEN,
        Method::POST,
        CSRS,
        Some(node_csr("node-csr-a")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["spec"]["username"], "system:bootstrap:abcdef",
        "{created}"
    );
    assert_eq!(
        created["spec"]["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ]),
        "{created}"
    );
    let (status, got) = as_token(
        &server,
        TOKEN,
        Method::GET,
        &format!("{CSRS}/node-csr-a"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");

    let (status, refused) = as_token(&server, TOKEN, Method::GET, "/api/v1/pods", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("User \"system:bootstrap:abcdef\" cannot list resource \"pods\""),
        "{refused}"
    );
    let (status, _) = as_token(
        &server,
        TOKEN,
        Method::DELETE,
        &format!("{CSRS}/node-csr-a"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, wrong) =
        as_token(&server, "abcdef.0123456789abcdee", Method::GET, CSRS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    assert_status(&wrong, 401, "Unauthorized");

    let expired = json!({"stringData": {"expiration": "2001-01-01T00:00:00Z"}});
    let (status, _) = server
        .patch(
            &format!("{secrets}/bootstrap-token-abcdef"),
            "application/merge-patch+json",
            expired,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = as_token(&server, TOKEN, Method::GET, CSRS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an expired token");

    server
        .ok(
            Method::DELETE,
            &format!("{secrets}/bootstrap-token-abcdef"),
            None,
        )
        .await;
    let (status, _) = as_token(&server, TOKEN, Method::GET, CSRS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a deleted token");
}

#[tokio::test]
async fn anonymous_clients_read_cluster_info_only() {
    let server = server().await;
    let cluster_info = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
    server
        .ok(
            Method::POST,
            "/api/v1/namespaces/kube-public/configmaps",
            Some(json!({"metadata": {"name": "cluster-info"}, "data": {"kubeconfig": "k"}})),
        )
        .await;
    let (status, got) = as_token(&server, "", Method::GET, cluster_info, None).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["data"]["kubeconfig"], "k");
    for uri in [
        "/api/v1/namespaces/kube-public/configmaps",
        "/api/v1/namespaces/kube-system/configmaps/cluster-info",
        CSRS,
    ] {
        let (status, body) = as_token(&server, "", Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("User \"system:anonymous\" cannot")),
            "{body}"
        );
    }
    let (status, _) = as_token(&server, "", Method::DELETE, cluster_info, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn csrs_are_validated_and_approved_through_the_approval_subresource() {
    let server = server().await;
    let mut garbled = node_csr("bad");
    garbled["spec"]["request"] = json!("bm90IGEgcmVxdWVzdA==");
    let (status, refused) = server.call(Method::POST, CSRS, Some(garbled)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.request: Invalid value"),
        "{refused}"
    );
    let created = server
        .ok(Method::POST, CSRS, Some(node_csr("node-csr-b")))
        .await;
    assert_eq!(created["spec"]["username"], "kubernetes-admin");

    let (status, _) = as_token(
        &server,
        NODE_TOKEN,
        Method::POST,
        CSRS,
        Some(node_csr("node-csr-n1")),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "nodes renew their certificates"
    );

    let mut approved = created.clone();
    approved["status"] = json!({
        "certificate": "Zm9v",
        "conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove",
                        "message": "This CSR was approved by kubectl certificate approve."}],
    });
    let after = server
        .ok(
            Method::PUT,
            &format!("{CSRS}/node-csr-b/approval"),
            Some(approved),
        )
        .await;
    assert_eq!(
        after["status"]["conditions"][0]["type"], "Approved",
        "{after}"
    );
    assert_eq!(
        after["status"].get("certificate"),
        None,
        "approval does not set the certificate"
    );
    let got = server
        .ok(Method::GET, &format!("{CSRS}/node-csr-b/approval"), None)
        .await;
    assert_eq!(got["status"]["conditions"][0]["reason"], "KubectlApprove");
    let mut both = got.clone();
    both["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(json!({"type": "Denied", "status": "True", "reason": "KubectlDeny"}));
    let (status, refused) = server
        .call(
            Method::PUT,
            &format!("{CSRS}/node-csr-b/approval"),
            Some(both),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Approved and Denied conditions are mutually exclusive"),
        "{refused}"
    );
}
