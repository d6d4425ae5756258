//! The `LimitRanger` admission plugin (kube's `plugin/pkg/admission/limitranger`), on pod
//! creates, for the `Container` limits of the namespace's LimitRanges:
//!
//! - defaults: a container's missing limits come from `default` (itself defaulted from
//!   `max`), its missing requests from `defaultRequest` (defaulted from `default`, then
//!   `min`); a limit without a request is the request, as kube's pod defaulting does first. What
//!   was set is named in the `kubernetes.io/limit-ranger` annotation, as kube words it.
//! - checks: `min` (the request and limit at least), `max` (the limit and request at most),
//!   `maxLimitRequestRatio`, refused with kube's 403 messages.
//!
//! - `Pod` limits: `min`, `max` and `maxLimitRequestRatio` over the pod's total (the
//!   containers' sum, raised to any init container's), worded "per Pod".
//! - `PersistentVolumeClaim` limits, on claim creates: `min` and `max` of the requested
//!   `storage` ("per PersistentVolumeClaim").
//!
//! Not done: checks on claim updates (kube validates a resized claim too).

use keelson_api::quota::{self, ResourceList};
use keelson_store::{ListOptions, Store};
use serde_json::{Value, json};

use super::Admit;
use crate::{ApiError, error::Details, object::decode_kv, registry, request::Target};

/// The annotation naming what the plugin set.
pub(crate) const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// One `Container` limit of a LimitRange, with kube's LimitRange defaulting applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ContainerLimit {
    pub(crate) min: ResourceList,
    pub(crate) max: ResourceList,
    pub(crate) default: ResourceList,
    pub(crate) default_request: ResourceList,
    pub(crate) ratio: ResourceList,
}

/// The `Container` items of a LimitRange.
pub(crate) fn container_limits(range: &Value) -> Vec<ContainerLimit> {
    limits_of_type(range, "Container")
}

/// The items of `kind` (`Container`, `Pod`, `PersistentVolumeClaim`) of a LimitRange (the
/// defaults only mean something for `Container`).
pub(crate) fn limits_of_type(range: &Value, kind: &str) -> Vec<ContainerLimit> {
    range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == kind)
        .map(|item| {
            let mut limit = ContainerLimit {
                min: quota::parse_list(item.get("min")),
                max: quota::parse_list(item.get("max")),
                default: quota::parse_list(item.get("default")),
                default_request: quota::parse_list(item.get("defaultRequest")),
                ratio: quota::parse_list(item.get("maxLimitRequestRatio")),
            };
            for (k, v) in &limit.max {
                limit.default.entry(k.clone()).or_insert(*v);
            }
            for (k, v) in limit.default.iter().chain(&limit.min) {
                limit.default_request.entry(k.clone()).or_insert(*v);
            }
            limit
        })
        .collect()
}

/// Applies `limits`' defaults to every container of `pod`; returns the annotation text (empty
/// when nothing was set).
pub(crate) fn default_pod(pod: &mut Value, limits: &[ContainerLimit]) -> String {
    let mut said = Vec::new();
    for field in ["initContainers", "containers"] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{field}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_owned();
            if !container["resources"].is_object() {
                container["resources"] = json!({});
            }
            let resources = &mut container["resources"];
            let mut requests = quota::parse_list(resources.get("requests"));
            let mut limits_of = quota::parse_list(resources.get("limits"));
            // kube's pod defaulting: a limit without a request is the request.
            for (k, v) in &limits_of {
                requests.entry(k.clone()).or_insert(*v);
            }
            let (mut set_requests, mut set_limits) = (Vec::new(), Vec::new());
            for limit in limits {
                for (k, v) in &limit.default {
                    if !limits_of.contains_key(k) {
                        limits_of.insert(k.clone(), *v);
                        set_limits.push(k.clone());
                    }
                }
                for (k, v) in &limit.default_request {
                    if !requests.contains_key(k) {
                        requests.insert(k.clone(), *v);
                        set_requests.push(k.clone());
                    }
                }
            }
            set_requests.sort();
            set_limits.sort();
            if !set_requests.is_empty() {
                said.push(format!(
                    "{} request for container {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                said.push(format!(
                    "{} limit for container {name}",
                    set_limits.join(", ")
                ));
            }
            merge(resources, "requests", &requests);
            merge(resources, "limits", &limits_of);
        }
    }
    if said.is_empty() {
        String::new()
    } else {
        format!("LimitRanger plugin set: {}", said.join("; "))
    }
}

