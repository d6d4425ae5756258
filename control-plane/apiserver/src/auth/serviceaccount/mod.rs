//! Service-account tokens, as kube-apiserver 1.33 issues and checks them
//! (`pkg/serviceaccount/{claims,jwt}.go`, `pkg/registry/core/serviceaccount/storage/token.go`,
//! `staging/.../apiserver/pkg/authentication/serviceaccount/util.go`).
//!
//! [`ServiceAccountTokens`] holds the control plane's ES256 key (`sa.key`), the issuer
//! (`--service-account-issuer`) and the API audiences (`--api-audiences`). It signs the JWTs
//! of the TokenRequest API ([`token_request`]) and authenticates `Authorization: Bearer`
//! JWTs ([`authenticate`]): signature, issuer, audience, `exp`/`nbf`/`iat` with kube's 60 s
//! leeway, then on every request the ServiceAccount (it must exist with the uid the token
//! names) and the Pod, Secret or Node the token is bound to. TokenReview ([`review`]) and the
//! OIDC discovery documents ([`oidc`]) read the same state.

use std::{collections::BTreeMap, sync::Arc};

use axum::http::HeaderMap;
use keelson_store::Store;
use serde_json::{Value, json};

use super::UserInfo;
use crate::{AppState, registry};

pub mod jwt;
pub(crate) mod oidc;
pub(crate) mod review;
pub(crate) mod token_request;

pub use jwt::KeyError;

/// kube-apiserver's default `--service-account-issuer` in kubeadm clusters.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The leeway on `exp`, `nbf` and `iat`, and on deletion timestamps (go-jose's
/// `DefaultLeeway`).
pub const LEEWAY_SECONDS: i64 = 60;
/// `expirationSeconds` of the token the ServiceAccount admission projects into pods
/// (kube's `WarnOnlyBoundTokenExpirationSeconds`: an hour and seven seconds).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 60 * 60 + 7;
/// How long such a pod-bound token really lasts when `--service-account-extend-token-expiration`
/// is on (kube's `ExpirationExtensionSeconds`: a year).
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 24 * 365 * 60 * 60;

/// The `system:serviceaccount:` user-name prefix.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The group every service account is in.
pub const ALL_GROUP: &str = "system:serviceaccounts";
/// `user.Info` extra keys of service-account users.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// See [`POD_NAME_KEY`].
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// See [`POD_NAME_KEY`].
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// See [`POD_NAME_KEY`].
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
/// See [`POD_NAME_KEY`].
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// The signing key and the settings of service-account tokens.
#[derive(Debug)]
pub struct ServiceAccountTokens {
    key: jwt::SigningKey,
    issuer: String,
    audiences: Vec<String>,
    max_expiration_seconds: Option<i64>,
    extend_expiration: bool,
    jwks_uri: Option<String>,
}

impl ServiceAccountTokens {
    /// Tokens signed with the P-256 key in `key_pem` (PKCS#8), issued by `issuer`, for the API
    /// audience `issuer` (change with [`Self::with_api_audiences`]).
    pub fn new(key_pem: &str, issuer: impl Into<String>) -> Result<Self, KeyError> {
        let issuer = issuer.into();
        Ok(Self {
            key: jwt::SigningKey::from_pem(key_pem)?,
            audiences: vec![issuer.clone()],
            issuer,
            max_expiration_seconds: None,
            extend_expiration: true,
            jwks_uri: None,
        })
    }

    /// `--api-audiences`: what the API server accepts tokens for, and the audience of tokens
    /// requested without one. Empty keeps the issuer (kube's default).
    pub fn with_api_audiences(mut self, audiences: Vec<String>) -> Self {
        if !audiences.is_empty() {
            self.audiences = audiences;
        }
        self
    }

    /// `--service-account-max-token-expiration`: longer requests are shortened to this.
    pub fn with_max_expiration_seconds(mut self, seconds: Option<i64>) -> Self {
        self.max_expiration_seconds = seconds.filter(|s| *s > 0);
        self
    }

