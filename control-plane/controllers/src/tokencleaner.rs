//! Token cleaner: deletes bootstrap-token Secrets once their `expiration` has passed
//! (Kubernetes' `pkg/controller/bootstrap/tokencleaner.go`). A Secret that is not expired yet is
//! looked at again when it expires.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use keelson_api::bootstrap_token::{self as bt, EXPIRATION_KEY};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{Controller, controller::Action, watcher},
};

use crate::{ApiContext, Result, bootstrapsigner::string_data, is_status};

/// What to do with a Secret at `now`: delete it, look again after a while, or nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a bootstrap token, or one without an expiry.
    Keep,
    /// Expired (or an expiry that does not parse, as Kubernetes reads it).
    Delete,
    /// Expires after this long.
    RecheckIn(Duration),
}

/// The verdict on `secret` at `now`.
pub fn verdict(secret: &Secret, now: jiff::Timestamp) -> Verdict {
    if secret.type_.as_deref() != Some(bt::SECRET_TYPE) {
        return Verdict::Keep;
    }
    let data = string_data(secret);
    if bt::has_expired(&data, now) {
        return Verdict::Delete;
    }
    match data
        .get(EXPIRATION_KEY)
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
    {
        Some(expiry) => Verdict::RecheckIn(
            Duration::try_from(expiry.duration_since(now)).unwrap_or(Duration::from_secs(1))
                + Duration::from_secs(1),
        ),
        None => Verdict::Keep,
    }
}

struct Ctx {
    client: Client,
}

/// Runs the controller over the Secrets of `kube-system`.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let api = Api::<Secret>::namespaced(client.clone(), bt::SECRET_NAMESPACE);
    let controller = Controller::new(
        api,
        watcher::Config::default().fields(&format!("type={}", bt::SECRET_TYPE)),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive("tokencleaner", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

async fn reconcile(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action> {
    match verdict(&secret, jiff::Timestamp::now()) {
        Verdict::Keep => Ok(Action::await_change()),
        Verdict::RecheckIn(after) => Ok(Action::requeue(after)),
        Verdict::Delete => {
            let name = secret.name_any();
            let api = Api::<Secret>::namespaced(ctx.client.clone(), bt::SECRET_NAMESPACE);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                other => {
                    other.action(|| format!("delete the expired token Secret {name}"))?;
                    tracing::info!(secret = name, "deleted an expired bootstrap token");
                }
            }
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(type_: &str, expiration: Option<&str>) -> Secret {
        let data: BTreeMap<String, ByteString> = expiration
            .map(|e| ("expiration".to_owned(), ByteString(e.as_bytes().to_vec())))
            .into_iter()
            .collect();
        Secret {
            type_: Some(type_.into()),
            data: Some(data),
            ..Secret::default()
        }
    }

    #[test]
    fn expired_tokens_go_and_others_wait() {
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().expect("time");
        let token = bt::SECRET_TYPE;
        let cases = [
            (secret(token, Some("2026-12-06T11:59:59Z")), Verdict::Delete),
            (secret(token, Some("never")), Verdict::Delete),
            (
                secret(token, Some("2026-12-06T12:10:00Z")),
                Verdict::RecheckIn(Duration::from_secs(601)),
            ),
            (secret(token, None), Verdict::Keep),
            (
                secret("Opaque", Some("2001-01-01T00:00:00Z")),
                Verdict::Keep,
            ),
        ];
        for (secret, expected) in cases {
            assert_eq!(verdict(&secret, now), expected, "{:?}", secret.data);
        }
    }
}
