//! Authentication (client certificates and bearer tokens), impersonation ([`impersonate`]) and
//! authorization (the chain of [`chain`]: `system:masters`, Kubernetes' Node authorizer
//! ([`node`]), RBAC ([`rbac`])), with node identities restricted to their own objects as
//! Kubernetes' NodeRestriction does.
//!
//! A client is authenticated, in this order, by
//! - the X.509 client certificate it presented in the TLS handshake, verified against the
//!   cluster CA by [`crate::tls`]: the subject's common name is the user, its organizations are
//!   the groups (Kubernetes' convention);
//! - an `Authorization: Bearer <token>` header that names a token of the static token file
//!   (Kubernetes' `--token-auth-file` CSV format: `token,user,uid,"group1,group2"`);
//! - a service-account JWT in that header ([`serviceaccount`]: kube's TokenRequest tokens,
//!   checked against the ServiceAccount and bound objects on every request);
//! - a bootstrap token in that header ([`bootstrap`]).
//!
//! Every authenticated user is also in `system:authenticated`. A request with none of these is
//! anonymous (`system:anonymous` in `system:unauthenticated`, kube's `--anonymous-auth`) and is
//! authorized like any other: the bootstrap policy lets it read the health and version
//! endpoints only. A bearer token that names nobody is 401. Every request, resource or not,
//! is then authorized by the chain ([`authorize`], after impersonation; [`request_info`] reads
//! what it asks); a denial is kube's 403.

use std::{collections::HashMap, path::Path, sync::Arc};

use axum::{
    extract::{Query, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    ApiError, AppState,
    request::{Params, Target},
};
use authz::Decision;

pub mod authz;
pub mod bootstrap;
pub mod chain;
pub mod impersonate;
pub mod masters;
pub mod node;
pub mod rbac;
pub(crate) mod request_info;
pub mod serviceaccount;

/// The group whose members may do everything (Kubernetes' superuser group).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group node identities carry.
pub const NODES_GROUP: &str = "system:nodes";
/// Node users are named `system:node:<node name>`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (`kubernetes-admin`, `system:node:n1`, ...).
    pub name: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// A unique identifier of the user (a service account's uid), or `""`.
    pub uid: String,
    /// Additional attributes (kube's `user.Info` extra: a service account token's pod name
    /// and uid under `authentication.kubernetes.io/pod-name` and `.../pod-uid`, ...).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user named `name` in `groups`.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            uid: String::new(),
            extra: std::collections::BTreeMap::new(),
        }
    }

    /// The identity of node `node`: `system:node:<node>` in `system:nodes`.
    pub fn node(node: &str) -> Self {
        Self::new(format!("{NODE_USER_PREFIX}{node}"), &[NODES_GROUP])
    }

    /// The user of requests without credentials: `system:anonymous` in
    /// `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self::new(
            bootstrap::ANONYMOUS_USER,
            &[bootstrap::UNAUTHENTICATED_GROUP],
        )
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Whether the user may do everything.
    pub fn is_admin(&self) -> bool {
        self.in_group(MASTERS_GROUP)
    }

    /// The node this user is the identity of, if any.
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|node| !node.is_empty() && self.in_group(NODES_GROUP))
    }
}

/// The identity the TLS layer verified from the client certificate of the connection a request
/// came on; [`crate::tls`] puts it in the request's extensions.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<UserInfo>);

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `token,user,uid[,"groups"]`.
    #[error("token file {path}, line {line}: {cause}")]
    Line {
        /// The file.
        path: String,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        cause: String,
    },
}

/// Maps bearer tokens to users.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: HashMap<String, Arc<UserInfo>>,
}

impl Authenticator {
    /// Adds a token for `user`.
    pub fn with_token(mut self, token: impl Into<String>, user: UserInfo) -> Self {
        self.tokens.insert(token.into(), Arc::new(user));
        self
    }

