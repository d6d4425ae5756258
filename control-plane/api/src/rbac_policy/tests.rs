use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

use super::*;

/// An API group and a resource (`resource/subresource`).
type Resource<'a> = (&'a str, &'a str);

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn cluster_role_named(wanted: &str) -> ClusterRole {
    cluster_roles()
        .into_iter()
        .find(|r| name(&r.metadata) == wanted)
        .unwrap_or_else(|| panic!("no ClusterRole {wanted}"))
}

fn rules_of(wanted: &str) -> Vec<PolicyRule> {
    cluster_role_named(wanted).rules.unwrap_or_default()
}

fn label(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.labels.as_ref()?.get(key).cloned()
}

/// RBAC's rule match, enough for these tests: `*` wildcards, `resource/subresource`,
/// resourceNames (which never match a create, whose name is not known yet).
fn allows(rule: &PolicyRule, verb: &str, group: &str, resource: &str, object: &str) -> bool {
    let has = |list: &Option<Vec<String>>, item: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|x| x == "*" || x == item))
    };
    let verb_ok = rule.verbs.iter().any(|v| v == "*" || v == verb);
    let names_ok = match &rule.resource_names {
        Some(names) if !names.is_empty() => names.iter().any(|n| n == object) && verb != "create",
        _ => true,
    };
    verb_ok && has(&rule.api_groups, group) && has(&rule.resources, resource) && names_ok
}

fn url_allowed(rules: &[PolicyRule], path: &str) -> bool {
    rules.iter().any(|r| {
        r.verbs.iter().any(|v| v == "get" || v == "*")
            && r.non_resource_urls.as_ref().is_some_and(|urls| {
                urls.iter().any(|u| {
                    u == "*"
                        || u == path
                        || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                })
            })
    })
}

fn binds(subjects: &Option<Vec<Subject>>, user: &str, groups: &[&str]) -> bool {
    subjects.iter().flatten().any(|s| match s.kind.as_str() {
        "User" => s.name == user,
        "Group" => groups.contains(&s.name.as_str()),
        _ => false,
    })
}

