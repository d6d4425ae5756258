//! Table tests from kube's documented CRD semantics: the exact messages a user sees.

use serde_json::{Value, json};

use super::Structural;

pub(super) const P: &str = "spec.versions[0].schema.openAPIV3Schema";

pub(super) fn compiled(schema: Value) -> Structural {
    match Structural::compile(&schema, P) {
        Ok(s) => s,
        Err(errs) => panic!("schema refused: {:#?}", strings(&errs)),
    }
}

pub(super) fn refused(schema: Value) -> Vec<String> {
    match Structural::compile(&schema, P) {
        Ok(_) => panic!("schema accepted: {schema}"),
        Err(errs) => strings(&errs),
    }
}

pub(super) fn strings(errs: &[crate::validation::FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

/// A root schema with `spec` as given.
pub(super) fn with_spec(spec: Value) -> Value {
    json!({"type": "object", "properties": {"spec": spec}})
}

pub(super) fn validate(schema: &Structural, obj: Value, old: Option<Value>) -> Vec<String> {
    strings(&schema.validate(&obj, old.as_ref()))
}

#[test]
fn non_structural_schemas_are_refused_with_kubes_words() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "field without type",
            with_spec(json!({"properties": {"a": {"type": "string"}}})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
        ),
        (
            "item without type",
            with_spec(json!({"type": "array", "items": {}})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].items.type: Required value: must not be empty for specified array items",
        ),
        (
            "array without items",
            with_spec(json!({"type": "array"})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].items: Required value: must be specified",
        ),
        (
            "root not an object",
            json!({"type": "string"}),
            "spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root",
        ),
        (
            "root without type",
            json!({"properties": {"spec": {"type": "object"}}}),
            "spec.versions[0].schema.openAPIV3Schema.type: Required value: must not be empty at the root",
        ),
        (
            "additionalProperties at the root",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            "spec.versions[0].schema.openAPIV3Schema.additionalProperties: Forbidden: must not be used at the root",
        ),
        (
            "properties and additionalProperties",
            with_spec(
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
        ),
        (
            "uniqueItems",
            with_spec(json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ),
        (
            "$ref",
            with_spec(json!({"type": "object", "$ref": "#/definitions/x"})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].$ref: Forbidden: $ref is not supported",
        ),
        (
            "type under anyOf",
            with_spec(json!({"type": "object", "anyOf": [{"type": "object"}]})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].anyOf[0].type: Forbidden: must be empty to be structural",
        ),
        (
            "metadata under a junctor",
            with_spec(json!({"type": "object", "allOf": [{"properties": {"metadata": {}}}]})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context",
        ),
        (
            "unknown type",
            with_spec(json!({"type": "float"})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Unsupported value: \"float\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
        ),
        (
            "preserve-unknown-fields false",
            with_spec(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": false})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
        ),
        (
            "int-or-string with preserve-unknown-fields",
            with_spec(
                json!({"x-kubernetes-int-or-string": true, "x-kubernetes-preserve-unknown-fields": true}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if x-kubernetes-int-or-string is true",
        ),
        (
            "embedded resource not an object",
            with_spec(json!({"type": "string", "x-kubernetes-embedded-resource": true})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Invalid value: \"string\": must be object if x-kubernetes-embedded-resource is true",
        ),
        (
            "embedded resource without properties",
            with_spec(json!({"type": "object", "x-kubernetes-embedded-resource": true})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ),
        (
            "root metadata beyond name",
            json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}),
            "spec.versions[0].schema.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
        ),
        (
            "default in top-level metadata",
            json!({"type": "object", "properties": {"metadata": {"type": "object", "default": {}}}}),
            "spec.versions[0].schema.openAPIV3Schema.properties[metadata].default: Forbidden: must not be set in top-level metadata",
        ),
        (
            "list-type map without keys",
            with_spec(
                json!({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map",
        ),
        (
            "list-type on an object",
            with_spec(json!({"type": "object", "x-kubernetes-list-type": "set"})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Invalid value: \"object\": must be array if x-kubernetes-list-type is specified",
        ),
        (
            "unknown list type",
            with_spec(
                json!({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "bag"}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-list-type: Unsupported value: \"bag\": supported values: \"atomic\", \"set\", \"map\"",
        ),
        (
            "list-map key neither required nor defaulted",
            with_spec(
                json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}}}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].items.properties[name].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
        ),
        (
            "nullable set items",
            with_spec(
                json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string", "nullable": true}}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].items.nullable: Forbidden: cannot be nullable when x-kubernetes-list-type is set",
        ),
        (
            "default with unknown fields",
            with_spec(
                json!({"type": "object", "default": {"a": "x", "zzz": 1}, "properties": {"a": {"type": "string"}}}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].default: Invalid value: {\"a\":\"x\",\"zzz\":1}: must not have unknown fields",
        ),
        (
            "nullable root",
            json!({"type": "object", "nullable": true}),
            "spec.versions[0].schema.openAPIV3Schema.nullable: Forbidden: nullable cannot be true at the root",
        ),
        (
            "default of the wrong type",
            with_spec(
                json!({"type": "object", "properties": {"n": {"type": "integer", "default": "three"}}}),
            ),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[n].default: Invalid value: \"string\":  in body must be of type integer: \"string\"",
        ),
        (
            "default that breaks a rule",
            with_spec(json!({"type": "object", "properties": {"w": {
                "type": "object",
                "default": {},
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.min <= self.max"}],
            }}})),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[w].default: Invalid value: \"object\": no such key: min evaluating rule: self.min <= self.max",
        ),
    ];
    for (name, schema, want) in cases {
        let errs = refused(schema);
        assert!(
            errs.iter().any(|e| e == want),
            "{name}: want {want:?}\ngot {errs:#?}"
        );
    }
}

#[test]
fn a_bad_pattern_is_refused() {
    let errs = refused(with_spec(json!({"type": "string", "pattern": "(abc"})));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("spec.versions[0].schema.openAPIV3Schema.properties[spec].pattern: Invalid value: \"(abc\": must be a valid regular expression, but isn't: "),
        "{errs:#?}"
    );
}

#[test]
fn int_or_string_patterns_are_structural() {
    for spec in [
        json!({"x-kubernetes-int-or-string": true}),
        json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
        json!({"x-kubernetes-int-or-string": true, "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^[0-9]+%?$"}]}),
    ] {
        compiled(with_spec(spec));
    }
}

pub(super) fn rule_schema(spec_rules: Value) -> Value {
    with_spec(json!({
        "type": "object",
        "properties": {
            "min": {"type": "integer"},
            "max": {"type": "integer"},
            "name": {"type": "string", "maxLength": 63},
        },
        "x-kubernetes-validations": spec_rules,
    }))
}

#[test]
fn a_rule_that_does_not_compile_is_refused() {
    let errs = refused(rule_schema(json!([{"rule": "self.min <"}])));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let want = "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{Rule:\"self.min <\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:11: Syntax error:";
    assert!(errs[0].starts_with(want), "{}", errs[0]);
}

#[test]
fn a_rule_naming_an_unknown_field_is_refused() {
    let errs = refused(rule_schema(
        json!([{"rule": "has(self.namespace)", "message": "m"}]),
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("compilation failed: ERROR: <input>:1:"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].contains(": undefined field 'namespace'\n | has(self.namespace)\n | "),
        "{}",
        errs[0]
    );
}

#[test]
fn rule_spec_checks() {
    let cases = [
        (
            json!([{"rule": "  "}]),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Required value: rule is not specified",
        ),
        (
            json!([{"rule": "self.min > 0", "reason": "FieldValueBogus"}]),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].reason: Unsupported value: \"FieldValueBogus\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\"",
        ),
        (
            json!([{"rule": "self.min > 0", "fieldPath": ".nope"}]),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].fieldPath: Invalid value: \".nope\": fieldPath must be a valid path",
        ),
        (
            json!([{"rule": "self.min >\n 0"}]),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].message: Required value: message must be specified if rule contains line breaks",
        ),
        (
            json!([{"rule": "self.min > 0", "optionalOldSelf": true}]),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].optionalOldSelf: Invalid value: true: may not be set if oldSelf is not used in rule",
        ),
    ];
    for (rules, want) in cases {
        let errs = refused(rule_schema(rules));
        assert!(
            errs.iter().any(|e| e == want),
            "want {want:?}\ngot {errs:#?}"
        );
    }
}

#[test]
fn old_self_is_refused_where_old_values_cannot_be_correlated() {
    let errs = refused(with_spec(json!({
        "type": "array",
        "items": {"type": "string", "maxLength": 10, "x-kubernetes-validations": [{"rule": "self == oldSelf"}]},
        "maxItems": 10,
    })));
    assert_eq!(
        errs,
        [
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].items.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within spec.versions[0].schema.openAPIV3Schema.properties[spec]"
        ]
    );
    // In a list-type map, items are correlated by their keys.
    compiled(with_spec(json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "maxItems": 10,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 10}, "v": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.v >= oldSelf.v"}],
        },
    })));
}

#[test]
fn costs_are_estimated_from_the_schema_bounds() {
    let list = |bounds: Value, rule: &str| {
        let mut items = json!({"type": "string"});
        let mut list = json!({"type": "array", "x-kubernetes-validations": [{"rule": rule}]});
        if let Some(len) = bounds.get("maxLength") {
            items["maxLength"] = len.clone();
        }
        if let Some(n) = bounds.get("maxItems") {
            list["maxItems"] = n.clone();
        }
        list["items"] = items;
        with_spec(json!({"type": "object", "properties": {"tags": list}}))
    };
    let rule = "self.all(x, x.contains('gpu'))";
    let errs = refused(list(json!({}), rule));
    assert_eq!(
        errs[0],
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[tags].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    );
    assert!(
        errs.iter().any(|e| e == "spec.versions[0].schema.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"),
        "{errs:#?}"
    );
    compiled(list(json!({"maxItems": 25, "maxLength": 63}), rule));
    // An unbounded list of integers with a linear rule fits; nested iteration does not.
    let ints = |rule: &str| {
        with_spec(json!({"type": "object", "properties": {"n": {
            "type": "array", "items": {"type": "integer"},
            "x-kubernetes-validations": [{"rule": rule}],
        }}}))
    };
    compiled(ints("self.all(x, x == 5)"));
    let errs = refused(ints("self.all(x, self.exists_one(y, x == y))"));
    assert!(errs[0].ends_with("rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"), "{errs:#?}");
}

#[test]
fn cost_factor_wording() {
    use super::cost::cost_message;
    let tail = " (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
    assert_eq!(
        cost_message("c", 12, 10),
        format!("c exceeds budget by factor of 1.200000x{tail}")
    );
    assert_eq!(
        cost_message("c", 25, 10),
        format!("c exceeds budget by factor of 2.5x{tail}")
    );
    assert_eq!(
        cost_message("c", 1001, 10),
        format!("c exceeds budget by factor of more than 100x{tail}")
    );
}

#[test]
fn defaults_apply_to_absent_fields_in_objects_list_items_and_map_values() {
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "default": 1},
            "strategy": {
                "type": "object",
                "default": {},
                "properties": {"type": {"type": "string", "default": "Rolling"}},
            },
            "ports": {
                "type": "array",
                "items": {"type": "object", "properties": {
                    "port": {"type": "integer"},
                    "protocol": {"type": "string", "default": "TCP"},
                }},
            },
            "limits": {
                "type": "object",
                "additionalProperties": {"type": "object", "properties": {"burst": {"type": "integer", "default": 10}}},
            },
            "note": {"type": "string"},
            "keep": {"type": "string", "nullable": true, "default": "x"},
        },
    })));
    let mut obj = json!({"spec": {
        "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}],
        "limits": {"a": {}, "b": {"burst": 1}},
        "note": null,
        "keep": null,
    }});
    s.default(&mut obj);
    assert_eq!(
        obj,
        json!({"spec": {
            "replicas": 1,
            "strategy": {"type": "Rolling"},
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "limits": {"a": {"burst": 10}, "b": {"burst": 1}},
            "keep": null,
        }})
    );
}

