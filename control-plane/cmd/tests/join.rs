//! kubeadm's join protocol against the real binary, done by hand as a node would: `token
//! create` prints the join command; anonymous discovery reads `kube-public/cluster-info`,
//! checks its JWS with the token and the CA against the printed hash; the token then creates a
//! node CSR, which is approved and signed by the CA within seconds.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use k8s_openapi::api::{certificates::v1::CertificateSigningRequest, core::v1::ConfigMap};
use keelson_api::bootstrap_token::{self as bt, BootstrapToken};
use kube::{
    Api,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};

const BINARY: &str = env!("CARGO_BIN_EXE_keelson-control-plane");

/// Stops the control plane when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn client(yaml: &str) -> kube::Client {
    let file = Kubeconfig::from_yaml(yaml).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .expect("a client config");
    kube::Client::try_from(config).expect("a client")
}

fn pem_body(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM base64")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_with_the_printed_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _server = Running(
        Command::new(BINARY)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--leader-elect=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keelson-control-plane"),
    );
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.is_file() {
        assert!(Instant::now() < deadline, "no kubeconfig after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
    let listen = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("a server in the kubeconfig")
        .to_owned();

    let output = Command::new(BINARY)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &listen, "--advertise-address", "127.0.0.1"])
        .args([
            "token",
            "create",
            "--ttl",
            "1h",
            "--description",
            "join test",
        ])
        .output()
        .expect("run token create");
    assert!(output.status.success(), "token create: {output:?}");
    let line = String::from_utf8(output.stdout).expect("UTF-8");
    let words: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!(line.lines().count(), 1, "exactly one line: {line:?}");
    let [
        "keelson-node-agent",
        "join",
        "--server",
        server,
        "--token",
        token,
        "--ca-cert-hash",
        hash,
    ] = words.as_slice()
    else {
        panic!("not the join command: {line:?}");
    };
    assert_eq!(*server, format!("https://{listen}"));
    let token: BootstrapToken = token.parse().expect("a bootstrap token");

    // Discovery: anonymous, trusting nothing yet (kubeadm's token discovery).
    let insecure = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
    );
    let maps: Api<ConfigMap> = Api::namespaced(client(&insecure).await, bt::KUBE_PUBLIC);
    let mut signed = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while signed.is_none() {
        assert!(
            Instant::now() < deadline,
            "cluster-info not signed with the token after 20 s"
        );
        if let Ok(map) = maps.get(bt::CLUSTER_INFO).await {
            let data = map.data.unwrap_or_default();
            if let Some(jws) = data.get(&format!("{}{}", bt::JWS_PREFIX, token.id)) {
                signed = Some((data[bt::KUBECONFIG_KEY].clone(), jws.clone()));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cluster_kubeconfig, jws) = signed.expect("signed");
    bt::verify_detached(&token, cluster_kubeconfig.as_bytes(), &jws).expect("the JWS verifies");
    let wrong: BootstrapToken = "abcdef.0123456789abcdef".parse().expect("token");
    assert!(bt::verify_detached(&wrong, cluster_kubeconfig.as_bytes(), &jws).is_err());
    let ca_data = cluster_kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .expect("CA data in cluster-info");
    let ca_pem = String::from_utf8(STANDARD.decode(ca_data).expect("base64")).expect("PEM");
    assert_eq!(
        bt::ca_cert_hash(&pem_body(&ca_pem)).expect("hash"),
        *hash,
        "the CA matches the printed hash"
    );

    // The token, now over verified TLS, asks for a node client certificate.
    let with_token = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n"
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(client(&with_token).await);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:joiner");
    let request = params
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("PEM");
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "node-csr-joiner"},
        "spec": {"request": STANDARD.encode(request), "signerName": bt::KUBELET_CLIENT_SIGNER,
                 "usages": ["digital signature", "client auth"], "expirationSeconds": 3600},
    }))
    .expect("a CSR");
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .expect("the token may create a CSR");
    assert_eq!(
        created.spec.username.as_deref(),
        Some(format!("system:bootstrap:{}", token.id).as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let certificate = loop {
        assert!(Instant::now() < deadline, "no certificate after 20 s");
        let got = csrs
            .get("node-csr-joiner")
            .await
            .expect("the token may read its CSR");
        if let Some(cert) = got.status.and_then(|s| s.certificate) {
            break cert.0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = String::from_utf8(certificate).expect("PEM");
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
}
