//! NodeRestriction (Kubernetes' `plugin/pkg/admission/noderestriction/admission.go`): what a
//! node's write must still satisfy once the Node authorizer allowed it. The Node authorizer
//! lets every node write Nodes, Leases and pod status; these checks keep each node to its own
//! Node, its own Lease, pods bound to it, and tokens bound to its pods.

use keelson_store::Store;
use serde_json::Value;

use crate::{
    ApiError,
    auth::{Access, UserInfo, forbidden},
    object::decode_kv,
    read, registry,
    request::Target,
};

/// The namespace of the LoadBalancer announcement Leases nodes may write.
const LB_ANNOUNCE_NAMESPACE: &str = "kube-system";
/// Their names' prefix (`keelson-lb-<ip-dashed>`).
const LB_ANNOUNCE_PREFIX: &str = "keelson-lb-";

/// What a write node `node` was allowed to make still requires (see [`Access`]), or the 403
/// NodeRestriction answers.
pub(crate) fn restrict(
    user: &UserInfo,
    node: &str,
    verb: &str,
    target: &Target,
) -> Result<Access, ApiError> {
    let resource = target.resource;
    let name = target.name.as_deref();
    let refuse = |why: String| Err(forbidden(user, verb, target, &why));
    match (
        resource.group,
        resource.plural,
        target.subresource.as_deref(),
        verb,
    ) {
        ("", "nodes", None, "create") if name.is_none() => Ok(Access::CreateNamed(node.into())),
        ("", "nodes", _, "create" | "update" | "patch" | "delete") if name != Some(node) => {
            refuse(format!(
                "node \"{node}\" is not allowed to modify node \"{}\"",
                name.unwrap_or_default()
            ))
        }
        // keelson's addition: the Leases electing the node that announces a LoadBalancer IP
        // (node-agent `lb_announce`) are written by the nodes themselves. Kubernetes' plugin
        // refuses every Lease outside `kube-node-lease` (Cilium's agents, which elect L2
        // announcers the same way, write them with a ServiceAccount of their own); a node may
        // claim these addresses on the wire anyway, so the Lease gives it nothing more.
        ("coordination.k8s.io", "leases", None, "create")
            if name.is_none() && target.namespace.as_deref() == Some(LB_ANNOUNCE_NAMESPACE) =>
        {
            Ok(Access::CreatePrefixed(LB_ANNOUNCE_PREFIX))
        }
        ("coordination.k8s.io", "leases", None, "update" | "delete")
            if target.namespace.as_deref() == Some(LB_ANNOUNCE_NAMESPACE)
                && !name.unwrap_or_default().starts_with(LB_ANNOUNCE_PREFIX) =>
        {
            refuse(format!(
                "node \"{node}\" may only write the leases in \"{LB_ANNOUNCE_NAMESPACE}\" \
                 whose name starts with \"{LB_ANNOUNCE_PREFIX}\""
            ))
        }
        ("coordination.k8s.io", "leases", None, "create") if name.is_none() => {
            Ok(Access::CreateNamed(node.into()))
        }
        ("", "pods", None, "delete")
        | ("", "pods", Some("status"), "update" | "patch")
        | ("", "pods", Some("eviction"), "create") => Ok(Access::PodBoundTo(node.into())),
        // Kubernetes lets nodes create mirror pods of their static manifests; keelson's
        // agent has none.
        ("", "pods", None, "create") => refuse(format!(
            "node \"{node}\" can only create mirror pods, and keelson nodes run none"
        )),
        _ => Ok(Access::Granted),
    }
}

/// Labels a kubelet may set on its own Node (kube's `kubeletapis.IsKubeletLabel` list).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces (and their subdomains) a kubelet may set.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The namespace no kubelet may set labels in (nor its subdomains).
const NODE_RESTRICTION_NAMESPACE: &str = "node-restriction.kubernetes.io";

