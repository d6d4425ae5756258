//! End to end: HTTPS and authentication of the real `keelson-control-plane` binary, as the real
//! kubectl 1.33 and kube-rs see them — the admin client certificate, a static bearer token,
//! anonymous requests (authorized as system:anonymous: 403), unknown tokens (401), and node
//! credentials restricted to their own objects (403).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use k8s_openapi::api::core::v1::Node;
use keelson_tests::cluster::{ControlPlane, Kubectl, control_plane_binary, kubectl_binary};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const ADMIN_TOKEN: &str = "3f1c0d-admin-token";
const VIEWER_TOKEN: &str = "8a2b11-viewer-token";

/// The `server:` and `certificate-authority-data:` of the admin kubeconfig.
fn cluster_of(plane: &ControlPlane) -> (String, String) {
    let config = std::fs::read_to_string(&plane.kubeconfig).expect("admin kubeconfig");
    let field = |name: &str| {
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in the admin kubeconfig:\n{config}"))
    };
    (field("server: "), field("certificate-authority-data: "))
}

/// A kubeconfig for `plane` with `user_fields` (YAML lines under `user:`; empty = anonymous).
fn kubeconfig_with(plane: &ControlPlane, name: &str, user_fields: &str) -> PathBuf {
    let (server, ca) = cluster_of(plane);
    let user = if user_fields.is_empty() {
        " {}".to_owned()
    } else {
        format!("\n    {user_fields}")
    };
    let path = plane.data_dir().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    \
             user: u\ncurrent-context: c\nusers:\n- name: u\n  user:{user}\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(kubectl_binary(33))
        .env("KUBECONFIG", kubeconfig)
        .arg("--request-timeout=30s")
        .args(args)
        .output()
        .expect("run kubectl")
}

fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let output = kubectl(kubeconfig, args);
    assert!(
        output.status.success(),
        "`kubectl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(kubeconfig: &Path, args: &[&str], expect: &str) {
    let output = kubectl(kubeconfig, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(expect),
        "`kubectl {}` should fail with {expect:?}; status {}, stderr: {stderr}",
        args.join(" "),
        output.status
    );
}

async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

fn assert_status(error: kube::Error, code: u16, reason: &str) {
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, code, "{status:?}");
            assert_eq!(status.reason, reason, "{status:?}");
        }
        other => panic!("expected a {code} Status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_403_tokens_and_certificates_authenticate() {
    let tokens = tempfile::tempdir().expect("temp dir");
    let token_file = tokens.path().join("tokens.csv");
    std::fs::write(
        &token_file,
        format!("{ADMIN_TOKEN},token-admin,100,\"system:masters\"\n{VIEWER_TOKEN},viewer,101\n"),
    )
    .expect("token file");
    let plane = ControlPlane::start_with(&["--token-auth-file", &token_file.to_string_lossy()]);
    let admin = Kubectl::new(33, &plane);
    let names = admin.run(&["get", "namespaces", "-o", "name"]);
    assert!(names.contains("namespace/kube-system"), "{names}");

    // kubectl would prompt for a password without credentials; kube-rs just sends the request.
    let anonymous = kubeconfig_with(&plane, "anonymous", "");
    let error = Api::<Node>::all(client_for(&anonymous).await)
        .list(&Default::default())
        .await
        .expect_err("anonymous");
    assert_status(error, 403, "Forbidden");
    let wrong = kubeconfig_with(&plane, "wrong", "token: not-a-token");
    refused(&wrong, &["get", "pods"], "Unauthorized");

    let token_admin = kubeconfig_with(&plane, "token-admin", &format!("token: {ADMIN_TOKEN}"));
    ok(
        &token_admin,
        &["label", "namespace", "default", "authenticated-by=token"],
    );
    let labels = admin.run(&[
        "get",
        "namespace",
        "default",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(labels.contains("authenticated-by"), "{labels}");

    let viewer = kubeconfig_with(&plane, "viewer", &format!("token: {VIEWER_TOKEN}"));
    refused(&viewer, &["get", "pods"], "Forbidden");
    ok(&viewer, &["api-versions"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_credentials_may_change_only_their_own_node() {
    let plane = ControlPlane::start();
    let admin = Kubectl::new(33, &plane);
    let node_config = plane.data_dir().join("n1.kubeconfig");
    let output = Command::new(control_plane_binary())
        .arg("--data-dir")
        .arg(plane.data_dir())
        .args(["--listen", &plane.listen().to_string(), "node-kubeconfig"])
        .args(["--node", "n1", "--out"])
        .arg(&node_config)
        .output()
        .expect("run node-kubeconfig");
    assert!(output.status.success(), "node-kubeconfig: {output:?}");

    let node_yaml = |name: &str| {
        let path = plane.data_dir().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"),
        )
        .expect("node manifest");
        path
    };
    let whoami = ok(&node_config, &["auth", "whoami"]);
    assert!(
        whoami.contains("system:node:n1") && whoami.contains("[system:nodes system:authenticated]"),
        "{whoami}"
    );
    let whoami = admin.run(&["auth", "whoami"]);
    assert!(
        whoami.contains("kubernetes-admin")
            && whoami.contains("[system:masters system:authenticated]"),
        "{whoami}"
    );
    ok(
        &node_config,
        &["create", "-f", &node_yaml("n1").to_string_lossy()],
    );
    refused(
        &node_config,
        &["create", "-f", &node_yaml("n2").to_string_lossy()],
        "User \"system:node:n1\" cannot create resource \"nodes\"",
    );
    admin.run(&["create", "-f", &node_yaml("n2").to_string_lossy()]);
    ok(
        &node_config,
        &["label", "node", "n1", "topology.kubernetes.io/zone=a"],
    );
    refused(&node_config, &["label", "node", "n2", "x=y"], "Forbidden");
    refused(&node_config, &["delete", "node", "n1"], "Forbidden");
    refused(&node_config, &["create", "namespace", "mine"], "Forbidden");
    let nodes = ok(&node_config, &["get", "nodes", "-o", "name"]);
    assert!(nodes.contains("node/n2"), "nodes read every node: {nodes}");

    // kube-rs with the same kubeconfig: the node's heartbeat-style status patch.
    let nodes: Api<Node> = Api::all(client_for(&node_config).await);
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    let patched = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .expect("a node patches its own status");
    let conditions = patched
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert_eq!(conditions[0].status, "True");
    let error = nodes
        .patch_status("n2", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .expect_err("another node's status is forbidden");
    assert_status(error, 403, "Forbidden");
}
