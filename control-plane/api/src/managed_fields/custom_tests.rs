//! Server-side apply of custom resources whose CRD schema says how lists and maps merge:
//! what two appliers see in the object, its `managedFields` and the conflicts.

use serde_json::{Value, json};

use super::{Apply, Schema, Update, apply, record_update};

const T0: &str = "2026-01-01T00:00:00Z";

/// A CRD version's `openAPIV3Schema` with one field of each shape.
fn schema() -> Schema {
    Schema::custom(&json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "items": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "value": {"type": "integer"},
                            },
                        },
                    },
                    "ports": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["port", "protocol"],
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "integer"},
                                "protocol": {"type": "string", "default": "TCP"},
                            },
                        },
                    },
                    "tags": {
                        "type": "array",
                        "x-kubernetes-list-type": "set",
                        "items": {"type": "string"},
                    },
                    "hosts": {"type": "array", "items": {"type": "string"}},
                    "selector": {
                        "type": "object",
                        "x-kubernetes-map-type": "atomic",
                        "additionalProperties": {"type": "string"},
                    },
                    "settings": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
        },
    }))
}

fn widget(spec: Value) -> Value {
    json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": spec,
    })
}

fn on<'a>(schema: &'a Schema, manager: &'a str) -> Apply<'a> {
    Apply {
        manager,
        api_version: "example.com/v1",
        kind: "Widget",
        time: T0,
        subresource: None,
        has_status: false,
        force: false,
        schema: schema.root(),
    }
}

fn fields_of<'a>(object: &'a Value, manager: &str) -> &'a Value {
    object["metadata"]["managedFields"]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["manager"] == manager))
        .map(|e| &e["fieldsV1"])
        .unwrap_or_else(|| panic!("no entry of {manager} in {object}"))
}

/// `a` applies `first`, then `b` applies `second` to the result.
fn two_appliers(schema: &Schema, first: Value, second: Value) -> Result<Value, String> {
    let live = apply(None, &widget(first), &on(schema, "a")).expect("a creates");
    apply(Some(&live), &widget(second), &on(schema, "b")).map_err(|e| e.to_string())
}

#[test]
fn two_appliers_each_own_their_own_item_of_a_keyed_list() {
    let schema = schema();
    let object = two_appliers(
        &schema,
        json!({"items": [{"name": "a", "value": 1}]}),
        json!({"items": [{"name": "b", "value": 2}]}),
    )
    .expect("b merges");
    assert_eq!(
        object["spec"]["items"],
        json!([{"name": "a", "value": 1}, {"name": "b", "value": 2}])
    );
    assert_eq!(
        fields_of(&object, "a"),
        &json!({"f:spec": {"f:items": {"k:{\"name\":\"a\"}": {
            ".": {}, "f:name": {}, "f:value": {}}}}})
    );
    assert_eq!(
        fields_of(&object, "b"),
        &json!({"f:spec": {"f:items": {"k:{\"name\":\"b\"}": {
            ".": {}, "f:name": {}, "f:value": {}}}}})
    );

    // `a` drops its item: only its own goes.
    let object = apply(
        Some(&object),
        &widget(json!({"items": []})),
        &on(&schema, "a"),
    )
    .expect("a applies again");
    assert_eq!(object["spec"]["items"], json!([{"name": "b", "value": 2}]));
}

