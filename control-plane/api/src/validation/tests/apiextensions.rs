//! CustomResourceDefinitions: names, versions, columns, conversion and the update rules.

use serde_json::{Value, json};

use super::{create, has, update, with};

const GROUP: &str = "apiextensions.k8s.io";
const KIND: &str = "CustomResourceDefinition";

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": KIND,
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}],
            "conversion": {"strategy": "None"},
        },
    })
}

#[test]
fn a_valid_crd_passes() {
    assert_eq!(create(GROUP, KIND, &crd()), Vec::<String>::new());
}

#[test]
fn crd_mistakes_name_the_field_as_kube_does() {
    let cases = [
        (
            json!({"spec": {"names": {"listKind": "Widget"}}}),
            "spec.names.listKind: Invalid value: \"Widget\": kind and listKind may not be the same",
        ),
        (
            json!({"spec": {"names": {"kind": "Wid_get", "listKind": "WidList"}}}),
            "spec.names.kind: Invalid value: \"Wid_get\": may have mixed case, but should \
             otherwise match: a DNS-1035 label must consist of lower case alphanumeric \
             characters or '-', start with an alphabetic character, and end with an \
             alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation \
             is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        (
            json!({"spec": {"names": {"singular": null}}}),
            "spec.names.singular: Required value",
        ),
        (
            json!({"spec": {"conversion": {"strategy": "Webhook"}}}),
            "spec.conversion.webhook: Required value: required when strategy is set to Webhook",
        ),
        (
            json!({"spec": {"conversion": {"strategy": "Magic"}}}),
            "spec.conversion.strategy: Unsupported value: \"Magic\": supported values: \
             \"None\", \"Webhook\"",
        ),
        (
            json!({"spec": {"versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object"}},
                 "additionalPrinterColumns": [{"name": "A", "type": "string", "jsonPath": "spec.a"}]}]}}),
            "spec.versions[0].additionalPrinterColumns[0].jsonPath: Invalid value: \"spec.a\": \
             must be a simple json path starting with .",
        ),
    ];
    for (patch, expected) in cases {
        has(&create(GROUP, KIND, &with(&crd(), patch)), expected);
    }
}

#[test]
fn group_and_plural_never_change_nor_kind_once_established() {
    let mut old = crd();
    old["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
    let renamed = with(
        &old,
        json!({"spec": {"names": {"kind": "Gadget", "listKind": "GadgetList"}}}),
    );
    has(
        &update(GROUP, KIND, &old, &renamed),
        "spec.names.kind: Invalid value: \"Gadget\": field is immutable",
    );
    let regrouped = with(&old, json!({"spec": {"group": "example.org"}}));
    has(
        &update(GROUP, KIND, &old, &regrouped),
        "spec.group: Invalid value: \"example.org\": field is immutable",
    );
}
