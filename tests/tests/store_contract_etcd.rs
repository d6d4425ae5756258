//! The store contract (the same cases as the SQLite store's, see
//! `control-plane/store/src/contract.rs`) on a real etcd that the harness starts on loopback.
//! Each case gets its own etcd, so compaction in one case cannot disturb another.

use std::sync::Arc;

use keelson_store::{EtcdStore, Store};
use keelson_tests::etcd::Etcd;

/// A fresh etcd and a store on it; the etcd process lives (and is killed on drop) with the guard.
async fn open_etcd() -> (Arc<dyn Store>, Etcd) {
    let etcd = Etcd::start().await;
    let store = EtcdStore::connect(&[etcd.endpoint()])
        .await
        .unwrap_or_else(|e| panic!("cannot connect the etcd store to {}: {e}", etcd.endpoint()));
    (Arc::new(store), etcd)
}

keelson_store::contract_suite!(open_etcd());