    /// `--service-account-extend-token-expiration` (on by default, as in kube).
    pub fn with_extend_expiration(mut self, extend: bool) -> Self {
        self.extend_expiration = extend;
        self
    }

    /// `--service-account-jwks-uri`: the `jwks_uri` of the discovery document (default
    /// `<issuer scheme and host>/openid/v1/jwks`).
    pub fn with_jwks_uri(mut self, uri: Option<String>) -> Self {
        self.jwks_uri = uri;
        self
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The API audiences.
    pub fn api_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The signing key.
    pub fn key(&self) -> &jwt::SigningKey {
        &self.key
    }
}

/// The name and uid of an object a token names (`kubernetes.io.pod`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ObjectRef {
    pub(crate) name: String,
    pub(crate) uid: String,
}

impl ObjectRef {
    fn of(object: &Value) -> Self {
        let meta = |field: &str| {
            object
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            name: meta("name"),
            uid: meta("uid"),
        }
    }

    fn from_claim(claim: Option<&Value>) -> Option<Self> {
        let claim = claim?.as_object()?;
        let text = |field: &str| {
            claim
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(Self {
            name: text("name"),
            uid: text("uid"),
        })
    }

    /// kube's `ref` with `omitempty` fields.
    fn claim(&self) -> Value {
        let mut claim = serde_json::Map::new();
        if !self.name.is_empty() {
            claim.insert("name".into(), json!(self.name));
        }
        if !self.uid.is_empty() {
            claim.insert("uid".into(), json!(self.uid));
        }
        Value::Object(claim)
    }
}

/// What a token is bound to (kube allows one kind; a pod-bound token also names its node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bound {
    pub(crate) pod: Option<ObjectRef>,
    pub(crate) secret: Option<ObjectRef>,
    pub(crate) node: Option<ObjectRef>,
}

/// The claims of a new token (kube's `serviceaccount.Claims`): `iss, sub, aud, exp, iat, nbf,
/// jti` and `kubernetes.io` with the namespace, the service account, the bound objects and,
/// for extended tokens, `warnafter`.
#[expect(clippy::too_many_arguments, reason = "one per claim kube writes")]
pub(crate) fn claims(
    issuer: &str,
    namespace: &str,
    service_account: &ObjectRef,
    bound: &Bound,
    audiences: &[String],
    now: i64,
    expiration_seconds: i64,
    warn_after_seconds: Option<i64>,
    jti: &str,
) -> Value {
    let mut kubernetes = serde_json::Map::new();
    kubernetes.insert("namespace".into(), json!(namespace));
    kubernetes.insert("serviceaccount".into(), service_account.claim());
    if let Some(pod) = &bound.pod {
        kubernetes.insert("pod".into(), pod.claim());
    }
    if let Some(secret) = &bound.secret {
        kubernetes.insert("secret".into(), secret.claim());
    }
    if let Some(node) = &bound.node {
        kubernetes.insert("node".into(), node.claim());
    }
    if let Some(warn) = warn_after_seconds {
        kubernetes.insert("warnafter".into(), json!(now + warn));
    }
    json!({
        "iss": issuer,
        "sub": format!("{USER_PREFIX}{namespace}:{}", service_account.name),
        "aud": audiences,
        "exp": now + expiration_seconds,
        "iat": now,
        "nbf": now,
        "jti": jti,
        "kubernetes.io": kubernetes,
    })
}

/// A verified token's identity, before the objects it names are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenClaims {
    pub(crate) namespace: String,
    pub(crate) service_account: ObjectRef,
    pub(crate) bound: Bound,
    pub(crate) jti: String,
    /// The audiences both the token and the request name.
    pub(crate) audiences: Vec<String>,
}

