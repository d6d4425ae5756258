//! The `kubernetes` Service's endpoints name every live control plane, as kube-apiserver's
//! lease endpoint reconciler (`--endpoint-reconciler-type=lease`, the default) keeps them.
//!
//! Each control plane holds a lease: the store key `/registry/masterleases/<advertise IP>`
//! whose value says until when it is valid (`expiresAt`, [`DEFAULT_TTL`] ahead) and on which
//! port the plane serves. Every [`DEFAULT_INTERVAL`] it renews its lease, lists the others,
//! deletes those that expired, and writes the Endpoints and the EndpointSlice `kubernetes` in
//! `default` with the live addresses, sorted as strings (Kubernetes' order), and its own port.
//! On a clean shutdown it deletes its lease and writes the endpoints without itself
//! ([`remove`]); a plane that dies leaves with its lease, at most [`DEFAULT_TTL`] later.
//!
//! Kubernetes keeps the leases in etcd with a TTL; keelson's store has no TTL, so the expiry is
//! in the value and compared with this plane's clock: planes whose clocks disagree by more than
//! the TTL would drop each other.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use keelson_store::{ListOptions, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ApiError;

/// Where the leases live: `/registry/masterleases/<ip>`.
pub const LEASE_PREFIX: &str = "/registry/masterleases/";
/// How long a lease lasts unless renewed (kube's `--endpoint-reconciler` TTL, 15 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// How often a plane renews its lease and reconciles the endpoints (kube's 10 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// A lease's stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    /// RFC 3339: when the lease ends unless renewed.
    expires_at: String,
    /// The port the plane serves the API on.
    port: u16,
}

/// The leases of `items` that are still valid at `now` (their IPs, sorted as strings as
/// Kubernetes sorts them) and the keys of those that expired or cannot be read.
fn live_leases(
    items: &[keelson_store::KeyValue],
    now: jiff::Timestamp,
) -> (Vec<String>, Vec<(String, i64)>) {
    let mut live = Vec::new();
    let mut expired = Vec::new();
    for kv in items {
        let ip = kv.key.strip_prefix(LEASE_PREFIX).unwrap_or_default();
        let valid = serde_json::from_slice::<Lease>(&kv.value)
            .ok()
            .and_then(|lease| lease.expires_at.parse::<jiff::Timestamp>().ok())
            .is_some_and(|expires| expires > now);
        if valid && ip.parse::<IpAddr>().is_ok() {
            live.push(ip.to_owned());
        } else {
            expired.push((kv.key.clone(), kv.mod_revision));
        }
    }
    live.sort();
    live.dedup();
    (live, expired)
}

/// The Endpoints and the EndpointSlice `kubernetes` naming `ips` on `port`.
fn kubernetes_endpoints(ips: &[String], port: u16) -> (Value, Value) {
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!([{"addresses": addresses,
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}])
    };
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    });
    let v6 = ips
        .first()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_ipv6());
    let slice_endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| {
            json!({"addresses": [ip],
                   "conditions": {"ready": true, "serving": true, "terminating": false}})
        })
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "keelson-apiserver"}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": slice_endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    (endpoints, slice)
}

fn store_error(error: StoreError) -> ApiError {
    ApiError::internal("cannot read or write the control planes' leases", &error)
}

/// Creates or renews the lease of the plane at `advertise` for `ttl`.
async fn renew(store: &dyn Store, advertise: SocketAddr, ttl: Duration) -> Result<(), ApiError> {
    let key = format!("{LEASE_PREFIX}{}", advertise.ip());
    let expires = jiff::Timestamp::now()
        + jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_secs(15));
    let value = serde_json::to_vec(&Lease {
        expires_at: expires.to_string(),
        port: advertise.port(),
    })
    .map_err(|e| ApiError::internal("cannot encode a lease", &e))?;
    match store.get(&key, None).await.map_err(store_error)? {
        None => match store.create(&key, value.into()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        },
        Some(kv) => match store.update(&key, value.into(), kv.mod_revision).await {
            // Another plane with the same address renewed it just now.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        },
    }
}

