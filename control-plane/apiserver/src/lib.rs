//! keelson's Kubernetes-compatible API server.
//!
//! [`app`] builds the axum [`Router`]: discovery (`/version`, `/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`), `/openapi/v2`, health endpoints, and for every resource in
//! [`resources::RESOURCES`] get, list, watch, create, update, patch, delete and deletecollection,
//! with the `status`, `scale` and `binding` subresources. Objects are stored as raw JSON (unknown
//! fields survive) under `/registry/<resource>/[<namespace>/]<name>` in a [`keelson_store::Store`];
//! `metadata.resourceVersion` is the key's mod revision in the store and is never stored itself.
//! Every failure reaches the client as a Kubernetes `Status` ([`ApiError`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::{
    Router,
    routing::{any, get},
};
use keelson_store::Store;
use tokio::sync::watch;

pub mod allocator;
mod discovery;
pub mod error;
pub mod finalizers;
mod handlers;
mod object;
pub mod resources;
mod watch_stream;

pub use allocator::ServiceNetwork;
pub use error::ApiError;

/// The largest request body accepted; larger ones get `413 RequestEntityTooLarge`
/// (kube-apiserver's limit too).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The Kubernetes version keelson reports in `/version`.
pub const KUBERNETES_VERSION: &str = "v1.33.0-keelson";

/// What every request handler shares: the store and the shutdown signal that ends watches.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    shutdown: Arc<watch::Sender<bool>>,
    services: Arc<ServiceNetwork>,
}

impl AppState {
    /// State over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            shutdown: Arc::new(watch::Sender::new(false)),
            services: Arc::new(ServiceNetwork::default()),
        }
    }

    /// Allocates Services' ClusterIPs and NodePorts from `network` instead of the defaults
    /// (10.96.0.0/12, 30000-32767).
    pub fn with_service_network(mut self, network: ServiceNetwork) -> Self {
        self.services = Arc::new(network);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Ends every open watch stream (their clients see the stream end and re-watch), so a
    /// graceful shutdown does not wait for watches to time out.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

/// The API server's router (see the crate documentation).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/apis", get(discovery::group_list))
        .route("/api/{*rest}", any(handlers::core))
        .route("/apis/{*rest}", any(handlers::grouped))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .route("/healthz", get(discovery::ok))
        .route("/readyz", get(discovery::ok))
        .route("/livez", get(discovery::ok))
        .fallback(discovery::not_found)
        .with_state(state)
}

/// Namespaces that exist in every cluster, created at first start by [`bootstrap`].
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the [`SYSTEM_NAMESPACES`] that do not exist yet.
pub async fn bootstrap(store: &dyn Store) -> Result<(), ApiError> {
    handlers::bootstrap(store).await
}