    /// Reads a Kubernetes static token file: CSV lines `token,user,uid[,"group1,group2"]`.
    pub fn from_token_file(path: &Path) -> Result<Self, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| TokenFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_slice());
        let mut authenticator = Self::default();
        for record in reader.records() {
            let bad = |line: u64, cause: String| TokenFileError::Line {
                path: shown.clone(),
                line,
                cause,
            };
            let record = record
                .map_err(|e| bad(e.position().map_or(0, csv::Position::line), e.to_string()))?;
            let line = record.position().map_or(0, csv::Position::line);
            let (Some(token), Some(user)) = (record.get(0), record.get(1)) else {
                return Err(bad(line, "expected token,user,uid[,\"groups\"]".into()));
            };
            if token.is_empty() || user.is_empty() {
                return Err(bad(line, "the token and the user must not be empty".into()));
            }
            let groups: Vec<&str> = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            authenticator = authenticator.with_token(token, UserInfo::new(user, &groups));
        }
        Ok(authenticator)
    }

    /// The user a request authenticates as: its client certificate, else its bearer token.
    /// `Ok(None)` is anonymous; a bearer token that names nobody is an error (401).
    fn authenticate(&self, request: &Request) -> Result<Option<Arc<UserInfo>>, ApiError> {
        if let Some(ClientCertificate(user)) = request.extensions().get::<ClientCertificate>() {
            return Ok(Some(Arc::clone(user)));
        }
        if request.headers().get(header::AUTHORIZATION).is_none() {
            return Ok(None);
        }
        let token = bearer_token(request.headers()).ok_or_else(ApiError::unauthorized)?;
        self.tokens
            .get(token)
            .cloned()
            .map(Some)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is matched without
/// regard to case, as Kubernetes' bearer-token authenticator does (the Python client sends
/// `bearer`); an empty token is none.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated user of a request, in its extensions once [`authenticate`] let it through.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<UserInfo>);

/// `user` in [`AUTHENTICATED_GROUP`] (kube's authenticator adds it to every user it
/// authenticates); unchanged, without a copy, when it is in it already (the TLS layer adds
/// it once per connection).
pub(crate) fn in_authenticated_group(user: Arc<UserInfo>) -> Arc<UserInfo> {
    if user.in_group(AUTHENTICATED_GROUP) {
        return user;
    }
    let mut user = Arc::unwrap_or_clone(user);
    user.groups.push(AUTHENTICATED_GROUP.to_owned());
    Arc::new(user)
}

/// Middleware: authenticates every request (401 for credentials that name nobody; none at
/// all is the anonymous user unless anonymous requests are off); [`authorize`] decides later.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match state.authenticator.authenticate(&request) {
        Ok(user) => user,
        Err(error) => {
            let now = jiff::Timestamp::now();
            let user = match serviceaccount::authenticate(&state, request.headers()).await {
                Some(user) => Some(user),
                None => bootstrap::authenticate(state.store.as_ref(), request.headers(), now).await,
            };
            match user {
                Some(user) => Some(user),
                None => return error.into_response(),
            }
        }
    };
    let user = match user {
        Some(user) => in_authenticated_group(user),
        None if state.anonymous_auth => Arc::clone(&state.anonymous),
        None => return ApiError::unauthorized().into_response(),
    };
    crate::audit::record_user(&user);
    request.extensions_mut().insert(Authenticated(user));
    next.run(request).await
}

/// Middleware, after [`authenticate`] and impersonation: asks the authorizer chain about the
/// request of the (possibly impersonated) user, resource or not; a denial is kube's 403.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(Authenticated(user)) = request.extensions().get::<Authenticated>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let params = Query::<Params>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let attributes =
        request_info::attributes(user, request.method(), request.uri().path(), &params);
    let decision = state.authorizer.authorize(&attributes).await;
    crate::audit::record_decision(&decision);
    match decision {
        Decision::Allow(_) => {}
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            return request_info::forbidden(&attributes, &reason).into_response();
        }
    }
    // A WebSocket exec, attach or portforward is a GET, yet it writes to the pod: it needs
    // `create` as well (kube 1.35's AuthorizePodWebsocketUpgradeCreatePermission, on by
    // default), as the SPDY POST does.
    if let Some(create) = request_info::connect_create_check(&attributes) {
        match state.authorizer.authorize(&create).await {
            Decision::Allow(_) => {}
            Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                return request_info::forbidden(&create, &reason).into_response();
            }
        }
    }
    next.run(request).await
}

