//! End to end: `kubectl apply --server-side` (kubectl 1.33 and 1.27) against the real
//! `keelson-control-plane` binary: two field managers conflicting over `spec.replicas`,
//! `--force-conflicts`, ownership dropped by re-applying without the field, server dry-run and
//! `kubectl diff --server-side` (the acceptance list of issue 17).

use std::path::Path;

use keelson_tests::cluster::{ControlPlane, Kubectl};
use serde_json::Value;

fn manifest(replicas: Option<u32>, image: &str) -> String {
    let replicas = replicas
        .map(|r| format!("  replicas: {r}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {{app: web}}
spec:
{replicas}  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path.to_string_lossy().into_owned()
}

fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected {needle:?} in:\n{haystack}"
    );
}

/// The deployment as JSON, managedFields included.
fn deployment(k: &Kubectl<'_>) -> Value {
    let out = k.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    serde_json::from_str(&out).expect("kubectl printed JSON")
}

/// The managers owning `spec.replicas`, with their operation.
fn replicas_owners(object: &Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"].pointer("/f:spec/f:replicas").is_some())
        .map(|e| {
            format!(
                "{}/{}",
                e["manager"].as_str().unwrap_or_default(),
                e["operation"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn scenario(minor: u32) {
    let plane = ControlPlane::start();
    let k = Kubectl::new(minor, &plane);
    let dir = plane.data_dir();
    let two = write(dir, "two.yaml", &manifest(Some(2), "nginx:1.27"));
    let three = write(dir, "three.yaml", &manifest(Some(3), "nginx:1.27"));
    let unset = write(dir, "unset.yaml", &manifest(None, "nginx:1.27"));
    let newer = write(dir, "newer.yaml", &manifest(None, "nginx:1.28"));

    let out = k.run(&["apply", "--server-side", "--field-manager=a", "-f", &two]);
    assert_contains(
        &out,
        "deployment.apps/web serverside-applied",
        "first apply",
    );
    let object = deployment(&k);
    assert_eq!(object["spec"]["replicas"], 2);
    assert_eq!(replicas_owners(&object), ["a/Apply"]);

    let err = k.fail(&["apply", "--server-side", "--field-manager=b", "-f", &three]);
    assert_contains(
        &err,
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas",
        "conflicting apply",
    );
    assert_eq!(deployment(&k)["spec"]["replicas"], 2, "nothing written");

    let out = k.run(&[
        "apply",
        "--server-side",
        "--field-manager=b",
        "--force-conflicts",
        "-f",
        &three,
    ]);
    assert_contains(
        &out,
        "deployment.apps/web serverside-applied",
        "forced apply",
    );
    let object = deployment(&k);
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(replicas_owners(&object), ["b/Apply"]);

    // a re-applies without replicas: a owns the rest still, b keeps replicas.
    k.run(&["apply", "--server-side", "--field-manager=a", "-f", &unset]);
    let object = deployment(&k);
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(replicas_owners(&object), ["b/Apply"]);
    let a_owns_image = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| {
            e["manager"] == "a"
                && e["fieldsV1"]
                    .pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:image")
                    .is_some()
        });
    assert!(a_owns_image, "a still owns the image: {object}");

    // b applied the image too (same value, shared): a changing it conflicts with b, so the
    // dry run forces. The answer has the new image, the cluster does not.
    let out = k.run(&[
        "apply",
        "--server-side",
        "--field-manager=a",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        &newer,
    ]);
    assert_contains(
        &out,
        "deployment.apps/web serverside-applied (server dry run)",
        "dry run",
    );
    let object = deployment(&k);
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );

    // kubectl diff --server-side: exit 1 and the changed line.
    let output = k
        .command(&[
            "diff",
            "--server-side",
            "--field-manager=a",
            "--force-conflicts",
            "-f",
            &newer,
        ])
        .output()
        .expect("run kubectl diff");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "kubectl diff exits 1 when something differs:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_contains(&stdout, "-      - image: nginx:1.27", "diff");
    assert_contains(&stdout, "+      - image: nginx:1.28", "diff");
    let output = k
        .command(&["diff", "--server-side", "--field-manager=a", "-f", &unset])
        .output()
        .expect("run kubectl diff");
    assert_eq!(
        output.status.code(),
        Some(0),
        "no difference:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn kubectl_1_33_applies_server_side() {
    scenario(33);
}

#[test]
fn kubectl_1_27_applies_server_side() {
    scenario(27);
}
