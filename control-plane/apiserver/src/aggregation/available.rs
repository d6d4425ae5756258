//! The `Available` condition of APIServices, as kube-aggregator's
//! `AvailableConditionController` sets it: local APIServices are always available; a
//! Service-backed one needs its Service, a ready endpoint for the port, and a 2xx answer to
//! `GET /apis/<group>/<version>` (asked as `system:kube-aggregator` in `system:masters`)
//! within five seconds.

use std::time::Duration;

use axum::{
    body::Body,
    http::{HeaderValue, Request, header},
};
use keelson_store::Store;
use serde_json::{Value, json};

use super::{AggregatorClient, Backend, backend_of, list, send};
use crate::{ApiError, AppState, UserInfo, object, registry};

/// How long the discovery check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the check found: `status`, `reason` and `message` of the `Available` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) available: bool,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl Verdict {
    fn yes(reason: &'static str, message: &str) -> Self {
        Self {
            available: true,
            reason,
            message: message.to_owned(),
        }
    }

    fn no(reason: &'static str, message: String) -> Self {
        Self {
            available: false,
            reason,
            message,
        }
    }
}

/// The port name of `service`'s port `port` (empty when unnamed or absent).
fn port_name(service: &Value, port: u16) -> String {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
        .and_then(|p| p.get("name")?.as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn check_backend(
    client: Option<&AggregatorClient>,
    store: &dyn Store,
    backend: &Backend,
) -> Result<Verdict, ApiError> {
    let services = registry::find("", "v1", "services").ok_or_else(ApiError::no_route)?;
    let Some(service) = store
        .get(
            &services.key(Some(&backend.namespace), &backend.service),
            None,
        )
        .await
        .map_err(|e| ApiError::from_store(e, services, &backend.service))?
    else {
        return Ok(Verdict::no(
            "ServiceNotFound",
            format!(
                "service/{} in \"{}\" is not present",
                backend.service, backend.namespace
            ),
        ));
    };
    let service = object::decode_kv(&service)?;
    let url = format!(
        "https://{}.{}.svc:{}/apis/{}/{}",
        backend.service, backend.namespace, backend.port, backend.group, backend.version
    );
    let Some(client) = client else {
        return Ok(Verdict::no(
            "FailedDiscoveryCheck",
            format!(
                "failing or missing response from {url}: this API server has no front-proxy \
                 client certificate"
            ),
        ));
    };
    let mut request = Request::get(format!("/apis/{}/{}", backend.group, backend.version))
        .body(Body::empty())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    request
        .headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let aggregator = UserInfo::new("system:kube-aggregator", &[crate::auth::MASTERS_GROUP]);
    for (name, value) in super::identity_headers(&aggregator) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.headers_mut().append(name, value);
        }
    }
    let answer = tokio::time::timeout(CHECK_TIMEOUT, send(client, store, backend, request)).await;
    Ok(match answer {
        Err(_) => Verdict::no(
            "FailedDiscoveryCheck",
            format!("failing or missing response from {url}: context deadline exceeded"),
        ),
        Ok(Err(cause))
            if cause.starts_with("no endpoints available")
                || cause.starts_with("no service port") =>
        {
            Verdict::no(
                "MissingEndpoints",
                format!(
                    "endpointslices for service/{} in \"{}\" have no addresses with port name \"{}\"",
                    backend.service,
                    backend.namespace,
                    port_name(&service, backend.port)
                ),
            )
        }
        Ok(Err(cause)) => Verdict::no(
            "FailedDiscoveryCheck",
            format!("failing or missing response from {url}: {cause}"),
        ),
        Ok(Ok(response)) if response.status().is_success() => {
            Verdict::yes("Passed", "all checks passed")
        }
        Ok(Ok(response)) => Verdict::no(
            "FailedDiscoveryCheck",
            format!(
                "failing or missing response from {url}: bad status from {url}: {}",
                response.status().as_u16()
            ),
        ),
    })
}