/// Whether `user` (in `groups`) may `verb` the `resource` of `group` named `object` in
/// `namespace` ("" = cluster scope), by the bootstrap bindings alone.
fn may(
    user: &str,
    groups: &[&str],
    verb: &str,
    (group, resource): (&str, &str),
    namespace: &str,
    object: &str,
) -> bool {
    let cluster = cluster_roles();
    let rules_of_cluster_role = |wanted: &str| {
        cluster
            .iter()
            .filter(|r| name(&r.metadata) == wanted)
            .flat_map(|r| r.rules.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let mut rules: Vec<PolicyRule> = cluster_role_bindings()
        .into_iter()
        .filter(|b| binds(&b.subjects, user, groups))
        .flat_map(|b| rules_of_cluster_role(&b.role_ref.name))
        .collect();
    if !namespace.is_empty() {
        let namespaced = roles();
        for binding in role_bindings().into_iter().filter(|b| {
            b.metadata.namespace.as_deref() == Some(namespace) && binds(&b.subjects, user, groups)
        }) {
            if binding.role_ref.kind == "ClusterRole" {
                rules.extend(rules_of_cluster_role(&binding.role_ref.name));
            } else {
                rules.extend(
                    namespaced
                        .iter()
                        .filter(|r| {
                            r.metadata.namespace.as_deref() == Some(namespace)
                                && name(&r.metadata) == binding.role_ref.name
                        })
                        .flat_map(|r| r.rules.clone().unwrap_or_default()),
                );
            }
        }
    }
    rules
        .iter()
        .any(|r| allows(r, verb, group, resource, object))
}

#[test]
fn names_are_unique_and_namespaced_objects_have_a_namespace() {
    let mut seen = BTreeSet::new();
    for role in cluster_roles() {
        assert!(
            role.metadata.namespace.is_none(),
            "{:?}",
            role.metadata.name
        );
        assert!(
            seen.insert(name(&role.metadata).to_owned()),
            "ClusterRole {:?} twice",
            role.metadata.name
        );
    }
    let mut seen = BTreeSet::new();
    for binding in cluster_role_bindings() {
        assert!(binding.metadata.namespace.is_none());
        assert!(
            seen.insert(name(&binding.metadata).to_owned()),
            "ClusterRoleBinding {:?} twice",
            binding.metadata.name
        );
    }
    let mut seen = BTreeSet::new();
    for role in roles() {
        let ns = role
            .metadata
            .namespace
            .clone()
            .expect("a Role has a namespace");
        assert!(
            seen.insert((ns, name(&role.metadata).to_owned())),
            "Role {:?} twice",
            role.metadata.name
        );
    }
    let mut seen = BTreeSet::new();
    for binding in role_bindings() {
        let ns = binding
            .metadata
            .namespace
            .clone()
            .expect("a RoleBinding has a namespace");
        assert!(
            seen.insert((ns, name(&binding.metadata).to_owned())),
            "RoleBinding {:?} twice",
            binding.metadata.name
        );
    }
}

#[test]
fn every_binding_names_a_role_that_exists() {
    let cluster: BTreeSet<String> = cluster_roles()
        .iter()
        .map(|r| name(&r.metadata).to_owned())
        .collect();
    let namespaced: BTreeSet<(String, String)> = roles()
        .iter()
        .map(|r| {
            (
                r.metadata.namespace.clone().unwrap_or_default(),
                name(&r.metadata).to_owned(),
            )
        })
        .collect();
    for binding in cluster_role_bindings() {
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.api_group, RBAC_GROUP);
        assert!(
            cluster.contains(&binding.role_ref.name),
            "{:?} -> missing {}",
            binding.metadata.name,
            binding.role_ref.name
        );
    }
    for binding in role_bindings() {
        let ns = binding.metadata.namespace.clone().unwrap_or_default();
        let found = match binding.role_ref.kind.as_str() {
            "Role" => namespaced.contains(&(ns, binding.role_ref.name.clone())),
            "ClusterRole" => cluster.contains(&binding.role_ref.name),
            other => panic!("roleRef kind {other}"),
        };
        assert!(
            found,
            "{:?} -> missing {}",
            binding.metadata.name, binding.role_ref.name
        );
    }
}

#[test]
fn every_object_carries_the_bootstrap_label_and_autoupdate_annotation() {
    let metas: Vec<ObjectMeta> = cluster_roles()
        .into_iter()
        .map(|o| o.metadata)
        .chain(cluster_role_bindings().into_iter().map(|o| o.metadata))
        .chain(roles().into_iter().map(|o| o.metadata))
        .chain(role_bindings().into_iter().map(|o| o.metadata))
        .collect();
    for meta in metas {
        let n = name(&meta);
        assert_eq!(
            label(&meta, "kubernetes.io/bootstrapping").as_deref(),
            Some("rbac-defaults"),
            "{n}"
        );
        assert_eq!(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
                .map(String::as_str),
            Some("true"),
            "{n}"
        );
        // keelson's objects, and only they, are named and labelled as keelson's.
        assert_eq!(
            n.starts_with("keelson:"),
            label(&meta, keelson::LABEL.0).as_deref() == Some(keelson::LABEL.1),
            "{n}"
        );
    }
}

#[test]
fn admin_edit_and_view_aggregate_as_kubernetes_does() {
    // (role, its own aggregate label, the label it aggregates)
    let cases = [
        ("admin", None, cluster::AGGREGATE_TO_ADMIN),
        (
            "edit",
            Some(cluster::AGGREGATE_TO_ADMIN),
            cluster::AGGREGATE_TO_EDIT,
        ),
        (
            "view",
            Some(cluster::AGGREGATE_TO_EDIT),
            cluster::AGGREGATE_TO_VIEW,
        ),
    ];
    for (role, own, selects) in cases {
        let role = cluster_role_named(role);
        assert!(role.rules.is_none(), "aggregated roles ship without rules");
        for key in [
            cluster::AGGREGATE_TO_ADMIN,
            cluster::AGGREGATE_TO_EDIT,
            cluster::AGGREGATE_TO_VIEW,
        ] {
            let expected = (Some(key) == own).then(|| "true".to_owned());
            assert_eq!(
                label(&role.metadata, key),
                expected,
                "{:?} {key}",
                role.metadata.name
            );
        }
        let selectors = role
            .aggregation_rule
            .and_then(|a| a.cluster_role_selectors)
            .expect("selectors");
        assert_eq!(selectors.len(), 1);
        assert_eq!(
            selectors[0]
                .match_labels
                .as_ref()
                .and_then(|l| l.get(selects))
                .map(String::as_str),
            Some("true")
        );
        assert!(selectors[0].match_expressions.is_none());
    }
    for (role, key) in [
        ("system:aggregate-to-admin", cluster::AGGREGATE_TO_ADMIN),
        ("system:aggregate-to-edit", cluster::AGGREGATE_TO_EDIT),
        ("system:aggregate-to-view", cluster::AGGREGATE_TO_VIEW),
    ] {
        assert_eq!(
            label(&cluster_role_named(role).metadata, key).as_deref(),
            Some("true"),
            "{role}"
        );
    }
}

#[test]
fn what_the_aggregated_pieces_grant() {
    let grants = |role: &str, verb: &str, group: &str, resource: &str| {
        rules_of(role)
            .iter()
            .any(|r| allows(r, verb, group, resource, ""))
    };
    // (role, verb, group, resource, granted)
    let cases = [
        (
            "system:aggregate-to-admin",
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            true,
        ),
        (
            "system:aggregate-to-admin",
            "deletecollection",
            "rbac.authorization.k8s.io",
            "roles",
            true,
        ),
        (
            "system:aggregate-to-admin",
            "create",
            "authorization.k8s.io",
            "localsubjectaccessreviews",
            true,
        ),
        (
            "system:aggregate-to-edit",
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            false,
        ),
        (
            "system:aggregate-to-edit",
            "get",
            "rbac.authorization.k8s.io",
            "roles",
            false,
        ),
        ("system:aggregate-to-edit", "get", "", "secrets", true),
        ("system:aggregate-to-edit", "create", "", "pods/exec", true),
        (
            "system:aggregate-to-edit",
            "create",
            "",
            "serviceaccounts/token",
            true,
        ),
        (
            "system:aggregate-to-edit",
            "impersonate",
            "",
            "serviceaccounts",
            true,
        ),
        (
            "system:aggregate-to-edit",
            "update",
            "apps",
            "deployments/scale",
            true,
        ),
        (
            "system:aggregate-to-edit",
            "create",
            "networking.k8s.io",
            "networkpolicies",
            true,
        ),
        (
            "system:aggregate-to-edit",
            "update",
            "",
            "resourcequotas",
            false,
        ),
        (
            "system:aggregate-to-edit",
            "update",
            "",
            "pods/status",
            false,
        ),
        ("system:aggregate-to-view", "get", "", "secrets", false),
        ("system:aggregate-to-view", "list", "", "pods", true),
        ("system:aggregate-to-view", "get", "", "pods/log", true),
        ("system:aggregate-to-view", "get", "", "pods/exec", false),
        (
            "system:aggregate-to-view",
            "watch",
            "discovery.k8s.io",
            "endpointslices",
            true,
        ),
        (
            "system:aggregate-to-view",
            "list",
            "apps",
            "controllerrevisions",
            true,
        ),
        ("system:aggregate-to-view", "create", "", "pods", false),
        (
            "system:basic-user",
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            true,
        ),
        (
            "system:basic-user",
            "create",
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            true,
        ),
        (
            "system:basic-user",
            "create",
            "authentication.k8s.io",
            "selfsubjectreviews",
            true,
        ),
        (
            "system:basic-user",
            "create",
            "authorization.k8s.io",
            "subjectaccessreviews",
            false,
        ),
        (
            "cluster-admin",
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            true,
        ),
    ];
    for (role, verb, group, resource, granted) in cases {
        assert_eq!(
            grants(role, verb, group, resource),
            granted,
            "{role} {verb} {group}/{resource}"
        );
    }
}

#[test]
fn the_non_resource_urls_are_kubernetes_own() {
    let url_list = |role: &str| -> Vec<String> {
        rules_of(role)
            .into_iter()
            .flat_map(|r| r.non_resource_urls.unwrap_or_default())
            .collect()
    };
    assert_eq!(
        url_list("system:discovery"),
        [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/openapi",
            "/openapi/*",
            "/readyz",
            "/version",
            "/version/"
        ]
    );
    assert_eq!(
        url_list("system:public-info-viewer"),
        ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    );
    assert_eq!(
        url_list("system:service-account-issuer-discovery"),
        [
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration/",
            "/openid/v1/jwks",
            "/openid/v1/jwks/"
        ]
    );
    assert_eq!(url_list("cluster-admin"), ["*"]);
    let monitoring = rules_of("system:monitoring");
    assert!(url_allowed(&monitoring, "/readyz/etcd"));
    assert!(url_allowed(&monitoring, "/metrics"));
    assert!(!url_allowed(&monitoring, "/api"));
    // (user groups, path, allowed)
    let cases: [(&[&str], &str, bool); 7] = [
        (&["system:unauthenticated"], "/healthz", true),
        (&["system:unauthenticated"], "/version", true),
        (&["system:unauthenticated"], "/api", false),
        (&["system:unauthenticated"], "/openid/v1/jwks", false),
        (&["system:authenticated"], "/apis/apps/v1", true),
        (&["system:authenticated"], "/metrics", false),
        (
            &["system:serviceaccounts", "system:authenticated"],
            "/openid/v1/jwks",
            true,
        ),
    ];
    for (groups, path, allowed) in cases {
        let rules: Vec<PolicyRule> = cluster_role_bindings()
            .into_iter()
            .filter(|b| binds(&b.subjects, "someone", groups))
            .flat_map(|b| rules_of(&b.role_ref.name))
            .collect();
        assert_eq!(url_allowed(&rules, path), allowed, "{groups:?} {path}");
    }
}

#[test]
fn kubernetes_bindings() {
    // (binding, role, subjects as kind/namespace/name)
    let cases: [(&str, &str, &[&str]); 9] = [
        ("cluster-admin", "cluster-admin", &["Group//system:masters"]),
        (
            "system:discovery",
            "system:discovery",
            &["Group//system:authenticated"],
        ),
        (
            "system:basic-user",
            "system:basic-user",
            &["Group//system:authenticated"],
        ),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                "Group//system:authenticated",
                "Group//system:unauthenticated",
            ],
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            &["User//system:kube-scheduler"],
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &["User//system:kube-controller-manager"],
        ),
        (
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &["Group//system:serviceaccounts"],
        ),
        (
            "system:controller:deployment-controller",
            "system:controller:deployment-controller",
            &["ServiceAccount/kube-system/deployment-controller"],
        ),
        (
            "keelson:controller:deployment-controller",
            "system:controller:deployment-controller",
            &["User//system:kube-controller-manager"],
        ),
    ];
    let all = cluster_role_bindings();
    for (binding, role, subjects) in cases {
        let found = all
            .iter()
            .find(|b| name(&b.metadata) == binding)
            .unwrap_or_else(|| panic!("no {binding}"));
        assert_eq!(found.role_ref.name, role);
        let got: Vec<String> = found
            .subjects
            .iter()
            .flatten()
            .map(|s| {
                format!(
                    "{}/{}/{}",
                    s.kind,
                    s.namespace.as_deref().unwrap_or_default(),
                    s.name
                )
            })
            .collect();
        assert_eq!(got, subjects, "{binding}");
    }
    let node = all
        .iter()
        .find(|b| name(&b.metadata) == "system:node")
        .expect("system:node binding");
    assert!(node.subjects.is_none(), "system:node is bound to nobody");
}