/// Lists the live leases (deleting the expired ones) and writes the endpoints: with this
/// plane's address when `include_self`, without it otherwise.
async fn write_endpoints(
    store: &dyn Store,
    advertise: SocketAddr,
    include_self: bool,
) -> Result<Vec<String>, ApiError> {
    let listed = store
        .list(LEASE_PREFIX, ListOptions::default())
        .await
        .map_err(store_error)?;
    let (mut ips, expired) = live_leases(&listed.items, jiff::Timestamp::now());
    for (key, revision) in expired {
        match store.delete(&key, Some(revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    let own = advertise.ip().to_string();
    ips.retain(|ip| *ip != own);
    if include_self {
        ips.push(own);
        ips.sort();
    }
    let (endpoints, slice) = kubernetes_endpoints(&ips, advertise.port());
    let find = |group: &str, plural: &str| {
        crate::registry::find(group, "v1", plural).ok_or_else(ApiError::no_route)
    };
    put(store, find("", "endpoints")?, endpoints).await?;
    put(store, find("discovery.k8s.io", "endpointslices")?, slice).await?;
    Ok(ips)
}

/// How often a write that lost a race with another plane is tried again.
const CONFLICT_RETRIES: usize = 5;

/// [`crate::allocator::put`], again on the latest version when another plane wrote between
/// the read and the write.
async fn put(
    store: &dyn Store,
    resource: &crate::registry::Resource,
    object: Value,
) -> Result<(), ApiError> {
    let mut attempt = 0;
    loop {
        match crate::allocator::put(store, resource, object.clone()).await {
            Err(error)
                if error.code == axum::http::StatusCode::CONFLICT && attempt < CONFLICT_RETRIES =>
            {
                attempt += 1
            }
            done => return done,
        }
    }
}

/// Renews this plane's lease and writes the `kubernetes` endpoints with every live plane.
/// Returns the addresses written.
pub async fn reconcile(
    store: &dyn Store,
    advertise: SocketAddr,
    ttl: Duration,
) -> Result<Vec<String>, ApiError> {
    renew(store, advertise, ttl).await?;
    write_endpoints(store, advertise, true).await
}

/// Deletes this plane's lease and writes the `kubernetes` endpoints without it (a clean
/// shutdown). Returns the addresses left.
pub async fn remove(store: &dyn Store, advertise: SocketAddr) -> Result<Vec<String>, ApiError> {
    let key = format!("{LEASE_PREFIX}{}", advertise.ip());
    match store.delete(&key, None).await {
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(store_error(e)),
    }
    write_endpoints(store, advertise, false).await
}

/// [`reconcile`] every `interval` with leases of `ttl` until `stop` completes (never in the
/// middle of a reconcile, so a [`remove`] after this returns is not undone by it).
pub async fn run(
    store: Arc<dyn Store>,
    advertise: SocketAddr,
    interval: Duration,
    ttl: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        if let Err(error) = reconcile(store.as_ref(), advertise, ttl).await {
            tracing::warn!(%error, "cannot reconcile the kubernetes Service's endpoints");
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keelson_store::KeyValue;

    use super::*;

    fn lease(ip: &str, expires_at: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: format!("{LEASE_PREFIX}{ip}"),
            value: Bytes::from(format!(r#"{{"expiresAt":"{expires_at}","port":6443}}"#)),
            create_revision: revision,
            mod_revision: revision,
        }
    }

    #[test]
    fn only_unexpired_leases_are_live_sorted_as_kubernetes_sorts() {
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().expect("time");
        let items = [
            lease("10.0.0.9", "2026-01-01T00:00:20Z", 1),
            lease("10.0.0.10", "2026-01-01T00:00:11Z", 2),
            lease("10.0.0.2", "2026-01-01T00:00:10Z", 3),
            lease("10.0.0.3", "2026-01-01T00:00:01Z", 4),
            lease("not-an-ip", "2026-01-01T00:00:20Z", 5),
            KeyValue {
                value: Bytes::from_static(b"garbage"),
                ..lease("10.0.0.4", "", 6)
            },
        ];
        let (live, expired) = live_leases(&items, now);
        // Kubernetes sorts the addresses as strings.
        assert_eq!(live, ["10.0.0.10", "10.0.0.9"]);
        let expired: Vec<i64> = expired.iter().map(|(_, r)| *r).collect();
        assert_eq!(expired, [3, 4, 5, 6]);
    }

    #[test]
    fn endpoints_name_every_address_on_the_own_port() {
        let (endpoints, slice) =
            kubernetes_endpoints(&["10.0.0.1".to_owned(), "10.0.0.2".to_owned()], 6443);
        assert_eq!(
            endpoints["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}])
        );
        let addresses: Vec<&Value> = slice["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .map(|e| &e["addresses"][0])
            .collect();
        assert_eq!(addresses, [&json!("10.0.0.1"), &json!("10.0.0.2")]);
        assert_eq!(slice["addressType"], "IPv4");
        let (endpoints, slice) = kubernetes_endpoints(&[], 6443);
        assert_eq!(endpoints["subsets"], json!([]));
        assert_eq!(slice["endpoints"], json!([]));
        let (_, slice) = kubernetes_endpoints(&["fd00::1".to_owned()], 6443);
        assert_eq!(slice["addressType"], "IPv6");
    }
}
