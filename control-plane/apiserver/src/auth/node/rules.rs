//! Policy rules as RBAC matches them (kube's `rbac.RuleAllows`), for the Node authorizer's
//! fixed rules.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::auth::authz::{Attributes, RequestKind};

/// A rule granting `verbs` on `resources` of `groups`.
pub fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        verbs: owned(verbs),
        api_groups: Some(owned(groups)),
        resources: Some(owned(resources)),
        ..PolicyRule::default()
    }
}

fn contains_or_star(items: Option<&Vec<String>>, wanted: &str) -> bool {
    items.is_some_and(|items| items.iter().any(|i| i == "*" || i == wanted))
}

/// Whether `rule` allows `attributes` (kube's `RuleAllows`).
pub fn rule_allows(rule: &PolicyRule, attributes: &Attributes) -> bool {
    if !rule.verbs.iter().any(|v| v == "*" || *v == attributes.verb) {
        return false;
    }
    match &attributes.request {
        RequestKind::Resource(r) => {
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let resource_matches = rule.resources.as_ref().is_some_and(|resources| {
                resources.iter().any(|res| {
                    res == "*"
                        || *res == combined
                        || (!r.subresource.is_empty()
                            && res.strip_prefix("*/") == Some(r.subresource.as_str()))
                })
            });
            let name_matches = match rule.resource_names.as_deref() {
                None | Some([]) => true,
                Some(names) => names.contains(&r.name),
            };
            contains_or_star(rule.api_groups.as_ref(), &r.group) && resource_matches && name_matches
        }
        RequestKind::NonResource { path } => rule.non_resource_urls.as_ref().is_some_and(|urls| {
            urls.iter().any(|url| {
                url == "*"
                    || url == path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            })
        }),
    }
}

/// Whether any of `rules` allows `attributes`.
pub fn rules_allow(rules: &[PolicyRule], attributes: &Attributes) -> bool {
    rules.iter().any(|r| rule_allows(r, attributes))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::{UserInfo, authz::ResourceAttributes};

    fn on(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: Arc::new(UserInfo::new("u", &[])),
            verb: verb.into(),
            request: RequestKind::Resource(ResourceAttributes {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                name: name.into(),
                ..ResourceAttributes::default()
            }),
        }
    }

    #[test]
    fn rules_match_as_rbac_matches_them() {
        let pods = rule(&["get", "list"], &[""], &["pods"]);
        let status = rule(&["patch"], &[""], &["*/status"]);
        let mut named = rule(&["*"], &["*"], &["configmaps"]);
        named.resource_names = Some(vec!["cluster-info".into()]);
        let url = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
            ..PolicyRule::default()
        };
        let cases = [
            (&pods, on("get", "", "pods", "", "p"), true),
            (&pods, on("watch", "", "pods", "", "p"), false),
            (&pods, on("get", "apps", "pods", "", "p"), false),
            (&pods, on("get", "", "pods", "log", "p"), false),
            (&status, on("patch", "", "nodes", "status", "n"), true),
            (&status, on("patch", "", "nodes", "", "n"), false),
            (
                &named,
                on("delete", "x", "configmaps", "", "cluster-info"),
                true,
            ),
            (&named, on("delete", "x", "configmaps", "", "other"), false),
        ];
        for (rule, attributes, expected) in cases {
            assert_eq!(rule_allows(rule, &attributes), expected, "{attributes:?}");
        }
        let path = |p: &str| Attributes {
            user: Arc::new(UserInfo::new("u", &[])),
            verb: "get".into(),
            request: RequestKind::NonResource { path: p.into() },
        };
        assert!(rule_allows(&url, &path("/healthz")));
        assert!(rule_allows(&url, &path("/apis/apps")));
        assert!(!rule_allows(&url, &path("/healthz/ping")));
        assert!(!rule_allows(&pods, &path("/healthz")));
    }
}