/// Writes the quantities of `list` missing from `resources[field]` (given ones keep their
/// spelling).
fn merge(resources: &mut Value, field: &str, list: &ResourceList) {
    if list.is_empty() {
        return;
    }
    if !resources[field].is_object() {
        resources[field] = json!({});
    }
    for (k, v) in list {
        if resources[field].get(k).is_none() {
            resources[field][k] = json!(v.to_string());
        }
    }
}

/// kube's min, max and ratio checks of one container's resources.
fn check(requests: &ResourceList, limits: &ResourceList, limit: &ContainerLimit) -> Vec<String> {
    check_as("Container", requests, limits, limit)
}

/// kube's min, max and ratio checks of the resources of one `kind` (`Container`, `Pod`).
fn check_as(
    kind: &str,
    requests: &ResourceList,
    limits: &ResourceList,
    limit: &ContainerLimit,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, min) in &limit.min {
        match requests.get(name) {
            None => errors.push(format!(
                "minimum {name} usage per {kind} is {min}.  No request is specified"
            )),
            Some(request) if request < min => errors.push(format!(
                "minimum {name} usage per {kind} is {min}, but request is {request}"
            )),
            Some(_) => {
                if let Some(lim) = limits.get(name).filter(|l| *l < min) {
                    errors.push(format!(
                        "minimum {name} usage per {kind} is {min}, but limit is {lim}"
                    ));
                }
            }
        }
    }
    for (name, max) in &limit.max {
        match limits.get(name) {
            None => errors.push(format!(
                "maximum {name} usage per {kind} is {max}.  No limit is specified"
            )),
            Some(lim) if lim > max => errors.push(format!(
                "maximum {name} usage per {kind} is {max}, but limit is {lim}"
            )),
            Some(_) => {
                if let Some(request) = requests.get(name).filter(|r| *r > max) {
                    errors.push(format!(
                        "maximum {name} usage per {kind} is {max}, but request is {request}"
                    ));
                }
            }
        }
    }
    for (name, ratio) in &limit.ratio {
        let request = requests.get(name).filter(|r| !r.is_zero());
        let lim = limits.get(name).filter(|l| !l.is_zero());
        match (request, lim) {
            (None, _) => errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but no request is \
                 specified or request is 0"
            )),
            (_, None) => errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but no limit is \
                 specified or limit is 0"
            )),
            (Some(request), Some(lim)) => {
                let observed = lim.nanos() as f64 / request.nanos() as f64;
                if observed > ratio.nanos() as f64 / 1e9 {
                    errors.push(format!(
                        "{name} max limit to request ratio per {kind} is {ratio}, but \
                         provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
    errors
}

/// The checks of every container of `pod` (defaults applied); kube's aggregate wording: one
/// message alone, several in brackets.
#[cfg(test)]
pub(crate) fn validate_pod(pod: &Value, limits: &[ContainerLimit]) -> Option<String> {
    aggregate(container_errors(pod, limits))
}

/// The checks of every container of `pod`, each message once.
fn container_errors(pod: &Value, limits: &[ContainerLimit]) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    for field in ["initContainers", "containers"] {
        for container in pod
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let requests = quota::parse_list(container.pointer("/resources/requests"));
            let limits_of = quota::parse_list(container.pointer("/resources/limits"));
            for limit in limits {
                for error in check(&requests, &limits_of, limit) {
                    if !errors.contains(&error) {
                        errors.push(error);
                    }
                }
            }
        }
    }
    errors
}

/// kube's aggregate wording: one message alone, several in brackets.
fn aggregate(errors: Vec<String>) -> Option<String> {
    match errors.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(format!("[{}]", many.join(", "))),
    }
}

/// A pod's total requests or limits (`part`): the containers' sum, raised to any init
/// container's (kube's pod resource computation).
fn pod_total(pod: &Value, part: &str) -> ResourceList {
    let lists = |field: &str| -> Vec<ResourceList> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| quota::parse_list(c.pointer(&format!("/resources/{part}"))))
            .collect()
    };
    let mut total = ResourceList::new();
    for list in lists("containers") {
        total = quota::sum(&total, &list);
    }
    for list in lists("initContainers") {
        for (name, value) in list {
            if total.get(&name).is_none_or(|t| *t < value) {
                total.insert(name, value);
            }
        }
    }
    total
}

