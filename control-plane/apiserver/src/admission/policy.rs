//! ValidatingAdmissionPolicies: the stored policies and their bindings, matched to a request
//! and evaluated in the validating phase before the validating webhooks, as kube-apiserver
//! 1.33's `ValidatingAdmissionPolicy` plugin does (`k8s.io/apiserver/pkg/admission/plugin/
//! policy/{generic,validating}`). The CEL is `keelson_api::admission_policy`.
//!
//! - A policy applies when its `matchConstraints` match (rules, `excludeResourceRules`,
//!   namespace and object selectors, as for webhooks); each binding naming it applies when its
//!   own `matchResources` (if any) match. Params come from the store (`paramKind` of a
//!   built-in kind; `paramRef` by name or selector, in the request's namespace unless the
//!   binding names one; `parameterNotFoundAction`).
//! - A false validation under a `Deny` binding refuses the request: kube's `Forbidden`
//!   status turned into the validation's `reason` (`Invalid`, 422, by default), its message
//!   `<resource> "<name>" is forbidden: ValidatingAdmissionPolicy '<p>' with binding '<b>'
//!   denied request: <message>`. `Warn` adds a `Warning` header; `Audit` logs (keelson has
//!   no audit log; audit annotations are logged too). Errors follow the policy's
//!   `failurePolicy`.
//! - `matchPolicy: Equivalent` (the default) matches a request through a resource served
//!   from the same storage; the expressions then see the objects and `request` as that
//!   resource shows them.
//! - Not done: params of custom resources (`paramKind` names a built-in kind or is "not
//!   known"); `status.typeChecking` (no type checker); the `authorizer` functions.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use keelson_api::{
    admission_policy::{FailurePolicy, Input, Policy},
    selectors::LabelSelector,
};
use keelson_store::ListOptions;
use serde_json::Value;

use super::{
    Admit, Attempt, known_reason,
    matching::{self, Hook, RequestFacts, rule_matches},
    present,
};
use crate::{
    ApiError,
    error::{Cause, Details},
    object::{decode_kv, labels},
    registry::{self, Resource},
};

/// One rule of `resourceRules`, with its `resourceNames`.
#[derive(Debug, Clone)]
struct NamedRule {
    rule: admissionregistration::RuleWithOperations,
    names: Vec<String>,
}

fn named_rules(
    rules: Option<&Vec<admissionregistration::NamedRuleWithOperations>>,
) -> Vec<NamedRule> {
    rules
        .into_iter()
        .flatten()
        .map(|r| NamedRule {
            rule: admissionregistration::RuleWithOperations {
                api_groups: r.api_groups.clone(),
                api_versions: r.api_versions.clone(),
                operations: r.operations.clone(),
                resources: r.resources.clone(),
                scope: r.scope.clone(),
            },
            names: r.resource_names.clone().unwrap_or_default(),
        })
        .collect()
}

/// `matchConstraints` or a binding's `matchResources`.
#[derive(Debug, Clone)]
struct Constraints {
    rules: Vec<NamedRule>,
    exclude: Vec<NamedRule>,
    selectors: Hook,
    /// `matchPolicy: Equivalent` (the default).
    equivalent: bool,
}

impl Constraints {
    fn new(name: &str, m: &admissionregistration::MatchResources) -> Self {
        Self {
            rules: named_rules(m.resource_rules.as_ref()),
            exclude: named_rules(m.exclude_resource_rules.as_ref()),
            selectors: matching::selectors(
                name,
                m.namespace_selector.as_ref(),
                m.object_selector.as_ref(),
            ),
            equivalent: m.match_policy.as_deref() != Some("Exact"),
        }
    }

    fn covers(rules: &[NamedRule], facts: &RequestFacts<'_>, name: &str) -> bool {
        rules.iter().any(|r| {
            rule_matches(&r.rule, facts)
                && (r.names.is_empty() || r.names.iter().any(|n| n == name))
        })
    }