/// The outcome of checking a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Not a JWT of this issuer: another authenticator's token.
    NotOurs,
    /// A token of this issuer that does not authenticate, and why (kube's wording).
    Refused(String),
    /// The user and the audiences both the token and the request name.
    User(UserInfo, Vec<String>),
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(" "))
}

/// The audiences a token claims: kube accepts a string or a list.
fn token_audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl ServiceAccountTokens {
    /// Checks `token`'s signature, issuer, audience (against `requested`, the API audiences
    /// when empty) and times at `now` (Unix seconds). Nothing is read from the store.
    pub(crate) fn verify(
        &self,
        token: &str,
        requested: &[String],
        now: i64,
    ) -> Result<Option<TokenClaims>, String> {
        let Some(parsed) = jwt::parse(token) else {
            return Ok(None);
        };
        if parsed.claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Ok(None);
        }
        parsed.verify(&self.key).map_err(str::to_owned)?;
        let claims = &parsed.claims;
        let requested = if requested.is_empty() {
            &self.audiences[..]
        } else {
            requested
        };
        let audiences = token_audiences(claims);
        let common: Vec<String> = requested
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect();
        if common.is_empty() {
            return Err(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted(&audiences),
                go_quoted(requested)
            ));
        }
        let time = |name: &str| claims.get(name).and_then(Value::as_i64);
        if time("exp").is_some_and(|exp| now - LEEWAY_SECONDS > exp) {
            return Err("service account token has expired".into());
        }
        if time("nbf").is_some_and(|nbf| now + LEEWAY_SECONDS < nbf) {
            return Err("service account token is not valid yet".into());
        }
        if time("iat").is_some_and(|iat| now + LEEWAY_SECONDS < iat) {
            return Err("service account token is issued in the future".into());
        }
        let private = claims.get("kubernetes.io");
        let field = |name: &str| private.and_then(|p| p.get(name));
        let service_account = ObjectRef::from_claim(field("serviceaccount")).unwrap_or_default();
        let namespace = field("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if namespace.is_empty() || service_account.name.is_empty() {
            return Err("service account token claims could not be validated".into());
        }
        Ok(Some(TokenClaims {
            namespace,
            service_account,
            bound: Bound {
                pod: ObjectRef::from_claim(field("pod")),
                secret: ObjectRef::from_claim(field("secret")),
                node: ObjectRef::from_claim(field("node")),
            },
            jti: claims
                .get("jti")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            audiences: common,
        }))
    }

    /// [`Self::verify`], then the objects the token names looked up in `store` (kube's
    /// `validator.Validate`): the ServiceAccount, and the Pod, Secret or Node it is bound to.
    pub(crate) async fn check(
        &self,
        store: &dyn Store,
        token: &str,
        requested: &[String],
        now: i64,
    ) -> Checked {
        let claims = match self.verify(token, requested, now) {
            Ok(Some(claims)) => claims,
            Ok(None) => return Checked::NotOurs,
            Err(why) => return Checked::Refused(why),
        };
        match still_valid(store, &claims, now).await {
            Ok(()) => Checked::User(user_of(&claims), claims.audiences),
            Err(why) => Checked::Refused(why),
        }
    }
}

/// A stored object, or `None` when it does not exist.
async fn get(
    store: &dyn Store,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, String> {
    let resource = registry::find("", "v1", plural).ok_or("an unserved resource")?;
    let kv = store
        .get(&resource.key(namespace, name), None)
        .await
        .map_err(|e| format!("reading {plural} {name}: {e}"))?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// Whether `object` was deleted more than the leeway before `now`.
fn deleted_before_leeway(object: &Value, now: i64) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|t| t.as_second() < now - LEEWAY_SECONDS)
}