#[test]
fn pruning_drops_unknown_fields_and_honours_preserve_and_embedded() {
    let s = compiled(json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "string"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "list": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}}}},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": true,
                    "properties": {"spec": {"type": "object", "properties": {"image": {"type": "string"}}}},
                },
            }},
        },
    }));
    let mut obj = json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {
            "a": "x", "b": 1,
            "free": {"anything": {"goes": true}},
            "list": [{"x": 1, "y": 2}],
            "template": {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}, "colour": "red"},
                "spec": {"image": "nginx", "extra": true},
                "status": {},
            },
        },
        "status": {"phase": "x"},
    });
    let dropped = s.prune(&mut obj);
    assert_eq!(
        dropped,
        [
            "spec.b",
            "spec.list[0].y",
            "spec.template.metadata.colour",
            "spec.template.spec.extra",
            "spec.template.status",
            "status"
        ]
    );
    assert_eq!(
        obj,
        json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {
                "a": "x",
                "free": {"anything": {"goes": true}},
                "list": [{"x": 1}],
                "template": {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}},
                    "spec": {"image": "nginx"},
                },
            },
        })
    );
}

#[test]
fn openapi_validation_messages() {
    let s = compiled(with_spec(json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "exclusiveMaximum": true, "maximum": 1},
            "step": {"type": "integer", "multipleOf": 5},
            "labels": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string"}},
            "mode": {"type": "string", "enum": ["Fast", "Slow"]},
            "port": {"x-kubernetes-int-or-string": true},
            "when": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "x-kubernetes-list-type": "set"},
            "maybe": {"type": "string", "nullable": true},
            "set": {"type": "array", "items": {"type": "integer"}, "x-kubernetes-list-type": "set"},
            "never": {"type": "string"},
            "ports": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            },
        },
    })));
    let ok = json!({"spec": {"name": "ab", "port": "http", "maybe": null, "when": "2024-01-02T03:04:05Z"}});
    assert_eq!(validate(&s, ok, None), Vec::<String>::new());
    assert_eq!(
        validate(&s, json!({"spec": {"name": "ab", "port": 8080}}), None),
        Vec::<String>::new()
    );
    let cases = [
        (json!({"spec": {}}), "spec.name: Required value"),
        (
            json!({"spec": {"name": 5}}),
            "spec.name: Invalid value: \"integer\": spec.name in body must be of type string: \"integer\"",
        ),
        (
            json!({"spec": {"name": "a"}}),
            "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars long",
        ),
        (
            json!({"spec": {"name": "abcdef"}}),
            "spec.name: Too long: may not be more than 5 bytes",
        ),
        (
            json!({"spec": {"name": "AB"}}),
            "spec.name: Invalid value: \"AB\": spec.name in body should match '^[a-z]+$'",
        ),
        (
            json!({"spec": {"name": "ab", "replicas": 0}}),
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
        ),
        (
            json!({"spec": {"name": "ab", "replicas": 11}}),
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        ),
        (
            json!({"spec": {"name": "ab", "replicas": 1.5}}),
            "spec.replicas: Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\"",
        ),
        (
            json!({"spec": {"name": "ab", "ratio": 1}}),
            "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1",
        ),
        (
            json!({"spec": {"name": "ab", "mode": "Medium"}}),
            "spec.mode: Unsupported value: \"Medium\": supported values: \"Fast\", \"Slow\"",
        ),
        (
            json!({"spec": {"name": "ab", "port": true}}),
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        ),
        (
            json!({"spec": {"name": "ab", "when": "yesterday"}}),
            "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
        ),
        (
            json!({"spec": {"name": "ab", "tags": ["a", "b", "c"]}}),
            "spec.tags: Too many: 3: must have at most 2 items",
        ),
        (
            json!({"spec": {"name": "ab", "tags": ["a", "a"]}}),
            "spec.tags[1]: Duplicate value: \"a\"",
        ),
        (
            json!({"spec": {"name": "ab", "never": null}}),
            "spec.never: Invalid value: \"null\": spec.never in body must be of type string: \"null\"",
        ),
        (
            json!({"spec": {"name": "ab", "ports": [{"name": "http"}, {"name": "http"}]}}),
            "spec.ports[1]: Duplicate value: map[string]interface {}{\"name\":\"http\"}",
        ),
    ];
    for (obj, want) in cases {
        let errs = validate(&s, obj.clone(), None);
        assert_eq!(errs, [want], "for {obj}");
    }
}

#[test]
fn embedded_resources_need_api_version_and_kind() {
    let s = compiled(with_spec(json!({
        "type": "object",
        "properties": {"template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}},
    })));
    assert_eq!(
        validate(&s, json!({"spec": {"template": {"metadata": {}}}}), None),
        [
            "spec.template.apiVersion: Required value: must not be empty",
            "spec.template.kind: Required value: must not be empty",
        ]
    );
    assert_eq!(
        validate(
            &s,
            json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "spec": {}}}}),
            None
        ),
        Vec::<String>::new()
    );
}
