//! Table tests: valid objects of every kind pass, and the common mistakes give kube-apiserver's
//! field paths and messages.

mod apiextensions;
mod apps;
mod core;
mod others;

use serde_json::{Value, json};

use super::{FieldError, summary, validate, validate_update};

/// The errors of a create, as `field: message` lines.
pub(super) fn create(group: &str, kind: &str, object: &Value) -> Vec<String> {
    validate(group, kind, object)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The errors of an update, as `field: message` lines.
pub(super) fn update(group: &str, kind: &str, old: &Value, new: &Value) -> Vec<String> {
    validate_update(group, kind, old, new)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Applies a JSON merge patch to a copy of `base`.
pub(super) fn with(base: &Value, patch: Value) -> Value {
    let mut v = base.clone();
    crate::patch::merge_patch(&mut v, &patch);
    v
}

/// Asserts that `lines` contains `expected` (exactly one of the lines).
#[track_caller]
pub(super) fn has(lines: &[String], expected: &str) {
    assert!(
        lines.iter().any(|l| l == expected),
        "expected {expected:?} among {lines:#?}"
    );
}

#[test]
fn summary_formats_one_and_many_errors_like_errors_new_invalid() {
    let one = [FieldError::required("spec.selector", "")];
    assert_eq!(
        summary("Deployment.apps", "web", &one),
        "Deployment.apps \"web\" is invalid: spec.selector: Required value"
    );
    let many = [
        FieldError::required("spec.selector", ""),
        FieldError::invalid("metadata.name", "Web", "bad"),
        FieldError::required("spec.selector", ""),
    ];
    assert_eq!(
        summary("Deployment.apps", "web", &many),
        "Deployment.apps \"web\" is invalid: [spec.selector: Required value, metadata.name: \
         Invalid value: \"Web\": bad]"
    );
    assert_eq!(summary("Pod", "p", &[]), "Pod \"p\" is invalid");
}

#[test]
fn messages_print_values_as_go_does() {
    let cases = [
        (FieldError::required("a", ""), "a: Required value"),
        (FieldError::required("a", "why"), "a: Required value: why"),
        (
            FieldError::invalid("a", "x\"y", "bad"),
            "a: Invalid value: \"x\\\"y\": bad",
        ),
        (
            FieldError::invalid("a", 5, "bad"),
            "a: Invalid value: 5: bad",
        ),
        (
            FieldError::invalid("a", true, "bad"),
            "a: Invalid value: true: bad",
        ),
        (
            FieldError::invalid("a", json!(["x", "y"]), "bad"),
            "a: Invalid value: []string{\"x\", \"y\"}: bad",
        ),
        (
            FieldError::invalid("a", json!({"k": "v"}), "bad"),
            "a: Invalid value: map[string]string{\"k\":\"v\"}: bad",
        ),
        (
            FieldError::not_supported("a", "X", &["A", "B"]),
            "a: Unsupported value: \"X\": supported values: \"A\", \"B\"",
        ),
        (FieldError::duplicate("a", "n"), "a: Duplicate value: \"n\""),
        (FieldError::not_found("a", "n"), "a: Not found: \"n\""),
        (FieldError::forbidden("a", "no"), "a: Forbidden: no"),
        (
            FieldError::too_long("data", 1048576),
            "data: Too long: may not be more than 1048576 bytes",
        ),
        (
            FieldError::too_many("a", 3, 2),
            "a: Too many: 3: must have at most 2 items",
        ),
        (
            FieldError::invalid("a", "\u{1}\n", "c"),
            "a: Invalid value: \"\\x01\\n\": c",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
    let e = FieldError::not_supported("a", "X", &["A"]);
    assert_eq!(e.reason(), "FieldValueNotSupported");
    assert_eq!(e.supported, vec!["A".to_owned()]);
    assert_eq!(
        e.status_cause(),
        json!({"reason": "FieldValueNotSupported", "field": "a",
               "message": "Unsupported value: \"X\": supported values: \"A\""})
    );
}

#[test]
fn unknown_kinds_get_the_generic_metadata_checks() {
    let obj = json!({"metadata": {"name": "a/b", "labels": {"-x": "y"}}});
    let lines = create("example.com", "Widget", &obj);
    has(
        &lines,
        "metadata.name: Invalid value: \"a/b\": may not contain '/'",
    );
    assert_eq!(lines.len(), 2, "{lines:#?}");
}

#[test]
fn metadata_labels_annotations_and_finalizers() {
    let cm = |meta: Value| json!({"metadata": meta, "data": {}});
    let lines = create(
        "",
        "ConfigMap",
        &cm(json!({"name": "c", "namespace": "d", "labels": {"app": "bad value!"}})),
    );
    assert_eq!(
        lines,
        [
            "metadata.labels: Invalid value: \"bad value!\": a valid label must be an empty string \
          or consist of alphanumeric characters, '-', '_' or '.', and must start and end with \
          an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used \
          for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ]
    );
    let lines = create(
        "",
        "ConfigMap",
        &cm(json!({"name": "c", "namespace": "d", "labels": {"example.com/": "x"}})),
    );
    has(
        &lines,
        "metadata.labels: Invalid value: \"example.com/\": name part must be non-empty",
    );
    let big = "x".repeat(256 * 1024);
    let lines = create(
        "",
        "ConfigMap",
        &cm(json!({"name": "c", "namespace": "d", "annotations": {"a": big}})),
    );
    assert_eq!(
        lines,
        ["metadata.annotations: Too long: may not be more than 262144 bytes"]
    );
    let lines = create(
        "",
        "ConfigMap",
        &cm(json!({"name": "c", "namespace": "d", "finalizers": ["foo"]})),
    );
    assert_eq!(
        lines,
        [
            "metadata.finalizers[0]: Invalid value: \"foo\": name is neither a standard finalizer \
          name nor is it fully qualified"
        ]
    );
    let lines = create("", "ConfigMap", &cm(json!({"namespace": "d"})));
    assert_eq!(
        lines,
        ["metadata.name: Required value: name or generateName is required"]
    );
}

#[test]
fn updates_may_not_rename() {
    let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "1"}, "data": {}});
    let new = with(&old, json!({"metadata": {"name": "b"}}));
    assert_eq!(
        update("", "ConfigMap", &old, &new),
        ["metadata.name: Invalid value: \"b\": field is immutable"]
    );
}
