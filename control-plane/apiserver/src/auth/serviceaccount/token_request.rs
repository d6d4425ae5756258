//! `POST /api/v1/namespaces/NS/serviceaccounts/SA/token`: the TokenRequest API
//! (`kubectl create token`), as kube 1.33's `TokenREST.Create` answers it.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{
    Bound, EXTENDED_EXPIRATION_SECONDS, ObjectRef, WARN_ONLY_EXPIRATION_SECONDS, claims, get,
};
use crate::{ApiError, AppState, handlers::Written, registry, request::Target};

/// The kind and group of the request and the answer.
const KIND: &str = "TokenRequest";
const GROUP: &str = "authentication.k8s.io";
/// `expirationSeconds` when the request gives none (kube's defaulting: an hour).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest token kube issues (ten minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;

fn invalid(name: &str, line: String) -> ApiError {
    ApiError::invalid_lines(&format!("{KIND}.{GROUP}"), GROUP, KIND, name, &[line])
}

fn resource(plural: &str) -> Result<&'static registry::Resource, ApiError> {
    registry::find("", "v1", plural).ok_or_else(ApiError::no_route)
}

/// An object by name, or kube's 404 for it.
async fn must_get(
    state: &AppState,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let found = get(state.store.as_ref(), plural, namespace, name)
        .await
        .map_err(|cause| {
            tracing::warn!(cause, "token request: reading the store");
            ApiError::service_unavailable("the store cannot be read")
        })?;
    found.ok_or_else(|| match resource(plural) {
        Ok(resource) => ApiError::not_found(resource, name),
        Err(error) => error,
    })
}

/// Creates a token for the service account `target` names, from the TokenRequest `body`.
pub(crate) async fn create(
    state: &AppState,
    target: &Target,
    body: &[u8],
) -> Result<Written, ApiError> {
    let Some(tokens) = state.service_accounts.as_deref() else {
        return Err(ApiError::no_route());
    };
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let name = target.name.as_deref().unwrap_or_default();
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the TokenRequest cannot be read: {e}")))?
    };
    let meta = |field: &str| {
        request
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if !meta("name").is_empty() && meta("name") != name {
        return Err(invalid(
            name,
            format!(
                "metadata.name: Invalid value: \"{}\": must match the service account name if \
                 specified",
                meta("name")
            ),
        ));
    }
    if !meta("namespace").is_empty() && meta("namespace") != namespace {
        return Err(invalid(
            name,
            format!(
                "metadata.namespace: Invalid value: \"{}\": must match the service account \
                 namespace if specified",
                meta("namespace")
            ),
        ));
    }
    let service_account = must_get(state, "serviceaccounts", Some(namespace), name).await?;
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = tokens.api_audiences().to_vec();
    }
    let now = jiff::Timestamp::now().as_second();
    let mut expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(value) => value.as_i64().ok_or_else(|| {
            ApiError::bad_request("spec.expirationSeconds must be an integer".to_owned())
        })?,
    };
    check_expiration(expiration).map_err(|line| invalid("", line))?;
    let bound_ref = spec.get("boundObjectRef").filter(|r| !r.is_null());
    let bound = match bound_ref {
        Some(reference) => bind(state, namespace, name, reference).await?,
        None => Bound::default(),
    };
    let mut warnings = Vec::new();
    if let Some(max) = tokens.max_expiration_seconds
        && expiration > max
    {
        warnings.push(format!(
            "requested expiration of {expiration} seconds shortened to {max} seconds"
        ));
        expiration = max;
    }
    let (lifetime, warn_after) = if tokens.extend_expiration
        && bound.pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION_SECONDS
        && audiences.iter().all(|a| tokens.api_audiences().contains(a))
    {
        (EXTENDED_EXPIRATION_SECONDS, Some(expiration))
    } else {
        (expiration, None)
    };
    let jti = uuid::Uuid::new_v4().to_string();
    let claims = claims(
        tokens.issuer(),
        namespace,
        &ObjectRef::of(&service_account),
        &bound,
        &audiences,
        now,
        lifetime,
        warn_after,
        &jti,
    );
    let token = tokens.key().sign(&claims).map_err(|_| {
        tracing::warn!("signing a service-account token failed");
        ApiError::service_unavailable("failed to generate token")
    })?;
    let timestamp = |seconds: i64| {
        jiff::Timestamp::from_second(seconds)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    tracing::debug!(
        namespace,
        service_account = name,
        credential_id = format!("JTI={jti}"),
        "issued a service-account token"
    );
    Ok(Written {
        code: StatusCode::CREATED,
        body: json!({
            "kind": KIND,
            "apiVersion": format!("{GROUP}/v1"),
            "metadata": {
                "name": name,
                "namespace": namespace,
                "creationTimestamp": timestamp(now),
            },
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration,
                "boundObjectRef": bound_ref.cloned(),
            },
            "status": {
                "token": token,
                "expirationTimestamp": timestamp(now + expiration),
            },
        }),
        warnings,
    })
}

/// kube's `ValidateTokenRequest`: at least ten minutes, at most 2^32 seconds.
pub(crate) fn check_expiration(seconds: i64) -> Result<(), String> {
    if seconds < MIN_EXPIRATION_SECONDS {
        return Err(format!(
            "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less \
             than 10 minutes"
        ));
    }
    if seconds > i64::from(u32::MAX) {
        return Err(format!(
            "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger \
             than 2^32 seconds"
        ));
    }
    Ok(())
}

/// The object `reference` (a `BoundObjectReference`) names, checked as kube checks it.
async fn bind(
    state: &AppState,
    namespace: &str,
    service_account: &str,
    reference: &Value,
) -> Result<Bound, ApiError> {
    let field = |name: &str| {
        reference
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (kind, api_version, name) = (field("kind"), field("apiVersion"), field("name"));
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let mut bound = Bound::default();
    let uid = match (group, kind) {
        ("", "Pod") => {
            let pod = must_get(state, "pods", Some(namespace), name).await?;
            let pod_account = pod
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if pod_account != service_account {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{service_account}\" to pod running \
                     with different serviceaccount name."
                )));
            }
            let pod_ref = ObjectRef::of(&pod);
            if let Some(node) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                // A missing Node still leaves its name in the claims, as kube does.
                let node_ref = match get(state.store.as_ref(), "nodes", None, node).await {
                    Ok(Some(node)) => ObjectRef::of(&node),
                    Ok(None) => ObjectRef {
                        name: node.to_owned(),
                        uid: String::new(),
                    },
                    Err(cause) => {
                        tracing::warn!(cause, "token request: reading the pod's node");
                        return Err(ApiError::service_unavailable("the store cannot be read"));
                    }
                };
                bound.node = Some(node_ref);
            }
            let uid = pod_ref.uid.clone();
            bound.pod = Some(pod_ref);
            uid
        }
        ("", "Node") => {
            let node = ObjectRef::of(&must_get(state, "nodes", None, name).await?);
            let uid = node.uid.clone();
            bound.node = Some(node);
            uid
        }
        ("", "Secret") => {
            let secret = ObjectRef::of(&must_get(state, "secrets", Some(namespace), name).await?);
            let uid = secret.uid.clone();
            bound.secret = Some(secret);
            uid
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    let wanted = field("uid");
    if !wanted.is_empty() && wanted != uid {
        let plural = match kind {
            "Pod" => "pods",
            "Node" => "nodes",
            _ => "secrets",
        };
        return Err(ApiError::conflict_message(
            resource(plural)?,
            name,
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object \
                 reference ({wanted}) does not match the UID in record. The object might have \
                 been deleted and then recreated"
            ),
        ));
    }
    Ok(bound)
}