#[test]
fn every_controller_role_is_bound_to_its_service_account_and_to_the_controller_manager() {
    let bindings = cluster_role_bindings();
    let controller_roles: Vec<String> = cluster_roles()
        .iter()
        .map(|r| name(&r.metadata).to_owned())
        .filter(|n| n.starts_with(CONTROLLER_ROLE_PREFIX))
        .collect();
    assert_eq!(controller_roles.len(), controllers::CONTROLLERS.len());
    for role in controller_roles {
        let sa = role.trim_start_matches(CONTROLLER_ROLE_PREFIX);
        let subjects = |binding: &str| {
            bindings
                .iter()
                .find(|b| name(&b.metadata) == binding && b.role_ref.name == role)
                .and_then(|b| b.subjects.clone())
                .unwrap_or_else(|| panic!("no binding {binding} of {role}"))
        };
        assert_eq!(subjects(&role), [service_account("kube-system", sa)]);
        assert_eq!(
            subjects(&format!("keelson:controller:{sa}")),
            [user(CONTROLLER_MANAGER_USER)]
        );
        assert!(!rules_of(&role).is_empty(), "{role} grants something");
    }
}

#[test]
fn counts() {
    // Kubernetes' testdata/cluster-roles.yaml lists 31; system:heapster is left out.
    assert_eq!(cluster::roles().len(), 30, "Kubernetes' cluster roles kept");
    assert_eq!(cluster::bindings().len(), 12);
    assert_eq!(controllers::roles().len(), 23);
    assert_eq!(namespaced::roles().len(), 7);
    assert_eq!(namespaced::bindings().len(), 7);
    // keelson's: node datapath, node local-path cleanup, controller-manager extras; and
    // metrics-server's system:aggregated-metrics-reader.
    assert_eq!(cluster_roles().len(), 30 + 23 + 3 + 1);
    assert_eq!(cluster_role_bindings().len(), 12 + 23 + 3 + 23);
    // keelson's Roles: two leader-locking, the bootstrap signer's extras, LB announcements.
    assert_eq!(roles().len(), 7 + 4);
    assert_eq!(role_bindings().len(), 7 + 7);
}