/// kube's checks of the objects a verified token names, in its order and words.
async fn still_valid(store: &dyn Store, claims: &TokenClaims, now: i64) -> Result<(), String> {
    let ns = claims.namespace.as_str();
    let sa_ref = &claims.service_account;
    let sa = get(store, "serviceaccounts", Some(ns), &sa_ref.name)
        .await?
        .ok_or_else(|| format!("serviceaccounts \"{}\" not found", sa_ref.name))?;
    let sa_uid = ObjectRef::of(&sa).uid;
    if sa_uid != sa_ref.uid {
        return Err(format!(
            "service account UID ({sa_uid}) does not match claim ({})",
            sa_ref.uid
        ));
    }
    if deleted_before_leeway(&sa, now) {
        return Err(format!(
            "service account {ns}/{} has been deleted",
            sa_ref.name
        ));
    }
    let invalidated = || "service account token has been invalidated".to_owned();
    if let Some(secret_ref) = &claims.bound.secret {
        let secret = get(store, "secrets", Some(ns), &secret_ref.name)
            .await?
            .ok_or_else(invalidated)?;
        let uid = ObjectRef::of(&secret).uid;
        if uid != secret_ref.uid {
            return Err(format!(
                "secret UID ({uid}) does not match service account secret ref claim ({})",
                secret_ref.uid
            ));
        }
        if deleted_before_leeway(&secret, now) {
            return Err(invalidated());
        }
    }
    if let Some(pod_ref) = &claims.bound.pod {
        let pod = get(store, "pods", Some(ns), &pod_ref.name)
            .await?
            .ok_or_else(invalidated)?;
        let uid = ObjectRef::of(&pod).uid;
        if uid != pod_ref.uid {
            return Err(format!(
                "pod UID ({uid}) does not match service account pod ref claim ({})",
                pod_ref.uid
            ));
        }
        if deleted_before_leeway(&pod, now) {
            return Err(invalidated());
        }
    } else if let Some(node_ref) = &claims.bound.node {
        let node = get(store, "nodes", None, &node_ref.name)
            .await?
            .ok_or_else(invalidated)?;
        let uid = ObjectRef::of(&node).uid;
        if uid != node_ref.uid {
            return Err(format!(
                "node UID ({uid}) does not match service account node ref claim ({})",
                node_ref.uid
            ));
        }
        if deleted_before_leeway(&node, now) {
            return Err(invalidated());
        }
    }
    Ok(())
}

/// The user a valid token stands for (kube's `ServiceAccountInfo.UserInfo`).
fn user_of(claims: &TokenClaims) -> UserInfo {
    let ns = &claims.namespace;
    let mut user = UserInfo::new(
        format!("{USER_PREFIX}{ns}:{}", claims.service_account.name),
        &[ALL_GROUP, &format!("{ALL_GROUP}:{ns}")],
    );
    user.uid.clone_from(&claims.service_account.uid);
    let mut extra = BTreeMap::new();
    if let Some(pod) = &claims.bound.pod
        && !pod.name.is_empty()
        && !pod.uid.is_empty()
    {
        extra.insert(POD_NAME_KEY.to_owned(), vec![pod.name.clone()]);
        extra.insert(POD_UID_KEY.to_owned(), vec![pod.uid.clone()]);
    }
    if let Some(node) = &claims.bound.node {
        if !node.name.is_empty() {
            extra.insert(NODE_NAME_KEY.to_owned(), vec![node.name.clone()]);
        }
        if !node.uid.is_empty() {
            extra.insert(NODE_UID_KEY.to_owned(), vec![node.uid.clone()]);
        }
    }
    if !claims.jti.is_empty() {
        extra.insert(
            CREDENTIAL_ID_KEY.to_owned(),
            vec![format!("JTI={}", claims.jti)],
        );
    }
    user.extra = extra;
    user
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::auth::bearer_token(headers)
}

