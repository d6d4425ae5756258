//! keelson's Kubernetes-compatible API server.
//!
//! [`app`] builds the axum [`Router`]: discovery (`/version`, `/api`, `/apis`, `/api/v1`,
//! `/apis/<group>/<version>`, and the aggregated `apidiscovery.k8s.io` documents),
//! `/openapi/v2` and `/openapi/v3` ([`openapi`]), the health endpoints (`health`), and for every resource in [`registry::RESOURCES`] get, list,
//! watch, create, update, patch, delete and deletecollection, with the `status`, `scale`,
//! `binding`, `log`, `finalize` and `ephemeralcontainers` subresources, the relayed
//! `exec`, `attach`, `portforward` and `proxy` subresources (`relay`), and `/metrics`
//! ([`metrics`]); custom
//! resources of every established CustomResourceDefinition are served beside them (`crd`).
//! Writes are
//! decoded against the kind's k8s-openapi type (unknown fields dropped, warned about or refused
//! by `fieldValidation`), defaulted and validated as kube-apiserver does (`keelson-api`), and
//! stored as JSON under `/registry/<resource>/[<namespace>/]<name>` in a
//! [`keelson_store::Store`]; `metadata.resourceVersion` is the key's mod revision in the store
//! and is never stored itself. Every failure reaches the client as a Kubernetes `Status`
//! ([`ApiError`]). Every request is authenticated and authorized by [`auth`]; [`tls::serve`]
//! serves the router over HTTPS with client certificates. Writes go through the admission
//! webhooks of the stored Mutating- and ValidatingWebhookConfigurations; group versions
//! keelson does not serve are proxied to the APIServices that name a Service
//! ([`aggregation`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{any, get},
};
use keelson_store::Store;
use tokio::sync::watch;

mod admission;
pub mod aggregation;
pub mod allocator;
mod apply;
pub mod audit;
pub mod auth;
mod crd;
mod discovery;
pub mod error;
pub(crate) mod eviction;
pub mod finalizers;
pub mod fuzzing;
mod handlers;
mod health;
pub mod kube_dns;
pub mod master_leases;
pub mod metrics;
mod object;
pub mod openapi;
pub mod overload;
mod pod_log;
mod printers;
mod protobuf;
mod read;
pub mod registry;
mod relay;
mod request;
mod resource_metrics;
mod reviews;
mod store_cache;
mod table;
pub mod tls;
mod watch_stream;
pub mod watchcache;
mod write;

pub use aggregation::AggregatorClient;
pub use allocator::ServiceNetwork;
pub use auth::{Authenticator, UserInfo};
pub use error::ApiError;
pub use metrics::{InstrumentedStore, Metrics};
pub use pod_log::KubeletClient;

/// The largest request body accepted; larger ones get `413 RequestEntityTooLarge`
/// (kube-apiserver's limit too).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The Kubernetes version keelson reports in `/version`.
pub const KUBERNETES_VERSION: &str = "v1.33.0-keelson";

/// What every request handler shares: the store, the authenticator, the metrics and the
/// shutdown signal that ends watches.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    /// The instrumented store without the watch cache (what `store` is with `--watch-cache=false`).
    uncached: Arc<dyn Store>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    shutdown: Arc<watch::Sender<bool>>,
    services: Arc<ServiceNetwork>,
    watch_events: Arc<watch_stream::EventCache>,
    kubelet: Option<KubeletClient>,
    webhooks: Arc<admission::Webhooks>,
    aggregator: Option<AggregatorClient>,
    crds: Arc<crd::Registry>,
    openapi: Arc<openapi::OpenApi>,
    health: keelson_daemon::health::Health,
    /// Every request is authorized by this chain (masters, the Node authorizer, RBAC).
    authorizer: Arc<auth::authz::Authorizer>,
    /// The chain's RBAC link: writes of RBAC objects invalidate its index.
    rbac: Arc<auth::rbac::RbacAuthorizer>,
    /// Whether requests without credentials are served as `system:anonymous`.
    anonymous_auth: bool,
    /// The anonymous user, built once.
    anonymous: Arc<UserInfo>,
    service_accounts: Option<Arc<auth::serviceaccount::ServiceAccountTokens>>,
    auditor: Option<Arc<audit::Auditor>>,
    /// In-flight, open-watch and deadline limits ([`overload`]).
    overload: Arc<overload::Overload>,
}

