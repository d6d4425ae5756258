//! One RBAC rule against one request, and one set of rules against another: Kubernetes'
//! `RuleAllows` (`plugin/pkg/auth/authorizer/rbac`) and `Covers`
//! (`component-helpers/auth/rbac/validation`), with the compact rule text its escalation
//! errors print.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::auth::authz::RequestKind;

/// `*`: every verb, group, resource or URL.
const ALL: &str = "*";

/// A rule in the form evaluation reads (k8s-openapi's optional lists flattened).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Rule {
    pub(crate) verbs: Vec<String>,
    pub(crate) api_groups: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) resource_names: Vec<String>,
    pub(crate) non_resource_urls: Vec<String>,
}

impl From<&PolicyRule> for Rule {
    fn from(rule: &PolicyRule) -> Self {
        let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_default();
        Self {
            verbs: rule.verbs.clone(),
            api_groups: list(&rule.api_groups),
            resources: list(&rule.resources),
            resource_names: list(&rule.resource_names),
            non_resource_urls: list(&rule.non_resource_urls),
        }
    }
}

impl From<&Rule> for PolicyRule {
    fn from(rule: &Rule) -> Self {
        let list = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
        Self {
            verbs: rule.verbs.clone(),
            api_groups: list(&rule.api_groups),
            resources: list(&rule.resources),
            resource_names: list(&rule.resource_names),
            non_resource_urls: list(&rule.non_resource_urls),
        }
    }
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

/// Whether `wanted` is `resource/subresource` (or `resource` without one), without building it.
fn is_combined(wanted: &str, resource: &str, subresource: &str) -> bool {
    if subresource.is_empty() {
        return wanted == resource;
    }
    wanted.len() == resource.len() + 1 + subresource.len()
        && wanted.starts_with(resource)
        && wanted.as_bytes()[resource.len()] == b'/'
        && wanted.ends_with(subresource)
}

impl Rule {
    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == ALL || v == verb)
    }

    /// Kubernetes' `RuleAllows`: the verb, then for resource requests the group, the resource
    /// (`*`, `resource`, `resource/subresource` or `*/subresource`: `pods/*` is no wildcard)
    /// and the name (a rule with `resourceNames` needs a request with one of those names, so it
    /// never allows a create or an unfiltered list); for other requests the path (`*`, exact,
    /// or a prefix ending in `*`).
    pub(crate) fn allows(&self, verb: &str, request: &RequestKind) -> bool {
        if !self.verb_matches(verb) {
            return false;
        }
        match request {
            RequestKind::Resource(r) => {
                self.api_groups.iter().any(|g| g == ALL || *g == r.group)
                    && self.resources.iter().any(|wanted| {
                        wanted == ALL
                            || is_combined(wanted, &r.resource, &r.subresource)
                            || (!r.subresource.is_empty()
                                && wanted.len() == r.subresource.len() + 2
                                && wanted.starts_with("*/")
                                && wanted.ends_with(r.subresource.as_str()))
                    })
                    && (self.resource_names.is_empty() || has(&self.resource_names, &r.name))
            }
            RequestKind::NonResource { path } => self
                .non_resource_urls
                .iter()
                .any(|url| url_covers(url, path)),
        }
    }

    /// Splits the rule into rules of one group, resource, verb and name (or one URL and
    /// verb): Kubernetes' `BreakdownRule`.
    fn breakdown(&self) -> Vec<Self> {
        let one = |s: &String| vec![s.clone()];
        let mut out = Vec::new();
        for group in &self.api_groups {
            for resource in &self.resources {
                for verb in &self.verbs {
                    let base = Self {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..Self::default()
                    };
                    if self.resource_names.is_empty() {
                        out.push(base);
                    } else {
                        out.extend(self.resource_names.iter().map(|name| Self {
                            resource_names: one(name),
                            ..base.clone()
                        }));
                    }
                }
            }
        }
        for url in &self.non_resource_urls {
            for verb in &self.verbs {
                out.push(Self {
                    verbs: one(verb),
                    non_resource_urls: one(url),
                    ..Self::default()
                });
            }
        }
        out
    }

    /// Kubernetes' `ruleCovers`: whether this rule grants all of `sub` (one broken-down rule).
    fn covers(&self, sub: &Self) -> bool {
        let verbs = has(&self.verbs, ALL) || has_all(&self.verbs, &sub.verbs);
        let groups = has(&self.api_groups, ALL) || has_all(&self.api_groups, &sub.api_groups);
        let resources = has(&self.resources, ALL)
            || sub.resources.iter().all(|wanted| {
                has(&self.resources, wanted)
                    || wanted
                        .split_once('/')
                        .is_some_and(|(_, sub)| has(&self.resources, &format!("*/{sub}")))
            });
        let urls = sub
            .non_resource_urls
            .iter()
            .all(|wanted| self.non_resource_urls.iter().any(|u| url_covers(u, wanted)));
        let names = if sub.resource_names.is_empty() {
            self.resource_names.is_empty()
        } else {
            self.resource_names.is_empty() || has_all(&self.resource_names, &sub.resource_names)
        };
        verbs && groups && resources && urls && names
    }

    /// Kubernetes' `CompactString`: `{APIGroups:["apps"], Resources:["deployments"],
    /// Verbs:["get" "list"]}` (Go's `%q` of a string slice).
    pub(crate) fn compact_string(&self) -> String {
        let quoted = |items: &[String]| {
            let inner: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", inner.join(" "))
        };
        let parts: Vec<String> = [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ]
        .iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(name, items)| format!("{name}:{}", quoted(items)))
        .collect();
        format!("{{{}}}", parts.join(", "))
    }
}

