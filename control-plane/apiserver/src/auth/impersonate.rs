//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): a request that carries
//! `Impersonate-User`, `Impersonate-Group` (repeatable), `Impersonate-Uid` or
//! `Impersonate-Extra-<key>` headers is served as the user they describe, once the
//! authenticated user is allowed the verb `impersonate` on each part, as kube-apiserver's
//! impersonation filter does:
//! - a user -> `users` (group `""`), or `serviceaccounts` in its namespace for
//!   `system:serviceaccount:<ns>:<name>`;
//! - each group -> `groups`; the uid -> `uids.authentication.k8s.io`;
//! - each extra value -> `userextras/<key>` in `authentication.k8s.io` (the key is the header's
//!   tail, lower-cased and percent-decoded).
//!
//! The impersonated user gets `system:authenticated` unless it is `system:anonymous` (which
//! gets `system:unauthenticated`) or one of those groups was asked for; a service account
//! impersonated without groups gets `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`. Groups, extra or a uid without a user is refused.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    Authenticated, UserInfo,
    authz::{Attributes, Decision, RequestKind, ResourceAttributes},
};
use crate::{ApiError, AppState};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// One thing asked for, checked with the verb `impersonate`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    User(String),
    ServiceAccount { namespace: String, name: String },
    Group(String),
    Extra { key: String, value: String },
    Uid(String),
}

impl Part {
    fn resource(&self) -> ResourceAttributes {
        let (group, resource, subresource, namespace, name) = match self {
            Self::User(name) => ("", "users", "", "", name.as_str()),
            Self::ServiceAccount { namespace, name } => {
                ("", "serviceaccounts", "", namespace.as_str(), name.as_str())
            }
            Self::Group(name) => ("", "groups", "", "", name.as_str()),
            Self::Extra { key, value } => (
                "authentication.k8s.io",
                "userextras",
                key.as_str(),
                "",
                value.as_str(),
            ),
            Self::Uid(uid) => ("authentication.k8s.io", "uids", "", "", uid.as_str()),
        };
        ResourceAttributes {
            group: group.to_owned(),
            version: "v1".to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Go's `%v` of the ObjectReference kube builds, for the "without a user" message.
    fn describe(&self) -> String {
        match self {
            Self::User(name) => format!("{{User  {name}    }}"),
            Self::ServiceAccount { namespace, name } => {
                format!("{{ServiceAccount {namespace} {name}    }}")
            }
            Self::Group(name) => format!("{{Group  {name}    }}"),
            Self::Extra { key, value } => {
                format!("{{UserExtra  {value}  authentication.k8s.io/v1  {key}}}")
            }
            Self::Uid(uid) => format!("{{UID  {uid}  authentication.k8s.io/v1  }}"),
        }
    }
}

/// Middleware, after authentication: serves a request with impersonation headers as the
/// impersonated user when the authenticated one may impersonate it (403 otherwise).
pub async fn impersonate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let parts = match requested(request.headers()) {
        Ok(parts) if parts.is_empty() => return next.run(request).await,
        Ok(parts) => parts,
        Err(message) => {
            return ApiError {
                code: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "InternalError",
                message: format!(
                    "Internal Server Error: \"{}\": {message}",
                    request.uri().path()
                ),
                details: None,
            }
            .into_response();
        }
    };
    let Some(Authenticated(requestor)) = request.extensions().get::<Authenticated>().cloned()
    else {
        return ApiError::unauthorized().into_response();
    };
    match impersonated(&state.authorizer, &requestor, request.headers(), &parts).await {
        Ok(user) => {
            tracing::debug!(user = %requestor.name, acting_as = %user.name, "impersonation");
            let user = Arc::new(user);
            crate::audit::record_impersonated_user(&user);
            request.extensions_mut().insert(Authenticated(user));
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// The parts the headers ask for, in kube's order (user, groups, extra, uid); an error when
/// groups, extra or a uid come without a user.
fn requested(headers: &HeaderMap) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let text = |v: &axum::http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let user = headers.get(USER).map(text).unwrap_or_default();
    if !user.is_empty() {
        parts.push(match split_service_account(&user) {
            Some((namespace, name)) => Part::ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            None => Part::User(user.clone()),
        });
    }
    parts.extend(headers.get_all(GROUP).iter().map(|g| Part::Group(text(g))));
    let mut extra: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix(EXTRA_PREFIX)?;
            Some((percent_decode(key), text(value)))
        })
        .collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    parts.extend(
        extra
            .into_iter()
            .map(|(key, value)| Part::Extra { key, value }),
    );
    let uid = headers.get(UID).map(text).unwrap_or_default();
    if !uid.is_empty() {
        parts.push(Part::Uid(uid));
    }
    if user.is_empty() && !parts.is_empty() {
        let listed: Vec<String> = parts.iter().map(Part::describe).collect();
        return Err(format!(
            "requested [{}] without impersonating a user",
            listed.join(" ")
        ));
    }
    Ok(parts)
}

/// `system:serviceaccount:<ns>:<name>` -> (ns, name), both non-empty and without `:`.
fn split_service_account(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// Go's `url.PathUnescape`, keeping the key as it is when it is not valid escaping.
fn percent_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return key.to_owned();
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_owned())
}

