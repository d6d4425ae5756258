//! Admission webhooks: the Mutating- and ValidatingWebhookConfigurations in the store are
//! called on create, update, patch and delete, as kube-apiserver's `MutatingAdmissionWebhook`
//! and `ValidatingAdmissionWebhook` plugins call them
//! (`k8s.io/apiserver/pkg/admission/plugin/webhook/{mutating,validating}`).
//!
//! - [`matching`] decides which webhooks apply (pure), [`call`] talks to one webhook,
//!   [`Webhooks`] caches the configurations (re-read after a write to them through this
//!   server, or when a store watch sees one from another server).
//! - Mutating webhooks run one after the other on the defaulted object, their JSON patches
//!   applied in turn (and those with `reinvocationPolicy: IfNeeded` once more when a later
//!   one changed the object); the write path then defaults and validates the result.
//!   Validating webhooks run concurrently after validation; the first refusal (in webhook
//!   order) is the answer.
//! - A webhook that cannot be called, times out or answers nonsense refuses the request with
//!   a 500 (`failurePolicy: Fail`, the default) or is skipped (`Ignore`). A refusal is kube
//!   1.33's `Status`: the webhook's code (at least 400), its message after
//!   `admission webhook "<name>" denied the request: `.
//! - Dry-run requests reach only webhooks declaring `sideEffects: None` or `NoneOnDryRun`.
//! - The webhook configurations themselves (and admission policies) are never sent to
//!   webhooks, so a broken webhook cannot lock itself in.
//!
//! - `matchPolicy: Equivalent` (the default) matches a request through a resource served
//!   from the same storage (keelson has one pair: core and events.k8s.io Events); the
//!   webhook then sees `kind`/`resource` and the object as its rule names them, and the
//!   client's in `requestKind`/`requestResource`.
//!
//! - `matchConditions` (CEL, `keelson_api::admission_policy`) decide whether a webhook is
//!   called: a false one skips it, an error skips it (`Ignore`) or refuses the request with
//!   kube's 403 (`Fail`). ValidatingAdmissionPolicies ([`policy`]) run before the validating
//!   webhooks, from the same cached snapshot.
//!
//! Not done: `authorizer` in CEL expressions; pods' `binding` and CONNECT requests are not sent to webhooks; the webhook
//! configurations' `clientConfig` has no client certificate (kube's admission kubeconfig).

use std::{collections::BTreeMap, sync::Arc};

use axum::http::StatusCode;
use keelson_store::Store;
use serde_json::{Value, json};

use crate::{
    ApiError, UserInfo,
    object::{decode_kv, labels, storage_kind},
    registry::{self, Resource},
    request::Target,
};

mod cache;
pub(crate) mod call;
pub(crate) mod limits;
pub(crate) mod matching;
pub(crate) mod policy;
pub(crate) mod priority;
pub(crate) mod quota;
pub(crate) mod serviceaccount;
pub(crate) mod storageclass;
pub(crate) mod storageprotection;

use cache::CONFIGURATIONS;
pub use cache::Webhooks;

use keelson_api::admission_policy::Match;
use matching::{FailurePolicy, Hook, Operation, RequestFacts};

/// The kinds no webhook is called for (kube's `IsExemptAdmissionConfigurationResource`).
const EXEMPT: &[&str] = &[
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
];

const GROUP: &str = "admissionregistration.k8s.io";

/// Whether writes of `resource` change which webhooks or admission policies exist.
pub(crate) fn is_configuration(resource: &Resource) -> bool {
    resource.group == GROUP
        && CONFIGURATIONS
            .iter()
            .any(|(_, kind)| *kind == resource.kind)
}

/// What admission needs from the request around a write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admit<'a> {
    pub(crate) webhooks: &'a Arc<Webhooks>,
    pub(crate) store: &'a Arc<dyn Store>,
    pub(crate) user: &'a UserInfo,
    /// Escalation prevention for writes of RBAC objects, run before the validating webhooks.
    pub(crate) escalation: crate::auth::rbac::escalation::Escalation<'a>,
    /// `CreateOptions`, `UpdateOptions`, `PatchOptions` or `DeleteOptions`.
    pub(crate) options_kind: &'static str,
    pub(crate) field_manager: Option<&'a str>,
    /// Whether the ServiceAccount admission of pods runs ([`serviceaccount`]).
    pub(crate) service_accounts: bool,
}

