//! Authentication (client certificates and bearer tokens) and authorization (administrators,
//! and node identities restricted to their own objects as Kubernetes' NodeRestriction does).
//!
//! A client is authenticated, in this order, by
//! - the X.509 client certificate it presented in the TLS handshake, verified against the
//!   cluster CA by [`crate::tls`]: the subject's common name is the user, its organizations are
//!   the groups (Kubernetes' convention);
//! - an `Authorization: Bearer <token>` header that names a token of the static token file
//!   (Kubernetes' `--token-auth-file` CSV format: `token,user,uid,"group1,group2"`).
//!
//! A request with neither is anonymous and gets 401, except the health and version endpoints
//! (which Kubernetes also opens to everyone). Members of `system:masters` may do everything;
//! `system:node:<name>` users in `system:nodes` may read, and change only their own Node, their
//! own Lease in `kube-node-lease`, the status of pods bound to them (and delete those pods), and
//! events. Bootstrap tokens and the few fixed permissions joining nodes need are in
//! [`bootstrap`]. Any other authenticated user may use discovery only: keelson has no RBAC.

use std::{collections::HashMap, path::Path, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{ApiError, AppState, request::Target};

pub mod authz;
pub mod bootstrap;

/// The group whose members may do everything (Kubernetes' superuser group).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group node identities carry.
pub const NODES_GROUP: &str = "system:nodes";
/// Node users are named `system:node:<node name>`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Paths anyone may read without credentials.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", "/livez", "/version"];

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
        let Some(value) = request.headers().get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        self.tokens
            .get(token)
            .cloned()
            .map(Some)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The authenticated user of a request, in its extensions once [`authenticate`] let it through.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<UserInfo>);

/// Middleware: authenticates every request (401 without valid credentials, except
/// [`PUBLIC_PATHS`]) and keeps users that are neither administrators nor nodes to discovery.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match state.authenticator.authenticate(&request) {
        Ok(user) => user,
        Err(error) => {
            let now = jiff::Timestamp::now();
            match bootstrap::authenticate(state.store.as_ref(), request.headers(), now).await {
                Some(user) => Some(user),
                None => return error.into_response(),
            }
        }
    };
    let path = request.uri().path();
    let Some(user) = user.or_else(|| bootstrap::anonymous_for(request.method(), path)) else {
        if PUBLIC_PATHS.contains(&path) {
            return next.run(request).await;
        }
        return ApiError::unauthorized().into_response();
    };
    crate::audit::record_user(&user);
    let may_pass = user.is_admin()
        || user.node_name().is_some()
        || bootstrap::has_fixed_rules(&user)
        || (request.method() == Method::GET && is_discovery(path));
    if !may_pass {
        return ApiError::forbidden(format!(
            "forbidden: User \"{}\" cannot {} path \"{path}\"",
            user.name,
            request.method().as_str().to_ascii_lowercase()
        ))
        .into_response();
    }
    request.extensions_mut().insert(Authenticated(user));
    next.run(request).await
}

/// Discovery and health paths, which every authenticated user may read.
fn is_discovery(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    PUBLIC_PATHS.contains(&path)
        || matches!(
            segments.as_slice(),
            ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _] | ["openapi", ..]
        )
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
}

/// NodeRestriction for node users; administrators may do everything. `verb` is Kubernetes'
/// verb name (get, list, watch, create, update, patch, delete, deletecollection).
pub(crate) fn authorize(user: &UserInfo, verb: &str, target: &Target) -> Result<Access, ApiError> {
    if user.is_admin() {
        return Ok(Access::Granted);
    }
    if let Some(access) = bootstrap::fixed_rule(user, verb, target) {
        return Ok(access);
    }
    let Some(node) = user.node_name() else {
        return Err(forbidden(
            user,
            verb,
            target,
            "keelson grants API access to administrators and nodes only",
        ));
    };
    if matches!(verb, "get" | "list" | "watch") {
        return Ok(Access::Granted);
    }
    let resource = target.resource.plural;
    let name = target.name.as_deref();
    let own = name == Some(node);
    let sub = target.subresource.as_deref();
    match (resource, verb) {
        ("events", "create" | "update" | "patch") => Ok(Access::Granted),
        ("nodes", "create") if name.is_none() => Ok(Access::CreateNamed(node.to_owned())),
        ("nodes", "update" | "patch") if own => Ok(Access::Granted),
        ("nodes", "create" | "update" | "patch") => Err(forbidden(
            user,
            verb,
            target,
            &format!(
                "node \"{node}\" is not allowed to modify node \"{}\"",
                name.unwrap_or("")
            ),
        )),
        ("leases", "create" | "update" | "patch")
            if target.namespace.as_deref() == Some("kube-node-lease") =>
        {
            if own {
                Ok(Access::Granted)
            } else if verb == "create" && name.is_none() {
                Ok(Access::CreateNamed(node.to_owned()))
            } else {
                Err(forbidden(
                    user,
                    verb,
                    target,
                    &format!("node \"{node}\" may only modify its own lease in kube-node-lease"),
                ))
            }
        }
        ("leases", _) => Err(forbidden(
            user,
            verb,
            target,
            &format!("node \"{node}\" may only modify its own lease in kube-node-lease"),
        )),
        ("pods", "update" | "patch") if name.is_some() && sub == Some("status") => {
            Ok(Access::PodBoundTo(node.to_owned()))
        }
        ("pods", "delete") if name.is_some() && sub.is_none() => {
            Ok(Access::PodBoundTo(node.to_owned()))
        }
        ("pods", _) => Err(forbidden(
            user,
            verb,
            target,
            &format!("node \"{node}\" may only update the status of, and delete, pods bound to it"),
        )),
        _ => Err(forbidden(
            user,
            verb,
            target,
            &format!("node \"{node}\" cannot {verb} {resource}"),
        )),
    }
}

