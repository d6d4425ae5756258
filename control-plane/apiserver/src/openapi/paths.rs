//! The operations of a served kind, in one neutral form that `v3` and `v2` render.

use serde_json::{Value, json};

use super::ServedKind;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum In {
    Path,
    Query,
}

/// One parameter: name, place, JSON type, description.
#[derive(Debug, Clone, Copy)]
pub(super) struct Param {
    pub name: &'static str,
    pub place: In,
    pub kind: &'static str,
    pub description: &'static str,
}

const fn query(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        place: In::Query,
        kind,
        description,
    }
}

const PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', the output is pretty printed.",
);
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, the modification is not persisted. The only valid value is All: every \
     dry-run stage is processed.",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "The name of the actor making the change, recorded in managedFields. At most 128 \
     printable characters.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "What to do with unknown or duplicate fields in the object: Ignore (drop them silently), \
     Warn (drop them and answer a Warning header for each; the default) or Strict (refuse \
     the request with a BadRequest naming them).",
);
const FORCE: Param = query(
    "force",
    "boolean",
    "Force an apply: take over the fields other managers own instead of failing with a \
     conflict. Only for apply patches.",
);
const LIST: &[Param] = &[
    query(
        "allowWatchBookmarks",
        "boolean",
        "Ask for BOOKMARK watch events. The server may send them or not.",
    ),
    query(
        "continue",
        "string",
        "The continue token of a previous paged list, to get its next page.",
    ),
    query(
        "fieldSelector",
        "string",
        "Select objects by their fields (metadata.name=x, spec.nodeName!=y).",
    ),
    query(
        "labelSelector",
        "string",
        "Select objects by their labels (app=web, tier in (a,b), !canary).",
    ),
    query(
        "limit",
        "integer",
        "The most objects to answer; more are fetched with the continue token.",
    ),
    query(
        "resourceVersion",
        "string",
        "Which version of the collection to read from (see resourceVersionMatch).",
    ),
    query(
        "resourceVersionMatch",
        "string",
        "How resourceVersion is applied to a list: Exact or NotOlderThan.",
    ),
    query(
        "sendInitialEvents",
        "boolean",
        "With watch, send the current objects as ADDED events first, then a bookmark.",
    ),
    query(
        "timeoutSeconds",
        "integer",
        "End the list or watch call after this many seconds.",
    ),
    query(
        "watch",
        "boolean",
        "Watch for changes to the described objects and answer them as a stream of events.",
    ),
];
const DELETE: &[Param] = &[
    query(
        "gracePeriodSeconds",
        "integer",
        "Seconds before the object is deleted; 0 deletes at once.",
    ),
    query(
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy. Whether dependents are orphaned.",
    ),
    query(
        "propagationPolicy",
        "string",
        "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
    ),
];

/// What an operation does, as `x-kubernetes-action` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Get,
    List,
    Post,
    Put,
    Patch,
    Delete,
    DeleteCollection,
}

impl Action {
    /// The `x-kubernetes-action` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Post => "post",
            Self::Put => "put",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }

    /// The HTTP method, lower case as OpenAPI keys operations.
    pub fn method(self) -> &'static str {
        match self {
            Self::Get | Self::List => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Patch => "patch",
            Self::Delete | Self::DeleteCollection => "delete",
        }
    }

    /// The verb of the operation id (`readAppsV1NamespacedDeployment`).
    fn verb(self) -> &'static str {
        match self {
            Self::Get => "read",
            Self::List => "list",
            Self::Post => "create",
            Self::Put => "replace",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deleteCollection",
        }
    }
}

/// The media types a patch is sent as.
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// Every response body type.
pub(super) const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// The definition of a patch body.
pub(super) const PATCH_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
/// The definition of a delete body.
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
/// The definition of a delete answer.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// One operation on one path.
#[derive(Debug, Clone)]
pub(super) struct Operation {
    pub action: Action,
    pub id: String,
    pub description: String,
    /// Query parameters (path parameters are the path's).
    pub params: Vec<Param>,
    /// The request body's definition, if any.
    pub body: Option<String>,
    pub body_required: bool,
    /// The body media types when not JSON (`PATCH_TYPES`).
    pub consumes: &'static [&'static str],
    /// Status codes with the answer's definition.
    pub responses: Vec<(u16, String)>,
    /// `x-kubernetes-group-version-kind`.
    pub gvk: Value,
    pub tag: String,
}

/// One path with its path parameters and operations.
#[derive(Debug, Clone)]
pub(super) struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
}

fn path_param(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        place: In::Path,
        kind: "string",
        description,
    }
}

/// `apps` -> `Apps`, `rbac.authorization.k8s.io` -> `RbacAuthorization`, `` -> `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_owned();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `apps_v1`, `core_v1`, `rbacAuthorization_v1`: an operation's tag.
fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut chars = camel.chars();
    let lower: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// The paths of `kind`: collection, object, all-namespaces list and subresources.