impl AppState {
    /// State over `store`, which is wrapped in an [`InstrumentedStore`] so `/metrics` shows
    /// its latency, and in a [`watchcache::WatchCache`] (on by default, as kube-apiserver's
    /// `--watch-cache`; see [`AppState::with_watch_cache`]). Only requests with a verified client certificate (see [`tls`]) are
    /// authenticated until [`AppState::with_authenticator`] adds bearer tokens.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let shutdown = Arc::new(watch::Sender::new(false));
        let health = health::checks(Arc::clone(&store), Arc::clone(&shutdown));
        let uncached: Arc<dyn Store> =
            Arc::new(InstrumentedStore::new(store, Arc::clone(&metrics)));
        let store: Arc<dyn Store> = Arc::new(watchcache::WatchCache::new(
            Arc::clone(&uncached),
            watchcache::WatchCacheOptions::default(),
        ));
        let (authorizer, rbac) = auth::chain::default_chain(Arc::clone(&store));
        Self {
            store,
            uncached,
            authenticator: Arc::new(Authenticator::default()),
            metrics,
            shutdown,
            services: Arc::new(ServiceNetwork::default()),
            watch_events: Arc::default(),
            kubelet: None,
            webhooks: Arc::default(),
            aggregator: None,
            crds: Arc::default(),
            openapi: Arc::default(),
            health,
            authorizer,
            rbac,
            anonymous_auth: true,
            anonymous: Arc::new(UserInfo::anonymous()),
            service_accounts: None,
            auditor: None,
            overload: Arc::default(),
        }
    }

    /// Limits requests in flight, open watches per user and request time with `limits`
    /// instead of kube-apiserver's defaults ([`overload::Limits::default`]).
    pub fn with_limits(mut self, limits: overload::Limits) -> Self {
        self.overload = Arc::new(overload::Overload::new(limits));
        self
    }

    /// The counters of [`AppState::with_limits`].
    pub fn overload(&self) -> &Arc<overload::Overload> {
        &self.overload
    }

    /// Serves lists and watches from the watch cache (`true`, the default) or straight from
    /// the store (kube-apiserver's `--watch-cache`). Call it before `with_authorizer`: it
    /// rebuilds the default authorizer chain over the chosen store.
    pub fn with_watch_cache(mut self, enabled: bool) -> Self {
        if !enabled {
            self.store = Arc::clone(&self.uncached);
            let (authorizer, rbac) = auth::chain::default_chain(Arc::clone(&self.store));
            self.authorizer = authorizer;
            self.rbac = rbac;
        }
        self
    }

    /// A watch cache sized by `options` instead of the defaults (same caveat as
    /// [`AppState::with_watch_cache`]).
    pub fn with_watch_cache_options(mut self, options: watchcache::WatchCacheOptions) -> Self {
        self.store = Arc::new(watchcache::WatchCache::new(
            Arc::clone(&self.uncached),
            options,
        ));
        let (authorizer, rbac) = auth::chain::default_chain(Arc::clone(&self.store));
        self.authorizer = authorizer;
        self.rbac = rbac;
        self
    }

    /// Whether requests without credentials are served as `system:anonymous` (kube's
    /// `--anonymous-auth`, on by default) or refused with 401.
    pub fn with_anonymous_auth(mut self, enabled: bool) -> Self {
        self.anonymous_auth = enabled;
        self
    }

    /// The authorizer chain requests go through (for the access reviews).
    pub fn authorizer(&self) -> &Arc<auth::authz::Authorizer> {
        &self.authorizer
    }

    /// Issues and authenticates service-account tokens with `tokens` (TokenRequest, bearer
    /// JWTs, TokenReview, OIDC discovery) and turns on the ServiceAccount admission of pods.
    pub fn with_service_accounts(
        mut self,
        tokens: auth::serviceaccount::ServiceAccountTokens,
    ) -> Self {
        self.service_accounts = Some(Arc::new(tokens));
        self
    }

    /// Reaches node agents' kubelet endpoints (`kubectl logs`) with `client`.
    pub fn with_kubelet_client(mut self, client: KubeletClient) -> Self {
        self.kubelet = Some(client);
        self
    }

    /// Proxies aggregated APIs (APIServices with a Service) authenticated as `client`.
    pub fn with_aggregator_client(mut self, client: AggregatorClient) -> Self {
        self.aggregator = Some(client);
        self
    }

    /// Records requests in the audit log of `auditor` ([`audit`]).
    pub fn with_auditor(mut self, auditor: Arc<audit::Auditor>) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// The same state authenticating bearer tokens with `authenticator`.
    pub fn with_authenticator(mut self, authenticator: Authenticator) -> Self {
        self.authenticator = Arc::new(authenticator);
        self
    }

    /// The same state deciding with `authorizer` (the chain every request, the access
    /// reviews and impersonation ask) instead of the default (masters, Node, RBAC).
    pub fn with_authorizer(mut self, authorizer: auth::authz::Authorizer) -> Self {
        self.authorizer = Arc::new(authorizer);
        self
    }

    /// Allocates Services' ClusterIPs and NodePorts from `network` instead of the defaults
    /// (10.96.0.0/12, 30000-32767).
    pub fn with_service_network(mut self, network: ServiceNetwork) -> Self {
        self.services = Arc::new(network);
        self
    }

    /// The (instrumented) store: give this one to other users of the store, such as the
    /// compactor, so their calls are measured too.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The OpenAPI documents `/openapi/v2` and `/openapi/v3` serve: give custom kinds to
    /// [`openapi::OpenApi::set_custom`] when CRDs change.
    pub fn openapi(&self) -> &Arc<openapi::OpenApi> {
        &self.openapi
    }

    /// The checks `/livez`, `/readyz` and `/healthz` run (`ping`, `runtime`, `etcd`,
    /// `poststarthook/bootstrap`, `shutdown`): add the binary's own with
    /// [`keelson_daemon::health::Health::add`].
    pub fn health(&self) -> &keelson_daemon::health::Health {
        &self.health
    }

    /// Whether [`AppState::shutdown`] was called.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The metrics `/metrics` serves.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
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
        .route("/apis", get(resource_metrics::group_list))
        .route("/api/{*rest}", any(handlers::core))
        .route("/apis/{*rest}", any(handlers::grouped))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_index))
        .route(
            "/openapi/v3/{*group_version}",
            get(openapi::v3_group_version),
        )
        .route(
            "/.well-known/openid-configuration",
            get(auth::serviceaccount::oidc::serve_configuration),
        )
        .route(
            auth::serviceaccount::oidc::JWKS_PATH,
            get(auth::serviceaccount::oidc::serve_keys),
        )
        .merge(state.health.routes())
        .merge(resource_metrics::routes())
        .route("/metrics", get(metrics::serve))
        .fallback(discovery::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        // After impersonation, before authorization, as kube's max-in-flight filter.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            overload::limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::impersonate::impersonate,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Outside authentication, so refused requests are on record too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit::middleware,
        ))
        // Outside authentication, as kube's request deadline and timeout filters.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            overload::deadline,
        ))
        // Outermost, so that refused requests (401/403) are counted too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Namespaces that exist in every cluster, created at first start by [`bootstrap`].
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the [`SYSTEM_NAMESPACES`] that do not exist yet, and stores the bootstrap RBAC
/// policy (kube-apiserver's `rbac/bootstrap-roles`, see [`auth::rbac::reconcile`]).
pub async fn bootstrap(store: &dyn Store) -> Result<(), ApiError> {
    handlers::bootstrap(store).await?;
    auth::rbac::reconcile::bootstrap_policy(store).await
}