/// What a request on a resource may do, once [`authorize`] has looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Everything the verb does.
    Granted,
    /// Only if the pod it names is bound to this node (checked against the stored pod).
    PodBoundTo(String),
    /// A create, only of an object with this name (checked against the request body).
    CreateNamed(String),
    /// A create, only of an object whose name starts with this (checked against the request
    /// body).
    CreatePrefixed(&'static str),
}

/// NodeRestriction for a request the chain allowed: node users' writes limited to their own
/// Node, Lease and bound pods ([`node::restriction::restrict`]); every other user is
/// [`Access::Granted`].
pub(crate) fn restriction(
    user: &UserInfo,
    verb: &str,
    target: &Target,
) -> Result<Access, ApiError> {
    match user.node_name() {
        Some(node) => node::restriction::restrict(user, node, verb, target),
        None => Ok(Access::Granted),
    }
}

/// The 403 for a create of an object not named `allowed` ([`Access::CreateNamed`]), or (with
/// `prefix`) whose name does not start with `allowed` ([`Access::CreatePrefixed`]).
pub(crate) fn check_created_name(
    user: &UserInfo,
    target: &Target,
    body: &[u8],
    allowed: &str,
    prefix: bool,
) -> Result<(), ApiError> {
    let name = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|o| o.pointer("/metadata/name")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    if name == allowed || (prefix && name.starts_with(allowed)) {
        return Ok(());
    }
    let named = Target {
        resource: target.resource,
        namespace: target.namespace.clone(),
        name: Some(name.clone()),
        subresource: None,
        custom: None,
    };
    let why = match (prefix, user.node_name()) {
        (true, Some(node)) => format!(
            "node \"{node}\" may only create the {} whose name starts with \"{allowed}\"",
            target.resource.plural
        ),
        _ => format!(
            "node \"{allowed}\" may only create the {} named \"{allowed}\"",
            target.resource.plural
        ),
    };
    Err(forbidden(user, "create", &named, &why))
}

pub(crate) use node::restriction::pod_not_bound;

/// Kubernetes' wording: `pods "p" is forbidden: User "u" cannot patch resource "pods" in API
/// group "" in the namespace "ns": <why>` (no `: <why>` when `why` is empty).
pub(crate) fn forbidden(user: &UserInfo, verb: &str, target: &Target, why: &str) -> ApiError {
    let resource = target.resource;
    let object = match target.name.as_deref() {
        Some(name) => format!("{} \"{name}\"", resource.qualified()),
        None => resource.qualified(),
    };
    let scope = match target.namespace.as_deref() {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let sub = target
        .subresource
        .as_deref()
        .map(|s| format!("/{s}"))
        .unwrap_or_default();
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    ApiError::forbidden(format!(
        "{object} is forbidden: User \"{}\" cannot {verb} resource \"{}{sub}\" in API group \"{}\" \
         {scope}{why}",
        user.name, resource.plural, resource.group
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_case() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ];
        for (value, expected) in cases {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                value.parse().expect("a header value"),
            );
            assert_eq!(bearer_token(&headers), expected, "{value:?}");
        }
    }

    #[test]
    fn token_files_use_kubernetes_csv_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.csv");
        std::fs::write(
            &path,
            "# comment\nabc,kubernetes-admin,1,\"system:masters\"\nnode-secret,system:node:n1,2,\"system:nodes,extra\"\nplain,alice,3\n",
        )
        .expect("write");
        let auth = Authenticator::from_token_file(&path).expect("parse");
        assert!(auth.tokens["abc"].is_admin());
        assert_eq!(auth.tokens["node-secret"].node_name(), Some("n1"));
        assert_eq!(auth.tokens["node-secret"].groups, ["system:nodes", "extra"]);
        assert!(auth.tokens["plain"].groups.is_empty());
        std::fs::write(&path, "only-a-token\n").expect("write");
        let error = Authenticator::from_token_file(&path).expect_err("too few fields");
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}