/// One admission of an object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub(crate) target: &'a Target,
    pub(crate) name: &'a str,
    pub(crate) operation: Operation,
    pub(crate) dry_run: bool,
}

/// A refusal as kube 1.33's `ToStatusErr` builds it from the webhook's `status`.
fn denied(hook: &str, result: Option<&Value>) -> ApiError {
    let field = |name: &str| {
        result
            .and_then(|r| r.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let code = result
        .and_then(|r| r.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let denied_by = format!("admission webhook \"{hook}\" denied the request");
    let message = match (field("message"), field("reason")) {
        ("", "") => format!("{denied_by} without explanation"),
        ("", reason) => format!("{denied_by}: {reason}"),
        (message, _) => format!("{denied_by}: {message}"),
    };
    ApiError {
        code,
        reason: known_reason(field("reason")),
        message,
        details: None,
    }
}

/// Kubernetes' `StatusReason` values: a webhook's reason is kept when it is one of them.
fn known_reason(reason: &str) -> &'static str {
    const REASONS: &[&str] = &[
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or_default()
}

/// kube's `NewInternalError` around a failed call.
fn call_failed(hook: &str, cause: &str) -> ApiError {
    internal(format!("failed calling webhook \"{hook}\": {cause}"))
}

fn internal(message: String) -> ApiError {
    ApiError {
        code: StatusCode::INTERNAL_SERVER_ERROR,
        reason: "InternalError",
        message: format!("Internal error occurred: {message}"),
        details: None,
    }
}

impl Outcome {
    /// A webhook not called (its `matchConditions` exclude the request).
    fn skipped() -> Self {
        Self::Allowed {
            patch: None,
            warnings: Vec::new(),
        }
    }
}

/// What one call of a webhook came to.
enum Outcome {
    Allowed {
        patch: Option<Value>,
        warnings: Vec<String>,
    },
    Refused(ApiError),
    /// Could not call it (or it answered nonsense): the failure policy decides.
    Failed(String),
}

impl Admit<'_> {
    fn facts<'o>(
        &self,
        attempt: &'o Attempt<'o>,
        object: Option<&'o Value>,
        old: Option<&'o Value>,
    ) -> RequestFacts<'o> {
        let resource = attempt.target.resource;
        let namespace = if resource.group.is_empty() && resource.plural == "namespaces" {
            attempt.name
        } else {
            attempt.target.namespace.as_deref().unwrap_or_default()
        };
        RequestFacts {
            group: resource.group,
            version: resource.version,
            resource: resource.plural,
            subresource: attempt.target.subresource.as_deref().unwrap_or_default(),
            namespace,
            operation: attempt.operation,
            object,
            old_object: old,
        }
    }

    /// The webhooks of `hooks` that apply to the request, each with the resource it sees the
    /// request as (namespace labels read once).
    async fn applicable<'h>(
        &self,
        hooks: &'h [Hook],
        facts: &RequestFacts<'_>,
        resource: &'static Resource,
    ) -> Result<Vec<Invocation<'h>>, ApiError> {
        let candidates: Vec<Invocation<'h>> = hooks
            .iter()
            .filter_map(|hook| {
                let view = if hook.rules_match(facts) {
                    resource
                } else if hook.equivalent {
                    equivalents(resource).find(|eq| hook.rules_match(&as_resource(facts, eq)))?
                } else {
                    return None;
                };
                Some(Invocation { hook, view })
            })
            .collect();
        let mut namespace_labels: Option<BTreeMap<String, String>> = None;
        if let Some(namespace) = facts.namespace_to_look_up()
            && candidates.iter().any(|i| i.hook.selects_namespaces())
        {
            let namespaces =
                registry::find("", "v1", "namespaces").ok_or_else(ApiError::no_route)?;
            let kv = self
                .store
                .get(&namespaces.key(None, namespace), None)
                .await
                .map_err(|e| ApiError::from_store(e, namespaces, namespace))?
                .ok_or_else(|| ApiError::not_found(namespaces, namespace))?;
            namespace_labels = Some(labels(&decode_kv(&kv)?));
        }
        let mut out = Vec::new();
        for invocation in candidates {
            if invocation
                .hook
                .applies(
                    &as_resource(facts, invocation.view),
                    namespace_labels.as_ref(),
                )
                .map_err(|e| internal(e.0))?
            {
                out.push(invocation);
            }
        }
        Ok(out)
    }

    fn options(&self, dry_run: bool) -> Value {
        let mut options = json!({"kind": self.options_kind, "apiVersion": "meta.k8s.io/v1"});
        if dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(manager) = self.field_manager.filter(|m| !m.is_empty()) {
            options["fieldManager"] = json!(manager);
        }
        options
    }

    /// The `request` of the AdmissionReview: `kind` and `resource` as the webhook sees them
    /// (`view`), `requestKind` and `requestResource` as the client asked.
    fn request(
        &self,
        attempt: &Attempt<'_>,
        view: &Resource,
        uid: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Value {
        let sub = attempt.target.subresource.as_deref();
        let kind_of = |r: &Resource| match sub {
            Some("scale") => json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
            _ => json!({"group": r.group, "version": r.version, "kind": r.kind}),
        };
        let gvr =
            |r: &Resource| json!({"group": r.group, "version": r.version, "resource": r.plural});
        let requested = attempt.target.resource;
        // Every authenticated user is in system:authenticated, as kube's authenticators say.
        let mut groups = self.user.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_owned());
        }
        let mut request = json!({
            "uid": uid,
            "kind": kind_of(view),
            "resource": gvr(view),
            "requestKind": kind_of(requested),
            "requestResource": gvr(requested),
            "name": attempt.name,
            "operation": attempt.operation.as_str(),
            "userInfo": {"username": self.user.name, "groups": groups},
            "object": object.cloned().unwrap_or(Value::Null),
            "oldObject": old.cloned().unwrap_or(Value::Null),
            "dryRun": attempt.dry_run,
            "options": self.options(attempt.dry_run),
        });
        if let Some(sub) = sub {
            request["subResource"] = json!(sub);
            request["requestSubResource"] = json!(sub);
        }
        // A Namespace's own requests carry its name as their namespace, as in kube.
        let namespace = self.facts(attempt, None, None).namespace;
        if !namespace.is_empty() {
            request["namespace"] = json!(namespace);
        }
        request
    }

    /// Calls one webhook with the objects (in stored form) shown as its resource shows them.
    async fn call(
        &self,
        invocation: &Invocation<'_>,
        attempt: &Attempt<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
        mutating: bool,
    ) -> Outcome {
        let hook = invocation.hook;
        if !hook.match_conditions.is_empty() {
            let served = object.map(|o| present(attempt, invocation.view, o.clone()));
            let served_old = old.map(|o| present(attempt, invocation.view, o.clone()));
            let request = self.cel_request(attempt, invocation.view);
            let input = keelson_api::admission_policy::Input {
                object: served.as_ref(),
                old_object: served_old.as_ref(),
                request: Some(&request),
                ..Default::default()
            };
            match hook.match_conditions.evaluate(&input) {
                Match::Matches => {}
                Match::NoMatch(_) => return Outcome::skipped(),
                Match::Error(e) => match hook.failure_policy {
                    FailurePolicy::Ignore => return Outcome::skipped(),
                    FailurePolicy::Fail => {
                        tracing::warn!(
                            webhook = hook.name,
                            error = e,
                            "failed evaluating match conditions, failing closed"
                        );
                        return Outcome::Refused(policy::forbidden(attempt, &e));
                    }
                },
            }
        }
        if attempt.dry_run && !matches!(hook.side_effects.as_str(), "None" | "NoneOnDryRun") {
            return Outcome::Refused(ApiError::bad_request(format!(
                "admission webhook \"{}\" does not support dry run",
                hook.name
            )));
        }
        let version = match call::review_version(&hook.review_versions) {
            Ok(version) => version,
            Err(e) => return Outcome::Failed(e.0),
        };
        let uid = uuid::Uuid::new_v4().to_string();
        let object = object.map(|o| present(attempt, invocation.view, o.clone()));
        let old = old.map(|o| present(attempt, invocation.view, o.clone()));
        let request = self.request(
            attempt,
            invocation.view,
            &uid,
            object.as_ref(),
            old.as_ref(),
        );
        let review = call::review(version, request);
        let answer = match call::post(
            self.store.as_ref(),
            &hook.endpoint,
            hook.ca_bundle.as_deref(),
            &review,
            hook.timeout,
        )
        .await
        {
            Ok(answer) => answer,
            Err(e) => return Outcome::Failed(e.0),
        };
        match call::verify(&answer, version, &uid, mutating) {
            Err(e) => Outcome::Failed(format!("received invalid webhook response: {}", e.0)),
            Ok(verdict) if !verdict.allowed => {
                Outcome::Refused(denied(&hook.name, verdict.result.as_ref()))
            }
            Ok(verdict) => Outcome::Allowed {
                patch: verdict.patch,
                warnings: verdict.warnings,
            },
        }
    }

    /// Runs the mutating webhooks that apply on `object` (the stored form of the new object;
    /// `None` on DELETE), applying their patches in turn. Returns whether the object changed;
    /// the webhooks' warnings are added to `warnings`.
    pub(crate) async fn mutate(
        &self,
        attempt: &Attempt<'_>,
        mut object: Option<&mut Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ApiError> {
        let resource = attempt.target.resource;
        if EXEMPT.contains(&resource.kind) && resource.group == GROUP {
            return Ok(false);
        }
        let snapshot = self.webhooks.snapshot(self.store).await?;
        if snapshot.mutating.is_empty() {
            return Ok(false);
        }
        let invocations = {
            let facts = self.facts(attempt, object.as_deref(), old);
            self.applicable(&snapshot.mutating, &facts, resource)
                .await?
        };
        // kube's reinvocation: a change by one webhook marks every `IfNeeded` webhook that
        // ran before it; those run once more, in order, after the first pass.
        let mut changed = false;
        let mut invoked = Vec::new();
        let mut again = Vec::new();
        for (i, invocation) in invocations.iter().enumerate() {
            if self
                .mutate_once(invocation, attempt, object.as_deref_mut(), old, warnings)
                .await?
            {
                changed = true;
                again.extend(invoked.iter().copied());
            }
            if invocation.hook.reinvoke {
                invoked.push(i);
            }
        }
        again.sort_unstable();
        again.dedup();
        for i in again {
            changed |= self
                .mutate_once(
                    &invocations[i],
                    attempt,
                    object.as_deref_mut(),
                    old,
                    warnings,
                )
                .await?;
        }
        Ok(changed)
    }

    /// One mutating webhook on `object` (stored form), patched in the webhook's view.
    async fn mutate_once(
        &self,
        invocation: &Invocation<'_>,
        attempt: &Attempt<'_>,
        object: Option<&mut Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ApiError> {
        let hook = invocation.hook;
        match self
            .call(invocation, attempt, object.as_deref(), old, true)
            .await
        {
            Outcome::Refused(e) => Err(e),
            Outcome::Failed(cause) => match hook.failure_policy {
                FailurePolicy::Fail => Err(call_failed(&hook.name, &cause)),
                FailurePolicy::Ignore => {
                    tracing::warn!(
                        webhook = hook.name,
                        configuration = hook.configuration,
                        cause,
                        "failed calling webhook, failing open"
                    );
                    Ok(false)
                }
            },
            Outcome::Allowed {
                patch,
                warnings: said,
            } => {
                warnings.extend(said);
                let Some(patch) = patch.filter(|p| p.as_array().is_some_and(|a| !a.is_empty()))
                else {
                    return Ok(false);
                };
                let Some(object) = object else {
                    return Err(internal(format!(
                        "admission webhook \"{}\" attempted to modify the object, which is not \
                         supported for this operation",
                        hook.name
                    )));
                };
                let operations: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    call_failed(
                        &hook.name,
                        &format!("received undecodable patch in webhook response: {e}"),
                    )
                })?;
                let before = present(attempt, invocation.view, object.clone());
                let mut served = before.clone();
                json_patch::patch(&mut served, &operations).map_err(|e| internal(e.to_string()))?;
                if served == before {
                    return Ok(false);
                }
                *object = store_form(attempt, invocation.view, served);
                Ok(true)
            }
        }
    }

    /// Runs the validating webhooks that apply, concurrently; the first refusal in webhook
    /// order is the answer. `object` and `old` are in stored form.
    pub(crate) async fn validate(
        &self,
        attempt: &Attempt<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let resource = attempt.target.resource;
        crate::auth::node::restriction::validate(self.user, attempt.target, object, old)?;
        self.escalation
            .check(self.user, attempt.target, attempt.name, object, old)
            .await?;
        if EXEMPT.contains(&resource.kind) && resource.group == GROUP {
            return Ok(());
        }
        let snapshot = self.webhooks.snapshot(self.store).await?;
        // kube runs the ValidatingAdmissionPolicy plugin before the validating webhooks.
        self.run_policies(&snapshot.policies, attempt, object, old, warnings)
            .await?;
        if snapshot.validating.is_empty() {
            return Ok(());
        }
        let facts = self.facts(attempt, object, old);
        let invocations = self
            .applicable(&snapshot.validating, &facts, resource)
            .await?;
        let outcomes = futures_util::future::join_all(
            invocations
                .iter()
                .map(|invocation| self.call(invocation, attempt, object, old, false)),
        )
        .await;
        let mut first = None;
        for (invocation, outcome) in invocations.iter().zip(outcomes) {
            let hook = invocation.hook;
            let error = match outcome {
                Outcome::Allowed { warnings: said, .. } => {
                    warnings.extend(said);
                    continue;
                }
                Outcome::Refused(e) => e,
                Outcome::Failed(cause) => match hook.failure_policy {
                    FailurePolicy::Ignore => {
                        tracing::warn!(
                            webhook = hook.name,
                            configuration = hook.configuration,
                            cause,
                            "failed calling webhook, failing open"
                        );
                        continue;
                    }
                    FailurePolicy::Fail => call_failed(&hook.name, &cause),
                },
            };
            first.get_or_insert(error);
        }
        first.map_or(Ok(()), Err)
    }
}

