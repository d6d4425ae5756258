//! The pure decisions of overload protection: which pool a request draws from, who is
//! exempt, and how long a request may run.

use std::time::Duration;

use crate::{
    ApiError,
    auth::{
        MASTERS_GROUP, NODES_GROUP, UserInfo,
        authz::{RequestKind, ResourceAttributes},
    },
    request::Params,
};

/// Verbs kube-apiserver's `BasicLongRunningRequestCheck` treats as long-running.
const LONG_RUNNING_VERBS: &[&str] = &["watch", "proxy"];
/// Subresources it treats as long-running (streams that stay open while a user looks).
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "proxy", "log", "portforward"];
/// Verbs that read (kube's `nonMutatingRequestVerbs`); every other verb is mutating.
const NON_MUTATING_VERBS: &[&str] = &["get", "list", "watch"];

/// The control plane's own component identities: they keep answering under a flood, as
/// kube-apiserver's exempt priority level keeps `system:masters` answering.
pub const EXEMPT_USERS: &[&str] = &[
    "system:apiserver",
    "system:kube-scheduler",
    "system:kube-controller-manager",
];

/// Groups whose members are never limited: administrators (kube's mandatory `exempt`
/// FlowSchema) and nodes (their agents must keep reporting while users flood the server).
pub const EXEMPT_GROUPS: &[&str] = &[MASTERS_GROUP, NODES_GROUP];

/// Paths every user may probe without limit (kube's `probes` FlowSchema, also exempt).
const PROBE_PATHS: &[&str] = &["/healthz", "/readyz", "/livez"];

/// The pool a request is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// get, list (`--max-requests-inflight`).
    ReadOnly,
    /// create, update, patch, delete, ... (`--max-mutating-requests-inflight`).
    Mutating,
    /// A watch: not in the in-flight pools, counted per user instead.
    Watch,
    /// Another long-running request (exec, attach, logs, port-forward, proxy): not counted,
    /// and without a deadline.
    LongRunning,
}

impl Bucket {
    /// Whether the request stays open for as long as the client wants (no deadline, not in
    /// the in-flight pools).
    pub fn long_running(self) -> bool {
        matches!(self, Self::Watch | Self::LongRunning)
    }
}

