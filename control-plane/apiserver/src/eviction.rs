//! `POST pods/<name>/eviction` (a policy/v1 `Eviction`): a pod delete that respects the
//! PodDisruptionBudgets covering the pod, as kube-apiserver's
//! `pkg/registry/core/pod/storage/eviction.go` does.
//!
//! - A pod that is finished (`Succeeded`/`Failed`), `Pending` or already being deleted is
//!   deleted without looking at budgets.
//! - No budget selects the pod: it is deleted with the eviction's `deleteOptions`.
//! - More than one does: a 500 (the subresource does not support that).
//! - One does: an unready pod is deleted without spending the budget when the budget's
//!   `unhealthyPodEvictionPolicy` is `AlwaysAllow`, or when the budget is healthy
//!   (`currentHealthy >= desiredHealthy > 0`), with a resourceVersion precondition so that it
//!   did not become ready meanwhile. Otherwise `status.disruptionsAllowed` is decremented
//!   (and the pod recorded in `status.disruptedPods`) by a conditional update, retried on a
//!   conflict, then the pod is deleted; a budget with nothing left to allow answers 429
//!   `TooManyRequests` with a `DisruptionBudget` cause, which `kubectl drain` retries.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use keelson_api::selectors::LabelSelector;
use keelson_store::{ListOptions, Store};
use serde_json::{Value, json};

use crate::{
    ApiError,
    admission::Admit,
    error::{Cause, Details},
    handlers::Written,
    object::{decode_kv, encode, meta_str},
    read::get_kv,
    registry,
    request::{Params, Target, WriteOptions},
    write,
};

/// How often a budget is re-read after a conflicting write (kube retries 20 times).
const ATTEMPTS: usize = 20;

/// kube's message when a budget allows no disruption.
pub(crate) const VIOLATES_BUDGET: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// What an eviction does about one pod and the budget covering it (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Delete the pod; `precondition` pins its resourceVersion (it must not change meanwhile).
    Delete { precondition: bool },
    /// Delete the pod after writing this budget status (one disruption spent).
    Spend(Value),
    /// Refuse.
    Refuse(ApiError),
}

/// Whether the pod may be deleted without looking at budgets (kube's `canIgnorePDB`).
pub(crate) fn ignores_budgets(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed" | "Pending")
    ) || meta_str(pod, "deletionTimestamp").is_some()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The budgets among `budgets` selecting `pod` (a budget with an empty or invalid selector
/// selects nothing here).
pub(crate) fn budgets_of<'a>(pod: &Value, budgets: &'a [Value]) -> Vec<&'a Value> {
    let labels: BTreeMap<String, String> = pod
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    budgets
        .iter()
        .filter(|budget| {
            let Some(selector) = budget
                .pointer("/spec/selector")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
            else {
                return false;
            };
            LabelSelector::from_label_selector(&selector)
                .is_ok_and(|s| !s.is_empty() && s.matches(&labels))
        })
        .collect()
}

/// kube's 429 with a `DisruptionBudget` cause; `retry_after` (seconds, 0 for none) becomes
/// `retryAfterSeconds` and the `Retry-After` header: kube sends 10 while a budget awaits its
/// controller (client-go then retries by itself) and none when the budget is spent.
fn too_many_requests(cause: String, retry_after: i32) -> ApiError {
    ApiError {
        code: StatusCode::TOO_MANY_REQUESTS,
        reason: "TooManyRequests",
        message: VIOLATES_BUDGET.to_owned(),
        details: Some(Box::new(Details {
            causes: vec![Cause {
                reason: "DisruptionBudget".to_owned(),
                message: cause,
                field: String::new(),
            }],
            retry_after_seconds: retry_after,
            ..Details::default()
        })),
    }
}

