use jiff::Timestamp;
use serde_json::{Value, json};

use super::columns::{JsonPath, cells, definitions, of_version};
use super::status::{accepted_names, desired_status};
use super::*;

#[test]
fn versions_sort_as_kube_sorts_them() {
    let mut versions = vec![
        "v1alpha1", "foo", "v2beta1", "v1", "v1beta2", "v10", "v1beta1", "v2", "bar",
    ];
    versions.sort_by(|a, b| version_order(a, b));
    assert_eq!(
        versions,
        [
            "v10", "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "bar", "foo"
        ]
    );
}

/// A CRD of group bravo.com with spec names and, optionally, accepted names.
fn crd(plural: &str, spec: Value, accepted: Value) -> Value {
    let mut names = spec;
    names["plural"] = json!(plural);
    json!({
        "metadata": {"name": format!("{plural}.bravo.com")},
        "spec": {"group": "bravo.com", "names": names,
                 "versions": [{"name": "v1", "served": true, "storage": true}]},
        "status": {"acceptedNames": accepted},
    })
}

/// kube's naming controller cases (`naming_controller_test.go`): which name conflicts, what
/// is accepted instead.
#[test]
fn names_in_use_by_another_crd_are_not_accepted() {
    let spec = json!({"singular": "delta-singular", "kind": "EchoKind", "listKind": "FoxtrotList",
                      "shortNames": ["golf", "hotel"]});
    let cases = [
        ("no other CRD", json!(null), None, json!("EchoKind")),
        (
            "the singular is another CRD's plural",
            json!({"plural": "delta-singular"}),
            Some(("SingularConflict", "\"delta-singular\" is already in use")),
            json!("EchoKind"),
        ),
        (
            "a short name is another's short name",
            json!({"plural": "india", "shortNames": ["hotel"]}),
            Some(("ShortNamesConflict", "\"hotel\" is already in use")),
            json!("EchoKind"),
        ),
        (
            "the kind is another's list kind",
            json!({"plural": "india", "listKind": "EchoKind"}),
            Some(("KindConflict", "\"EchoKind\" is already in use")),
            Value::Null,
        ),
        (
            "a resource name equal to another's kind is no conflict",
            json!({"plural": "india", "singular": "EchoKind"}),
            None,
            json!("EchoKind"),
        ),
    ];
    for (case, other_accepted, conflict, kind) in cases {
        let ours = crd("alfa", spec.clone(), json!({}));
        let other = crd("india", json!({}), other_accepted);
        let (names, found) = accepted_names(&ours, &[&other]);
        assert_eq!(
            found,
            conflict.map(|(r, m)| (r.to_owned(), m.to_owned())),
            "{case}"
        );
        assert_eq!(
            names.get("kind").cloned().unwrap_or(Value::Null),
            kind,
            "{case}"
        );
    }
}

#[test]
fn a_conflict_keeps_the_names_accepted_before() {
    let ours = crd(
        "alfa",
        json!({"singular": "delta-singular", "kind": "EchoKind", "listKind": "FoxtrotList"}),
        json!({"plural": "zulu", "singular": "yankee", "kind": "XrayKind", "listKind": "WhiskeyList"}),
    );
    let other = crd(
        "india",
        json!({}),
        json!({"plural": "india", "kind": "FoxtrotList", "shortNames": ["delta-singular"]}),
    );
    let (names, conflict) = accepted_names(&ours, &[&other]);
    assert_eq!(
        names,
        json!({"plural": "alfa", "singular": "yankee", "kind": "EchoKind", "listKind": "WhiskeyList"})
    );
    assert_eq!(
        conflict,
        Some((
            "ListKindConflict".to_owned(),
            "\"FoxtrotList\" is already in use".to_owned()
        ))
    );
}

#[test]
fn status_is_established_once_and_records_the_storage_version() {
    let new = crd(
        "alfa",
        json!({"kind": "Alfa", "listKind": "AlfaList"}),
        json!({}),
    );
    let status = desired_status(&new, &[]);
    let conditions: Vec<(&str, &str, &str)> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("NamesAccepted", "True", "NoConflicts"),
            ("Established", "True", "InitialNamesAccepted")
        ]
    );
    assert_eq!(status["storedVersions"], json!(["v1"]));
    // Once established, a later conflict does not take it back.
    let mut established = new.clone();
    established["status"] = status;
    let other = crd(
        "india",
        json!({}),
        json!({"plural": "india", "kind": "Alfa"}),
    );
    let later = desired_status(&established, &[&other]);
    let established_condition = later["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Established"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(established_condition["status"], "True");
}