#[test]
fn conflicts_name_the_keyed_item_and_field() {
    let schema = schema();
    let cases = [
        (
            json!({"items": [{"name": "a", "value": 1}]}),
            json!({"items": [{"name": "a", "value": 3}]}),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.items[name=\"a\"].value",
        ),
        // A key the item leaves out takes the schema's default.
        (
            json!({"ports": [{"port": 80}]}),
            json!({"ports": [{"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"}]}),
            "",
        ),
        (json!({"tags": ["x"]}), json!({"tags": ["y"]}), ""),
        (
            json!({"hosts": ["x"]}),
            json!({"hosts": ["y"]}),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.hosts",
        ),
        (
            json!({"selector": {"app": "x"}}),
            json!({"selector": {"tier": "y"}}),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.selector",
        ),
        (
            json!({"settings": {"app": "x"}}),
            json!({"settings": {"tier": "y"}}),
            "",
        ),
    ];
    for (first, second, want) in cases {
        let got = two_appliers(&schema, first.clone(), second.clone())
            .err()
            .unwrap_or_default();
        assert_eq!(got, want, "{first} then {second}");
    }
}

#[test]
fn set_and_granular_map_members_are_owned_one_by_one() {
    let schema = schema();
    let object = two_appliers(
        &schema,
        json!({"tags": ["x"], "settings": {"app": "x"}}),
        json!({"tags": ["y"], "settings": {"tier": "y"}}),
    )
    .expect("b merges");
    assert_eq!(object["spec"]["tags"], json!(["x", "y"]));
    assert_eq!(object["spec"]["settings"], json!({"app": "x", "tier": "y"}));
    assert_eq!(
        fields_of(&object, "b"),
        &json!({"f:spec": {"f:settings": {"f:tier": {}}, "f:tags": {"v:\"y\"": {}}}})
    );
    assert_eq!(
        two_appliers(
            &schema,
            json!({"ports": [{"port": 80}]}),
            json!({"ports": [{"port": 80, "protocol": "UDP"}]}),
        )
        .expect("b merges")["spec"]["ports"],
        json!([{"port": 80}, {"port": 80, "protocol": "UDP"}])
    );
}

#[test]
fn an_atomic_map_is_replaced_whole_and_owned_as_one_field() {
    let schema = schema();
    let live = apply(
        None,
        &widget(json!({"selector": {"app": "x"}})),
        &on(&schema, "a"),
    )
    .expect("a creates");
    assert_eq!(
        fields_of(&live, "a"),
        &json!({"f:spec": {"f:selector": {}}})
    );
    let forced = Apply {
        force: true,
        ..on(&schema, "b")
    };
    let object = apply(
        Some(&live),
        &widget(json!({"selector": {"tier": "y"}})),
        &forced,
    )
    .expect("b forces");
    assert_eq!(object["spec"]["selector"], json!({"tier": "y"}));
}

#[test]
fn updates_record_keyed_items_of_custom_resources() {
    let schema = schema();
    let mut object = widget(json!({"items": [{"name": "a", "value": 1}], "tags": ["x"]}));
    record_update(
        None,
        &mut object,
        &Update {
            manager: "creator",
            api_version: "example.com/v1",
            time: T0,
            subresource: None,
            has_status: false,
            schema: schema.root(),
        },
    );
    assert_eq!(
        fields_of(&object, "creator"),
        &json!({"f:spec": {
            ".": {},
            "f:items": {".": {}, "k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:value": {}}},
            "f:tags": {".": {}, "v:\"x\"": {}},
        }})
    );
}

#[test]
fn keyed_and_set_items_of_custom_resources_are_checked_as_kube_checks_them() {
    let schema = schema();
    let cases = [
        (
            json!({"items": [{"value": 1}]}),
            ".spec.items: associative list with keys has an element that omits key field \
             \"name\" (and doesn't have default value)",
        ),
        (
            json!({"items": [{"name": "a"}, {"name": "a", "value": 2}]}),
            ".spec.items: duplicate entries for key [name=\"a\"]",
        ),
        (
            json!({"tags": ["x", "x"]}),
            ".spec.tags: duplicate entries for key [=\"x\"]",
        ),
    ];
    for (spec, message) in cases {
        let error = apply(None, &widget(spec.clone()), &on(&schema, "a")).expect_err(message);
        assert_eq!(error.to_string(), message, "{spec}");
    }
    // A port left without `protocol` takes the schema's default and is no error.
    assert!(
        apply(
            None,
            &widget(json!({"ports": [{"port": 80}]})),
            &on(&schema, "a")
        )
        .is_ok()
    );
}