/// The `Pod` limits' checks of `pod`'s totals.
pub(crate) fn validate_pod_totals(pod: &Value, limits: &[ContainerLimit]) -> Vec<String> {
    let (requests, limits_of) = (pod_total(pod, "requests"), pod_total(pod, "limits"));
    let mut errors: Vec<String> = Vec::new();
    for limit in limits {
        for error in check_as("Pod", &requests, &limits_of, limit) {
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
    }
    errors
}

/// The `PersistentVolumeClaim` limits' checks of a claim's requests (kube's min constraint
/// with no limits, and its max-request constraint).
pub(crate) fn validate_claim(claim: &Value, limits: &[ContainerLimit]) -> Option<String> {
    let requests = quota::parse_list(claim.pointer("/spec/resources/requests"));
    let kind = "PersistentVolumeClaim";
    let mut errors = Vec::new();
    for limit in limits {
        for (name, min) in &limit.min {
            match requests.get(name) {
                None => errors.push(format!(
                    "minimum {name} usage per {kind} is {min}.  No request is specified"
                )),
                Some(request) if request < min => errors.push(format!(
                    "minimum {name} usage per {kind} is {min}, but request is {request}"
                )),
                Some(_) => {}
            }
        }
        for (name, max) in &limit.max {
            match requests.get(name) {
                None => errors.push(format!(
                    "maximum {name} usage per {kind} is {max}.  No request is specified"
                )),
                Some(request) if request > max => errors.push(format!(
                    "maximum {name} usage per {kind} is {max}, but request is {request}"
                )),
                Some(_) => {}
            }
        }
    }
    aggregate(errors)
}

/// The LimitRanger admission of creating the pod `object` (stored form, named `name`).
pub(crate) async fn admit(
    admit: &Admit<'_>,
    target: &Target,
    name: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    let resource = target.resource;
    if target.custom.is_some()
        || !resource.group.is_empty()
        || !matches!(resource.plural, "pods" | "persistentvolumeclaims")
    {
        return Ok(());
    }
    let Some(namespace) = target.namespace.as_deref() else {
        return Ok(());
    };
    let ranges = registry::find("", "v1", "limitranges").ok_or_else(ApiError::no_route)?;
    let store: &dyn Store = admit.store.as_ref();
    let listed = store
        .list(
            &ranges.collection_prefix(Some(namespace)),
            ListOptions::default(),
        )
        .await
        .map_err(|e| ApiError::from_store(e, ranges, ""))?;
    let (mut limits, mut pod_limits, mut claim_limits) = (Vec::new(), Vec::new(), Vec::new());
    for kv in &listed.items {
        let range = decode_kv(kv)?;
        limits.extend(container_limits(&range));
        pod_limits.extend(limits_of_type(&range, "Pod"));
        claim_limits.extend(limits_of_type(&range, "PersistentVolumeClaim"));
    }
    let refuse = |why: String| {
        let mut error = ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: {why}",
            resource.plural
        ));
        error.details = Some(Box::new(Details {
            name: name.to_owned(),
            kind: resource.plural.to_owned(),
            ..Details::default()
        }));
        error
    };
    if resource.plural == "persistentvolumeclaims" {
        return match validate_claim(object, &claim_limits) {
            Some(why) => Err(refuse(why)),
            None => Ok(()),
        };
    }
    if limits.is_empty() && pod_limits.is_empty() {
        return Ok(());
    }
    let said = default_pod(object, &limits);
    if !said.is_empty() {
        if !object["metadata"]["annotations"].is_object() {
            object["metadata"]["annotations"] = json!({});
        }
        object["metadata"]["annotations"][ANNOTATION] = json!(said);
    }
    let mut errors = container_errors(object, &limits);
    for error in validate_pod_totals(object, &pod_limits) {
        if !errors.contains(&error) {
            errors.push(error);
        }
    }
    match aggregate(errors) {
        Some(why) => Err(refuse(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use keelson_api::quantity::Quantity;

    use super::*;

    fn range(item: Value) -> Vec<ContainerLimit> {
        container_limits(&json!({"spec": {"limits": [item]}}))
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "web", "resources": resources}]}})
    }

    #[test]
    fn defaults_fill_what_is_missing_and_say_so() {
        let limits = range(json!({"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"}}));
        let cases = [
            (
                json!({}),
                json!({"requests": {"cpu": "100m", "memory": "256Mi"},
                       "limits": {"cpu": "500m", "memory": "256Mi"}}),
                "LimitRanger plugin set: cpu, memory request for container web; cpu, memory \
                 limit for container web",
            ),
            (
                json!({"limits": {"cpu": "1", "memory": "1Gi"}}),
                json!({"requests": {"cpu": "1", "memory": "1Gi"},
                       "limits": {"cpu": "1", "memory": "1Gi"}}),
                "",
            ),
            (
                json!({"requests": {"cpu": "50m"}}),
                json!({"requests": {"cpu": "50m", "memory": "256Mi"},
                       "limits": {"cpu": "500m", "memory": "256Mi"}}),
                "LimitRanger plugin set: memory request for container web; cpu, memory limit \
                 for container web",
            ),
        ];
        for (given, want, said) in cases {
            let mut pod = pod(given.clone());
            assert_eq!(default_pod(&mut pod, &limits), said, "{given}");
            assert_eq!(pod["spec"]["containers"][0]["resources"], want, "{given}");
        }
    }

    #[test]
    fn max_defaults_the_limit_and_min_the_request() {
        let limits =
            range(json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}));
        let mut pod = pod(json!({}));
        default_pod(&mut pod, &limits);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"cpu": "2"}})
        );
    }

    #[test]
    fn checks_word_as_kube() {
        let limits = range(json!({"type": "Container",
            "min": {"cpu": "100m"}, "max": {"cpu": "1", "memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "2"}}));
        let cases = [
            (
                json!({"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"cpu": "400m", "memory": "64Mi"}}),
                None,
            ),
            (
                json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "100m", "memory": "2Gi"}}),
                Some(
                    "[minimum cpu usage per Container is 100m, but request is 50m, maximum memory \
                      usage per Container is 1Gi, but limit is 2Gi]",
                ),
            ),
            (
                json!({"requests": {"cpu": "200m"}, "limits": {"cpu": "500m", "memory": "1Gi"}}),
                Some(
                    "cpu max limit to request ratio per Container is 2, but provided ratio is \
                      2.500000",
                ),
            ),
            (
                json!({"requests": {"cpu": "200m"}, "limits": {"cpu": "200m"}}),
                Some("maximum memory usage per Container is 1Gi.  No limit is specified"),
            ),
        ];
        for (resources, want) in cases {
            assert_eq!(
                validate_pod(&pod(resources.clone()), &limits).as_deref(),
                want,
                "{resources}"
            );
        }
    }

    #[test]
    fn pod_limits_check_the_pods_total() {
        let limits = limits_of_type(
            &json!({"spec": {"limits": [{"type": "Pod",
                "max": {"cpu": "1"}, "min": {"memory": "100Mi"}}]}}),
            "Pod",
        );
        let pod = |cpus: &[&str], init: &str| {
            let container = |cpu: &&str| {
                json!({"resources": {"requests": {"cpu": cpu, "memory": "64Mi"},
                    "limits": {"cpu": cpu, "memory": "64Mi"}}})
            };
            json!({"spec": {"containers": cpus.iter().map(container).collect::<Vec<_>>(),
                "initContainers": [container(&init)]}})
        };
        let cases = [
            (
                "two containers of 600m and 64Mi each: 1200m is over, 128Mi fine",
                pod(&["600m", "600m"], "100m"),
                vec!["maximum cpu usage per Pod is 1, but limit is 1200m"],
            ),
            (
                "one container: 64Mi is under the minimum",
                pod(&["500m"], "100m"),
                vec!["minimum memory usage per Pod is 100Mi, but request is 64Mi"],
            ),
            (
                "an init container of 2 CPUs raises the total",
                pod(&["500m", "500m"], "2"),
                vec!["maximum cpu usage per Pod is 1, but limit is 2"],
            ),
            ("within bounds", pod(&["400m", "400m"], "100m"), vec![]),
        ];
        for (name, pod, want) in cases {
            assert_eq!(validate_pod_totals(&pod, &limits), want, "{name}");
        }
    }

    #[test]
    fn claim_limits_check_the_storage_request() {
        let limits = limits_of_type(
            &json!({"spec": {"limits": [{"type": "PersistentVolumeClaim",
                "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}}),
            "PersistentVolumeClaim",
        );
        let claim = |size: Option<&str>| match size {
            Some(size) => json!({"spec": {"resources": {"requests": {"storage": size}}}}),
            None => json!({"spec": {}}),
        };
        let cases = [
            (
                claim(Some("5Gi")),
                Some("maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
            ),
            (
                claim(Some("500Mi")),
                Some(
                    "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi",
                ),
            ),
            (claim(Some("1536Mi")), None),
            (
                claim(None),
                Some(
                    "[minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified, maximum storage usage per PersistentVolumeClaim is 2Gi.  No request is specified]",
                ),
            ),
        ];
        for (claim, want) in cases {
            assert_eq!(validate_claim(&claim, &limits).as_deref(), want, "{claim}");
        }
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(Quantity::parse("1").unwrap() > Quantity::parse("500m").unwrap());
    }
}