#[test]
fn rules_are_sorted_as_kubernetes_renders_them() {
    for role in cluster_roles() {
        for rule in role.rules.unwrap_or_default() {
            let mut sorted = rule.verbs.clone();
            sorted.sort();
            assert_eq!(rule.verbs, sorted, "{:?}", role.metadata.name);
            let mut resources = rule.resources.clone().unwrap_or_default();
            resources.sort();
            assert_eq!(rule.resources.clone().unwrap_or_default(), resources);
        }
    }
    let deployment = rules_of("system:controller:deployment-controller");
    assert_eq!(deployment[0].verbs, ["get", "list", "update", "watch"]);
    assert_eq!(
        deployment[0].api_groups.as_deref(),
        Some(&["extensions".to_owned(), "apps".to_owned()][..])
    );
}

#[test]
fn the_node_datapath_role_reads_what_the_agent_watches_and_never_secrets() {
    let nodes = ["system:nodes", "system:authenticated"];
    let node = "system:node:n1";
    // Every cluster-wide call of node-agent/src that is not about the node's own objects.
    let calls = [
        ("list", "", "services"), // service_sync.rs: watch Services
        ("watch", "", "services"),
        ("list", "discovery.k8s.io", "endpointslices"), // service_sync.rs: watch EndpointSlices
        ("watch", "discovery.k8s.io", "endpointslices"),
        ("list", "", "nodes"), // routing.rs: watch Nodes (routes to pod CIDRs)
        ("watch", "", "nodes"),
        ("list", "", "pods"), // pods/mod.rs (spec.nodeName=<node>), policy/sync.rs (all)
        ("watch", "", "pods"),
        // datapath/policy/sync.rs: watch Pods of every node, Namespaces (namespaceSelector)
        // and NetworkPolicies.
        ("list", "", "namespaces"),
        ("watch", "", "namespaces"),
        ("list", "networking.k8s.io", "networkpolicies"),
        ("watch", "networking.k8s.io", "networkpolicies"),
        ("get", "", "endpoints"),
    ];
    for (verb, group, resource) in calls {
        assert!(
            may(node, &nodes, verb, (group, resource), "", ""),
            "{verb} {group}/{resource}"
        );
    }
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("list", "", "secrets"),
        ("get", "", "configmaps"),
        ("list", "", "configmaps"),
        ("create", "", "pods"),
        ("update", "", "services"),
        ("get", "", "serviceaccounts"),
    ] {
        assert!(
            !may(node, &nodes, verb, (group, resource), "default", ""),
            "{verb} {group}/{resource}"
        );
    }
    let datapath = rules_of(keelson::NODE_DATAPATH);
    assert!(datapath.iter().all(|r| r.verbs == ["get", "list", "watch"]));
}

