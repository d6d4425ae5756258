//! The API server's health checks, served at `/livez`, `/readyz` and `/healthz` by
//! [`keelson_daemon::health`] with kube-apiserver's names:
//!
//! - `ping`, `runtime` (livez): the process answers and its async runtime runs tasks;
//! - `etcd`: the store answers a read within the bound (whichever backend: SQLite or etcd);
//! - `poststarthook/bootstrap`: the system namespaces exist (checked until they do once);
//! - `shutdown` (readyz only): fails once a graceful shutdown began, so load balancers stop
//!   sending requests while open ones finish.
//!
//! The binary adds its own (the in-process controllers' and scheduler's informers) through
//! [`crate::AppState::health`].

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use keelson_daemon::health::{Health, Scope};
use keelson_store::Store;
use tokio::sync::watch;

use crate::SYSTEM_NAMESPACES;

/// A key read to see that the store answers; it need not exist.
const PROBE_KEY: &str = "/registry/health";

/// The checks over `store` and the shutdown signal.
pub(crate) fn checks(store: Arc<dyn Store>, shutdown: Arc<watch::Sender<bool>>) -> Health {
    let health = Health::new();
    let etcd = Arc::clone(&store);
    health.add("etcd", Scope::Ready, move || {
        let store = Arc::clone(&etcd);
        async move {
            store
                .get(PROBE_KEY, None)
                .await
                .map(|_| ())
                .map_err(|error| format!("the store did not answer a read: {error}"))
        }
    });
    let done = Arc::new(AtomicBool::new(false));
    health.add("poststarthook/bootstrap", Scope::Ready, move || {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        async move {
            if done.load(Ordering::Acquire) {
                return Ok(());
            }
            for namespace in SYSTEM_NAMESPACES {
                let key = format!("/registry/namespaces/{namespace}");
                match store.get(&key, None).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(format!("namespace {namespace} not created yet")),
                    Err(error) => {
                        return Err(format!("cannot read namespace {namespace}: {error}"));
                    }
                }
            }
            done.store(true, Ordering::Release);
            Ok(())
        }
    });
    health.add("shutdown", Scope::ReadyOnly, move || {
        let shutting_down = *shutdown.borrow();
        async move {
            if shutting_down {
                Err("the server is shutting down".to_owned())
            } else {
                Ok(())
            }
        }
    });
    health
}