/// The service-account user a request's bearer token stands for, or `None` (not a
/// service-account token of this issuer, or one that does not authenticate: the caller answers
/// 401; the cause is logged at debug level).
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Option<Arc<UserInfo>> {
    let tokens = state.service_accounts.as_deref()?;
    let token = bearer(headers)?;
    let now = jiff::Timestamp::now().as_second();
    match tokens.check(state.store.as_ref(), token, &[], now).await {
        Checked::User(user, _) => Some(Arc::new(user)),
        Checked::Refused(why) => {
            tracing::debug!(why, "service-account token refused");
            None
        }
        Checked::NotOurs => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// What a change to the claims makes of the token.
    type Case<'a> = (
        &'a str,
        &'a dyn Fn(&mut Value),
        Result<Option<Vec<String>>, String>,
    );

    fn tokens() -> ServiceAccountTokens {
        let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        ServiceAccountTokens::new(&pem, DEFAULT_ISSUER).expect("tokens")
    }

    fn token_claims(change: impl FnOnce(&mut Value)) -> Value {
        let sa = ObjectRef {
            name: "robot".into(),
            uid: "u1".into(),
        };
        let mut claims = claims(
            DEFAULT_ISSUER,
            "team",
            &sa,
            &Bound::default(),
            &[DEFAULT_ISSUER.to_owned()],
            NOW - 100,
            3600,
            None,
            "j1",
        );
        change(&mut claims);
        claims
    }

    #[test]
    fn times_get_a_minute_of_leeway_as_in_kube() {
        let t = tokens();
        let check = |change: &dyn Fn(&mut Value)| {
            let token = t.key().sign(&token_claims(change)).expect("sign");
            t.verify(&token, &[], NOW).map(|c| c.map(|c| c.audiences))
        };
        let accepted = Ok(Some(vec![DEFAULT_ISSUER.to_owned()]));
        let cases: [Case<'_>; 8] = [
            ("valid", &|_| {}, accepted.clone()),
            (
                "expired 60 s ago",
                &|c| c["exp"] = json!(NOW - 60),
                accepted.clone(),
            ),
            (
                "expired 61 s ago",
                &|c| c["exp"] = json!(NOW - 61),
                Err("service account token has expired".into()),
            ),
            (
                "valid in 60 s",
                &|c| c["nbf"] = json!(NOW + 60),
                accepted.clone(),
            ),
            (
                "valid in 61 s",
                &|c| c["nbf"] = json!(NOW + 61),
                Err("service account token is not valid yet".into()),
            ),
            (
                "issued in the future",
                &|c| c["iat"] = json!(NOW + 61),
                Err("service account token is issued in the future".into()),
            ),
            (
                "another issuer",
                &|c| c["iss"] = json!("https://elsewhere"),
                Ok(None),
            ),
            (
                "another audience",
                &|c| c["aud"] = json!(["vault", "s3"]),
                Err(format!(
                    "token audiences [\"vault\" \"s3\"] is invalid for the target audiences \
                     [\"{DEFAULT_ISSUER}\"]"
                )),
            ),
        ];
        for (what, change, expected) in cases {
            assert_eq!(check(change), expected, "{what}");
        }
    }

    #[test]
    fn service_account_users_are_named_and_grouped_as_in_kube() {
        let claims = TokenClaims {
            namespace: "team".into(),
            service_account: ObjectRef {
                name: "robot".into(),
                uid: "u1".into(),
            },
            bound: Bound {
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "p1".into(),
                }),
                secret: None,
                node: Some(ObjectRef {
                    name: "n1".into(),
                    uid: String::new(),
                }),
            },
            jti: "j1".into(),
            audiences: Vec::new(),
        };
        let user = user_of(&claims);
        assert_eq!(user.name, "system:serviceaccount:team:robot");
        assert_eq!(
            user.groups,
            ["system:serviceaccounts", "system:serviceaccounts:team"]
        );
        assert_eq!(user.uid, "u1");
        let extra: Vec<(&str, &str)> = user
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v[0].as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                (CREDENTIAL_ID_KEY, "JTI=j1"),
                (NODE_NAME_KEY, "n1"),
                (POD_NAME_KEY, "p"),
                (POD_UID_KEY, "p1"),
            ]
        );
    }
}