/// The verdict on one stored APIService.
pub(crate) async fn check(
    client: Option<&AggregatorClient>,
    store: &dyn Store,
    api_service: &Value,
) -> Result<Verdict, ApiError> {
    match backend_of(api_service) {
        None => Ok(Verdict::yes(
            "Local",
            "Local APIServices are always available",
        )),
        Some(backend) => check_backend(client, store, &backend).await,
    }
}

/// `status.conditions` with the `Available` condition set to `verdict`: its
/// `lastTransitionTime` moves only when the status flips. `None` when nothing changes.
pub(crate) fn with_condition(api_service: &Value, verdict: &Verdict, now: &str) -> Option<Value> {
    let status = if verdict.available { "True" } else { "False" };
    let mut conditions: Vec<Value> = api_service
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let position = conditions.iter().position(|c| c["type"] == "Available");
    let since = match position.map(|i| &conditions[i]) {
        Some(old)
            if old["status"] == status
                && old["reason"] == verdict.reason
                && old["message"] == verdict.message.as_str() =>
        {
            return None;
        }
        Some(old) if old["status"] == status => old["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let condition = json!({
        "type": "Available",
        "status": status,
        "lastTransitionTime": since,
        "reason": verdict.reason,
        "message": verdict.message,
    });
    match position {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    Some(json!(conditions))
}

/// Checks every APIService once and writes the `Available` conditions that changed.
pub async fn refresh(state: &AppState) -> Result<(), ApiError> {
    let store = state.store.as_ref();
    let resource =
        registry::find(super::GROUP, "v1", "apiservices").ok_or_else(ApiError::no_route)?;
    for (revision, api_service) in list(store).await? {
        let verdict = check(state.aggregator.as_ref(), store, &api_service).await?;
        let Some(conditions) = with_condition(&api_service, &verdict, &object::now_rfc3339(0))
        else {
            continue;
        };
        let name = object::meta_str(&api_service, "name")
            .unwrap_or_default()
            .to_owned();
        let mut next = api_service;
        next["status"] = json!({"conditions": conditions});
        match store
            .update(&resource.key(None, &name), object::encode(&next), revision)
            .await
        {
            Ok(_) => tracing::info!(
                apiservice = name,
                available = verdict.available,
                reason = verdict.reason,
                "APIService availability changed"
            ),
            // Changed meanwhile: the next round looks again.
            Err(
                keelson_store::StoreError::Conflict { .. }
                | keelson_store::StoreError::NotFound { .. },
            ) => {}
            Err(e) => return Err(ApiError::from_store(e, resource, &name)),
        }
    }
    Ok(())
}

/// Runs [`refresh`] every `every` until the state shuts down.
pub async fn run(state: AppState, every: Duration) {
    let mut shutdown = state.shutdown.subscribe();
    loop {
        if let Err(error) = refresh(&state).await {
            tracing::warn!(%error, "checking APIServices failed");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let passed = Verdict::yes("Passed", "all checks passed");
        let missing = Verdict::no(
            "MissingEndpoints",
            "endpointslices for service/m in \"ns\" have no addresses with port name \"https\""
                .to_owned(),
        );
        let fresh = json!({"metadata": {"name": "v1.x"}});
        let conditions = with_condition(&fresh, &passed, "T1").expect("set");
        assert_eq!(
            conditions,
            json!([{"type": "Available", "status": "True", "lastTransitionTime": "T1",
                    "reason": "Passed", "message": "all checks passed"}])
        );
        let stored = json!({"status": {"conditions": conditions}});
        assert_eq!(with_condition(&stored, &passed, "T2"), None, "unchanged");
        let flipped = with_condition(&stored, &missing, "T3").expect("changed");
        assert_eq!(flipped[0]["lastTransitionTime"], "T3");
        assert_eq!(flipped[0]["status"], "False");
        let stored = json!({"status": {"conditions": flipped}});
        let reworded = Verdict::no(
            "ServiceNotFound",
            "service/m in \"ns\" is not present".to_owned(),
        );
        let same_status = with_condition(&stored, &reworded, "T4").expect("changed");
        assert_eq!(same_status[0]["lastTransitionTime"], "T3");
        assert_eq!(same_status[0]["reason"], "ServiceNotFound");
    }
}
