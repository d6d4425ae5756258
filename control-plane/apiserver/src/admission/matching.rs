//! Which webhooks a request goes to: the webhooks of the stored configurations in the order
//! kube-apiserver calls them, and the pure decision whether one applies to a request (its
//! `rules`, `namespaceSelector` and `objectSelector`), as
//! `k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/{rules,namespace,object}` decide.
//! No IO: the namespace's labels are looked up by the caller.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use keelson_api::selectors::LabelSelector;
use serde_json::Value;

use keelson_api::admission_policy::{MatchConditions, Scope};

use crate::object::labels;

/// The admission operation of a request (`admission.k8s.io/v1` `Operation`; keelson has no
/// CONNECT verbs that webhooks see yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// The name in rules and in the AdmissionReview.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// The facts about a request that decide which webhooks apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts<'a> {
    pub(crate) group: &'a str,
    pub(crate) version: &'a str,
    /// The plural resource name (`pods`).
    pub(crate) resource: &'a str,
    /// `status`, `scale`, ... or empty.
    pub(crate) subresource: &'a str,
    /// The request's namespace: for a Namespace object itself, its name (as kube-apiserver
    /// sets it); empty for other cluster-scoped objects.
    pub(crate) namespace: &'a str,
    pub(crate) operation: Operation,
    /// The new object (absent on DELETE).
    pub(crate) object: Option<&'a Value>,
    /// The stored object (UPDATE and DELETE).
    pub(crate) old_object: Option<&'a Value>,
}

impl RequestFacts<'_> {
    fn is_namespace_object(&self) -> bool {
        self.group.is_empty() && self.version == "v1" && self.resource == "namespaces"
    }

    /// Whether the labels of the request's namespace are needed: the namespace of a namespaced
    /// object; for a Namespace created or updated, the labels are the object's own.
    pub(crate) fn namespace_to_look_up(&self) -> Option<&str> {
        if self.namespace.is_empty() {
            return None;
        }
        let own = self.is_namespace_object()
            && self.subresource.is_empty()
            && matches!(self.operation, Operation::Create | Operation::Update);
        (!own).then_some(self.namespace)
    }
}

/// `failurePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailurePolicy {
    /// A failed call refuses the request (the default).
    Fail,
    /// A failed call lets the request through.
    Ignore,
}

/// Where a webhook is served: `clientConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `clientConfig.url`.
    Url(String),
    /// `clientConfig.service`.
    Service {
        namespace: String,
        name: String,
        path: String,
        port: u16,
    },
}

/// One webhook of a Validating- or MutatingWebhookConfiguration, defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub(crate) name: String,
    /// The configuration it belongs to.
    pub(crate) configuration: String,
    rules: Vec<admissionregistration::RuleWithOperations>,
    /// `namespaceSelector`; `Err` holds why it does not parse (the request then fails).
    namespace_selector: Result<LabelSelector, String>,
    object_selector: Result<LabelSelector, String>,
    pub(crate) failure_policy: FailurePolicy,
    /// `sideEffects` (`None`, `NoneOnDryRun`, `Some`, `Unknown`).
    pub(crate) side_effects: String,
    pub(crate) timeout: Duration,
    pub(crate) endpoint: Endpoint,
    /// `clientConfig.caBundle` (PEM), if set.
    pub(crate) ca_bundle: Option<Vec<u8>>,
    pub(crate) review_versions: Vec<String>,
    /// `reinvocationPolicy: IfNeeded` (mutating webhooks).
    pub(crate) reinvoke: bool,
    /// `matchPolicy: Equivalent` (the default): a rule on a resource also covers the same
    /// objects served under another group or version.
    pub(crate) equivalent: bool,
    /// `matchConditions`, compiled (a webhook is called only when they all hold).
    pub(crate) match_conditions: MatchConditions,
}

/// The default and the bounds of `timeoutSeconds`.
const DEFAULT_TIMEOUT_SECONDS: i32 = 10;

fn selector(selector: Option<&metav1::LabelSelector>) -> Result<LabelSelector, String> {
    match selector {
        None => Ok(LabelSelector::default()),
        Some(s) => LabelSelector::from_label_selector(s).map_err(|e| e.to_string()),
    }
}