/// A webhook that applies, and the resource it sees the request as: the requested one, or
/// with `matchPolicy: Equivalent` one served from the same storage (events.k8s.io Events for
/// a webhook on core Events and the other way round).
#[derive(Debug, Clone, Copy)]
struct Invocation<'h> {
    hook: &'h Hook,
    view: &'static Resource,
}

/// The other resources stored as `resource` is (kube's `EquivalentResourcesFor`).
fn equivalents(resource: &'static Resource) -> impl Iterator<Item = &'static Resource> {
    let stored = storage_kind(resource);
    registry::RESOURCES.iter().filter(move |r| {
        r.plural == resource.plural
            && storage_kind(r) == stored
            && (r.group, r.version) != (resource.group, resource.version)
    })
}

/// `facts` as if the request were for `resource`.
fn as_resource<'a>(facts: &RequestFacts<'a>, resource: &'a Resource) -> RequestFacts<'a> {
    RequestFacts {
        group: resource.group,
        version: resource.version,
        resource: resource.plural,
        ..*facts
    }
}

/// The stored object as `view` shows it (the Scale of a scale request is already in its own
/// form).
fn present(attempt: &Attempt<'_>, view: &Resource, object: Value) -> Value {
    if attempt.target.subresource.as_deref() == Some("scale") {
        object
    } else {
        view.present(object)
    }
}

/// The inverse of [`present`].
fn store_form(attempt: &Attempt<'_>, view: &Resource, object: Value) -> Value {
    if attempt.target.subresource.as_deref() == Some("scale") {
        object
    } else {
        view.to_storage(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_kube_1_33_words_them() {
        for (result, code, reason, message) in [
            (
                Some(json!({"code": 403, "reason": "Forbidden", "message": "no privileged pods"})),
                403,
                "Forbidden",
                "admission webhook \"deny.example.com\" denied the request: no privileged pods",
            ),
            (
                Some(json!({"reason": "policy says no"})),
                400,
                "",
                "admission webhook \"deny.example.com\" denied the request: policy says no",
            ),
            (
                Some(json!({"code": 200})),
                400,
                "",
                "admission webhook \"deny.example.com\" denied the request without explanation",
            ),
            (
                None,
                400,
                "",
                "admission webhook \"deny.example.com\" denied the request without explanation",
            ),
        ] {
            let error = denied("deny.example.com", result.as_ref());
            assert_eq!(
                (error.code.as_u16(), error.reason, error.message.as_str()),
                (code, reason, message)
            );
        }
    }

    #[test]
    fn only_resources_sharing_storage_are_equivalent() {
        let names = |group: &str, plural: &str| -> Vec<String> {
            let resource = registry::find(group, "v1", plural).expect("served");
            equivalents(resource).map(|r| r.api_version()).collect()
        };
        assert_eq!(names("", "events"), ["events.k8s.io/v1"]);
        assert_eq!(names("events.k8s.io", "events"), ["v1"]);
        assert!(names("", "pods").is_empty());
    }

    #[test]
    fn failed_calls_are_internal_errors_naming_the_webhook() {
        let error = call_failed(
            "hook.example.com",
            "failed to call webhook: Post \"https://x\": dial tcp",
        );
        assert_eq!(error.code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            error.message,
            "Internal error occurred: failed calling webhook \"hook.example.com\": failed to call webhook: Post \"https://x\": dial tcp"
        );
    }
}
