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
//! Not done: `matchConditions` (CEL) are not evaluated (such a webhook is called as if they
//! held); `matchPolicy: Equivalent` matches as `Exact` (keelson serves each resource in one
//! version, so only events.k8s.io Events have an equivalent, core Events); pods' `binding`
//! and CONNECT requests are not sent to webhooks.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use axum::http::StatusCode;
use futures_util::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use keelson_store::{ListOptions, Store};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    ApiError, UserInfo,
    object::{decode_kv, labels},
    registry::{self, Resource},
    request::Target,
};

pub(crate) mod call;
pub(crate) mod matching;

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

/// Whether writes of `resource` change which webhooks exist.
pub(crate) fn is_configuration(resource: &Resource) -> bool {
    resource.group == GROUP
        && matches!(
            resource.kind,
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"
        )
}

/// The webhooks of the stored configurations, in calling order.
#[derive(Debug, Default)]
struct Snapshot {
    /// The [`Webhooks::generation`] it was read at.
    generation: u64,
    mutating: Vec<Hook>,
    validating: Vec<Hook>,
}

/// The cached webhook configurations of a server.
#[derive(Debug)]
pub struct Webhooks {
    snapshot: tokio::sync::RwLock<Option<Arc<Snapshot>>>,
    /// Counts the changes of the configurations: a snapshot of an older generation is read
    /// again before use.
    generation: AtomicU64,
    /// Whether store watches keep `generation` up to date.
    watching: AtomicBool,
    /// Serialises re-reads.
    loading: tokio::sync::Mutex<()>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            snapshot: tokio::sync::RwLock::new(None),
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

fn configurations<T: DeserializeOwned>(
    items: &[keelson_store::KeyValue],
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for kv in items {
        let value = decode_kv(kv)?;
        match serde_json::from_value(value) {
            Ok(configuration) => out.push(configuration),
            Err(error) => tracing::warn!(key = kv.key, %error, "unreadable webhook configuration"),
        }
    }
    Ok(out)
}

impl Webhooks {
    /// Marks the configurations as changed: the next admission reads them again.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The cached snapshot, if it is of the current generation.
    async fn current(&self) -> Option<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::SeqCst);
        self.snapshot
            .read()
            .await
            .as_ref()
            .filter(|s| s.generation == generation)
            .map(Arc::clone)
    }

    /// The current webhooks: cached, or read from the store when they may have changed.
    async fn snapshot(self: &Arc<Self>, store: &Arc<dyn Store>) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(snapshot) = self.current().await {
            return Ok(snapshot);
        }
        let _loading = self.loading.lock().await;
        if let Some(snapshot) = self.current().await {
            return Ok(snapshot);
        }
        // Taken before reading: a change during the read makes this snapshot outdated at once.
        let generation = self.generation.load(Ordering::SeqCst);
        let read = |plural: &'static str| async move {
            let resource = registry::find(GROUP, "v1", plural).ok_or_else(ApiError::no_route)?;
            store
                .list(&resource.prefix(), ListOptions::default())
                .await
                .map_err(|e| ApiError::from_store(e, resource, ""))
        };
        let mutating = read("mutatingwebhookconfigurations").await?;
        let validating = read("validatingwebhookconfigurations").await?;
        let snapshot = Arc::new(Snapshot {
            generation,
            mutating: matching::mutating_hooks(configurations::<
                admissionregistration::MutatingWebhookConfiguration,
            >(&mutating.items)?),
            validating: matching::validating_hooks(configurations::<
                admissionregistration::ValidatingWebhookConfiguration,
            >(&validating.items)?),
        });
        *self.snapshot.write().await = Some(Arc::clone(&snapshot));
        if !self.watching.swap(true, Ordering::SeqCst) {
            let from = mutating.revision.min(validating.revision);
            for plural in [
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ] {
                if let Some(resource) = registry::find(GROUP, "v1", plural) {
                    tokio::spawn(watch(
                        Arc::clone(store),
                        resource.prefix(),
                        from,
                        Arc::downgrade(self),
                    ));
                }
            }
        }
        Ok(snapshot)
    }
}

/// Marks `webhooks` stale on every change under `prefix` (writes by other API servers on
/// the same store); when the watch ends, marks them stale and lets the next read restart it.
async fn watch(store: Arc<dyn Store>, prefix: String, from: i64, webhooks: Weak<Webhooks>) {
    let stream = store.watch(&prefix, from).await;
    drop(store);
    if let Ok(mut stream) = stream {
        while let Some(event) = stream.next().await {
            let Some(webhooks) = webhooks.upgrade() else {
                return;
            };
            webhooks.invalidate();
            if event.is_err() {
                break;
            }
        }
    }
    if let Some(webhooks) = webhooks.upgrade() {
        webhooks.watching.store(false, Ordering::SeqCst);
        webhooks.invalidate();
    }
}