/// Whether `namespace` is `domain` or a subdomain of it.
fn in_domain(namespace: &str, domain: &str) -> bool {
    namespace == domain
        || namespace
            .strip_suffix(domain)
            .is_some_and(|sub| sub.ends_with('.'))
}

/// Whether a node may add, change or remove the label `key` on its Node.
fn node_may_set(key: &str) -> bool {
    let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
    if in_domain(namespace, NODE_RESTRICTION_NAMESPACE) {
        return false;
    }
    let kubernetes = in_domain(namespace, "kubernetes.io") || in_domain(namespace, "k8s.io");
    !kubernetes
        || KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|allowed| in_domain(namespace, allowed))
}

/// The labels of `object` (`metadata.labels`).
fn labels(object: Option<&Value>) -> serde_json::Map<String, Value> {
    object
        .and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The label keys a node may not change between `old` and `new`, sorted.
fn forbidden_label_changes(new: Option<&Value>, old: Option<&Value>) -> Vec<String> {
    let (new, old) = (labels(new), labels(old));
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(old.keys().filter(|k| !new.contains_key(*k)))
        .filter(|k| !node_may_set(k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// NodeRestriction's checks on the objects of a node's write (the admission step, with the
/// new `object` and the `old` one as stored): a node registers and relabels itself only with
/// kubelet labels, never changes its taints, and never relabels a pod through its status.
pub(crate) fn validate(
    user: &UserInfo,
    target: &Target,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let resource = target.resource;
    let verb = if old.is_some() { "update" } else { "create" };
    let refuse = |why: String| Err(forbidden(user, verb, target, &why));
    match (
        resource.group,
        resource.plural,
        target.subresource.as_deref(),
    ) {
        ("", "nodes", _) if object.is_some() => {
            let changed = forbidden_label_changes(object, old);
            if old.is_none() && !changed.is_empty() {
                return refuse(format!(
                    "node \"{node}\" is not allowed to set the following labels: {}",
                    changed.join(", ")
                ));
            }
            let taints = |o: Option<&Value>| o.and_then(|o| o.pointer("/spec/taints")).cloned();
            if old.is_some() && taints(object) != taints(old) {
                return refuse(format!("node \"{node}\" is not allowed to modify taints"));
            }
            if !changed.is_empty() {
                return refuse(format!(
                    "is not allowed to modify labels: {}",
                    changed.join(", ")
                ));
            }
            Ok(())
        }
        ("", "pods", Some("status")) if old.is_some() && labels(object) != labels(old) => refuse(
            format!("node \"{node}\" cannot update labels through pod status"),
        ),
        _ => Ok(()),
    }
}

/// The 403 for a pod that is not bound to the node asking ([`Access::PodBoundTo`]), in
/// NodeRestriction's words.
pub(crate) fn pod_not_bound(user: &UserInfo, verb: &str, target: &Target, node: &str) -> ApiError {
    let what = match (target.subresource.as_deref(), verb) {
        (Some("status"), _) => "update pod status for",
        (Some("eviction"), _) => "evict",
        _ => "delete",
    };
    forbidden(
        user,
        verb,
        target,
        &format!("node \"{node}\" can only {what} pods with spec.nodeName set to itself"),
    )
}

/// Why a node's TokenRequest is refused, as NodeRestriction (and the TokenRequest storage,
/// for the service account name) word it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// 403 with this reason.
    Forbidden(String),
    /// The pod named by the binding does not exist (404).
    PodNotFound(String),
    /// 400 with this message.
    BadRequest(String),
}

/// The pod (name, uid) a TokenRequest body binds the token to.
fn bound_pod(request: &Value) -> Result<(&str, &str), TokenRefusal> {
    let reference = request.pointer("/spec/boundObjectRef");
    let field = |f: &str| {
        reference
            .and_then(|r| r.get(f))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if field("apiVersion") != "v1" || field("kind") != "Pod" || field("name").is_empty() {
        return Err(TokenRefusal::Forbidden(
            "node requested token not bound to a pod".into(),
        ));
    }
    if field("uid").is_empty() {
        return Err(TokenRefusal::Forbidden(
            "node requested token with a pod binding without a uid".into(),
        ));
    }
    Ok((field("name"), field("uid")))
}

/// Checks a TokenRequest `request` of node `node` for service account `service_account`
/// against the pod it binds to (`pod`, as stored, `None` if absent).
pub fn check_token_request(
    node: &str,
    service_account: &str,
    request: &Value,
    pod: Option<&Value>,
) -> Result<(), TokenRefusal> {
    let (name, uid) = bound_pod(request)?;
    let Some(pod) = pod else {
        return Err(TokenRefusal::PodNotFound(name.to_owned()));
    };
    let text = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
    if text("/metadata/uid") != uid {
        return Err(TokenRefusal::Forbidden(format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. \
             The object might have been deleted and then recreated"
        )));
    }
    if text("/spec/nodeName") != node {
        return Err(TokenRefusal::Forbidden(
            "node requested token bound to a pod scheduled on a different node".into(),
        ));
    }
    let pod_account = match text("/spec/serviceAccountName") {
        "" => "default",
        account => account,
    };
    if pod_account != service_account {
        return Err(TokenRefusal::BadRequest(format!(
            "cannot bind token for serviceaccount \"{service_account}\" to pod running with \
             different serviceaccount name."
        )));
    }
    Ok(())
}

/// NodeRestriction for `POST .../serviceaccounts/<sa>/token` by a node: the token must be
/// bound to a pod on that node running as that service account. Call it from the
/// TokenRequest handler for node users (`user.node_name()`), with the request body.
pub(crate) async fn admit_token_request(
    store: &dyn Store,
    user: &UserInfo,
    target: &Target,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid TokenRequest: {e}")))?;
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let service_account = target.name.as_deref().unwrap_or_default();
    let pods = registry::find("", "v1", "pods").ok_or_else(ApiError::no_route)?;
    let pod = match bound_pod(&request) {
        Ok((name, _)) => {
            let pod_target = Target {
                resource: pods,
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                subresource: None,
                custom: None,
            };
            match read::get_kv(store, &pod_target, name).await {
                Ok(kv) => Some(decode_kv(&kv)?),
                Err(e) if e.code == 404 => None,
                Err(e) => return Err(e),
            }
        }
        Err(_) => None,
    };
    match check_token_request(node, service_account, &request, pod.as_ref()) {
        Ok(()) => Ok(()),
        Err(TokenRefusal::Forbidden(why)) => Err(forbidden(user, "create", target, &why)),
        Err(TokenRefusal::PodNotFound(name)) => Err(ApiError::not_found(pods, &name)),
        Err(TokenRefusal::BadRequest(message)) => Err(ApiError::bad_request(message)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
    fn nodes_write_only_their_own_objects() {
        let n1 = UserInfo::node("n1");
        let restrict = |verb, t: Target| restrict(&n1, "n1", verb, &t).map_err(|e| e.message);
        assert_eq!(
            restrict("patch", target("nodes", None, Some("n1"), Some("status"))),
            Ok(Access::Granted)
        );
        assert_eq!(
            restrict("create", target("nodes", None, None, None)),
            Ok(Access::CreateNamed("n1".into()))
        );
        assert_eq!(
            restrict("patch", target("nodes", None, Some("n2"), Some("status"))),
            Err(
                "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \
                 \"nodes/status\" in API group \"\" at the cluster scope: node \"n1\" is not \
                 allowed to modify node \"n2\""
                    .into()
            )
        );
        assert_eq!(
            restrict("create", target("leases", Some("kube-system"), None, None)),
            Ok(Access::CreatePrefixed("keelson-lb-"))
        );
        assert_eq!(
            restrict(
                "update",
                target(
                    "leases",
                    Some("kube-system"),
                    Some("keelson-lb-10-0-0-1"),
                    None
                )
            ),
            Ok(Access::Granted)
        );
        assert!(
            restrict(
                "update",
                target(
                    "leases",
                    Some("kube-system"),
                    Some("keelson-scheduler"),
                    None
                )
            )
            .is_err(),
            "the leader election Leases are not the nodes'"
        );
        assert_eq!(
            restrict(
                "create",
                target("leases", Some("kube-node-lease"), None, None)
            ),
            Ok(Access::CreateNamed("n1".into()))
        );
        assert_eq!(
            restrict(
                "patch",
                target("pods", Some("default"), Some("p"), Some("status"))
            ),
            Ok(Access::PodBoundTo("n1".into()))
        );
        assert_eq!(
            restrict("delete", target("pods", Some("default"), Some("p"), None)),
            Ok(Access::PodBoundTo("n1".into()))
        );
        assert!(restrict("create", target("pods", Some("default"), None, None)).is_err());
        assert_eq!(
            restrict("create", target("events", Some("default"), None, None)),
            Ok(Access::Granted)
        );
        let other = pod_not_bound(
            &n1,
            "patch",
            &target("pods", Some("default"), Some("p"), Some("status")),
            "n1",
        );
        assert!(
            other.message.ends_with(
                "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
            ),
            "{}",
            other.message
        );
    }

    #[tokio::test]
    async fn token_requests_are_checked_against_the_stored_pod() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = keelson_store::SqliteStore::open(
            dir.path().join("s.db"),
            keelson_store::SqliteOptions::default(),
        )
        .await
        .expect("store");
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
            "spec": {"nodeName": "n1", "serviceAccountName": "web-sa"}
        });
        store
            .create("/registry/pods/default/web", pod.to_string().into())
            .await
            .expect("create");
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1"}}})
        .to_string();
        let token = target(
            "serviceaccounts",
            Some("default"),
            Some("web-sa"),
            Some("token"),
        );
        let admit = |user: UserInfo, body: String| {
            let (store, token) = (&store, &token);
            async move { admit_token_request(store, &user, token, body.as_bytes()).await }
        };
        admit(UserInfo::node("n1"), body.clone())
            .await
            .expect("its own pod");
        let other = admit(UserInfo::node("n2"), body.clone())
            .await
            .expect_err("another node's pod");
        assert_eq!(other.code, 403);
        assert!(
            other
                .message
                .ends_with("node requested token bound to a pod scheduled on a different node"),
            "{}",
            other.message
        );
        let gone = admit(UserInfo::node("n1"), body.replace("\"web\"", "\"gone\""))
            .await
            .expect_err("no such pod");
        assert_eq!(gone.code, 404, "{}", gone.message);
        admit(UserInfo::new("alice", &[]), "{}".into())
            .await
            .expect("not a node: not NodeRestriction's business");
    }

    #[test]
    fn nodes_label_themselves_only_with_kubelet_labels() {
        let n1 = UserInfo::node("n1");
        let node = |labels: Value, taints: Value| json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}});
        let base = node(
            json!({"kubernetes.io/hostname": "n1", "team": "a"}),
            json!([]),
        );
        let nodes = target("nodes", None, Some("n1"), None);
        let check = |new: &Value, old: Option<&Value>| {
            validate(&n1, &nodes, Some(new), old).map_err(|e| {
                e.message
                    .rsplit_once(": ")
                    .map(|(_, why)| why.to_owned())
                    .unwrap_or_default()
            })
        };
        let cases = [
            (
                node(
                    json!({"kubernetes.io/hostname": "n1", "team": "b", "topology.kubernetes.io/zone": "z", "feature.node.kubernetes.io/gpu": "1"}),
                    json!([]),
                ),
                Ok(()),
            ),
            (
                node(
                    json!({"kubernetes.io/hostname": "n1", "team": "a", "node-role.kubernetes.io/control-plane": ""}),
                    json!([]),
                ),
                Err("node-role.kubernetes.io/control-plane".to_owned()),
            ),
            // A kubelet label may go as well as come.
            (node(json!({"team": "a"}), json!([])), Ok(())),
            (
                node(
                    json!({"kubernetes.io/hostname": "n1", "team": "a", "x.node-restriction.kubernetes.io/a": "1"}),
                    json!([]),
                ),
                Err("x.node-restriction.kubernetes.io/a".to_owned()),
            ),
            (
                node(
                    json!({"kubernetes.io/hostname": "n1", "team": "a"}),
                    json!([{"key": "k", "effect": "NoSchedule"}]),
                ),
                Err("node \"n1\" is not allowed to modify taints".to_owned()),
            ),
        ];
        for (new, expected) in cases {
            assert_eq!(check(&new, Some(&base)), expected, "{new}");
        }
        assert_eq!(
            check(
                &node(
                    json!({"node-role.kubernetes.io/worker": "", "kubernetes.io/os": "linux"}),
                    json!(null)
                ),
                None
            ),
            Err("node-role.kubernetes.io/worker".to_owned()),
            "registering: not allowed to set the following labels"
        );
        let pod = |labels: Value| json!({"metadata": {"name": "p", "labels": labels}});
        let status = target("pods", Some("default"), Some("p"), Some("status"));
        let labelled = node(
            json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/worker": ""}),
            json!([]),
        );
        assert_eq!(
            check(&base, Some(&labelled)),
            Err("node-role.kubernetes.io/worker".to_owned()),
            "nor remove what an administrator set"
        );
        let relabel = validate(
            &n1,
            &status,
            Some(&pod(json!({"a": "2"}))),
            Some(&pod(json!({"a": "1"}))),
        )
        .expect_err("relabel through status");
        assert!(
            relabel
                .message
                .ends_with("node \"n1\" cannot update labels through pod status"),
            "{}",
            relabel.message
        );
        let admin = UserInfo::new("admin", &["system:masters"]);
        validate(&admin, &nodes, Some(&base), None).expect("not a node");
    }

    #[test]
    fn node_tokens_are_bound_to_their_own_pods() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
            "spec": {"nodeName": "n1", "serviceAccountName": "web-sa"}
        });
        let request =
            |reference: Value| json!({"spec": {"audiences": [], "boundObjectRef": reference}});
        let bound =
            request(json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1"}));
        let forbidden = |why: &str| Err(TokenRefusal::Forbidden(why.into()));
        let cases = [
            ("n1", "web-sa", bound.clone(), Some(&pod), Ok(())),
            (
                "n2",
                "web-sa",
                bound.clone(),
                Some(&pod),
                forbidden("node requested token bound to a pod scheduled on a different node"),
            ),
            (
                "n1",
                "default",
                bound.clone(),
                Some(&pod),
                Err(TokenRefusal::BadRequest(
                    "cannot bind token for serviceaccount \"default\" to pod running with \
                     different serviceaccount name."
                        .into(),
                )),
            ),
            (
                "n1",
                "web-sa",
                json!({"spec": {}}),
                Some(&pod),
                forbidden("node requested token not bound to a pod"),
            ),
            (
                "n1",
                "web-sa",
                request(json!({"apiVersion": "v1", "kind": "Secret", "name": "web", "uid": "u-1"})),
                Some(&pod),
                forbidden("node requested token not bound to a pod"),
            ),
            (
                "n1",
                "web-sa",
                request(json!({"apiVersion": "v1", "kind": "Pod", "name": "web"})),
                Some(&pod),
                forbidden("node requested token with a pod binding without a uid"),
            ),
            (
                "n1",
                "web-sa",
                request(json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-0"})),
                Some(&pod),
                forbidden(
                    "the UID in the bound object reference (u-0) does not match the UID in \
                     record. The object might have been deleted and then recreated",
                ),
            ),
            (
                "n1",
                "web-sa",
                bound,
                None,
                Err(TokenRefusal::PodNotFound("web".into())),
            ),
        ];
        for (node, account, request, pod, expected) in cases {
            assert_eq!(
                check_token_request(node, account, &request, pod),
                expected,
                "{node} {account} {request}"
            );
        }
    }
}