/// The parts of both webhook kinds this module reads.
struct Common<'a> {
    name: &'a str,
    rules: Option<&'a Vec<admissionregistration::RuleWithOperations>>,
    namespace_selector: Option<&'a metav1::LabelSelector>,
    object_selector: Option<&'a metav1::LabelSelector>,
    failure_policy: Option<&'a str>,
    side_effects: &'a str,
    timeout_seconds: Option<i32>,
    client_config: &'a admissionregistration::WebhookClientConfig,
    review_versions: &'a [String],
    reinvoke: bool,
    match_policy: Option<&'a str>,
    match_conditions: Option<&'a Vec<admissionregistration::MatchCondition>>,
}

fn hook(configuration: &str, c: Common<'_>) -> Hook {
    let endpoint = match (&c.client_config.url, &c.client_config.service) {
        (Some(url), _) => Endpoint::Url(url.clone()),
        (None, Some(service)) => Endpoint::Service {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            path: service.path.clone().unwrap_or_default(),
            port: service
                .port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        },
        // Validation refuses a webhook with neither; it fails when called.
        (None, None) => Endpoint::Url(String::new()),
    };
    let timeout = c
        .timeout_seconds
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
        .clamp(1, 30);
    Hook {
        name: c.name.to_owned(),
        configuration: configuration.to_owned(),
        rules: c.rules.cloned().unwrap_or_default(),
        namespace_selector: selector(c.namespace_selector),
        object_selector: selector(c.object_selector),
        failure_policy: match c.failure_policy {
            Some("Ignore") => FailurePolicy::Ignore,
            _ => FailurePolicy::Fail,
        },
        side_effects: c.side_effects.to_owned(),
        timeout: Duration::from_secs(u64::try_from(timeout).unwrap_or(10)),
        endpoint,
        ca_bundle: c
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty()),
        review_versions: c.review_versions.to_vec(),
        reinvoke: c.reinvoke,
        equivalent: c.match_policy != Some("Exact"),
        match_conditions: MatchConditions::new(
            c.match_conditions
                .and_then(|m| serde_json::to_value(m).ok())
                .as_ref(),
            Scope::Webhook,
        ),
    }
}

/// A matcher with only selectors (no rules, no endpoint): the `namespaceSelector` and
/// `objectSelector` of an admission policy's or binding's `matchResources`.
pub(crate) fn selectors(
    name: &str,
    namespace_selector: Option<&metav1::LabelSelector>,
    object_selector: Option<&metav1::LabelSelector>,
) -> Hook {
    Hook {
        name: name.to_owned(),
        configuration: name.to_owned(),
        rules: Vec::new(),
        namespace_selector: selector(namespace_selector),
        object_selector: selector(object_selector),
        failure_policy: FailurePolicy::Fail,
        side_effects: "None".to_owned(),
        timeout: Duration::from_secs(u64::from(DEFAULT_TIMEOUT_SECONDS.unsigned_abs())),
        endpoint: Endpoint::Url(String::new()),
        ca_bundle: None,
        review_versions: Vec::new(),
        reinvoke: false,
        equivalent: false,
        match_conditions: MatchConditions::default(),
    }
}

/// The webhooks of the ValidatingWebhookConfigurations, in calling order: configurations
/// sorted by name, webhooks in their order within each.
pub(crate) fn validating_hooks(
    mut configurations: Vec<admissionregistration::ValidatingWebhookConfiguration>,
) -> Vec<Hook> {
    configurations.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut hooks = Vec::new();
    for configuration in &configurations {
        let config_name = configuration.metadata.name.as_deref().unwrap_or_default();
        for w in configuration.webhooks.iter().flatten() {
            hooks.push(hook(
                config_name,
                Common {
                    name: &w.name,
                    rules: w.rules.as_ref(),
                    namespace_selector: w.namespace_selector.as_ref(),
                    object_selector: w.object_selector.as_ref(),
                    failure_policy: w.failure_policy.as_deref(),
                    side_effects: &w.side_effects,
                    timeout_seconds: w.timeout_seconds,
                    client_config: &w.client_config,
                    review_versions: &w.admission_review_versions,
                    reinvoke: false,
                    match_policy: w.match_policy.as_deref(),
                    match_conditions: w.match_conditions.as_ref(),
                },
            ));
        }
    }
    hooks
}

