//! Bootstrap-token authentication and the fixed rules that let joining nodes in.
//!
//! A bearer token of the form `<id>.<secret>` that the static token file does not know is looked
//! up as the Secret `kube-system/bootstrap-token-<id>` (Kubernetes'
//! `plugin/pkg/auth/authenticator/token/bootstrap`): it must be of type
//! `bootstrap.kubernetes.io/token`, not being deleted, hold the same `token-id` and (compared in
//! constant time) `token-secret`, not have expired, and say `usage-bootstrap-authentication:
//! "true"`. The user is then `system:bootstrap:<id>` in `system:bootstrappers` and the token's
//! `auth-extra-groups`. Anything else is the plain 401 Kubernetes answers.
//!
//! Until keelson has RBAC (issue 19), [`RULES`] grants what Kubernetes' bootstrap RBAC policy
//! does for joining: each line becomes one (Cluster)RoleBinding there.

use std::{collections::BTreeMap, sync::Arc};

use axum::http::{HeaderMap, Method, header};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use keelson_api::bootstrap_token::{self as bt, BootstrapToken};
use keelson_store::Store;
use serde_json::Value;

use super::{Access, NODES_GROUP, UserInfo};
use crate::{registry, request::Target};

/// The user of requests without credentials (Kubernetes' `system:anonymous`).
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// Who a [`Rule`] is for.
#[derive(Debug, Clone, Copy)]
enum Subject {
    User(&'static str),
    Group(&'static str),
}

/// One fixed permission: `verbs` on `resource` of `group`, optionally only in `namespace` and on
/// the object `name`, for `subject`. No subresources.
#[derive(Debug)]
struct Rule {
    subject: Subject,
    verbs: &'static [&'static str],
    group: &'static str,
    resource: &'static str,
    namespace: Option<&'static str>,
    name: Option<&'static str>,
}

/// The bootstrap permissions. With RBAC (issue 19) these become bindings:
/// 1. Role `kubeadm:bootstrap-signer-clusterinfo` in kube-public bound to `system:anonymous`;
/// 2. ClusterRole `system:node-bootstrapper` bound to `system:bootstrappers`;
/// 3. ClusterRole `system:certificates.k8s.io:certificatesigningrequests:selfnodeclient` (and
///    the node authorizer) for `system:nodes`, which renew their own client certificates.
///
/// Nodes keep reading everything, as today's node rules allow.
const RULES: &[Rule] = &[
    Rule {
        subject: Subject::User(ANONYMOUS_USER),
        verbs: &["get"],
        group: "",
        resource: "configmaps",
        namespace: Some(bt::KUBE_PUBLIC),
        name: Some(bt::CLUSTER_INFO),
    },
    Rule {
        subject: Subject::Group(bt::BOOTSTRAP_GROUP),
        verbs: &["create", "get", "list", "watch"],
        group: "certificates.k8s.io",
        resource: "certificatesigningrequests",
        namespace: None,
        name: None,
    },
    Rule {
        subject: Subject::Group(NODES_GROUP),
        verbs: &["create"],
        group: "certificates.k8s.io",
        resource: "certificatesigningrequests",
        namespace: None,
        name: None,
    },
];

/// What [`RULES`] grant `user` for `verb` on `target`, if anything.
pub(crate) fn fixed_rule(user: &UserInfo, verb: &str, target: &Target) -> Option<Access> {
    RULES
        .iter()
        .any(|rule| {
            let subject = match rule.subject {
                Subject::User(name) => user.name == name,
                Subject::Group(group) => user.in_group(group),
            };
            subject
                && rule.verbs.contains(&verb)
                && target.resource.group == rule.group
                && target.resource.plural == rule.resource
                && target.subresource.is_none()
                && target.custom.is_none()
                && rule
                    .namespace
                    .is_none_or(|ns| target.namespace.as_deref() == Some(ns))
                && rule.name.is_none_or(|n| target.name.as_deref() == Some(n))
        })
        .then_some(Access::Granted)
}

/// Whether a user may get past the authentication middleware to [`fixed_rule`]s: bootstrap
/// users and (for the one path they may read) anonymous ones.
pub(crate) fn has_fixed_rules(user: &UserInfo) -> bool {
    user.in_group(bt::BOOTSTRAP_GROUP) || user.name == ANONYMOUS_USER
}

/// The anonymous user, for the one request anonymous clients may make: `GET` of
/// `kube-public/cluster-info` (kubeadm's discovery).
pub(crate) fn anonymous_for(method: &Method, path: &str) -> Option<Arc<UserInfo>> {
    let cluster_info = format!(
        "/api/v1/namespaces/{}/configmaps/{}",
        bt::KUBE_PUBLIC,
        bt::CLUSTER_INFO
    );
    (*method == Method::GET && path == cluster_info)
        .then(|| Arc::new(UserInfo::new(ANONYMOUS_USER, &[UNAUTHENTICATED_GROUP])))
}

/// The user a bootstrap token in the `Authorization` header stands for, if it is one whose
/// Secret lets it authenticate at `now`.
pub(crate) async fn authenticate(
    store: &dyn Store,
    headers: &HeaderMap,
    now: jiff::Timestamp,
) -> Option<Arc<UserInfo>> {
    let token: BootstrapToken = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim()
        .parse()
        .ok()?;
    let secrets = registry::RESOURCES
        .iter()
        .find(|r| r.group.is_empty() && r.plural == "secrets")?;
    let key = secrets.key(Some(bt::SECRET_NAMESPACE), &token.secret_name());
    let stored = match store.get(&key, None).await {
        Ok(stored) => stored?,
        Err(error) => {
            tracing::warn!(%error, "reading a bootstrap-token Secret");
            return None;
        }
    };
    let secret: Value = serde_json::from_slice(&stored.value).ok()?;
    match user_of_secret(&token, &secret, now) {
        Ok(user) => Some(Arc::new(user)),
        Err(why) => {
            tracing::debug!(token_id = %token.id, why, "bootstrap token refused");
            None
        }
    }
}

/// A Secret's string data: `data` (base64) with `stringData` over it.
pub(crate) fn string_data(secret: &Value) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    if let Some(map) = secret.get("data").and_then(Value::as_object) {
        for (key, value) in map {
            if let Some(text) = value
                .as_str()
                .and_then(|v| STANDARD.decode(v).ok())
                .and_then(|b| String::from_utf8(b).ok())
            {
                data.insert(key.clone(), text);
            }
        }
    }
    if let Some(map) = secret.get("stringData").and_then(Value::as_object) {
        for (key, value) in map {
            if let Some(text) = value.as_str() {
                data.insert(key.clone(), text.to_owned());
            }
        }
    }
    data
}

