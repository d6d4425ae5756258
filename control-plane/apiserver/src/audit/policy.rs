//! Kubernetes' audit policy (`audit.k8s.io/v1` `Policy`, the `--audit-policy-file`): which
//! requests are recorded, at which level, and which stages are left out. Rules are tried in
//! order and the first that matches decides; a request no rule matches is not recorded.

use std::fmt;

use serde::Deserialize;

use super::request_info::RequestInfo;
use crate::auth::UserInfo;

/// How much of a request is recorded, from nothing to both bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum Level {
    /// Not recorded.
    None,
    /// Who, what, when and the response code.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata and both bodies.
    RequestResponse,
}

impl Level {
    /// Kubernetes' name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Metadata => "Metadata",
            Self::Request => "Request",
            Self::RequestResponse => "RequestResponse",
        }
    }
}

/// When in a request's life an event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum Stage {
    /// As soon as the request arrives.
    RequestReceived,
    /// When the response head is sent: only for long-running requests (watch, logs).
    ResponseStarted,
    /// When the response is complete.
    ResponseComplete,
    /// When handling the request panicked.
    Panic,
}

/// One `resources` entry of a rule: resources of one API group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    /// The API group (`""`: core).
    #[serde(default)]
    pub group: String,
    /// `pods`, `pods/log`, `*`, `pods/*`, `*/scale`; empty: every resource of the group.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty: every object.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One rule of a policy: a request matches when it matches every field that is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// The level of the requests this rule matches.
    pub level: Level,
    /// User names; empty: everybody.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups, any of which the user must be in; empty: every group.
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Kubernetes verbs (`get`, `list`, `watch`, `create`, ...); empty: every verb.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources; empty: every resource.
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""`: cluster-scoped resources); empty: every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource paths, `*` allowed as the whole path or its last character.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    /// Stages not recorded (added to the policy's).
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Whether `metadata.managedFields` is dropped from recorded bodies; unset: the policy's.
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

/// An `audit.k8s.io/v1` `Policy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// `audit.k8s.io/v1`.
    pub api_version: String,
    /// `Policy`.
    pub kind: String,
    /// Ignored (for interoperability with API tooling).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// The rules, the first matching one wins.
    pub rules: Vec<PolicyRule>,
    /// Stages no rule records.
    #[serde(default)]
    pub omit_stages: Vec<Stage>,
    /// Whether recorded bodies leave out `metadata.managedFields` (rules may override).
    #[serde(default)]
    pub omit_managed_fields: bool,
}

