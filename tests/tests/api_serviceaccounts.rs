//! End to end: service accounts of the real `keelson-control-plane` binary as the real kubectl
//! 1.33 sees them — the `default` ServiceAccount and `kube-root-ca.crt` in a new namespace,
//! `kubectl create token` (audience, duration, pod binding), the token authenticating as the
//! service account until the pod it is bound to goes, and the signing key kept across restarts.

use std::{path::PathBuf, time::Duration};

use keelson_tests::cluster::{ControlPlane, Kubectl};

/// A kubeconfig for `plane` that authenticates with `token` only.
fn token_kubeconfig(plane: &ControlPlane, name: &str, token: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&plane.kubeconfig).expect("admin kubeconfig");
    let field = |key: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {key} in the admin kubeconfig"))
    };
    let path = plane.data_dir().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    \
             user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n",
            field("server: "),
            field("certificate-authority-data: ")
        ),
    )
    .expect("write kubeconfig");
    path
}

/// Runs kubectl with `kubeconfig`; returns (success, stdout, stderr).
fn kubectl_as(kubeconfig: &PathBuf, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(keelson_tests::cluster::kubectl_binary(33))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .arg("--request-timeout=30s")
        .args(args)
        .output()
        .expect("run kubectl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `kubectl get` of `what` in `ns` until it exists (at most 20 s).
fn wait_for(kubectl: &Kubectl<'_>, ns: &str, what: &str) {
    for _ in 0..100 {
        if kubectl
            .command(&["get", "-n", ns, what])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not appear in namespace {ns} within 20 s");
}

#[test]
fn kubectl_create_token_authenticates_as_the_service_account() {
    let mut plane = ControlPlane::start();
    let kubectl = Kubectl::new(33, &plane);
    kubectl.run(&["create", "namespace", "team"]);
    wait_for(&kubectl, "team", "serviceaccount/default");
    wait_for(&kubectl, "team", "configmap/kube-root-ca.crt");
    let ca = kubectl.run(&[
        "get",
        "-n",
        "team",
        "configmap",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

    kubectl.run(&["create", "-n", "team", "serviceaccount", "robot"]);
    let refused = kubectl.fail(&["create", "token", "-n", "team", "robot", "--duration", "5m"]);
    assert!(
        refused.contains("may not specify a duration less than 10 minutes"),
        "{refused}"
    );
    let token = kubectl
        .run(&[
            "create",
            "token",
            "-n",
            "team",
            "robot",
            "--duration",
            "20m",
        ])
        .trim()
        .to_owned();
    let as_robot = token_kubeconfig(&plane, "robot", &token);
    let (ok, _, stderr) = kubectl_as(&as_robot, &["get", "pods", "-n", "team"]);
    assert!(
        !ok && stderr.contains("User \"system:serviceaccount:team:robot\""),
        "{stderr}"
    );
    let mut tampered = token.clone().into_bytes();
    let at = token.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = token_kubeconfig(
        &plane,
        "tampered",
        &String::from_utf8(tampered).expect("ascii"),
    );
    let (ok, _, stderr) = kubectl_as(&tampered, &["get", "pods", "-n", "team"]);
    assert!(!ok && stderr.contains("Unauthorized"), "{stderr}");

    // A pod gets the projected volume; a token bound to it dies with it.
    kubectl.run(&[
        "run",
        "-n",
        "team",
        "p",
        "--image",
        "busybox",
        "--overrides",
        r#"{"spec":{"serviceAccountName":"robot"}}"#,
    ]);
    let volumes = kubectl.run(&[
        "get",
        "-n",
        "team",
        "pod",
        "p",
        "-o",
        "jsonpath={.spec.volumes[0].name}",
    ]);
    assert!(volumes.starts_with("kube-api-access-"), "{volumes}");
    let bound = kubectl
        .run(&[
            "create",
            "token",
            "-n",
            "team",
            "robot",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
        ])
        .trim()
        .to_owned();
    let as_pod = token_kubeconfig(&plane, "pod", &bound);
    let (_, _, stderr) = kubectl_as(&as_pod, &["get", "pods", "-n", "team"]);
    assert!(
        stderr.contains("system:serviceaccount:team:robot"),
        "{stderr}"
    );
    kubectl.run(&[
        "delete",
        "-n",
        "team",
        "pod",
        "p",
        "--grace-period=0",
        "--force",
    ]);
    let (_, _, stderr) = kubectl_as(&as_pod, &["get", "pods", "-n", "team"]);
    assert!(stderr.contains("Unauthorized"), "{stderr}");

    // The key is kept in pki/: the token still works after a restart.
    assert!(plane.data_dir().join("pki/sa.key").is_file());
    assert!(plane.data_dir().join("pki/sa.pub").is_file());
    plane.restart();
    let (_, _, stderr) = kubectl_as(&as_robot, &["get", "pods", "-n", "team"]);
    assert!(
        stderr.contains("system:serviceaccount:team:robot"),
        "{stderr}"
    );
}