    /// The resource part of kube's `Matcher.Matches`: not excluded, and covered by a rule
    /// (no `resourceRules` cover every resource), directly or, with `matchPolicy:
    /// Equivalent`, through a resource served from the same storage. Returns the resource
    /// the request is seen as.
    fn rules_match(
        &self,
        facts: &RequestFacts<'_>,
        resource: &'static Resource,
        name: &str,
    ) -> Option<&'static Resource> {
        let views = || {
            std::iter::once(resource).chain(
                self.equivalent
                    .then(|| super::equivalents(resource))
                    .into_iter()
                    .flatten(),
            )
        };
        let seen = |r: &'static Resource| super::as_resource(facts, r);
        if views().any(|r| Self::covers(&self.exclude, &seen(r), name)) {
            return None;
        }
        if self.rules.is_empty() {
            return Some(resource);
        }
        views().find(|r| Self::covers(&self.rules, &seen(r), name))
    }

    /// The selector part: `namespaceSelector` and `objectSelector`.
    fn selectors_match(
        &self,
        facts: &RequestFacts<'_>,
        namespace_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<bool, ApiError> {
        self.selectors
            .selectors_match(facts, namespace_labels)
            .map_err(|e| super::internal(e.0))
    }
}

/// A binding of a policy.
#[derive(Debug, Clone)]
struct Binding {
    name: String,
    param_ref: Option<admissionregistration::ParamRef>,
    constraints: Option<Constraints>,
    actions: Vec<String>,
}

/// A policy with its bindings, compiled.
#[derive(Debug, Clone)]
pub(crate) struct PolicyHook {
    name: String,
    policy: Policy,
    param_kind: Option<admissionregistration::ParamKind>,
    constraints: Option<Constraints>,
    bindings: Vec<Binding>,
}

/// The policies with their bindings, in name order (bindings too); policies without
/// bindings are left out.
pub(crate) fn policy_hooks(
    mut policies: Vec<admissionregistration::ValidatingAdmissionPolicy>,
    mut bindings: Vec<admissionregistration::ValidatingAdmissionPolicyBinding>,
) -> Vec<PolicyHook> {
    policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    bindings.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for p in policies {
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(spec) = p.spec else { continue };
        let bound: Vec<Binding> = bindings
            .iter()
            .filter_map(|b| {
                let bspec = b.spec.as_ref()?;
                (bspec.policy_name.as_deref() == Some(name.as_str())).then(|| {
                    let bname = b.metadata.name.clone().unwrap_or_default();
                    Binding {
                        constraints: bspec
                            .match_resources
                            .as_ref()
                            .map(|m| Constraints::new(&bname, m)),
                        name: bname,
                        param_ref: bspec.param_ref.clone(),
                        actions: bspec.validation_actions.clone().unwrap_or_default(),
                    }
                })
            })
            .collect();
        if bound.is_empty() {
            continue;
        }
        let value = serde_json::to_value(&spec).unwrap_or(Value::Null);
        out.push(PolicyHook {
            policy: Policy::new(&value),
            param_kind: spec.param_kind.clone(),
            constraints: spec
                .match_constraints
                .as_ref()
                .map(|m| Constraints::new(&name, m)),
            name,
            bindings: bound,
        });
    }
    out
}

/// A refusal (or a configuration error) of a policy under a binding.
struct Denial {
    policy: String,
    binding: Option<String>,
    message: String,
    reason: Option<String>,
}

/// kube's `ParamKind.String()`.
fn param_kind_text(k: &admissionregistration::ParamKind) -> String {
    format!(
        "&ParamKind{{APIVersion:{},Kind:{},}}",
        k.api_version.as_deref().unwrap_or_default(),
        k.kind.as_deref().unwrap_or_default()
    )
}