/// The webhooks of the MutatingWebhookConfigurations, in calling order (as
/// [`validating_hooks`]).
pub(crate) fn mutating_hooks(
    mut configurations: Vec<admissionregistration::MutatingWebhookConfiguration>,
) -> Vec<Hook> {
    configurations.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut hooks = Vec::new();
    for configuration in &configurations {
        let config_name = configuration.metadata.name.as_deref().unwrap_or_default();
        for w in configuration.webhooks.iter().flatten() {
            hooks.push(hook(
                config_name,
                Common {
                    name: &w.name,
                    rules: w.rules.as_ref(),
                    namespace_selector: w.namespace_selector.as_ref(),
                    object_selector: w.object_selector.as_ref(),
                    failure_policy: w.failure_policy.as_deref(),
                    side_effects: &w.side_effects,
                    timeout_seconds: w.timeout_seconds,
                    client_config: &w.client_config,
                    review_versions: &w.admission_review_versions,
                    reinvoke: w.reinvocation_policy.as_deref() == Some("IfNeeded"),
                    match_policy: w.match_policy.as_deref(),
                    match_conditions: w.match_conditions.as_ref(),
                },
            ));
        }
    }
    hooks
}

fn exact_or_wildcard(items: Option<&Vec<String>>, requested: &str) -> bool {
    items
        .into_iter()
        .flatten()
        .any(|item| item == "*" || item == requested)
}

/// Whether `rule` covers the request (kube's `rules.Matcher`): scope, operation, group,
/// version, and resource with subresource (`pods`, `pods/status`, `pods/*`, `*`, `*/*`).
pub(crate) fn rule_matches(
    rule: &admissionregistration::RuleWithOperations,
    r: &RequestFacts<'_>,
) -> bool {
    let scope = match rule.scope.as_deref() {
        None | Some("*") => true,
        // A Namespace is cluster-scoped, though its requests carry its name as namespace.
        Some("Namespaced") => !r.is_namespace_object() && !r.namespace.is_empty(),
        Some("Cluster") => r.is_namespace_object() || r.namespace.is_empty(),
        Some(_) => false,
    };
    let operation = rule
        .operations
        .iter()
        .flatten()
        .any(|op| op == "*" || op == r.operation.as_str());
    let resource = rule.resources.iter().flatten().any(|entry| {
        let (res, sub) = entry.split_once('/').unwrap_or((entry, ""));
        (res == "*" || res == r.resource) && (sub == "*" || sub == r.subresource)
    });
    scope
        && operation
        && exact_or_wildcard(rule.api_groups.as_ref(), r.group)
        && exact_or_wildcard(rule.api_versions.as_ref(), r.version)
        && resource
}

/// Why a webhook cannot be matched: its selector does not parse (kube answers a 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadSelector(pub(crate) String);

impl Hook {
    /// Whether one of the webhook's rules covers the request.
    pub(crate) fn rules_match(&self, r: &RequestFacts<'_>) -> bool {
        self.rules.iter().any(|rule| rule_matches(rule, r))
    }

    /// Whether the webhook applies to the request: a rule covers it, the namespace's labels
    /// (`namespace_labels`, for the namespace [`RequestFacts::namespace_to_look_up`] names)
    /// match `namespaceSelector` and the new or the old object's labels match
    /// `objectSelector`. Cluster-scoped objects other than Namespaces pass any
    /// namespaceSelector.
    pub(crate) fn applies(
        &self,
        r: &RequestFacts<'_>,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<bool, BadSelector> {
        if !self.rules_match(r) {
            return Ok(false);
        }
        self.selectors_match(r, namespace_labels)
    }

    /// Whether the request passes the `namespaceSelector` and `objectSelector` (see
    /// [`Hook::applies`]).
    pub(crate) fn selectors_match(
        &self,
        r: &RequestFacts<'_>,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<bool, BadSelector> {
        let namespaces = self
            .namespace_selector
            .as_ref()
            .map_err(|e| BadSelector(format!("webhook {:?}: namespaceSelector: {e}", self.name)))?;
        if !r.namespace.is_empty() && !namespaces.is_empty() {
            let own;
            let labels = match r.namespace_to_look_up() {
                Some(_) => namespace_labels,
                None => {
                    own = r.object.map(labels).unwrap_or_default();
                    Some(&own)
                }
            };
            if !labels.is_some_and(|l| namespaces.matches(l)) {
                return Ok(false);
            }
        }
        let objects = self
            .object_selector
            .as_ref()
            .map_err(|e| BadSelector(format!("webhook {:?}: objectSelector: {e}", self.name)))?;
        if objects.is_empty() {
            return Ok(true);
        }
        let matches = |object: Option<&Value>| object.is_some_and(|o| objects.matches(&labels(o)));
        Ok(matches(r.object) || matches(r.old_object))
    }

    /// Whether the webhook needs the labels of the request's namespace.
    pub(crate) fn selects_namespaces(&self) -> bool {
        self.namespace_selector
            .as_ref()
            .map_or(true, |s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests;
