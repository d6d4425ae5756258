//! Root CA publisher: the ConfigMap `kube-root-ca.crt` with the cluster CA (`ca.crt`) in every
//! Namespace, put back when it is edited or deleted (Kubernetes'
//! `pkg/controller/certificates/rootcacertpublisher/publisher.go`). Pods read it through the
//! projected service-account volume to verify the API server.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{ApiContext, Result, is_status};

/// The ConfigMap's name.
pub const CONFIGMAP_NAME: &str = "kube-root-ca.crt";
/// The key the CA bundle is under.
pub const CA_KEY: &str = "ca.crt";
/// The annotation that says what the ConfigMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// kube's description, word for word.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the \
    kube-apiserver when using internal endpoints such as the internal service IP or \
    kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes \
    clusters.";

/// What to do with a namespace's ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// It is as it should be.
    None,
    /// Create this one.
    Create(ConfigMap),
    /// Replace it with this one (same metadata, the data and annotation restored).
    Update(ConfigMap),
}

/// The change that makes `existing` in `namespace` hold `ca_pem` (kube's `syncNamespace`):
/// created when missing, updated when its data differ or the description annotation is gone.
pub fn change(namespace: &str, existing: Option<&ConfigMap>, ca_pem: &str) -> Change {
    let data = BTreeMap::from([(CA_KEY.to_owned(), ca_pem.to_owned())]);
    let Some(existing) = existing else {
        return Change::Create(ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP_NAME.to_owned()),
                namespace: Some(namespace.to_owned()),
                annotations: Some(BTreeMap::from([(
                    DESCRIPTION_ANNOTATION.to_owned(),
                    DESCRIPTION.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        });
    };
    let described = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    if existing.data.as_ref() == Some(&data) && described {
        return Change::None;
    }
    let mut updated = existing.clone();
    updated.data = Some(data);
    updated
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.to_owned(), DESCRIPTION.to_owned());
    Change::Update(updated)
}

struct Ctx {
    client: Client,
    ca_pem: String,
}

/// Runs the controller with the cluster CA `ca_pem`: every Namespace, and again when a
/// `kube-root-ca.crt` ConfigMap changes.
pub async fn run(client: Client, ca_pem: String) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
        |cm| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    );
    let ctx = Arc::new(Ctx { client, ca_pem });
    crate::drive(
        "root-ca-cert-publisher",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = namespace.name_any();
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns);
    let existing = api
        .get_opt(CONFIGMAP_NAME)
        .await
        .action(|| format!("get ConfigMap {ns}/{CONFIGMAP_NAME}"))?;
    match change(&ns, existing.as_ref(), &ctx.ca_pem) {
        Change::None => {}
        Change::Create(cm) => match api.create(&PostParams::default(), &cm).await {
            // The namespace is gone or terminating: nothing to retry (kube's rule).
            Err(e) if is_status(&e, 404) || is_status(&e, 403) || is_status(&e, 409) => {}
            other => {
                other.action(|| format!("create ConfigMap {ns}/{CONFIGMAP_NAME}"))?;
                tracing::info!(namespace = ns, "published the root CA");
            }
        },
        Change::Update(cm) => {
            api.replace(CONFIGMAP_NAME, &PostParams::default(), &cm)
                .await
                .action(|| format!("update ConfigMap {ns}/{CONFIGMAP_NAME}"))?;
            tracing::info!(namespace = ns, "restored the root CA ConfigMap");
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn published(data: &str, description: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP_NAME.into()),
                namespace: Some("team".into()),
                resource_version: Some("7".into()),
                annotations: description
                    .map(|d| BTreeMap::from([(DESCRIPTION_ANNOTATION.to_owned(), d.to_owned())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(CA_KEY.to_owned(), data.to_owned())])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn the_configmap_is_created_and_restored() {
        let Change::Create(created) = change("team", None, CA) else {
            panic!("a missing ConfigMap is created");
        };
        assert_eq!(created, published(CA, Some(DESCRIPTION)).tap_version(None));
        assert!(DESCRIPTION.starts_with(
            "Contains a CA bundle that can be used to verify the kube-apiserver when"
        ));
        assert!(DESCRIPTION.ends_with("internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."));
        assert_eq!(
            change("team", Some(&published(CA, Some(DESCRIPTION))), CA),
            Change::None
        );
        // Another description is kept; only a missing one is put back.
        assert_eq!(
            change("team", Some(&published(CA, Some("mine"))), CA),
            Change::None
        );
        for edited in [
            published("tampered", Some(DESCRIPTION)),
            published(CA, None),
        ] {
            let Change::Update(updated) = change("team", Some(&edited), CA) else {
                panic!("an edited ConfigMap is restored: {edited:?}");
            };
            assert_eq!(updated.data, published(CA, None).data);
            assert_eq!(updated.metadata.resource_version.as_deref(), Some("7"));
            assert!(
                updated
                    .metadata
                    .annotations
                    .is_some_and(|a| a.contains_key(DESCRIPTION_ANNOTATION))
            );
        }
    }

    trait TapVersion {
        fn tap_version(self, version: Option<&str>) -> Self;
    }

    impl TapVersion for ConfigMap {
        fn tap_version(mut self, version: Option<&str>) -> Self {
            self.metadata.resource_version = version.map(str::to_owned);
            self
        }
    }
}