/// Go's `strconv.ParseBool` true values (how kube reads `watch=`).
fn go_true(text: &str) -> bool {
    matches!(text, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// The bucket of a request whose verb and target `classify` found (kube's
/// `BasicLongRunningRequestCheck` plus the mutating split of `WithMaxInFlightLimit`). A
/// named GET with `watch=true` streams a watch here, so it counts as one.
pub fn bucket(verb: &str, kind: &RequestKind, params: &Params) -> Bucket {
    let subresource = match kind {
        RequestKind::Resource(ResourceAttributes { subresource, .. }) => subresource.as_str(),
        RequestKind::NonResource { .. } => "",
    };
    let resource = matches!(kind, RequestKind::Resource(_));
    let watching = verb == "watch"
        || (resource && verb == "get" && params.get("watch").is_some_and(|w| go_true(w)));
    if watching {
        Bucket::Watch
    } else if LONG_RUNNING_VERBS.contains(&verb)
        || (resource && LONG_RUNNING_SUBRESOURCES.contains(&subresource))
    {
        Bucket::LongRunning
    } else if NON_MUTATING_VERBS.contains(&verb) {
        Bucket::ReadOnly
    } else {
        Bucket::Mutating
    }
}

/// Whether `user`'s request on `kind` bypasses every limit: members of [`EXEMPT_GROUPS`],
/// the [`EXEMPT_USERS`], and anyone's GET of a health probe path.
pub fn exempt(user: &UserInfo, verb: &str, kind: &RequestKind) -> bool {
    if user
        .groups
        .iter()
        .any(|g| EXEMPT_GROUPS.contains(&g.as_str()))
        || EXEMPT_USERS.contains(&user.name.as_str())
    {
        return true;
    }
    match kind {
        RequestKind::NonResource { path } => {
            verb == "get"
                && PROBE_PATHS
                    .iter()
                    .any(|p| path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
        }
        RequestKind::Resource(_) => false,
    }
}

/// The time a request may run (kube's `WithRequestDeadline`): `?timeout=` when it is positive
/// and shorter than `maximum` (`--request-timeout`), else `maximum`; a malformed value is a
/// 400 worded as kube words it.
pub fn deadline(timeout_param: Option<&str>, maximum: Duration) -> Result<Duration, ApiError> {
    let Some(text) = timeout_param.filter(|t| !t.is_empty()) else {
        return Ok(maximum);
    };
    let nanos = keelson_api::crd::go_duration_nanos(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid timeout specified in the request URL - time: invalid duration {text:?}"
        ))
    })?;
    let requested = u64::try_from(nanos).ok().map(Duration::from_nanos);
    Ok(match requested {
        Some(d) if !d.is_zero() && d < maximum => d,
        _ => maximum,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;
    use crate::auth::request_info::classify;

    fn bucket_of(method: Method, uri: &str) -> Bucket {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let params: Params = url_params(query);
        let (verb, kind) = classify(&method, path, &params);
        bucket(&verb, &kind, &params)
    }

    fn url_params(query: &str) -> Params {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn requests_fall_in_kube_apiservers_buckets() {
        use Bucket::*;
        let cases = [
            (Method::GET, "/api/v1/namespaces/default/pods", ReadOnly),
            (Method::GET, "/api/v1/namespaces/default/pods/web", ReadOnly),
            (Method::GET, "/apis/apps/v1/deployments", ReadOnly),
            (Method::GET, "/version", ReadOnly),
            (Method::GET, "/openapi/v3", ReadOnly),
            (Method::POST, "/api/v1/namespaces/default/pods", Mutating),
            (Method::PUT, "/api/v1/namespaces/default/pods/web", Mutating),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                Mutating,
            ),
            (Method::DELETE, "/api/v1/namespaces/default/pods", Mutating),
            (
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                Mutating,
            ),
            (Method::GET, "/api/v1/pods?watch=true", Watch),
            (Method::GET, "/api/v1/pods?watch=1&resourceVersion=5", Watch),
            (Method::GET, "/api/v1/pods?watch=false", ReadOnly),
            (Method::GET, "/api/v1/watch/namespaces/default/pods", Watch),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web?watch=true",
                Watch,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web/log?follow=true",
                LongRunning,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web/log",
                LongRunning,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/web/exec?command=ls",
                LongRunning,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web/attach",
                LongRunning,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/default/pods/web/portforward",
                LongRunning,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/services/web/proxy/x",
                LongRunning,
            ),
            (
                Method::GET,
                "/api/v1/proxy/namespaces/default/pods/web",
                LongRunning,
            ),
        ];
        for (method, uri, want) in cases {
            assert_eq!(bucket_of(method.clone(), uri), want, "{method} {uri}");
        }
        assert!(Watch.long_running() && LongRunning.long_running());
        assert!(!ReadOnly.long_running() && !Mutating.long_running());
    }

    #[test]
    fn admins_nodes_components_and_probes_are_exempt() {
        let pods = RequestKind::Resource(ResourceAttributes {
            resource: "pods".into(),
            ..ResourceAttributes::default()
        });
        let path = |p: &str| RequestKind::NonResource { path: p.into() };
        let admin = UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]);
        let node = UserInfo::node("n1");
        let scheduler = UserInfo::new("system:kube-scheduler", &[]);
        let controllers = UserInfo::new("system:kube-controller-manager", &[]);
        let alice = UserInfo::new("alice", &["developers", "system:authenticated"]);
        let pretender = UserInfo::new("system:kube-scheduler-not", &[]);
        let sa = UserInfo::new(
            "system:serviceaccount:kube-system:default",
            &["system:serviceaccounts"],
        );
        let anonymous = UserInfo::anonymous();
        let cases = [
            (&admin, "list", &pods, true),
            (&admin, "create", &pods, true),
            (&node, "watch", &pods, true),
            (&scheduler, "create", &pods, true),
            (&controllers, "list", &pods, true),
            (&alice, "list", &pods, false),
            (&pretender, "list", &pods, false),
            (&sa, "list", &pods, false),
            (&anonymous, "get", &path("/healthz"), true),
            (&anonymous, "get", &path("/readyz/etcd"), true),
            (&alice, "get", &path("/livez"), true),
            (&alice, "post", &path("/healthz"), false),
            (&alice, "get", &path("/healthzz"), false),
            (&alice, "get", &path("/version"), false),
        ];
        for (user, verb, kind, want) in cases {
            assert_eq!(
                exempt(user, verb, kind),
                want,
                "{} {verb} {kind:?}",
                user.name
            );
        }
    }

    #[test]
    fn deadlines_follow_the_timeout_parameter_up_to_the_maximum() {
        let max = Duration::from_secs(60);
        let cases = [
            (None, max),
            (Some(""), max),
            (Some("5s"), Duration::from_secs(5)),
            (Some("1m30s"), max),
            (Some("1.5s"), Duration::from_millis(1500)),
            (Some("250ms"), Duration::from_millis(250)),
            (Some("0s"), max),
            (Some("-5s"), max),
            (Some("60s"), max),
            (Some("59s"), Duration::from_secs(59)),
        ];
        for (param, want) in cases {
            assert_eq!(deadline(param, max).expect("valid"), want, "{param:?}");
        }
        let error = deadline(Some("abc"), max).expect_err("not a duration");
        assert_eq!(error.code, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "invalid timeout specified in the request URL - time: invalid duration \"abc\""
        );
    }
}
