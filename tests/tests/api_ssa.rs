//! End to end: `kubectl apply --server-side` (kubectl 1.33 and 1.27) against the real
//! `keelson-control-plane` binary: two field managers conflicting over `spec.replicas`,
//! `--force-conflicts`, ownership dropped by re-applying without the field, server dry-run and
//! `kubectl diff --server-side`; and Helm 4, which applies server-side, installing, upgrading
//! and rolling back the chart fixture `tests/charts/tiny` (the acceptance list of issue 17).

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

/// The deployment `web` as JSON, managedFields included.
fn deployment(k: &Kubectl<'_>) -> Value {
    deployment_named(k, "web")
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

    client_side_to_server_side(&k, dir);
}

/// An object applied client-side moves to server-side apply without conflicts over what
/// client-side apply set, and its last-applied annotation follows.
fn client_side_to_server_side(k: &Kubectl<'_>, dir: &Path) {
    let config = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moved\n  namespace: default\n\
             data:\n  key: {value}\n"
        )
    };
    let one = write(dir, "moved-one.yaml", &config("one"));
    let two = write(dir, "moved-two.yaml", &config("two"));
    k.run(&["apply", "-f", &one]);
    let out = k.run(&["apply", "--server-side", "-f", &two]);
    assert_contains(&out, "configmap/moved serverside-applied", "upgrade to SSA");
    let annotation = k.run(&[
        "get",
        "configmap",
        "moved",
        "-o",
        "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
    ]);
    assert_contains(&annotation, "\"key\":\"two\"", "last-applied annotation");
}

#[test]
fn kubectl_1_33_applies_server_side() {
    scenario(33);
}

#[test]
fn kubectl_1_27_applies_server_side() {
    scenario(27);
}

/// The public install shapes of `tests/manifests` (an ingress controller, a demo shop, an
/// operator's RBAC), applied server-side twice: every object is applied and owned, and the
/// second time changes no object's spec (no generation moves) and no manager's fields.
#[test]
fn public_install_shapes_apply_server_side_twice() {
    let plane = ControlPlane::start();
    let k = Kubectl::new(33, &plane);
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut rounds = Vec::new();
    for round in 1..=2 {
        let mut seen = Vec::new();
        for name in [
            "ingress-controller.yaml",
            "demo-app.yaml",
            "operator-rbac.yaml",
        ] {
            let path = manifests.join(name);
            let path = path.to_string_lossy();
            let out = k.run(&[
                "apply",
                "--server-side",
                "--field-manager=installer",
                "-f",
                &path,
            ]);
            for line in out.lines().filter(|l| !l.is_empty()) {
                assert!(
                    line.ends_with(" serverside-applied"),
                    "round {round} of {name}: {line:?}\n{out}"
                );
            }
            let listed: Value = serde_json::from_str(&k.run(&[
                "get",
                "-f",
                &path,
                "-o",
                "json",
                "--show-managed-fields",
            ]))
            .expect("kubectl printed JSON");
            for item in listed["items"].as_array().into_iter().flatten() {
                let applied = item["metadata"]["managedFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["manager"] == "installer")
                    .map(|e| e["fieldsV1"].clone());
                seen.push((
                    format!("{}/{}", item["kind"], item["metadata"]["name"]),
                    item["metadata"]["generation"].clone(),
                    applied,
                ));
            }
        }
        rounds.push(seen);
    }
    // An object whose configuration holds nothing but its identity (the bare Namespaces and
    // ServiceAccounts) gets no entry, as kube-apiserver strips identity fields and drops empty
    // entries; every other object has the installer's.
    let missing: Vec<&String> = rounds[0]
        .iter()
        .filter(|(object, _, applied)| {
            applied.is_none()
                && !object.starts_with("\"Namespace\"")
                && !object.starts_with("\"ServiceAccount\"")
        })
        .map(|(object, _, _)| object)
        .collect();
    assert!(missing.is_empty(), "no Apply entry for {missing:?}");
    assert_eq!(rounds[0].len(), 43, "objects listed: {:?}", rounds[0]);
    assert_eq!(rounds[0], rounds[1], "the second apply changed something");
}

/// A deployment as JSON, managedFields included.
fn deployment_named(k: &Kubectl<'_>, name: &str) -> Value {
    let out = k.run(&[
        "get",
        "deployment",
        name,
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    serde_json::from_str(&out).expect("kubectl printed JSON")
}