#[test]
fn json_paths_of_printer_columns() {
    let object = json!({
        "metadata": {"name": "w", "annotations": {"a.b/c": "dotted"}},
        "spec": {"items": [{"n": 1}, {"n": 2}]},
        "status": {"conditions": [
            {"type": "Synced", "status": "False"},
            {"type": "Ready", "status": "True"},
        ]},
    });
    let cases = [
        (".metadata.name", vec![json!("w")]),
        (".metadata.annotations['a.b/c']", vec![json!("dotted")]),
        (".spec.items[1].n", vec![json!(2)]),
        (".spec.items[*].n", vec![json!(1), json!(2)]),
        (
            ".status.conditions[?(@.type==\"Ready\")].status",
            vec![json!("True")],
        ),
        (".status.missing", vec![]),
    ];
    for (path, expected) in cases {
        let parsed = JsonPath::parse(path).unwrap_or_else(|| panic!("{path} parses"));
        let found: Vec<Value> = parsed.find(&object).into_iter().cloned().collect();
        assert_eq!(found, expected, "{path}");
    }
    assert_eq!(JsonPath::parse("spec.size"), None, "must start with a dot");
}

#[test]
fn columns_default_to_age_and_cells_follow_their_type() {
    let none = of_version(&json!({"name": "v1"}));
    let names: Vec<Value> = definitions(&none)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, [json!("Name"), json!("Age")]);
    let declared = of_version(&json!({"additionalPrinterColumns": [
        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
        {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
        {"name": "Made", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
    ]}));
    let defs = definitions(&declared);
    assert_eq!(
        defs[1]["description"],
        "Custom resource definition column (in JSONPath format): .spec.size"
    );
    let now: Timestamp = "2024-01-01T01:00:00Z".parse().expect("time");
    let object = json!({
        "metadata": {"name": "w", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"size": "big", "color": {"r": 1}},
        "status": {"ready": true},
    });
    assert_eq!(
        cells(&declared, &object, now),
        [
            json!("w"),
            Value::Null,
            json!(true),
            json!("60m"),
            json!("{\"r\":1}")
        ]
    );
}

fn established(name: &str, versions: Value) -> Value {
    json!({
        "metadata": {"name": format!("{name}s.example.com")},
        "spec": {"group": "example.com", "scope": "Namespaced", "versions": versions},
        "status": {
            "acceptedNames": {"plural": format!("{name}s"), "kind": "Thing", "shortNames": ["th"]},
            "conditions": [{"type": "Established", "status": "True"}],
        },
    })
}

#[test]
fn snapshots_serve_the_served_versions_of_established_crds_and_reuse_descriptors() {
    let versions = json!([
        {"name": "v1beta1", "served": true, "storage": false},
        {"name": "v1", "served": true, "storage": true},
        {"name": "v2alpha1", "served": false, "storage": false},
    ]);
    let mut pending = established("pending", versions.clone());
    pending["status"]["conditions"] = json!([]);
    let crds = [established("thing", versions.clone()), pending];
    let snapshot = Snapshot::build(&crds);
    assert_eq!(
        snapshot.groups(),
        [(
            "example.com".to_owned(),
            vec!["v1".to_owned(), "v1beta1".to_owned()]
        )]
    );
    let served = snapshot
        .find("example.com", "v1beta1", "things")
        .expect("v1beta1 is served");
    let resource = served.resource;
    assert_eq!(
        (resource.kind, resource.singular, resource.storage_version),
        ("Thing", "thing", "v1")
    );
    assert_eq!(resource.short_names, ["th"]);
    assert_eq!(resource.prefix(), "/registry/example.com/things/");
    assert!(snapshot.find("example.com", "v2alpha1", "things").is_none());
    assert!(snapshot.find("example.com", "v1", "pendings").is_none());
    // The stored form is in the storage version, what clients see in theirs.
    let stored = resource.to_storage(json!({"apiVersion": "example.com/v1beta1"}));
    assert_eq!(stored["apiVersion"], "example.com/v1");
    assert_eq!(
        resource.present(stored)["apiVersion"],
        "example.com/v1beta1"
    );
    // A rebuild with the same CRDs hands out the same descriptor.
    let again = Snapshot::build(&[established("thing", versions)]);
    let reused = again
        .find("example.com", "v1beta1", "things")
        .expect("served")
        .resource;
    assert!(std::ptr::eq(resource, reused));
}