impl Admit<'_> {
    /// The request's namespace object, when the request is namespaced (not for a Namespace
    /// itself).
    async fn namespace_object(&self, facts: &RequestFacts<'_>) -> Result<Option<Value>, ApiError> {
        let Some(namespace) = facts.namespace_to_look_up() else {
            return Ok(None);
        };
        let namespaces = registry::find("", "v1", "namespaces").ok_or_else(ApiError::no_route)?;
        let kv = self
            .store
            .get(&namespaces.key(None, namespace), None)
            .await
            .map_err(|e| ApiError::from_store(e, namespaces, namespace))?
            .ok_or_else(|| ApiError::not_found(namespaces, namespace))?;
        Ok(Some(decode_kv(&kv)?))
    }

    /// kube's `CollectParams`: the params objects to evaluate the policy with (`[None]` when
    /// it takes none), or a configuration error.
    async fn params(
        &self,
        hook: &PolicyHook,
        binding: &Binding,
        request_namespace: &str,
    ) -> Result<Vec<Option<Value>>, String> {
        let (Some(kind), Some(param_ref)) = (&hook.param_kind, &binding.param_ref) else {
            return Ok(vec![None]);
        };
        let api_version = kind.api_version.as_deref().unwrap_or_default();
        let kind_name = kind.kind.as_deref().unwrap_or_default();
        let Some(resource) = registry::RESOURCES
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind_name)
        else {
            return Err(format!(
                "paramKind kind `{}` not known",
                param_kind_text(kind)
            ));
        };
        let ref_namespace = param_ref.namespace.as_deref().unwrap_or_default();
        let namespace = if resource.namespaced {
            match (ref_namespace, request_namespace) {
                ("", "") => {
                    return Err(
                        "cannot use namespaced paramRef in policy binding that matches \
                                cluster-scoped resources"
                            .to_owned(),
                    );
                }
                ("", ns) | (ns, _) => Some(ns),
            }
        } else if !ref_namespace.is_empty() {
            return Err(
                "paramRef.namespace must not be provided for a cluster-scoped `paramKind`"
                    .to_owned(),
            );
        } else {
            None
        };
        let mut params = Vec::new();
        match (
            param_ref.name.as_deref().filter(|n| !n.is_empty()),
            &param_ref.selector,
        ) {
            (Some(_), Some(_)) => {
                return Err("paramRef.name and paramRef.selector are mutually exclusive".to_owned());
            }
            (Some(name), None) => {
                let found = self
                    .store
                    .get(&resource.key(namespace, name), None)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(kv) = found {
                    let value = decode_kv(&kv).map_err(|e| e.message)?;
                    params.push(Some(resource.present(value)));
                }
            }
            (None, Some(selector)) => {
                let selector =
                    LabelSelector::from_label_selector(selector).map_err(|e| e.to_string())?;
                let listed = self
                    .store
                    .list(
                        &resource.collection_prefix(namespace),
                        ListOptions::default(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                for kv in &listed.items {
                    let value = decode_kv(kv).map_err(|e| e.message)?;
                    if selector.matches(&labels(&value)) {
                        params.push(Some(resource.present(value)));
                    }
                }
            }
            (None, None) => return Err("one of name or selector must be provided".to_owned()),
        }
        if params.is_empty() && param_ref.parameter_not_found_action.as_deref() == Some("Deny") {
            return Err(
                "no params found for policy binding with `Deny` parameterNotFoundAction".to_owned(),
            );
        }
        Ok(params)
    }

    /// The `request` variable: kube's `CreateAdmissionRequest` (the AdmissionRequest without
    /// its objects).
    pub(super) fn cel_request(&self, attempt: &Attempt<'_>, view: &Resource) -> Value {
        let mut request = self.request(attempt, view, "", None, None);
        if let Some(map) = request.as_object_mut() {
            for key in ["uid", "object", "oldObject"] {
                map.remove(key);
            }
        }
        request
    }

    /// Runs the policies that apply (`object` and `old` in stored form); `Warn` messages
    /// are added to `warnings`.
    pub(crate) async fn run_policies(
        &self,
        hooks: &[PolicyHook],
        attempt: &Attempt<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        if hooks.is_empty() {
            return Ok(());
        }
        let resource = attempt.target.resource;
        let facts = self.facts(attempt, object, old);
        let mut namespace: Option<Option<Value>> = None;
        let mut denials: Vec<Denial> = Vec::new();
        for hook in hooks {
            let config_error = |denials: &mut Vec<Denial>, binding: Option<&str>, e: String| {
                if hook.policy.failure_policy == FailurePolicy::Fail {
                    let what = if binding.is_some() {
                        "binding"
                    } else {
                        "policy"
                    };
                    denials.push(Denial {
                        policy: hook.name.clone(),
                        binding: binding.map(str::to_owned),
                        message: format!("failed to configure {what}: {e}"),
                        reason: None,
                    });
                }
            };
            // Validation requires matchConstraints; a policy without them matches nothing.
            let Some(constraints) = &hook.constraints else {
                continue;
            };
            let Some(view) = constraints.rules_match(&facts, resource, attempt.name) else {
                continue;
            };
            // Read once, and only when a policy's rules cover the request.
            if namespace.is_none() {
                namespace = Some(self.namespace_object(&facts).await?);
            }
            let ns = namespace.as_ref().and_then(Option::as_ref);
            let ns_labels = ns.map(labels);
            if !constraints.selectors_match(&facts, ns_labels.as_ref())? {
                continue;
            }
            for binding in &hook.bindings {
                if let Some(c) = &binding.constraints
                    && !(c.rules_match(&facts, resource, attempt.name).is_some()
                        && c.selectors_match(&facts, ns_labels.as_ref())?)
                {
                    continue;
                }
                // The objects and request as the matched resource shows them (kube's
                // versioned attributes of the matched kind).
                let served = object.map(|o| present(attempt, view, o.clone()));
                let served_old = old.map(|o| present(attempt, view, o.clone()));
                let request = self.cel_request(attempt, view);
                let params = match self.params(hook, binding, facts.namespace).await {
                    Ok(params) => params,
                    Err(e) => {
                        config_error(&mut denials, Some(&binding.name), e);
                        continue;
                    }
                };
                for param in &params {
                    let verdict = hook.policy.evaluate(&Input {
                        object: served.as_ref(),
                        old_object: served_old.as_ref(),
                        request: Some(&request),
                        params: param.as_ref(),
                        namespace: ns,
                    });
                    for decision in verdict.decisions.iter().filter(|d| d.deny) {
                        for action in &binding.actions {
                            match action.as_str() {
                                "Deny" => denials.push(Denial {
                                    policy: hook.name.clone(),
                                    binding: Some(binding.name.clone()),
                                    message: decision.message.clone(),
                                    reason: decision.reason.clone(),
                                }),
                                "Warn" => warnings.push(format!(
                                    "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                                    hook.name, binding.name, decision.message
                                )),
                                _ => tracing::info!(
                                    policy = hook.name,
                                    binding = binding.name,
                                    message = decision.message,
                                    "validation.policy.admission.k8s.io/validation_failure"
                                ),
                            }
                        }
                    }
                    for (key, value) in &verdict.audit_annotations {
                        tracing::info!(policy = hook.name, key, value, "policy audit annotation");
                    }
                }
            }
        }
        match denials.into_iter().next() {
            None => Ok(()),
            Some(denial) => Err(self.refusal(attempt, denial)),
        }
    }

    /// kube's `admission.NewForbidden` with the reason and code of the denial.
    fn refusal(&self, attempt: &Attempt<'_>, denial: Denial) -> ApiError {
        let said = match &denial.binding {
            Some(b) => format!(
                "ValidatingAdmissionPolicy '{}' with binding '{b}' denied request: {}",
                denial.policy, denial.message
            ),
            None => format!(
                "ValidatingAdmissionPolicy '{}' denied request: {}",
                denial.policy, denial.message
            ),
        };
        let reason = match known_reason(denial.reason.as_deref().unwrap_or("Invalid")) {
            "" => "Invalid",
            r => r,
        };
        let code = match reason {
            "Forbidden" => StatusCode::FORBIDDEN,
            "Unauthorized" => StatusCode::UNAUTHORIZED,
            "RequestEntityTooLarge" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut error = forbidden(attempt, &said);
        error.code = code;
        error.reason = reason;
        if let Some(details) = error.details.as_mut() {
            details.causes.push(Cause {
                reason: String::new(),
                message: said,
                field: String::new(),
            });
        }
        error
    }
}

/// kube's `admission.NewForbidden(attributes, err)`: `<resource> "<name>" is forbidden:
/// <err>`.
pub(crate) fn forbidden(attempt: &Attempt<'_>, cause: &str) -> ApiError {
    let resource = attempt.target.resource;
    let qualified = if resource.group.is_empty() {
        resource.plural.to_owned()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    };
    let message = if attempt.name.is_empty() {
        format!("{qualified} is forbidden: {cause}")
    } else {
        format!("{qualified} {:?} is forbidden: {cause}", attempt.name)
    };
    ApiError {
        code: StatusCode::FORBIDDEN,
        reason: "Forbidden",
        message,
        details: Some(Box::new(Details {
            name: attempt.name.to_owned(),
            group: resource.group.to_owned(),
            kind: resource.plural.to_owned(),
            ..Details::default()
        })),
    }
}
