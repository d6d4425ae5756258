//! The `kube-dns` Service every cluster starts with (kubeadm's CoreDNS layout, see
//! [`keelson_api::cluster_dns`]): created at startup when missing, its ClusterIP claimed through
//! the service IP allocator like any other. It has no selector: the `kube-dns-endpoints`
//! controller lists every node's DNS responder in its EndpointSlice, and
//! `internalTrafficPolicy: Local` keeps each query on the client's own node.

use std::net::Ipv4Addr;

use keelson_api::cluster_dns::{
    NAMESPACE, PORT, SERVICE_LABELS, SERVICE_NAME, TCP_PORT_NAME, UDP_PORT_NAME,
};
use keelson_store::{Store, StoreError};
use serde_json::{Map, Value, json};

use crate::{
    ApiError,
    allocator::{ServiceNetwork, claim_for_create},
};

/// The Service as created, with ClusterIP `ip`.
pub fn service(ip: Ipv4Addr) -> Value {
    let labels: Map<String, Value> = SERVICE_LABELS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let port = |name: &str, protocol: &str| json!({"name": name, "port": PORT, "protocol": protocol, "targetPort": PORT});
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(),
            "internalTrafficPolicy": "Local",
            "ports": [port(UDP_PORT_NAME, "UDP"), port(TCP_PORT_NAME, "TCP")],
        },
    })
}

/// Creates `kube-system/kube-dns` if it does not exist (an existing one, edited or replaced by
/// an administrator, is left alone). Returns its address when created. A service range too small
/// for a tenth address, or that address already taken by another Service, is logged and
/// skipped: the cluster still runs, its pods resolve through their node's gateway.
pub async fn ensure_kube_dns_service(
    store: &dyn Store,
    network: &ServiceNetwork,
) -> Result<Option<Ipv4Addr>, ApiError> {
    let services = crate::registry::find("", "v1", "services").ok_or_else(ApiError::no_route)?;
    let Some(ip) = keelson_api::cluster_dns::service_ip(network.cluster_ip_range) else {
        tracing::warn!(
            range = %network.cluster_ip_range,
            "the service range has no tenth address: no kube-dns Service"
        );
        return Ok(None);
    };
    let key = services.key(Some(NAMESPACE), SERVICE_NAME);
    let existing = store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::from_store(e, services, SERVICE_NAME))?;
    if existing.is_some() {
        return Ok(None);
    }
    let mut object = service(ip);
    crate::object::prepare_create(&mut object, services, Some(NAMESPACE))?;
    let claims = match claim_for_create(store, network, services, SERVICE_NAME, &mut object).await {
        Ok(claims) => claims,
        Err(error) => {
            tracing::warn!(%ip, ?error, "cannot claim the kube-dns address: no kube-dns Service");
            return Ok(None);
        }
    };
    match store.create(&key, crate::object::encode(&object)).await {
        Ok(revision) => {
            tracing::info!(%ip, revision, "created the kube-dns Service");
            Ok(Some(ip))
        }
        Err(StoreError::AlreadyExists { .. }) => {
            claims.undo(store).await;
            Ok(None)
        }
        Err(e) => {
            claims.undo(store).await;
            Err(ApiError::from_store(e, services, SERVICE_NAME))
        }
    }
}

#[cfg(test)]
mod tests {
    use keelson_api::cidr::Ipv4Cidr;
    use keelson_store::{SqliteOptions, SqliteStore};

    use super::*;

    fn network(range: &str) -> ServiceNetwork {
        ServiceNetwork {
            cluster_ip_range: range.parse::<Ipv4Cidr>().expect("valid range"),
            ..ServiceNetwork::default()
        }
    }

    async fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("s.db"), SqliteOptions::default())
            .await
            .expect("store")
    }

    async fn stored(store: &SqliteStore) -> Option<Value> {
        let services = crate::registry::find("", "v1", "services").expect("services");
        store
            .get(&services.key(Some(NAMESPACE), SERVICE_NAME), None)
            .await
            .expect("get")
            .map(|kv| crate::object::decode_kv(&kv).expect("decodes"))
    }

    #[tokio::test]
    async fn the_service_is_created_once_on_the_tenth_address() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        let network = network("10.96.0.0/12");
        assert_eq!(
            ensure_kube_dns_service(&store, &network).await.expect("ok"),
            Some(Ipv4Addr::new(10, 96, 0, 10))
        );
        let service = stored(&store).await.expect("created");
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(service["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
        assert!(service["spec"].get("selector").is_none());
        assert_eq!(
            service["metadata"]["labels"],
            json!({"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                   "kubernetes.io/name": "CoreDNS"})
        );
        let ports: Vec<(String, String, u64)> = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    p["protocol"].as_str().unwrap_or_default().to_owned(),
                    p["port"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".to_owned(), "UDP".to_owned(), 53),
                ("dns-tcp".to_owned(), "TCP".to_owned(), 53)
            ]
        );
        // The address is held by the Service, like an allocated one.
        assert!(
            store
                .get("/registry/ipaddresses/10.96.0.10", None)
                .await
                .expect("get")
                .is_some()
        );
        // A restart changes nothing.
        assert_eq!(
            ensure_kube_dns_service(&store, &network).await.expect("ok"),
            None
        );
        assert_eq!(stored(&store).await, Some(service));
    }

    #[tokio::test]
    async fn a_range_without_a_tenth_address_has_no_service() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(&dir).await;
        assert_eq!(
            ensure_kube_dns_service(&store, &network("10.96.0.0/29"))
                .await
                .expect("ok"),
            None
        );
        assert_eq!(stored(&store).await, None);
    }
}