/// What the policy decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuditConfig {
    /// The level.
    pub level: Level,
    /// The stages not recorded.
    pub omit_stages: Vec<Stage>,
    /// Whether `metadata.managedFields` is dropped from recorded bodies.
    pub omit_managed_fields: bool,
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("cannot read the audit policy file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a policy.
    #[error("audit policy file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The first problem of a policy that decoded, Kubernetes' field path first.
struct Problem(String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Policy {
    /// Reads and validates a policy file (YAML or JSON).
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| PolicyError::Invalid {
            path: shown,
            message,
        })
    }

    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Self = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        policy.validate().map_err(|p| p.to_string())?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), Problem> {
        if self.kind != "Policy" || self.api_version != "audit.k8s.io/v1" {
            return Err(Problem(format!(
                "expected apiVersion audit.k8s.io/v1 and kind Policy, got {} {}",
                self.api_version, self.kind
            )));
        }
        if self.rules.is_empty() {
            return Err(Problem("the policy has no rules".into()));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.non_resource_urls.is_empty()
                && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return Err(Problem(format!(
                    "rules[{i}].nonResourceURLs: Invalid value: rules cannot apply to both \
                     regular resources and non-resource URLs"
                )));
            }
            for (j, url) in rule.non_resource_urls.iter().enumerate() {
                if url.trim_end_matches('*').contains('*') {
                    return Err(Problem(format!(
                        "rules[{i}].nonResourceURLs[{j}]: Invalid value: \"{url}\": \"*\" can \
                         only appear at the end"
                    )));
                }
                if !url.starts_with('/') && url != "*" {
                    return Err(Problem(format!(
                        "rules[{i}].nonResourceURLs[{j}]: Invalid value: \"{url}\": must start \
                         with \"/\""
                    )));
                }
            }
            for (j, group) in rule.resources.iter().enumerate() {
                if !group.resource_names.is_empty() && group.resources.is_empty() {
                    return Err(Problem(format!(
                        "rules[{i}].resources[{j}].resourceNames: Invalid value: using \
                         resourceNames requires at least one resource"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The level and stages for a request by `user` (`None`: not authenticated).
    pub fn evaluate(&self, user: Option<&UserInfo>, request: &RequestInfo) -> RequestAuditConfig {
        let union = |rule: &[Stage]| {
            let mut stages = self.omit_stages.clone();
            stages.extend(rule.iter().filter(|s| !self.omit_stages.contains(s)));
            stages
        };
        match self.rules.iter().find(|r| rule_matches(r, user, request)) {
            Some(rule) => RequestAuditConfig {
                level: rule.level,
                omit_stages: union(&rule.omit_stages),
                omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            },
            None => RequestAuditConfig {
                level: Level::None,
                omit_stages: self.omit_stages.clone(),
                omit_managed_fields: self.omit_managed_fields,
            },
        }
    }
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == value)
}

fn rule_matches(rule: &PolicyRule, user: Option<&UserInfo>, request: &RequestInfo) -> bool {
    if !rule.users.is_empty() && !user.is_some_and(|u| has(&rule.users, &u.name)) {
        return false;
    }
    if !rule.user_groups.is_empty()
        && !user.is_some_and(|u| u.groups.iter().any(|g| has(&rule.user_groups, g)))
    {
        return false;
    }
    if !rule.verbs.is_empty() && !has(&rule.verbs, &request.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return resource_matches(rule, request);
    }
    if !rule.non_resource_urls.is_empty() {
        return request.resource.is_none()
            && rule
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(&request.path, spec));
    }
    true
}

/// `*`, the exact path, or a prefix ending in `*`.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

fn resource_matches(rule: &PolicyRule, request: &RequestInfo) -> bool {
    let Some(attributes) = &request.resource else {
        return false;
    };
    if !rule.namespaces.is_empty() && !has(&rule.namespaces, &attributes.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let resource = attributes.resource.as_str();
    let subresource = attributes.subresource.as_str();
    let combined = if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    };
    rule.resources
        .iter()
        .filter(|g| g.group == attributes.group)
        .any(|g| {
            if g.resources.is_empty() {
                return true;
            }
            if !g.resource_names.is_empty() && !has(&g.resource_names, &attributes.name) {
                return false;
            }
            g.resources.iter().any(|spec| {
                spec == "*"
                    || *spec == combined
                    || (!subresource.is_empty() && spec.strip_prefix("*/") == Some(subresource))
                    || spec.strip_suffix("/*") == Some(resource)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authz::ResourceAttributes;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
omitManagedFields: true
rules:
  - level: None
    users: ["system:kube-proxy"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps/status"]
  - level: Request
    resources:
      - group: ""
        resources: ["configmaps"]
        resourceNames: ["special"]
    omitManagedFields: false
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["configmaps"]
    omitStages: [ResponseStarted]
  - level: Request
    resources:
      - group: "apps"
        resources: ["*/scale"]
      - group: "batch"
        resources: ["jobs/*"]
  - level: Metadata
    namespaces: ["kube-system"]
  - level: Metadata
    nonResourceURLs: ["/healthz*", "/version"]
  - level: None
    resources: [{group: "apps"}]
  - level: Request
    verbs: ["delete"]
"#;

    fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> RequestInfo {
        RequestInfo {
            verb: verb.into(),
            path: String::new(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
            }),
        }
    }

    fn path(verb: &str, path: &str) -> RequestInfo {
        RequestInfo {
            verb: verb.into(),
            path: path.into(),
            resource: None,
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(POLICY).expect("a valid policy");
        let alice = UserInfo::new("alice", &["developers"]);
        let proxy = UserInfo::new("system:kube-proxy", &[]);
        let node = UserInfo::node("n1");
        use Level::*;
        let cases: Vec<(Option<&UserInfo>, RequestInfo, Level)> = vec![
            (
                Some(&proxy),
                resource("get", "", "secrets", "", "d", "s"),
                None,
            ),
            (
                Some(&node),
                resource("get", "", "secrets", "", "d", "s"),
                None,
            ),
            (
                Some(&node),
                resource("list", "", "secrets", "", "d", ""),
                Metadata,
            ),
            (
                Some(&alice),
                resource("create", "", "secrets", "", "d", ""),
                Metadata,
            ),
            (
                Some(&alice),
                resource("update", "", "configmaps", "status", "d", "c"),
                Metadata,
            ),
            (
                Some(&alice),
                resource("get", "", "configmaps", "", "d", "special"),
                Request,
            ),
            (
                Some(&alice),
                resource("get", "", "configmaps", "", "d", "other"),
                RequestResponse,
            ),
            // Another group's configmaps are not the core ones.
            (
                Some(&alice),
                resource("get", "x.io", "configmaps", "", "d", "c"),
                None,
            ),
            (
                Some(&alice),
                resource("patch", "apps", "deployments", "scale", "d", "w"),
                Request,
            ),
            (
                Some(&alice),
                resource("get", "batch", "jobs", "status", "d", "j"),
                Request,
            ),
            (
                Some(&alice),
                resource("get", "apps", "deployments", "", "d", "w"),
                None,
            ),
            (
                Some(&alice),
                resource("get", "", "pods", "", "kube-system", "p"),
                Metadata,
            ),
            (
                Some(&alice),
                resource("delete", "", "pods", "", "d", "p"),
                Request,
            ),
            (Some(&alice), path("get", "/healthz/ready"), Metadata),
            (Some(&alice), path("get", "/version"), Metadata),
            (Some(&alice), path("get", "/versions"), None),
            // Resource rules never match paths, and a request nobody matches is not recorded.
            (Some(&alice), path("get", "/api/v1"), None),
            (
                Option::None,
                resource("get", "", "pods", "", "d", "p"),
                None,
            ),
            (Option::None, path("get", "/version"), Metadata),
        ];
        for (user, request, level) in cases {
            assert_eq!(
                policy.evaluate(user, &request).level,
                level,
                "{user:?} {request:?}"
            );
        }
    }

    #[test]
    fn stages_are_the_union_and_managed_fields_the_rule_over_the_policy() {
        let policy = Policy::parse(POLICY).expect("a valid policy");
        let alice = UserInfo::new("alice", &[]);
        let config = policy.evaluate(
            Some(&alice),
            &resource("get", "", "configmaps", "", "d", "x"),
        );
        assert_eq!(
            config.omit_stages,
            [Stage::RequestReceived, Stage::ResponseStarted]
        );
        assert!(config.omit_managed_fields);
        let config = policy.evaluate(
            Some(&alice),
            &resource("get", "", "configmaps", "", "d", "special"),
        );
        assert_eq!(config.omit_stages, [Stage::RequestReceived]);
        assert!(!config.omit_managed_fields);
        let unmatched = policy.evaluate(Some(&alice), &path("get", "/metrics"));
        assert_eq!(unmatched.level, Level::None);
        assert_eq!(unmatched.omit_stages, [Stage::RequestReceived]);
    }

    #[test]
    fn invalid_policies_are_refused_with_the_field() {
        let cases = [
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
                "no rules",
            ),
            (
                "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n",
                "expected apiVersion audit.k8s.io/v1",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n",
                "Everything",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [\"/a*b\"]\n",
                "rules[0].nonResourceURLs[0]",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  namespaces: [a]\n  nonResourceURLs: [\"/a\"]\n",
                "both regular resources and non-resource URLs",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{resourceNames: [x]}]\n",
                "rules[0].resources[0].resourceNames",
            ),
            (
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  omitStage: [Panic]\n",
                "omitStage",
            ),
        ];
        for (text, expected) in cases {
            let error = Policy::parse(text).expect_err(text);
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }
}