#[test]
fn nodes_may_elect_lb_announcers_in_kube_system_only() {
    let nodes = ["system:nodes", "system:authenticated"];
    let node = "system:node:n1";
    // node-agent/src/lb_announce/mod.rs: list the Leases, create, renew or take over, delete.
    let leases = ("coordination.k8s.io", "leases");
    for (verb, name) in [
        ("list", ""),
        ("create", ""),
        ("update", "keelson-lb-172-30-0-200"),
        ("delete", "keelson-lb-172-30-0-200"),
    ] {
        assert!(
            may(node, &nodes, verb, leases, "kube-system", name),
            "{verb}"
        );
        assert!(
            !may(node, &nodes, verb, leases, "default", name),
            "{verb} in default"
        );
    }
    assert!(
        !may(node, &[], "list", leases, "kube-system", ""),
        "outside system:nodes"
    );
}

#[test]
fn the_scheduler_may_make_every_call_it_makes() {
    let groups = ["system:authenticated"];
    // control-plane/scheduler/src/lib.rs, and its leader election.
    let calls: [(&str, Resource, &str, &str); 10] = [
        ("list", ("", "pods"), "", ""),
        ("watch", ("", "pods"), "", ""),
        ("list", ("", "nodes"), "", ""),
        ("watch", ("", "nodes"), "", ""),
        ("create", ("", "pods/binding"), "default", "web-1"),
        ("patch", ("", "pods/status"), "default", "web-1"),
        ("create", ("", "events"), "default", ""),
        (
            "create",
            ("coordination.k8s.io", "leases"),
            "kube-system",
            "",
        ),
        (
            "get",
            ("coordination.k8s.io", "leases"),
            "kube-system",
            keelson::SCHEDULER_LEASE,
        ),
        (
            "update",
            ("coordination.k8s.io", "leases"),
            "kube-system",
            keelson::SCHEDULER_LEASE,
        ),
    ];
    for (verb, resource, namespace, object) in calls {
        assert!(
            may(SCHEDULER_USER, &groups, verb, resource, namespace, object),
            "{verb} {resource:?} {namespace}/{object}"
        );
    }
    // Not more than that: no pod spec writes, no secrets, no lease outside kube-system.
    assert!(!may(
        SCHEDULER_USER,
        &groups,
        "update",
        ("", "pods"),
        "default",
        "web-1"
    ));
    assert!(!may(
        SCHEDULER_USER,
        &groups,
        "get",
        ("", "secrets"),
        "default",
        "s"
    ));
    assert!(!may(
        SCHEDULER_USER,
        &groups,
        "update",
        ("coordination.k8s.io", "leases"),
        "default",
        keelson::SCHEDULER_LEASE
    ));
}