/// Whether the rule URL `owner` covers the path `wanted` (`*`, equal, or a `prefix*`).
fn url_covers(owner: &str, wanted: &str) -> bool {
    owner == ALL
        || owner == wanted
        || owner
            .strip_suffix('*')
            .is_some_and(|_| wanted.starts_with(owner.trim_end_matches('*')))
}

/// Kubernetes' `Covers`: the broken-down rules of `wanted` that no rule of `owner` grants
/// (empty when `owner` covers `wanted`).
pub(crate) fn uncovered(owner: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    wanted
        .iter()
        .flat_map(Rule::breakdown)
        .filter(|sub| !owner.iter().any(|o| o.covers(sub)))
        .collect()
}

/// Kubernetes' `CompactRules`: broken-down rules of one group and resource that differ only
/// by verb become one rule with those verbs.
pub(crate) fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
    let mut simple: Vec<Rule> = Vec::new();
    for rule in rules {
        let is_simple = rule.resource_names.is_empty()
            && rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !is_simple {
            out.push(rule);
            continue;
        }
        match simple
            .iter_mut()
            .find(|s| s.api_groups == rule.api_groups && s.resources == rule.resources)
        {
            Some(existing) => existing.verbs.extend(rule.verbs),
            None => simple.push(rule),
        }
    }
    out.extend(simple);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authz::ResourceAttributes;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|i| (*i).to_owned()).collect()
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Rule {
        Rule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            resource_names: s(names),
            non_resource_urls: Vec::new(),
        }
    }

    fn url_rule(verbs: &[&str], urls: &[&str]) -> Rule {
        Rule {
            verbs: s(verbs),
            non_resource_urls: s(urls),
            ..Rule::default()
        }
    }

    fn res(group: &str, resource: &str, sub: &str, name: &str) -> RequestKind {
        RequestKind::Resource(ResourceAttributes {
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
        })
    }

    fn path(p: &str) -> RequestKind {
        RequestKind::NonResource { path: p.into() }
    }

    #[test]
    fn rules_allow_requests_as_kubernetes_matches_them() {
        let pods = rule(&["get", "list"], &[""], &["pods"], &[]);
        let any = rule(&["*"], &["*"], &["*"], &[]);
        let logs = rule(&["get"], &[""], &["pods/log"], &[]);
        let any_status = rule(&["get"], &[""], &["*/status"], &[]);
        let pods_star = rule(&["get"], &[""], &["pods/*"], &[]);
        let named = rule(
            &["get", "list", "create", "update"],
            &[""],
            &["configmaps"],
            &["cm"],
        );
        let apps = rule(&["get"], &["apps"], &["deployments"], &[]);
        let cases = [
            ("exact", &pods, "get", res("", "pods", "", "p"), true),
            ("list", &pods, "list", res("", "pods", "", ""), true),
            (
                "other verb",
                &pods,
                "delete",
                res("", "pods", "", "p"),
                false,
            ),
            (
                "other group",
                &pods,
                "get",
                res("apps", "pods", "", "p"),
                false,
            ),
            (
                "a subresource is not the resource",
                &pods,
                "get",
                res("", "pods", "log", "p"),
                false,
            ),
            (
                "wildcards",
                &any,
                "escalate",
                res("rbac.authorization.k8s.io", "roles", "", "r"),
                true,
            ),
            (
                "wildcard resources include subresources",
                &any,
                "get",
                res("", "pods", "log", "p"),
                true,
            ),
            ("res/sub", &logs, "get", res("", "pods", "log", "p"), true),
            (
                "res/sub is only that sub",
                &logs,
                "get",
                res("", "pods", "exec", "p"),
                false,
            ),
            (
                "res/sub is not the resource",
                &logs,
                "get",
                res("", "pods", "", "p"),
                false,
            ),
            (
                "*/sub",
                &any_status,
                "get",
                res("", "nodes", "status", "n"),
                true,
            ),
            (
                "*/sub is no resource",
                &any_status,
                "get",
                res("", "status", "", ""),
                false,
            ),
            (
                "*/sub of another sub",
                &any_status,
                "get",
                res("", "nodes", "proxy", "n"),
                false,
            ),
            (
                "res/* is not a wildcard",
                &pods_star,
                "get",
                res("", "pods", "log", "p"),
                false,
            ),
            (
                "resourceNames: the name",
                &named,
                "get",
                res("", "configmaps", "", "cm"),
                true,
            ),
            (
                "resourceNames: another name",
                &named,
                "get",
                res("", "configmaps", "", "x"),
                false,
            ),
            (
                "resourceNames: no list",
                &named,
                "list",
                res("", "configmaps", "", ""),
                false,
            ),
            (
                "resourceNames: no create",
                &named,
                "create",
                res("", "configmaps", "", ""),
                false,
            ),
            (
                "resourceNames: list filtered to the name",
                &named,
                "list",
                res("", "configmaps", "", "cm"),
                true,
            ),
            (
                "group",
                &apps,
                "get",
                res("apps", "deployments", "", "d"),
                true,
            ),
            (
                "core is not apps",
                &apps,
                "get",
                res("", "deployments", "", "d"),
                false,
            ),
            (
                "resource rule, path request",
                &any,
                "get",
                path("/healthz"),
                false,
            ),
        ];
        for (case, rule, verb, request, want) in cases {
            assert_eq!(rule.allows(verb, &request), want, "{case}");
        }
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_trailing_star() {
        let discovery = url_rule(&["get"], &["/api", "/apis/*", "/version/"]);
        let all = url_rule(&["*"], &["*"]);
        let cases = [
            (&discovery, "get", "/api", true),
            (&discovery, "get", "/api/v1", false),
            (&discovery, "get", "/apis/apps/v1", true),
            (&discovery, "get", "/apis/", true),
            (&discovery, "get", "/apis", false),
            (&discovery, "post", "/api", false),
            (&discovery, "get", "/version", false),
            (&discovery, "get", "/version/", true),
            (&all, "delete", "/anything/at/all", true),
        ];
        for (rule, verb, p, want) in cases {
            assert_eq!(rule.allows(verb, &path(p)), want, "{verb} {p}");
        }
        let pods = rule(&["get"], &["*"], &["*"], &[]);
        assert!(
            !pods.allows("get", &path("/api")),
            "resource rules grant no path"
        );
    }

    #[test]
    fn covering_is_checked_per_verb_resource_and_name() {
        let owner = [
            rule(&["get", "list"], &[""], &["pods"], &[]),
            rule(&["get"], &[""], &["*/status"], &[]),
            rule(&["update"], &[""], &["configmaps"], &["a", "b"]),
            url_rule(&["get"], &["/logs/*"]),
        ];
        let cases = [
            (rule(&["get"], &[""], &["pods"], &[]), vec![]),
            (rule(&["get"], &[""], &["pods"], &["p"]), vec![]),
            (rule(&["get"], &[""], &["nodes/status"], &[]), vec![]),
            (rule(&["update"], &[""], &["configmaps"], &["a"]), vec![]),
            (url_rule(&["get"], &["/logs/x"]), vec![]),
            (
                rule(&["get", "delete"], &[""], &["pods", "secrets"], &[]),
                vec![
                    "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}",
                    "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}",
                ],
            ),
            (
                rule(&["update"], &[""], &["configmaps"], &[]),
                vec!["{APIGroups:[\"\"], Resources:[\"configmaps\"], Verbs:[\"update\"]}"],
            ),
            (
                rule(&["update"], &[""], &["configmaps"], &["c"]),
                vec![
                    "{APIGroups:[\"\"], Resources:[\"configmaps\"], ResourceNames:[\"c\"], Verbs:[\"update\"]}",
                ],
            ),
            (
                url_rule(&["get"], &["/logs"]),
                vec!["{NonResourceURLs:[\"/logs\"], Verbs:[\"get\"]}"],
            ),
        ];
        for (wanted, missing) in cases {
            let mut got: Vec<String> = compact(uncovered(&owner, std::slice::from_ref(&wanted)))
                .iter()
                .map(Rule::compact_string)
                .collect();
            got.sort();
            assert_eq!(got, missing, "{wanted:?}");
        }
    }
}
