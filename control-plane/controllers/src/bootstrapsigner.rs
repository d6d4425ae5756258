//! Bootstrap signer: keeps `kube-public/cluster-info` — the ConfigMap a joining node reads
//! anonymously — holding a `kubeconfig` that names the API server and its CA (no user), and one
//! `jws-kubeconfig-<id>` signature of that kubeconfig per bootstrap token that may sign
//! (`usage-bootstrap-signing: "true"`, not expired). Signatures of tokens that are gone, expired
//! or changed are removed. As Kubernetes' `pkg/controller/bootstrap/bootstrapsigner.go`, except
//! that keelson also writes the kubeconfig itself (kubeadm's `bootstrap-token` phase does that
//! in Kubernetes), from the control plane's advertise URL and CA.
//!
//! The state is small (a handful of Secrets and one ConfigMap), so every pass reads it whole
//! and writes only when the desired data differs; passes run every [`PERIOD`].

use std::{collections::BTreeMap, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keelson_api::bootstrap_token::{
    self as bt, CLUSTER_INFO, JWS_PREFIX, KUBE_PUBLIC, KUBECONFIG_KEY, USAGE_SIGNING_KEY,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};

use crate::{ApiContext, Result, is_status};

/// How often the ConfigMap is brought up to date.
pub const PERIOD: Duration = Duration::from_secs(5);

/// The kubeconfig `cluster-info` publishes: one cluster named `""` with the server and the CA,
/// no users or contexts (kubeadm's layout).
pub fn cluster_kubeconfig(server: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: \"\"\ncontexts: []\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: []\n",
        STANDARD.encode(ca_pem)
    )
}

/// A Secret's data as strings (values that are not UTF-8 are left out).
pub fn string_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect();
    data.extend(secret.string_data.clone().unwrap_or_default());
    data
}

/// The tokens among `secrets` that may sign `cluster-info` at `now`.
pub fn signing_tokens(secrets: &[Secret], now: jiff::Timestamp) -> Vec<bt::BootstrapToken> {
    secrets
        .iter()
        .filter(|s| s.type_.as_deref() == Some(bt::SECRET_TYPE))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| {
            let data = string_data(s);
            let name = s.metadata.name.as_deref()?;
            let token = bt::token_of_secret(name, &data)?;
            (bt::usage_enabled(&data, USAGE_SIGNING_KEY) && !bt::has_expired(&data, now))
                .then_some(token)
        })
        .collect()
}

/// The data `cluster-info` should hold: `current` with the kubeconfig set, a signature for
/// every token in `tokens`, and no other `jws-kubeconfig-*` key. Other keys stay.
pub fn desired_data(
    current: &BTreeMap<String, String>,
    kubeconfig: &str,
    tokens: &[bt::BootstrapToken],
) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = current
        .iter()
        .filter(|(k, _)| !k.starts_with(JWS_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    data.insert(KUBECONFIG_KEY.to_owned(), kubeconfig.to_owned());
    for token in tokens {
        data.insert(
            format!("{JWS_PREFIX}{}", token.id),
            bt::sign_detached(token, kubeconfig.as_bytes()),
        );
    }
    data
}

/// Runs the signer, publishing `server` and `ca_pem`.
pub async fn run(client: Client, server: String, ca_pem: String) -> anyhow::Result<()> {
    let kubeconfig = cluster_kubeconfig(&server, &ca_pem);
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        if let Err(error) = sync(&client, &kubeconfig).await {
            tracing::warn!(error = %crate::error_chain(&error), "bootstrapsigner: retrying");
        }
    }
}