/// The user `token` authenticates as given its stored Secret, or why not (for the log only:
/// the client always sees the same 401).
fn user_of_secret(
    token: &BootstrapToken,
    secret: &Value,
    now: jiff::Timestamp,
) -> Result<UserInfo, &'static str> {
    if secret.get("type").and_then(Value::as_str) != Some(bt::SECRET_TYPE) {
        return Err("the Secret is not of type bootstrap.kubernetes.io/token");
    }
    if secret.pointer("/metadata/deletionTimestamp").is_some() {
        return Err("the Secret is being deleted");
    }
    let data = string_data(secret);
    let stored_secret = data
        .get(bt::TOKEN_SECRET_KEY)
        .map_or(&[][..], |s| s.as_bytes());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        stored_secret,
        token.secret.as_bytes(),
    )) {
        return Err("the token secret does not match");
    }
    if data.get(bt::TOKEN_ID_KEY) != Some(&token.id) {
        return Err("the Secret's token-id does not match");
    }
    if bt::has_expired(&data, now) {
        return Err("the token has expired");
    }
    if !bt::usage_enabled(&data, bt::USAGE_AUTHENTICATION_KEY) {
        return Err("the token is not for authentication");
    }
    let groups = bt::groups(&data).map_err(|_| "the token has an invalid auth-extra-group")?;
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    Ok(UserInfo::new(token.user_name(), &groups))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String(STANDARD.encode(v))))
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": bt::SECRET_TYPE,
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "data": data,
        })
    }

    const GOOD: &[(&str, &str)] = &[
        ("token-id", "abcdef"),
        ("token-secret", "0123456789abcdef"),
        ("expiration", "2026-12-07T00:00:00Z"),
        ("usage-bootstrap-authentication", "true"),
        ("auth-extra-groups", "system:bootstrappers:worker"),
    ];

    #[test]
    fn bootstrap_tokens_authenticate_as_kubernetes_checks_them() {
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().expect("time");
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().expect("token");
        let with = |key: &str, value: &str| {
            let mut s = secret(GOOD);
            s["data"][key] = Value::String(STANDARD.encode(value));
            s
        };
        let user = user_of_secret(&token, &secret(GOOD), now).expect("valid");
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            ["system:bootstrappers", "system:bootstrappers:worker"]
        );
        let mut opaque = secret(GOOD);
        opaque["type"] = json!("Opaque");
        let mut deleting = secret(GOOD);
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-06T11:00:00Z");
        let refused = [
            ("wrong type", opaque),
            ("being deleted", deleting),
            ("wrong secret", with("token-secret", "0123456789abcdeg")),
            ("other id", with("token-id", "abcdeg")),
            ("expired", with("expiration", "2026-12-06T11:59:59Z")),
            ("bad expiry", with("expiration", "soon")),
            (
                "no auth usage",
                with("usage-bootstrap-authentication", "yes"),
            ),
            ("bad group", with("auth-extra-groups", "system:masters")),
        ];
        for (case, secret) in refused {
            assert!(user_of_secret(&token, &secret, now).is_err(), "{case}");
        }
    }

    fn target(group: &str, plural: &str, ns: Option<&str>, name: Option<&str>) -> Target {
        let resource = registry::RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .expect("a served resource");
        Target {
            resource,
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: None,
            custom: None,
        }
    }

    #[test]
    fn fixed_rules_grant_only_what_joining_needs() {
        let anonymous = anonymous_for(
            &Method::GET,
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
        )
        .expect("anonymous may read cluster-info");
        assert!(anonymous_for(&Method::GET, "/api/v1/namespaces/kube-public/configmaps").is_none());
        assert!(
            anonymous_for(
                &Method::PUT,
                "/api/v1/namespaces/kube-public/configmaps/cluster-info"
            )
            .is_none()
        );
        let bootstrapper = UserInfo::new("system:bootstrap:abcdef", &[bt::BOOTSTRAP_GROUP]);
        let node = UserInfo::node("n1");
        let csr = "certificatesigningrequests";
        let certs = "certificates.k8s.io";
        let cases = [
            (
                &*anonymous,
                "get",
                target("", "configmaps", Some("kube-public"), Some("cluster-info")),
                true,
            ),
            (
                &*anonymous,
                "list",
                target("", "configmaps", Some("kube-public"), None),
                false,
            ),
            (
                &*anonymous,
                "get",
                target("", "configmaps", Some("kube-system"), Some("cluster-info")),
                false,
            ),
            (&*anonymous, "create", target(certs, csr, None, None), false),
            (
                &bootstrapper,
                "create",
                target(certs, csr, None, None),
                true,
            ),
            (
                &bootstrapper,
                "get",
                target(certs, csr, None, Some("node-csr-1")),
                true,
            ),
            (&bootstrapper, "watch", target(certs, csr, None, None), true),
            (
                &bootstrapper,
                "delete",
                target(certs, csr, None, Some("node-csr-1")),
                false,
            ),
            (&bootstrapper, "list", target("", "pods", None, None), false),
            (
                &bootstrapper,
                "get",
                target("", "configmaps", Some("kube-public"), Some("cluster-info")),
                false,
            ),
            (&node, "create", target(certs, csr, None, None), true),
            (&node, "delete", target(certs, csr, None, Some("x")), false),
        ];
        for (user, verb, target, granted) in cases {
            assert_eq!(
                fixed_rule(user, verb, &target).is_some(),
                granted,
                "{} {verb} {:?}/{:?}",
                user.name,
                target.resource.plural,
                target.name
            );
        }
    }
}
