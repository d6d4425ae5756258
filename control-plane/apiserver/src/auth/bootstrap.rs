//! Bootstrap-token authentication.
//!
//! A bearer token of the form `<id>.<secret>` that the static token file does not know is looked
//! up as the Secret `kube-system/bootstrap-token-<id>` (Kubernetes'
//! `plugin/pkg/auth/authenticator/token/bootstrap`): it must be of type
//! `bootstrap.kubernetes.io/token`, not being deleted, hold the same `token-id` and (compared in
//! constant time) `token-secret`, not have expired, and say `usage-bootstrap-authentication:
//! "true"`. The user is then `system:bootstrap:<id>` in `system:bootstrappers` and the token's
//! `auth-extra-groups`. Anything else is the plain 401 Kubernetes answers.
//!
//! What joining needs beyond authentication is granted by RBAC objects kubeadm creates too
//! (see [`super::rbac::reconcile`]).

use std::{collections::BTreeMap, sync::Arc};

use axum::http::HeaderMap;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use keelson_api::bootstrap_token::{self as bt, BootstrapToken};
use keelson_store::Store;
use serde_json::Value;

use super::UserInfo;
use crate::registry;

/// The user of requests without credentials (Kubernetes' `system:anonymous`).
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// The user a bootstrap token in the `Authorization` header stands for, if it is one whose
/// Secret lets it authenticate at `now`.
pub(crate) async fn authenticate(
    store: &dyn Store,
    headers: &HeaderMap,
    now: jiff::Timestamp,
) -> Option<Arc<UserInfo>> {
    let token: BootstrapToken = super::bearer_token(headers)?.parse().ok()?;
    let secrets = registry::RESOURCES
        .iter()
        .find(|r| r.group.is_empty() && r.plural == "secrets")?;
    let key = secrets.key(Some(bt::SECRET_NAMESPACE), &token.secret_name());
    let stored = match store.get(&key, None).await {
        Ok(stored) => stored?,
        Err(error) => {
            tracing::warn!(%error, "reading a bootstrap-token Secret");
            return None;
        }
    };
    let secret: Value = serde_json::from_slice(&stored.value).ok()?;
    match user_of_secret(&token, &secret, now) {
        Ok(user) => Some(Arc::new(user)),
        Err(why) => {
            tracing::debug!(token_id = %token.id, why, "bootstrap token refused");
            None
        }
    }
}

/// A Secret's string data: `data` (base64) with `stringData` over it.
pub(crate) fn string_data(secret: &Value) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    if let Some(map) = secret.get("data").and_then(Value::as_object) {
        for (key, value) in map {
            if let Some(text) = value
                .as_str()
                .and_then(|v| STANDARD.decode(v).ok())
                .and_then(|b| String::from_utf8(b).ok())
            {
                data.insert(key.clone(), text);
            }
        }
    }
    if let Some(map) = secret.get("stringData").and_then(Value::as_object) {
        for (key, value) in map {
            if let Some(text) = value.as_str() {
                data.insert(key.clone(), text.to_owned());
            }
        }
    }
    data
}

/// The user `token` authenticates as given its stored Secret, or why not (for the log only:
/// the client always sees the same 401).
fn user_of_secret(
    token: &BootstrapToken,
    secret: &Value,
    now: jiff::Timestamp,
) -> Result<UserInfo, &'static str> {
    if secret.get("type").and_then(Value::as_str) != Some(bt::SECRET_TYPE) {
        return Err("the Secret is not of type bootstrap.kubernetes.io/token");
    }
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err("the Secret is being deleted");
    }
    let data = string_data(secret);
    let stored_secret = data
        .get(bt::TOKEN_SECRET_KEY)
        .map_or(&[][..], |s| s.as_bytes());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        stored_secret,
        token.secret.as_bytes(),
    )) {
        return Err("the token secret does not match");
    }
    if data.get(bt::TOKEN_ID_KEY) != Some(&token.id) {
        return Err("the Secret's token-id does not match");
    }
    if bt::has_expired(&data, now) {
        return Err("the token has expired");
    }
    if !bt::usage_enabled(&data, bt::USAGE_AUTHENTICATION_KEY) {
        return Err("the token is not for authentication");
    }
    let groups = bt::groups(&data).map_err(|_| "the token has an invalid auth-extra-group")?;
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    Ok(UserInfo::new(token.user_name(), &groups))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(STANDARD.encode(v))))
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": bt::SECRET_TYPE,
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "data": data,
        })
    }

    const GOOD: &[(&str, &str)] = &[
        ("token-id", "abcdef"),
        ("token-secret", "0123456789abcdef"),
        ("expiration", "2026-12-07T00:00:00Z"),
        ("usage-bootstrap-authentication", "true"),
        ("auth-extra-groups", "system:bootstrappers:worker"),
    ];

    #[test]
    fn bootstrap_tokens_authenticate_as_kubernetes_checks_them() {
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().expect("time");
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().expect("token");
        let with = |key: &str, value: &str| {
            let mut s = secret(GOOD);
            s["data"][key] = Value::String(STANDARD.encode(value));
            s
        };
        let user = user_of_secret(&token, &secret(GOOD), now).expect("valid");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            ["system:bootstrappers", "system:bootstrappers:worker"]
        );
        let mut opaque = secret(GOOD);
        opaque["type"] = json!("Opaque");
        let mut deleting = secret(GOOD);
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-06T11:00:00Z");
        let refused = [
            ("wrong type", opaque),
            ("being deleted", deleting),
            ("wrong secret", with("token-secret", "0123456789abcdeg")),
            ("other id", with("token-id", "abcdeg")),
            ("expired", with("expiration", "2026-12-06T11:59:59Z")),
            ("bad expiry", with("expiration", "soon")),
            (
                "no auth usage",
                with("usage-bootstrap-authentication", "yes"),
            ),
            ("bad group", with("auth-extra-groups", "system:masters")),
        ];
        for (case, secret) in refused {
            assert!(user_of_secret(&token, &secret, now).is_err(), "{case}");
        }
    }
}
