//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) and the metadata of custom resources:
//! the checks of `k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation` (v1.33),
//! with each version's schema compiled by [`crate::crd::Structural::compile`].

use serde_json::Value;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta;
use super::util::{Errs, Path, arr, at, bool_opt, get, str_opt, str_or, strings};
use crate::crd::Structural;

/// The printer column types kube accepts (`printerColumnDatatypes`), in its sorted order.
const COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
/// The printer column formats kube accepts, in its sorted order.
const COLUMN_FORMATS: &[&str] = &[
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "password",
];

/// `ValidateCustomResourceDefinition` for a create.
pub(crate) fn crd(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let name = str_or(at(object, "metadata"), "name");
    let required = format!(
        "{}.{}",
        str_or(at(spec, "names"), "plural"),
        str_or(spec, "group")
    );
    if !name.is_empty() && name != required {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    crd_spec(spec, errs);
    names(
        at(at(object, "status"), "acceptedNames"),
        &Path::root("status").child("acceptedNames"),
        errs,
    );
}

/// `ValidateCustomResourceDefinitionUpdate`: the create checks, plus the group and plural
/// (which name the resource) never change, nor scope and kind once established.
pub(crate) fn crd_update(new: &Value, old: &Value, errs: &mut Errs) {
    crd(new, errs);
    let (spec, old_spec) = (at(new, "spec"), at(old, "spec"));
    let established = arr(at(old, "status"), "conditions")
        .iter()
        .any(|c| str_or(c, "type") == "Established" && str_or(c, "status") == "True");
    let mut immutable = |path: &str, new: Option<&Value>, old: Option<&Value>| {
        if new != old {
            errs.push(FieldError::invalid(
                path,
                new.cloned().unwrap_or(Value::String(String::new())),
                "field is immutable",
            ));
        }
    };
    if established {
        immutable("spec.scope", get(spec, "scope"), get(old_spec, "scope"));
        immutable(
            "spec.names.kind",
            get(at(spec, "names"), "kind"),
            get(at(old_spec, "names"), "kind"),
        );
    }
    immutable("spec.group", get(spec, "group"), get(old_spec, "group"));
    immutable(
        "spec.names.plural",
        get(at(spec, "names"), "plural"),
        get(at(old_spec, "names"), "plural"),
    );
}

fn crd_spec(spec: &Value, errs: &mut Errs) {
    let path = Path::root("spec");
    match str_opt(spec, "group").filter(|g| !g.is_empty()) {
        None => errs.push(FieldError::required("spec.group", "")),
        Some(group) => {
            let problems = formats::dns1123_subdomain(group);
            if !problems.is_empty() {
                errs.push(FieldError::invalid("spec.group", group, problems.join(",")));
            } else if !group.contains('.') {
                errs.push(FieldError::invalid(
                    "spec.group",
                    group,
                    "should be a domain with at least one dot",
                ));
            }
        }
    }
    match str_opt(spec, "scope").filter(|s| !s.is_empty()) {
        None => errs.push(FieldError::required("spec.scope", "")),
        Some("Cluster" | "Namespaced") => {}
        Some(other) => errs.push(FieldError::not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    let versions = arr(spec, "versions");
    let mut seen: Vec<&str> = Vec::new();
    let mut unique = true;
    for (i, version) in versions.iter().enumerate() {
        let vpath = path.child("versions").index(i);
        let name = str_or(version, "name");
        if seen.contains(&name) {
            unique = false;
        }
        seen.push(name);
        let problems = formats::dns1035_label(name);
        if !problems.is_empty() {
            errs.push(FieldError::invalid(
                vpath.child("name").as_str(),
                name,
                problems.join(","),
            ));
        }
        crd_version(version, &vpath, errs);
    }
    if !unique {
        errs.push(FieldError::invalid_omitted(
            "spec.versions",
            "must contain unique version names",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| bool_opt(v, "storage") == Some(true))
        .count();
    if storage != 1 {
        errs.push(FieldError::invalid_omitted(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    let spec_names = at(spec, "names");
    for field in ["plural", "singular", "kind", "listKind"] {
        if str_or(spec_names, field).is_empty() {
            errs.push(FieldError::required(
                path.child("names").child(field).as_str(),
                "",
            ));
        }
    }
    names(spec_names, &path.child("names"), errs);
    conversion(get(spec, "conversion"), errs);
}

/// `ValidateCustomResourceDefinitionVersion`: the schema (required in v1, and structural),
/// the subresources and the printer columns.
fn crd_version(version: &Value, path: &Path, errs: &mut Errs) {
    let schema_path = path.child("schema").child("openAPIV3Schema");
    match get(at(version, "schema"), "openAPIV3Schema") {
        None | Some(Value::Null) => {
            errs.push(FieldError::required(
                schema_path.as_str(),
                "schemas are required",
            ));
        }
        Some(schema) => {
            if let Err(problems) = Structural::compile(schema, schema_path.as_str()) {
                errs.extend(problems);
            }
        }
    }
    if let Some(scale) = get(at(version, "subresources"), "scale").filter(|s| !s.is_null()) {
        let sub = path.child("subresources").child("scale");
        for (field, under, required) in [
            ("specReplicasPath", ".spec.", true),
            ("statusReplicasPath", ".status.", true),
            ("labelSelectorPath", ".status.", false),
        ] {
            let fpath = sub.child(field);
            match str_opt(scale, field).filter(|p| !p.is_empty()) {
                None if required => errs.push(FieldError::required(fpath.as_str(), "")),
                None => {}
                Some(p) => {
                    if let Some(e) = simple_json_path(p, fpath.as_str()) {
                        errs.push(e);
                    } else if !p.starts_with(under) {
                        errs.push(FieldError::invalid(
                            fpath.as_str(),
                            p,
                            format!(
                                "should be a json path under {}",
                                under.trim_end_matches('.')
                            ),
                        ));
                    }
                }
            }
        }
    }
    for (i, column) in arr(version, "additionalPrinterColumns").iter().enumerate() {
        let cpath = path.child("additionalPrinterColumns").index(i);
        if str_or(column, "name").is_empty() {
            errs.push(FieldError::required(cpath.child("name").as_str(), ""));
        }
        let types = format!("must be one of {}", COLUMN_TYPES.join(","));
        match str_opt(column, "type").filter(|t| !t.is_empty()) {
            None => errs.push(FieldError::required(cpath.child("type").as_str(), types)),
            Some(t) if !COLUMN_TYPES.contains(&t) => {
                errs.push(FieldError::invalid(cpath.child("type").as_str(), t, types));
            }
            Some(_) => {}
        }
        if let Some(format) = str_opt(column, "format").filter(|f| !f.is_empty())
            && !COLUMN_FORMATS.contains(&format)
        {
            errs.push(FieldError::invalid(
                cpath.child("format").as_str(),
                format,
                format!("must be one of {}", COLUMN_FORMATS.join(",")),
            ));
        }
        match str_opt(column, "jsonPath").filter(|p| !p.is_empty()) {
            None => errs.push(FieldError::required(cpath.child("jsonPath").as_str(), "")),
            Some(p) => errs.extend(simple_json_path(p, cpath.child("jsonPath").as_str())),
        }
    }
}

/// `validateSimpleJSONPath`: a dot-notation path starting with `.`.
fn simple_json_path(path: &str, field: &str) -> Option<FieldError> {
    (!path.starts_with('.'))
        .then(|| FieldError::invalid(field, path, "must be a simple json path starting with ."))
}

/// `ValidateCustomResourceDefinitionNames`: DNS-1035 labels, kinds in mixed case.
fn names(names: &Value, path: &Path, errs: &mut Errs) {
    for field in ["plural", "singular"] {
        let value = str_or(names, field);
        let problems = formats::dns1035_label(value);
        if !value.is_empty() && !problems.is_empty() {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                value,
                problems.join(","),
            ));
        }
    }
    for field in ["kind", "listKind"] {
        let value = str_or(names, field);
        let problems = formats::dns1035_label(&value.to_ascii_lowercase());
        if !value.is_empty() && !problems.is_empty() {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                value,
                format!(
                    "may have mixed case, but should otherwise match: {}",
                    problems.join(",")
                ),
            ));
        }
    }
    for (list, values) in [
        ("shortNames", strings(names, "shortNames")),
        ("categories", strings(names, "categories")),
    ] {
        for (i, value) in values.iter().enumerate() {
            let problems = formats::dns1035_label(value);
            if !problems.is_empty() {
                errs.push(FieldError::invalid(
                    path.child(list).index(i).as_str(),
                    *value,
                    problems.join(","),
                ));
            }
        }
    }
    let kind = str_or(names, "kind");
    if !kind.is_empty() && kind == str_or(names, "listKind") {
        errs.push(FieldError::invalid(
            path.child("listKind").as_str(),
            kind,
            "kind and listKind may not be the same",
        ));
    }
}

/// `ValidateCustomResourceConversion`: `None` or `Webhook`, the latter with exactly one of a
/// URL or a service.
fn conversion(conversion: Option<&Value>, errs: &mut Errs) {
    let Some(conversion) = conversion.filter(|c| !c.is_null()) else {
        return;
    };
    let webhook = get(at(conversion, "webhook"), "clientConfig").filter(|c| !c.is_null());
    match str_opt(conversion, "strategy").filter(|s| !s.is_empty()) {
        None => errs.push(FieldError::required("spec.conversion.strategy", "")),
        Some("Webhook") => match webhook {
            None => errs.push(FieldError::required(
                "spec.conversion.webhook",
                "required when strategy is set to Webhook",
            )),
            Some(config) => {
                let (url, service) = (get(config, "url"), get(config, "service"));
                if url.is_some() == service.is_some() {
                    errs.push(FieldError::required(
                        "spec.conversion.webhook.clientConfig",
                        "exactly one of url or service is required",
                    ));
                }
            }
        },
        Some("None") => {
            if webhook.is_some() {
                errs.push(FieldError::forbidden(
                    "spec.conversion.webhook",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        Some(other) => errs.push(FieldError::not_supported(
            "spec.conversion.strategy",
            other,
            &["None", "Webhook"],
        )),
    }
}

/// The metadata checks of a custom resource (`customResourceStrategy.Validate`): names are
/// DNS subdomains.
pub fn custom_resource(object: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    meta::object_meta(object, NameRule::Subdomain, namespaced, &mut errs);
    errs
}

/// The metadata checks of an update of a custom resource.
pub fn custom_resource_update(new: &Value, old: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = custom_resource(new, namespaced);
    meta::object_meta_update(new, old, &mut errs);
    errs
}