/// Checks every part against the chain and builds the impersonated user.
async fn impersonated(
    authorizer: &super::authz::Authorizer,
    requestor: &Arc<UserInfo>,
    headers: &HeaderMap,
    parts: &[Part],
) -> Result<UserInfo, ApiError> {
    let groups_given = headers.contains_key(GROUP);
    let mut user = UserInfo::new("", &[]);
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in parts {
        let attributes = Attributes {
            user: Arc::clone(requestor),
            verb: "impersonate".to_owned(),
            request: RequestKind::Resource(part.resource()),
        };
        if let Decision::Deny(reason) | Decision::NoOpinion(reason) =
            authorizer.authorize(&attributes).await
        {
            return Err(super::request_info::forbidden(&attributes, &reason));
        }
        match part {
            Part::User(name) => user.name.clone_from(name),
            Part::ServiceAccount { namespace, name } => {
                user.name = format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}");
                if !groups_given {
                    user.groups = vec![
                        "system:serviceaccounts".to_owned(),
                        format!("system:serviceaccounts:{namespace}"),
                    ];
                }
            }
            Part::Group(group) => user.groups.push(group.clone()),
            Part::Extra { key, value } => extra.entry(key.clone()).or_default().push(value.clone()),
            Part::Uid(uid) => user.uid.clone_from(uid),
        }
    }
    let has = |g: &str| user.groups.iter().any(|x| x == g);
    if user.name == ANONYMOUS {
        if !has(UNAUTHENTICATED) {
            user.groups.push(UNAUTHENTICATED.to_owned());
        }
    } else if !has(AUTHENTICATED) && !has(UNAUTHENTICATED) {
        user.groups.push(AUTHENTICATED.to_owned());
    }
    user.extra = extra;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn headers_become_the_parts_kube_checks() {
        let parts = requested(&headers(&[
            ("Impersonate-User", "system:serviceaccount:ns1:robot"),
            ("Impersonate-Group", "g1"),
            ("Impersonate-Group", "g2"),
            ("Impersonate-Extra-Acme.com%2Fproject", "p1"),
            ("Impersonate-Uid", "u-1"),
        ]))
        .expect("valid");
        assert_eq!(
            parts,
            [
                Part::ServiceAccount {
                    namespace: "ns1".into(),
                    name: "robot".into()
                },
                Part::Group("g1".into()),
                Part::Group("g2".into()),
                Part::Extra {
                    key: "acme.com/project".into(),
                    value: "p1".into()
                },
                Part::Uid("u-1".into()),
            ]
        );
        assert_eq!(requested(&HeaderMap::new()), Ok(Vec::new()));
        let error = requested(&headers(&[("Impersonate-Group", "g")])).expect_err("no user");
        assert_eq!(
            error,
            "requested [{Group  g    }] without impersonating a user"
        );
        assert_eq!(
            split_service_account("system:serviceaccount:a:b:c"),
            None,
            "a name with a colon is a plain user"
        );
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }

    #[test]
    fn refusals_are_worded_as_kube_words_them() {
        let attributes = |part: Part| Attributes {
            user: Arc::new(UserInfo::new("alice", &[])),
            verb: "impersonate".into(),
            request: RequestKind::Resource(part.resource()),
        };
        let cases = [
            (
                Part::User("bob".into()),
                "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" \
                 in API group \"\" at the cluster scope",
            ),
            (
                Part::ServiceAccount {
                    namespace: "ns".into(),
                    name: "sa".into(),
                },
                "serviceaccounts \"sa\" is forbidden: User \"alice\" cannot impersonate resource \
                 \"serviceaccounts\" in API group \"\" in the namespace \"ns\"",
            ),
            (
                Part::Extra {
                    key: "scopes".into(),
                    value: "view".into(),
                },
                "userextras.authentication.k8s.io \"view\" is forbidden: User \"alice\" cannot \
                 impersonate resource \"userextras/scopes\" in API group \"authentication.k8s.io\" \
                 at the cluster scope",
            ),
        ];
        for (part, want) in cases {
            let error = crate::auth::request_info::forbidden(&attributes(part), "");
            assert_eq!(error.code, StatusCode::FORBIDDEN);
            assert_eq!(error.message, want);
        }
    }
}