pub(super) fn paths_of(kind: &ServedKind) -> Vec<PathItem> {
    let prefix = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    let gv = format!("{}{}", group_camel(&kind.group), capitalize(&kind.version));
    let scope = if kind.namespaced { "Namespaced" } else { "" };
    let gvk = json!({ "group": kind.group, "version": kind.version, "kind": kind.kind });
    let tag = tag(&kind.group, &kind.version);
    let object = kind.definition.clone();
    let list = kind.list_definition.clone();
    let op = |action: Action, suffix: &str, description: String| Operation {
        action,
        id: format!("{}{gv}{scope}{}{suffix}", action.verb(), kind.kind),
        description,
        params: Vec::new(),
        body: None,
        body_required: false,
        consumes: &[],
        responses: Vec::new(),
        gvk: gvk.clone(),
        tag: tag.clone(),
    };
    let k = &kind.kind;
    let write_params = vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
    let create = |suffix: &str, what: &str| Operation {
        params: write_params.clone(),
        body: Some(object.clone()),
        body_required: true,
        responses: vec![
            (200, object.clone()),
            (201, object.clone()),
            (202, object.clone()),
        ],
        ..op(Action::Post, suffix, format!("create {what}"))
    };
    let replace = |suffix: &str, what: &str| Operation {
        params: write_params.clone(),
        body: Some(object.clone()),
        body_required: true,
        responses: vec![(200, object.clone()), (201, object.clone())],
        ..op(Action::Put, suffix, format!("replace {what}"))
    };
    let patch = |suffix: &str, what: &str| Operation {
        params: vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE],
        body: Some(PATCH_DEFINITION.to_owned()),
        body_required: true,
        consumes: PATCH_TYPES,
        responses: vec![(200, object.clone()), (201, object.clone())],
        ..op(Action::Patch, suffix, format!("partially update {what}"))
    };
    let read = |suffix: &str, what: &str| Operation {
        responses: vec![(200, object.clone())],
        ..op(Action::Get, suffix, format!("read {what}"))
    };
    let listing = |suffix: &str, description: String| Operation {
        params: LIST.to_vec(),
        responses: vec![(200, list.clone())],
        ..op(Action::List, suffix, description)
    };

    let namespace = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name = |what: &str| Param {
        description: if what == "object" {
            "name of the object"
        } else {
            "name of the parent object"
        },
        ..path_param("name", "")
    };
    let collection = if kind.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{prefix}/{}", kind.plural)
    };
    let scope_params = if kind.namespaced {
        vec![namespace, PRETTY]
    } else {
        vec![PRETTY]
    };
    let mut items = Vec::new();
    let create_op = create("", &format!("a {k}"));
    let delete_collection = Operation {
        params: [LIST, DELETE, &[DRY_RUN]].concat(),
        body: Some(DELETE_OPTIONS.to_owned()),
        responses: vec![(200, STATUS.to_owned())],
        id: format!("delete{gv}Collection{scope}{}", kind.kind),
        ..op(
            Action::DeleteCollection,
            "",
            format!("delete collection of {k}"),
        )
    };
    items.push(PathItem {
        path: collection.clone(),
        params: scope_params.clone(),
        operations: vec![
            listing("", format!("list or watch objects of kind {k}")),
            create_op,
            delete_collection,
        ],
    });
    let mut object_params = vec![name("object")];
    object_params.extend(scope_params.iter().copied());
    let replace_op = replace("", &format!("the specified {k}"));
    items.push(PathItem {
        path: format!("{collection}/{{name}}"),
        params: object_params,
        operations: vec![
            read("", &format!("the specified {k}")),
            replace_op,
            Operation {
                params: [DELETE, &[DRY_RUN]].concat(),
                body: Some(DELETE_OPTIONS.to_owned()),
                responses: vec![(200, STATUS.to_owned()), (202, STATUS.to_owned())],
                ..op(Action::Delete, "", format!("delete a {k}"))
            },
            patch("", &format!("the specified {k}")),
        ],
    });
    if kind.namespaced {
        items.push(PathItem {
            path: format!("{prefix}/{}", kind.plural),
            params: vec![PRETTY],
            operations: vec![Operation {
                id: format!("list{gv}{}ForAllNamespaces", kind.kind),
                ..listing("", format!("list or watch objects of kind {k}"))
            }],
        });
    }
    for sub in &kind.subresources {
        let mut parent_params = vec![name("parent")];
        parent_params.extend(scope_params.iter().copied());
        let suffix = capitalize(&sub.name);
        let what = format!("{} of the specified {k}", sub.name);
        let with_object = |mut operation: Operation| {
            operation.gvk = sub.gvk.clone();
            for response in &mut operation.responses {
                response.1 = sub.definition.clone();
            }
            if operation.body.as_deref() == Some(kind.definition.as_str()) {
                operation.body = Some(sub.definition.clone());
            }
            operation
        };
        let operations = sub
            .verbs
            .iter()
            .filter_map(|verb| match *verb {
                "get" => Some(read(&suffix, &what)),
                "update" => Some(replace(&suffix, &what)),
                "patch" => Some(patch(&suffix, &what)),
                "create" => Some(create(&suffix, &what)),
                _ => None,
            })
            .map(with_object)
            .collect();
        items.push(PathItem {
            path: format!("{collection}/{{name}}/{}", sub.name),
            params: parent_params,
            operations,
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_as_kubernetes_writes_them_in_operation_ids() {
        for (group, camel, tag_) in [
            ("", "Core", "core_v1"),
            ("apps", "Apps", "apps_v1"),
            (
                "rbac.authorization.k8s.io",
                "RbacAuthorization",
                "rbacAuthorization_v1",
            ),
            (
                "flowcontrol.apiserver.k8s.io",
                "FlowcontrolApiserver",
                "flowcontrolApiserver_v1",
            ),
            ("networking.k8s.io", "Networking", "networking_v1"),
        ] {
            assert_eq!(group_camel(group), camel);
            assert_eq!(tag(group, "v1"), tag_);
        }
    }
}