/// What admission needs from the request around a write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admit<'a> {
    pub(crate) webhooks: &'a Arc<Webhooks>,
    pub(crate) store: &'a Arc<dyn Store>,
    pub(crate) user: &'a UserInfo,
    /// `CreateOptions`, `UpdateOptions`, `PatchOptions` or `DeleteOptions`.
    pub(crate) options_kind: &'static str,
    pub(crate) field_manager: Option<&'a str>,
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

    /// The webhooks of `hooks` that apply to the request (namespace labels read once).
    async fn applicable<'h>(
        &self,
        hooks: &'h [Hook],
        facts: &RequestFacts<'_>,
    ) -> Result<Vec<&'h Hook>, ApiError> {
        let candidates: Vec<&Hook> = hooks.iter().filter(|h| h.rules_match(facts)).collect();
        let mut namespace_labels: Option<BTreeMap<String, String>> = None;
        if let Some(namespace) = facts.namespace_to_look_up()
            && candidates.iter().any(|h| h.selects_namespaces())
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
        for hook in candidates {
            if hook
                .applies(facts, namespace_labels.as_ref())
                .map_err(|e| internal(e.0))?
            {
                out.push(hook);
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

    /// The `request` of the AdmissionReview for `hook`.
    fn request(
        &self,
        attempt: &Attempt<'_>,
        uid: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Value {
        let resource = attempt.target.resource;
        let (kind, sub) = match attempt.target.subresource.as_deref() {
            Some("scale") => (
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
                Some("scale"),
            ),
            sub => (
                json!({"group": resource.group, "version": resource.version, "kind": resource.kind}),
                sub,
            ),
        };
        let gvr = json!({"group": resource.group, "version": resource.version, "resource": resource.plural});
        // Every authenticated user is in system:authenticated, as kube's authenticators say.
        let mut groups = self.user.groups.clone();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_owned());
        }
        let mut request = json!({
            "uid": uid,
            "kind": kind,
            "resource": gvr,
            "requestKind": kind,
            "requestResource": gvr,
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

    async fn call(
        &self,
        hook: &Hook,
        attempt: &Attempt<'_>,
        object: Option<&Value>,
        old: Option<&Value>,
        mutating: bool,
    ) -> Outcome {
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
        let review = call::review(version, self.request(attempt, &uid, object, old));
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
        object: Option<&mut Value>,
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
        let old_served = old.map(|o| present(attempt, o.clone()));
        let mut served = object.as_deref().map(|o| present(attempt, o.clone()));
        let hooks = {
            let facts = self.facts(attempt, served.as_ref(), old_served.as_ref());
            self.applicable(&snapshot.mutating, &facts).await?
        };
        // kube's reinvocation: a change by one webhook marks every `IfNeeded` webhook that
        // ran before it; those run once more, in order, after the first pass.
        let mut changed = false;
        let mut invoked = Vec::new();
        let mut again = Vec::new();
        for (i, hook) in hooks.iter().enumerate() {
            if self
                .mutate_once(
                    hook,
                    attempt,
                    served.as_mut(),
                    old_served.as_ref(),
                    warnings,
                )
                .await?
            {
                changed = true;
                again.extend(invoked.iter().copied());
            }
            if hook.reinvoke {
                invoked.push(i);
            }
        }
        again.sort_unstable();
        again.dedup();
        for i in again {
            changed |= self
                .mutate_once(
                    hooks[i],
                    attempt,
                    served.as_mut(),
                    old_served.as_ref(),
                    warnings,
                )
                .await?;
        }
        if changed && let (Some(object), Some(served)) = (object, served) {
            *object = attempt.target.resource.to_storage(served);
        }
        Ok(changed)
    }

    async fn mutate_once(
        &self,
        hook: &Hook,
        attempt: &Attempt<'_>,
        served: Option<&mut Value>,
        old: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ApiError> {
        match self.call(hook, attempt, served.as_deref(), old, true).await {
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
                let Some(object) = served else {
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
                let before = object.clone();
                json_patch::patch(object, &operations).map_err(|e| internal(e.to_string()))?;
                Ok(*object != before)
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
        if EXEMPT.contains(&resource.kind) && resource.group == GROUP {
            return Ok(());
        }
        let snapshot = self.webhooks.snapshot(self.store).await?;
        if snapshot.validating.is_empty() {
            return Ok(());
        }
        let served = object.map(|o| present(attempt, o.clone()));
        let old_served = old.map(|o| present(attempt, o.clone()));
        let facts = self.facts(attempt, served.as_ref(), old_served.as_ref());
        let hooks = self.applicable(&snapshot.validating, &facts).await?;
        let outcomes = futures_util::future::join_all(
            hooks
                .iter()
                .map(|hook| self.call(hook, attempt, served.as_ref(), old_served.as_ref(), false)),
        )
        .await;
        let mut first = None;
        for (hook, outcome) in hooks.iter().zip(outcomes) {
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

/// The object as the webhook's version shows it (the Scale of a scale request is already
/// in its own form).
fn present(attempt: &Attempt<'_>, object: Value) -> Value {
    if attempt.target.subresource.as_deref() == Some("scale") {
        object
    } else {
        attempt.target.resource.present(object)
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