fn status_int(budget: &Value, field: &str) -> i64 {
    budget
        .pointer(&format!("/status/{field}"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// What evicting `pod` (not one [`ignores_budgets`] lets go) does with `budget`, the one budget
/// selecting it; `now` is an RFC 3339 time for `disruptedPods`.
pub(crate) fn decide(pod: &Value, budget: &Value, now: &str, dry_run: bool) -> Verdict {
    let name = meta_str(budget, "name").unwrap_or_default();
    let current = status_int(budget, "currentHealthy");
    let desired = status_int(budget, "desiredHealthy");
    if !is_ready(pod) {
        let always =
            budget.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow"));
        if always || (current >= desired && desired > 0) {
            return Verdict::Delete { precondition: true };
        }
    }
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status_int(budget, "observedGeneration") < generation {
        return Verdict::Refuse(too_many_requests(
            format!("The disruption budget {name} is still being processed by the server."),
            10,
        ));
    }
    let allowed = status_int(budget, "disruptionsAllowed");
    let forbidden = |why: &str| {
        ApiError::forbidden(format!(
            "poddisruptionbudget.policy \"{name}\" is forbidden: {why}"
        ))
    };
    if allowed < 0 {
        return Verdict::Refuse(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = budget
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len);
    if disrupted > 2000 {
        return Verdict::Refuse(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Verdict::Refuse(too_many_requests(
            format!(
                "The disruption budget {name} needs {desired} healthy pods and has {current} currently"
            ),
            0,
        ));
    }
    let mut status = budget.get("status").cloned().unwrap_or_else(|| json!({}));
    status["disruptionsAllowed"] = json!(allowed - 1);
    if allowed - 1 == 0 {
        set_allowed_condition(&mut status, false);
    }
    if !dry_run {
        let pod_name = meta_str(pod, "name").unwrap_or_default();
        if !status["disruptedPods"].is_object() {
            status["disruptedPods"] = json!({});
        }
        status["disruptedPods"][pod_name] = json!(now);
    }
    Verdict::Spend(status)
}

/// kube's `UpdateDisruptionAllowedCondition` on a status whose `disruptionsAllowed` is now 0
/// (`allowed` false) or more.
fn set_allowed_condition(status: &mut Value, allowed: bool) {
    let (value, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let observed = status
        .get("observedGeneration")
        .cloned()
        .unwrap_or(json!(0));
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else {
        return;
    };
    let now = crate::object::now_rfc3339(0);
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionAllowed")
    {
        Some(condition) => {
            if condition["status"] != value {
                condition["lastTransitionTime"] = json!(now);
            }
            condition["status"] = json!(value);
            condition["reason"] = json!(reason);
            condition["observedGeneration"] = observed;
        }
        None => conditions.push(json!({
            "type": "DisruptionAllowed",
            "status": value,
            "reason": reason,
            "message": "",
            "observedGeneration": observed,
            "lastTransitionTime": now,
        })),
    }
}

/// The eviction's `deleteOptions` with the request's `dryRun` propagated into it (kube's
/// `propagateDryRun`).
fn delete_options(eviction: &Value, dry_run: bool) -> Result<Value, ApiError> {
    let mut options = eviction
        .get("deleteOptions")
        .filter(|o| o.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let body_dry_run = options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    match (body_dry_run, dry_run) {
        (false, true) => options["dryRun"] = json!(["All"]),
        (true, true) if options["dryRun"] != json!(["All"]) => {
            return Err(ApiError::bad_request(format!(
                "Non-matching dry-run options in request and content: [All] and {}",
                options["dryRun"]
            )));
        }
        _ => {}
    }
    Ok(options)
}

/// `POST pods/<name>/eviction`.
pub(crate) async fn evict(
    store: &dyn Store,
    target: &Target,
    name: &str,
    params: &Params,
    body: &[u8],
    write_options: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let eviction: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if meta_str(&eviction, "name") != Some(name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let options = delete_options(&eviction, write_options.dry_run)?;
    let dry_run = options["dryRun"] == json!(["All"]);
    let pods = Target {
        subresource: None,
        ..target.clone()
    };
    let pod = decode_kv(&get_kv(store, &pods, name).await?)?;
    let rv_given = options
        .pointer("/preconditions/resourceVersion")
        .is_some_and(|v| !v.is_null());
    let pinned = |mut options: Value, pod: &Value| {
        if !rv_given && let Some(rv) = meta_str(pod, "resourceVersion") {
            options["preconditions"]["resourceVersion"] = json!(rv);
        }
        options
    };
    if ignores_budgets(&pod) {
        let terminal = matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ) || meta_str(&pod, "deletionTimestamp").is_some();
        let options = if terminal {
            options
        } else {
            pinned(options, &pod)
        };
        return delete(store, &pods, name, params, &options, write_options, admit).await;
    }
    let budgets_target = Target {
        resource: registry::find("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(ApiError::no_route)?,
        namespace: target.namespace.clone(),
        name: None,
        subresource: None,
        custom: None,
    };
    let mut precondition = false;
    let mut budget_name = String::new();
    let mut settled = false;
    for _ in 0..ATTEMPTS {
        let listed = store
            .list(&budgets_target.prefix(), ListOptions::default())
            .await
            .map_err(|e| ApiError::from_store(e, budgets_target.resource, ""))?;
        let mut revisions = Vec::new();
        let mut budgets = Vec::new();
        for kv in &listed.items {
            budgets.push(decode_kv(kv)?);
            revisions.push(kv.mod_revision);
        }
        let matching = budgets_of(&pod, &budgets);
        let budget = match matching.as_slice() {
            [] => {
                settled = true;
                break;
            }
            [one] => *one,
            _ => {
                return Err(ApiError {
                    code: StatusCode::INTERNAL_SERVER_ERROR,
                    reason: "",
                    message: "This pod has more than one PodDisruptionBudget, which the eviction \
                              subresource does not support."
                        .to_owned(),
                    details: None,
                });
            }
        };
        meta_str(budget, "name")
            .unwrap_or_default()
            .clone_into(&mut budget_name);
        let now = crate::object::now_rfc3339(0);
        match decide(&pod, budget, &now, dry_run) {
            Verdict::Refuse(error) => return Err(error),
            Verdict::Delete { precondition: pin } => {
                precondition = pin;
                settled = true;
                break;
            }
            Verdict::Spend(_) if dry_run => {
                settled = true;
                break;
            }
            Verdict::Spend(status) => {
                let index = budgets
                    .iter()
                    .position(|b| std::ptr::eq(b, budget))
                    .unwrap_or_default();
                let mut updated = budget.clone();
                updated["status"] = status;
                match store
                    .update(
                        &budgets_target.key(&budget_name),
                        encode(&updated),
                        revisions[index],
                    )
                    .await
                {
                    Ok(_) => {
                        settled = true;
                        break;
                    }
                    Err(keelson_store::StoreError::Conflict { .. }) => {}
                    Err(e) => {
                        return Err(ApiError::from_store(
                            e,
                            budgets_target.resource,
                            &budget_name,
                        ));
                    }
                }
            }
        }
    }
    if !settled {
        return Err(ApiError {
            code: StatusCode::GATEWAY_TIMEOUT,
            reason: "Timeout",
            message: format!(
                "couldn't update PodDisruptionBudget \"{budget_name}\" due to conflicts"
            ),
            details: None,
        });
    }
    let options = if precondition {
        pinned(options, &pod)
    } else {
        options
    };
    match delete(store, &pods, name, params, &options, write_options, admit).await {
        Err(e) if e.reason == "Conflict" && precondition && !rv_given => Err(too_many_requests(
            format!("The disruption budget {budget_name} is still being processed by the server."),
            10,
        )),
        result => result,
    }
}

async fn delete(
    store: &dyn Store,
    pods: &Target,
    name: &str,
    params: &Params,
    options: &Value,
    write_options: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let body = serde_json::to_vec(options).unwrap_or_default();
    let mut params = params.clone();
    params.remove("dryRun");
    write::delete(store, pods, name, &params, &body, write_options, admit).await?;
    Ok(Written {
        code: StatusCode::CREATED,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: bool) -> Value {
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}, "resourceVersion": "7"},
               "status": {"phase": phase,
                          "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    fn budget(allowed: i64, current: i64, desired: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": 1},
               "spec": {"selector": {"matchLabels": {"app": "web"}}},
               "status": {"disruptionsAllowed": allowed, "currentHealthy": current,
                          "desiredHealthy": desired, "expectedPods": 2, "observedGeneration": 1}})
    }

    #[test]
    fn finished_pending_and_deleted_pods_ignore_budgets() {
        let cases = [
            (pod("Succeeded", false), true),
            (pod("Failed", false), true),
            (pod("Pending", false), true),
            (pod("Running", true), false),
            (
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}}),
                true,
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(ignores_budgets(&pod), want, "{pod}");
        }
    }

    #[test]
    fn budgets_select_by_label_and_empty_selectors_select_nothing() {
        let budgets = [
            budget(1, 2, 1),
            json!({"metadata": {"name": "all"}, "spec": {"selector": {}}}),
            json!({"metadata": {"name": "none"}, "spec": {}}),
            json!({"metadata": {"name": "db"}, "spec": {"selector": {"matchLabels": {"app": "db"}}}}),
        ];
        let names: Vec<&str> = budgets_of(&pod("Running", true), &budgets)
            .into_iter()
            .map(|b| meta_str(b, "name").unwrap())
            .collect();
        assert_eq!(names, vec!["web"]);
    }

    #[test]
    fn a_budget_with_nothing_allowed_refuses_with_kubes_429() {
        let Verdict::Refuse(error) = decide(&pod("Running", true), &budget(0, 2, 2), "t", false)
        else {
            panic!("expected a refusal");
        };
        assert_eq!(
            error.status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                   "reason": "TooManyRequests",
                   "details": {"causes": [{"reason": "DisruptionBudget",
                       "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]},
                   "code": 429})
        );
    }

    #[test]
    fn verdicts() {
        let t = "2026-12-07T00:00:00Z";
        // One allowed: spent, recorded, and the condition turns False.
        let Verdict::Spend(status) = decide(&pod("Running", true), &budget(1, 3, 2), t, false)
        else {
            panic!("expected a spend");
        };
        assert_eq!(status["disruptionsAllowed"], 0);
        assert_eq!(status["disruptedPods"], json!({"web-1": t}));
        assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");
        assert_eq!(status["conditions"][0]["status"], "False");
        // Two allowed: one left, no condition change; a dry run records nothing.
        let Verdict::Spend(status) = decide(&pod("Running", true), &budget(2, 4, 2), t, true)
        else {
            panic!("expected a spend");
        };
        assert_eq!(status["disruptionsAllowed"], 1);
        assert!(status.get("disruptedPods").is_none());
        assert!(status.get("conditions").is_none());
        // An unready pod of a healthy budget goes without spending it.
        assert_eq!(
            decide(&pod("Running", false), &budget(0, 2, 2), t, false),
            Verdict::Delete { precondition: true }
        );
        // ... not when the budget is short, unless the policy is AlwaysAllow.
        assert!(matches!(
            decide(&pod("Running", false), &budget(0, 1, 2), t, false),
            Verdict::Refuse(_)
        ));
        let mut always = budget(0, 1, 2);
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert_eq!(
            decide(&pod("Running", false), &always, t, false),
            Verdict::Delete { precondition: true }
        );
        // A budget its controller has not seen yet: 429.
        let mut stale = budget(5, 5, 0);
        stale["metadata"]["generation"] = json!(2);
        let Verdict::Refuse(error) = decide(&pod("Running", true), &stale, t, false) else {
            panic!("expected a refusal");
        };
        assert_eq!(
            error.status()["details"],
            json!({"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web is still being processed by the server."}],
                "retryAfterSeconds": 10})
        );
        let response = axum::response::IntoResponse::into_response(error);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().ok()),
            Some(Some("10")),
            "client-go retries a 429 that carries Retry-After"
        );
        // A spent budget: no Retry-After (as kube: retry after 0 seconds is left out).
        let Verdict::Refuse(error) = decide(&pod("Running", true), &budget(0, 2, 2), t, false)
        else {
            panic!("expected a refusal");
        };
        let response = axum::response::IntoResponse::into_response(error);
        assert!(response.headers().get("retry-after").is_none());
    }
}