async fn sync(client: &Client, kubeconfig: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), bt::SECRET_NAMESPACE);
    let secrets = secrets
        .list(&ListParams::default())
        .await
        .action(|| "list the Secrets of kube-system".to_owned())?
        .items;
    let tokens = signing_tokens(&secrets, jiff::Timestamp::now());
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), KUBE_PUBLIC);
    let current = maps
        .get_opt(CLUSTER_INFO)
        .await
        .action(|| "get kube-public/cluster-info".to_owned())?;
    match current {
        None => {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CLUSTER_INFO.to_owned()),
                    namespace: Some(KUBE_PUBLIC.to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some(desired_data(&BTreeMap::new(), kubeconfig, &tokens)),
                ..ConfigMap::default()
            };
            match maps.create(&PostParams::default(), &map).await {
                Err(e) if is_status(&e, 409) => Ok(()),
                other => other
                    .map(|_| tracing::info!("created kube-public/cluster-info"))
                    .action(|| "create kube-public/cluster-info".to_owned()),
            }
        }
        Some(mut map) => {
            let current = map.data.clone().unwrap_or_default();
            let desired = desired_data(&current, kubeconfig, &tokens);
            if desired == current {
                return Ok(());
            }
            map.data = Some(desired);
            match maps
                .replace(CLUSTER_INFO, &PostParams::default(), &map)
                .await
            {
                // Changed meanwhile: the next pass reads it again.
                Err(e) if is_status(&e, 409) => Ok(()),
                other => other
                    .map(|_| {
                        tracing::info!(tokens = tokens.len(), "signed kube-public/cluster-info")
                    })
                    .action(|| "update kube-public/cluster-info".to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(id: &str, secret: &str, extra: &[(&str, &str)]) -> Secret {
        let mut data: BTreeMap<String, ByteString> = [("token-id", id), ("token-secret", secret)]
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        data.retain(|_, v| !v.0.is_empty());
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{id}")),
                namespace: Some("kube-system".into()),
                ..ObjectMeta::default()
            },
            type_: Some(bt::SECRET_TYPE.into()),
            data: Some(data),
            ..Secret::default()
        }
    }

    #[test]
    fn signs_with_valid_signing_tokens_only() {
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().expect("time");
        let signing = [("usage-bootstrap-signing", "true")];
        let mut opaque = secret("opaque", "0123456789abcdef", &signing);
        opaque.type_ = Some("Opaque".into());
        let secrets = [
            secret("aaaaaa", "0123456789abcdef", &signing),
            secret(
                "bbbbbb",
                "0123456789abcdef",
                &[("usage-bootstrap-signing", "false")],
            ),
            secret(
                "cccccc",
                "0123456789abcdef",
                &[
                    ("usage-bootstrap-signing", "true"),
                    ("expiration", "2026-12-06T11:00:00Z"),
                ],
            ),
            secret(
                "dddddd",
                "0123456789abcdef",
                &[
                    ("usage-bootstrap-signing", "true"),
                    ("expiration", "2026-12-07T00:00:00Z"),
                ],
            ),
            secret("eeeeee", "short", &signing),
            opaque,
        ];
        let ids: Vec<String> = signing_tokens(&secrets, now)
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["aaaaaa", "dddddd"]);
    }

    #[test]
    fn cluster_info_gets_the_kubeconfig_and_fresh_signatures() {
        let kubeconfig = cluster_kubeconfig("https://192.0.2.10:6443", "CA");
        assert!(
            kubeconfig.contains("    server: https://192.0.2.10:6443\n"),
            "{kubeconfig}"
        );
        assert!(
            kubeconfig.contains("certificate-authority-data: Q0E=\n"),
            "{kubeconfig}"
        );
        let token: bt::BootstrapToken = "aaaaaa.0123456789abcdef".parse().expect("token");
        let current: BTreeMap<String, String> = [
            ("jws-kubeconfig-zzzzzz", "stale"),
            ("jws-kubeconfig-aaaaaa", "old"),
            ("other", "kept"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let data = desired_data(&current, &kubeconfig, std::slice::from_ref(&token));
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["jws-kubeconfig-aaaaaa", "kubeconfig", "other"]
        );
        assert_eq!(
            bt::verify_detached(
                &token,
                data["kubeconfig"].as_bytes(),
                &data["jws-kubeconfig-aaaaaa"]
            ),
            Ok(())
        );
        assert_eq!(
            desired_data(&data, &kubeconfig, &[token]),
            data,
            "a second pass changes nothing"
        );
    }
}
