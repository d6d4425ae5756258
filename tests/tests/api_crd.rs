//! End to end: CustomResourceDefinitions with the real kubectl 1.33 and 1.27 against the real
//! `keelson-control-plane`: a CRD bundle (tests/manifests/crd-widgets.yaml: structural schema,
//! defaults, printer columns, CEL rules with a transition rule, status and scale) is applied
//! and waited for, custom resources are created, listed with their columns, scaled, refused
//! when they break a rule (422 naming it), a non-structural CRD is refused, and deleting the
//! CRD deletes its objects.

use std::path::{Path, PathBuf};

use keelson_tests::cluster::{ControlPlane, Kubectl};

const CRD: &str = "widgets.demo.keelson.dev";

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// kubectl's output with runs of padding squeezed to one space, line by line.
fn squeezed(out: &str) -> Vec<String> {
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

fn widget_file(dir: &Path, name: &str, size: i64) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: demo.keelson.dev/v1\nkind: Widget\nmetadata:\n  name: {name}\n  \
             namespace: default\nspec:\n  size: {size}\n"
        ),
    )
    .expect("write the widget");
    path
}

fn custom_resources(minor: u32) {
    let plane = ControlPlane::start();
    let k = Kubectl::new(minor, &plane);
    let dir = tempfile::tempdir().expect("temp dir");
    let v = |what: &str| format!("kubectl 1.{minor}: {what}");

    let out = k.run(&["apply", "-f", &manifest("crd-widgets.yaml")]);
    assert_eq!(
        out.trim(),
        format!("customresourcedefinition.apiextensions.k8s.io/{CRD} created"),
        "{}",
        v("apply the CRD")
    );
    let out = k.run(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        &format!("crd/{CRD}"),
    ]);
    assert_eq!(
        out.trim(),
        format!("customresourcedefinition.apiextensions.k8s.io/{CRD} condition met"),
        "{}",
        v("wait")
    );

    // kubectl explain reads the CRD's schema from the OpenAPI documents.
    let out = k.run(&["explain", "widgets.spec.size"]);
    for expected in [
        "KIND:",
        "Widget",
        "FIELD:",
        "size",
        "<integer>",
        "How many parts the widget is made of.",
    ] {
        assert!(
            out.contains(expected),
            "{}: {expected:?} in\n{out}",
            v("explain")
        );
    }

    let alpha = widget_file(dir.path(), "alpha", 3);
    let out = k.run(&["apply", "-f", &alpha.to_string_lossy()]);
    assert_eq!(
        out.trim(),
        "widget.demo.keelson.dev/alpha created",
        "{}",
        v("apply a widget")
    );
    let out = k.run(&["apply", "-f", &alpha.to_string_lossy()]);
    assert_eq!(
        out.trim(),
        "widget.demo.keelson.dev/alpha unchanged",
        "{}",
        v("re-apply")
    );
    // The printer columns, the schema's default (color), by short name.
    let lines = squeezed(&k.run(&["get", "wd"]));
    assert_eq!(
        lines.first().map(String::as_str),
        Some("NAME SIZE COLOR PHASE AGE"),
        "{}: {lines:?}",
        v("get")
    );
    // No status yet: the Phase cell is null, which kubectl prints as nothing.
    assert!(
        lines
            .get(1)
            .is_some_and(|row| row.starts_with("alpha 3 green ") && row.split(' ').count() == 4),
        "{}: {lines:?}",
        v("get")
    );
    let all = k.run(&["get", "all"]);
    assert!(
        all.contains("widget.demo.keelson.dev/alpha"),
        "{}:\n{all}",
        v("get all (category)")
    );
    // The other served version shows the same object.
    let old = k.run(&[
        "get",
        "widgets.v1beta1.demo.keelson.dev",
        "alpha",
        "-o",
        "jsonpath={.apiVersion} {.spec.size}",
    ]);
    assert_eq!(old, "demo.keelson.dev/v1beta1 3", "{}", v("v1beta1"));

    // The scale subresource at the CRD's paths.
    let out = k.run(&["scale", "widget", "alpha", "--replicas=4"]);
    assert_eq!(
        out.trim(),
        "widget.demo.keelson.dev/alpha scaled",
        "{}",
        v("scale")
    );
    let replicas = k.run(&["get", "widget", "alpha", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "4", "{}", v("scaled replicas"));

    // A rule broken on create, and the transition rule on a patch: 422s naming the rule.
    let big = widget_file(dir.path(), "big", 11);
    let err = k.fail(&["apply", "-f", &big.to_string_lossy()]);
    assert!(
        err.contains("The Widget \"big\" is invalid") && err.contains("size must be at most 10"),
        "{}:\n{err}",
        v("a rule")
    );
    let err = k.fail(&[
        "patch",
        "widget",
        "alpha",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":2}}"#,
    ]);
    assert!(
        err.contains("The Widget \"alpha\" is invalid") && err.contains("size may not shrink"),
        "{}:\n{err}",
        v("a transition rule")
    );
    let out = k.run(&[
        "patch",
        "widget",
        "alpha",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":5}}"#,
    ]);
    assert_eq!(
        out.trim(),
        "widget.demo.keelson.dev/alpha patched",
        "{}",
        v("grow")
    );

    // A non-structural CRD is refused.
    let err = k.fail(&["apply", "-f", &manifest("crd-nonstructural.yaml")]);
    assert!(
        err.contains(
            "The CustomResourceDefinition \"gadgets.demo.keelson.dev\" is invalid: \
             spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: \
             must not be empty for specified object fields"
        ),
        "{}:\n{err}",
        v("a non-structural schema")
    );

    // Deleting a namespace deletes the widgets in it.
    k.run(&["create", "namespace", "crs"]);
    let inner = dir.path().join("inner.yaml");
    std::fs::write(
        &inner,
        "apiVersion: demo.keelson.dev/v1\nkind: Widget\nmetadata:\n  name: inner\n  \
         namespace: crs\nspec:\n  size: 1\n",
    )
    .expect("write the widget");
    k.run(&["apply", "-f", &inner.to_string_lossy()]);
    k.run(&["delete", "namespace", "crs", "--timeout=60s"]);
    let out = k
        .command(&["get", "widgets", "-n", "crs"])
        .output()
        .expect("kubectl");
    assert!(
        out.stdout.is_empty()
            && String::from_utf8_lossy(&out.stderr).contains("No resources found"),
        "{}: {}{}",
        v("namespace deletion"),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting the CRD deletes the widgets: created again, it has none.
    let out = k.run(&["delete", "-f", &manifest("crd-widgets.yaml")]);
    assert_eq!(
        out.trim(),
        format!("customresourcedefinition.apiextensions.k8s.io \"{CRD}\" deleted"),
        "{}",
        v("delete the CRD")
    );
    // kubectl still has widgets in its discovery cache, so it asks and gets a 404.
    let err = k.fail(&["get", "widgets"]);
    assert!(
        err.contains("the server could not find the requested resource")
            || err.contains("the server doesn't have a resource type \"widgets\""),
        "{}:\n{err}",
        v("gone")
    );
    k.run(&["apply", "-f", &manifest("crd-widgets.yaml")]);
    k.run(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        &format!("crd/{CRD}"),
    ]);
    let out = k
        .command(&["get", "widgets", "-A"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}: {}{}",
        v("no widgets left"),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No resources found"),
        "{}",
        v("no widgets left")
    );
}

#[test]
fn custom_resources_with_kubectl_1_33() {
    custom_resources(33);
}

#[test]
fn custom_resources_with_kubectl_1_27() {
    custom_resources(27);
}