/// The 403 for a create of an object not named `allowed` ([`Access::CreateNamed`]).
pub(crate) fn check_created_name(
    user: &UserInfo,
    target: &Target,
    body: &[u8],
    allowed: &str,
) -> Result<(), ApiError> {
    let name = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|o| o.pointer("/metadata/name")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    if name == allowed {
        return Ok(());
    }
    let named = Target {
        resource: target.resource,
        namespace: target.namespace.clone(),
        name: Some(name.clone()),
        subresource: None,
        custom: None,
    };
    Err(forbidden(
        user,
        "create",
        &named,
        &format!(
            "node \"{allowed}\" may only create the {} named \"{allowed}\"",
            target.resource.plural
        ),
    ))
}

/// The 403 for a pod that is not bound to the node asking.
pub(crate) fn pod_not_bound(user: &UserInfo, verb: &str, target: &Target, node: &str) -> ApiError {
    forbidden(
        user,
        verb,
        target,
        &format!("node \"{node}\" can only {verb} pods bound to it"),
    )
}

/// Kubernetes' wording: `pods "p" is forbidden: User "u" cannot patch resource "pods" in API
/// group "" in the namespace "ns": <why>`.
fn forbidden(user: &UserInfo, verb: &str, target: &Target, why: &str) -> ApiError {
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
    ApiError::forbidden(format!(
        "{object} is forbidden: User \"{}\" cannot {verb} resource \"{}{sub}\" in API group \"{}\" \
         {scope}: {why}",
        user.name, resource.plural, resource.group
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    fn target(plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Target {
        let resource = registry::RESOURCES
            .iter()
            .find(|r| r.plural == plural)
            .expect("a served resource");
        Target {
            resource,
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
            custom: None,
        }
    }

    #[test]
    fn node_users_change_only_their_own_objects() {
        let n1 = UserInfo::node("n1");
        let granted = |verb, t: Target| authorize(&n1, verb, &t);
        assert_eq!(
            granted("patch", target("nodes", None, Some("n1"), Some("status"))),
            Ok(Access::Granted)
        );
        assert_eq!(
            granted("create", target("nodes", None, None, None)),
            Ok(Access::CreateNamed("n1".into()))
        );
        let other = granted("patch", target("nodes", None, Some("n2"), Some("status")))
            .expect_err("another node");
        assert_eq!(other.code, 403);
        assert!(
            other
                .message
                .contains("User \"system:node:n1\" cannot patch"),
            "{}",
            other.message
        );
        assert_eq!(
            granted(
                "update",
                target("leases", Some("kube-node-lease"), Some("n1"), None)
            ),
            Ok(Access::Granted)
        );
        assert!(
            granted(
                "update",
                target("leases", Some("kube-node-lease"), Some("n2"), None)
            )
            .is_err()
        );
        assert!(
            granted(
                "update",
                target("leases", Some("default"), Some("n1"), None)
            )
            .is_err()
        );
        assert_eq!(
            granted(
                "patch",
                target("pods", Some("default"), Some("p"), Some("status"))
            ),
            Ok(Access::PodBoundTo("n1".into()))
        );
        assert_eq!(
            granted("delete", target("pods", Some("default"), Some("p"), None)),
            Ok(Access::PodBoundTo("n1".into()))
        );
        assert!(granted("patch", target("pods", Some("default"), Some("p"), None)).is_err());
        assert!(granted("create", target("pods", Some("default"), None, None)).is_err());
        assert!(granted("delete", target("nodes", None, Some("n1"), None)).is_err());
        assert!(granted("create", target("secrets", Some("default"), None, None)).is_err());
        assert_eq!(
            granted("list", target("secrets", None, None, None)),
            Ok(Access::Granted)
        );
        assert_eq!(
            granted("create", target("events", Some("default"), None, None)),
            Ok(Access::Granted)
        );
    }

    #[test]
    fn a_node_user_needs_the_nodes_group() {
        let impostor = UserInfo::new("system:node:n1", &[]);
        assert_eq!(impostor.node_name(), None);
        assert!(authorize(&impostor, "get", &target("pods", None, None, None)).is_err());
        let admin = UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]);
        assert_eq!(
            authorize(&admin, "delete", &target("nodes", None, Some("n2"), None)),
            Ok(Access::Granted)
        );
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