#[test]
fn the_controllers_may_make_every_call_they_make() {
    let groups = ["system:authenticated"];
    let kcm = CONTROLLER_MANAGER_USER;
    // control-plane/controllers/src: (controller, verb, (group, resource), namespace, name).
    // Every list/watch is the controller manager's own list/watch of everything.
    let calls: &[(&str, &str, Resource, &str, &str)] = &[
        (
            "leaderelection",
            "create",
            ("coordination.k8s.io", "leases"),
            "kube-system",
            "",
        ),
        (
            "leaderelection",
            "get",
            ("coordination.k8s.io", "leases"),
            "kube-system",
            keelson::CONTROLLER_MANAGER_LEASE,
        ),
        (
            "leaderelection",
            "update",
            ("coordination.k8s.io", "leases"),
            "kube-system",
            keelson::CONTROLLER_MANAGER_LEASE,
        ),
        (
            "kube-dns-endpoints",
            "create",
            ("discovery.k8s.io", "endpointslices"),
            "kube-system",
            "",
        ),
        (
            "kube-dns-endpoints",
            "update",
            ("discovery.k8s.io", "endpointslices"),
            "kube-system",
            "kube-dns-node-responders",
        ),
        (
            "kube-dns-endpoints",
            "delete",
            ("discovery.k8s.io", "endpointslices"),
            "kube-system",
            "kube-dns-node-responders",
        ),
        ("endpointslice", "watch", ("", "services"), "", ""),
        ("endpointslice", "watch", ("", "nodes"), "", ""),
        ("endpointslice", "list", ("", "pods"), "default", ""),
        (
            "endpointslice",
            "list",
            ("discovery.k8s.io", "endpointslices"),
            "default",
            "",
        ),
        (
            "endpointslice",
            "create",
            ("discovery.k8s.io", "endpointslices"),
            "default",
            "",
        ),
        (
            "endpointslice",
            "update",
            ("discovery.k8s.io", "endpointslices"),
            "default",
            "web-abc",
        ),
        (
            "endpointslice",
            "delete",
            ("discovery.k8s.io", "endpointslices"),
            "default",
            "web-abc",
        ),
        ("endpoints", "create", ("", "endpoints"), "default", ""),
        ("endpoints", "update", ("", "endpoints"), "default", "web"),
        ("replicaset", "create", ("", "pods"), "default", ""),
        ("replicaset", "delete", ("", "pods"), "default", "web-1"),
        (
            "replicaset",
            "patch",
            ("apps", "replicasets/status"),
            "default",
            "web",
        ),
        ("deployment", "list", ("apps", "replicasets"), "default", ""),
        (
            "deployment",
            "create",
            ("apps", "replicasets"),
            "default",
            "",
        ),
        (
            "deployment",
            "patch",
            ("apps", "replicasets"),
            "default",
            "web-1",
        ),
        (
            "deployment",
            "delete",
            ("apps", "replicasets"),
            "default",
            "web-1",
        ),
        (
            "deployment",
            "patch",
            ("apps", "deployments/status"),
            "default",
            "web",
        ),
        ("daemonset", "list", ("", "nodes"), "", ""),
        ("daemonset", "create", ("", "pods"), "default", ""),
        ("daemonset", "delete", ("", "pods"), "default", "web-1"),
        ("daemonset", "patch", ("", "pods"), "default", "web-1"),
        ("daemonset", "get", ("apps", "daemonsets"), "default", "web"),
        (
            "daemonset",
            "update",
            ("apps", "daemonsets/status"),
            "default",
            "web",
        ),
        (
            "daemonset",
            "create",
            ("apps", "controllerrevisions"),
            "default",
            "",
        ),
        (
            "daemonset",
            "get",
            ("apps", "controllerrevisions"),
            "default",
            "web-1",
        ),
        (
            "daemonset",
            "patch",
            ("apps", "controllerrevisions"),
            "default",
            "web-1",
        ),
        (
            "daemonset",
            "delete",
            ("apps", "controllerrevisions"),
            "default",
            "web-1",
        ),
        (
            "daemonset",
            "create",
            ("events.k8s.io", "events"),
            "default",
            "",
        ),
        ("namespace", "list", ("", "secrets"), "gone", ""),
        ("namespace", "delete", ("", "secrets"), "gone", "s"),
        (
            "namespace",
            "delete",
            ("apps", "deployments"),
            "gone",
            "web",
        ),
        (
            "namespace",
            "delete",
            ("widgets.example.com", "widgets"),
            "gone",
            "w",
        ),
        (
            "namespace",
            "list",
            ("apiextensions.k8s.io", "customresourcedefinitions"),
            "",
            "",
        ),
        (
            "namespace",
            "update",
            ("", "namespaces/finalize"),
            "",
            "gone",
        ),
        (
            "garbagecollector",
            "get",
            ("apps", "replicasets"),
            "default",
            "web-1",
        ),
        (
            "garbagecollector",
            "delete",
            ("", "pods"),
            "default",
            "web-1",
        ),
        (
            "garbagecollector",
            "patch",
            ("", "configmaps"),
            "default",
            "c",
        ),
        ("nodeipam", "get", ("", "nodes"), "", "n1"),
        ("nodeipam", "patch", ("", "nodes"), "", "n1"),
        (
            "nodelifecycle",
            "watch",
            ("coordination.k8s.io", "leases"),
            "kube-node-lease",
            "",
        ),
        ("nodelifecycle", "patch", ("", "nodes"), "", "n1"),
        ("nodelifecycle", "patch", ("", "nodes/status"), "", "n1"),
        (
            "nodelifecycle",
            "patch",
            ("", "pods/status"),
            "default",
            "web-1",
        ),
        ("nodelifecycle", "delete", ("", "pods"), "default", "web-1"),
        (
            "bootstrapsigner",
            "list",
            ("", "secrets"),
            "kube-system",
            "",
        ),
        (
            "bootstrapsigner",
            "get",
            ("", "configmaps"),
            "kube-public",
            "cluster-info",
        ),
        (
            "bootstrapsigner",
            "create",
            ("", "configmaps"),
            "kube-public",
            "",
        ),
        (
            "bootstrapsigner",
            "update",
            ("", "configmaps"),
            "kube-public",
            "cluster-info",
        ),
        (
            "tokencleaner",
            "delete",
            ("", "secrets"),
            "kube-system",
            "bootstrap-token-abcdef",
        ),
        (
            "csrapproving",
            "patch",
            ("certificates.k8s.io", "certificatesigningrequests/approval"),
            "",
            "csr-1",
        ),
        (
            "csrapproving",
            "approve",
            ("certificates.k8s.io", "signers"),
            "",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        (
            "csrsigning",
            "patch",
            ("certificates.k8s.io", "certificatesigningrequests/status"),
            "",
            "csr-1",
        ),
        (
            "csrsigning",
            "sign",
            ("certificates.k8s.io", "signers"),
            "",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        ("statefulset", "list", ("", "pods"), "default", ""),
        ("statefulset", "create", ("", "pods"), "default", ""),
        ("statefulset", "delete", ("", "pods"), "default", "web-2"),
        (
            "statefulset",
            "create",
            ("apps", "controllerrevisions"),
            "default",
            "",
        ),
        (
            "statefulset",
            "patch",
            ("apps", "controllerrevisions"),
            "default",
            "web-1",
        ),
        (
            "statefulset",
            "delete",
            ("apps", "controllerrevisions"),
            "default",
            "web-1",
        ),
        (
            "statefulset",
            "get",
            ("", "persistentvolumeclaims"),
            "default",
            "data-web-0",
        ),
        (
            "statefulset",
            "create",
            ("", "persistentvolumeclaims"),
            "default",
            "",
        ),
        (
            "statefulset",
            "update",
            ("", "persistentvolumeclaims"),
            "default",
            "data-web-0",
        ),
        (
            "statefulset",
            "patch",
            ("apps", "statefulsets/status"),
            "default",
            "web",
        ),
    ];
    for &(controller, verb, resource, namespace, object) in calls {
        assert!(
            may(kcm, &groups, verb, resource, namespace, object),
            "{controller}: {verb} {resource:?} {namespace}/{object}"
        );
    }
    // Still not everything. As one identity, the controllers hold the union of their roles
    // (the garbage collector's patch/update/delete of any kind included), but no RBAC
    // writes, no impersonation, no exec, no signing for other signers.
    let denied: &[(&str, Resource, &str, &str)] = &[
        (
            "create",
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            "",
            "",
        ),
        (
            "create",
            ("rbac.authorization.k8s.io", "rolebindings"),
            "default",
            "",
        ),
        ("impersonate", ("", "users"), "", "alice"),
        ("create", ("", "pods/exec"), "default", "web-1"),
        (
            "sign",
            ("certificates.k8s.io", "signers"),
            "",
            "example.com/custom",
        ),
    ];
    for &(verb, resource, namespace, object) in denied {
        assert!(
            !may(kcm, &groups, verb, resource, namespace, object),
            "{verb} {resource:?} {namespace}/{object}"
        );
    }
}

#[test]
fn horizontal_pod_autoscaler_and_metrics_reader() {
    let hpa = rules_of("system:controller:horizontal-pod-autoscaler");
    let can = |verb, group, resource| hpa.iter().any(|r| allows(r, verb, group, resource, "web"));
    assert!(can("watch", "autoscaling", "horizontalpodautoscalers"));
    assert!(can(
        "update",
        "autoscaling",
        "horizontalpodautoscalers/status"
    ));
    assert!(!can(
        "patch",
        "autoscaling",
        "horizontalpodautoscalers/status"
    ));
    assert!(can("list", "", "pods"));
    assert!(can("list", "metrics.k8s.io", "pods"));
    assert!(can("create", "events.k8s.io", "events"));
    // Any target's scale, as Kubernetes writes it: resource `*/scale` in every group.
    assert!(hpa.iter().any(|r| {
        r.resources.as_deref() == Some(&["*/scale".to_owned()][..])
            && r.api_groups.as_deref() == Some(&["*".to_owned()][..])
            && r.verbs == ["get", "update"]
    }));

    let reader = cluster_role_named(keelson::AGGREGATED_METRICS_READER);
    for key in [
        cluster::AGGREGATE_TO_VIEW,
        cluster::AGGREGATE_TO_EDIT,
        cluster::AGGREGATE_TO_ADMIN,
    ] {
        assert_eq!(
            label(&reader.metadata, key).as_deref(),
            Some("true"),
            "{key}"
        );
    }
    let rules = reader.rules.unwrap_or_default();
    for resource in ["pods", "nodes"] {
        for verb in ["get", "list", "watch"] {
            assert!(
                rules
                    .iter()
                    .any(|r| allows(r, verb, "metrics.k8s.io", resource, "x")),
                "{verb} {resource}"
            );
        }
    }
}
