//! ResourceQuota usage: what one object counts against a quota (kube's quota evaluators,
//! `pkg/quota/v1/evaluator/core`), shared by the API server's ResourceQuota admission and the
//! `resourcequota` controller, plus kube's comparison and printing of resource lists.
//!
//! Counted: `pods` (not finished), `requests.cpu`/`cpu`, `requests.memory`/`memory`,
//! `limits.cpu`, `limits.memory` (a pod's request is the larger of its containers' sum and
//! any one init container's); `services` (with `services.loadbalancers`,
//! `services.nodeports`), `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`,
//! `persistentvolumeclaims` (with `requests.storage`); and `count/<resource>[.<group>]` for
//! every namespaced kind.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::{Format, Quantity};

/// A resource list: resource name -> quantity.
pub type ResourceList = BTreeMap<String, Quantity>;

/// The quantities of `list` (a `{"cpu": "100m", ...}` object); unparsable ones are skipped.
pub fn parse_list(list: Option<&Value>) -> ResourceList {
    list.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Quantity::parse(v.as_str()?).ok()?)))
        .collect()
}

/// `list` as a JSON object of quantity strings.
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

fn one() -> Quantity {
    Quantity::new(1, Format::DecimalSI)
}

fn add(list: &mut ResourceList, name: &str, value: Quantity) {
    let sum = match list.get(name) {
        Some(old) => old.checked_add(value).unwrap_or(value),
        None => value,
    };
    list.insert(name.to_owned(), sum);
}

/// Whether a pod counts (kube: not `Succeeded`/`Failed`).
pub fn pod_counts(pod: &Value) -> bool {
    !matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's requests or limits (`part`): the containers' sum, raised to any init container's.
fn pod_resources(pod: &Value, part: &str) -> ResourceList {
    let containers = |field: &str| -> Vec<ResourceList> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| parse_list(c.pointer(&format!("/resources/{part}"))))
            .collect()
    };
    let mut total = ResourceList::new();
    for list in containers("containers") {
        for (name, value) in list {
            add(&mut total, &name, value);
        }
    }
    for list in containers("initContainers") {
        for (name, value) in list {
            if total.get(&name).is_none_or(|t| *t < value) {
                total.insert(name, value);
            }
        }
    }
    total
}

/// The quota usage of one object of `plural` in `group` ("" for core).
pub fn usage(group: &str, plural: &str, object: &Value) -> ResourceList {
    let mut usage = ResourceList::new();
    if group.is_empty() && plural == "pods" && !pod_counts(object) {
        return usage;
    }
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    usage.insert(count, one());
    if !group.is_empty() {
        return usage;
    }
    match plural {
        "pods" => {
            usage.insert("pods".into(), one());
            for (name, value) in pod_resources(object, "requests") {
                if matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    usage.insert(format!("requests.{name}"), value);
                    usage.insert(name, value);
                }
            }
            for (name, value) in pod_resources(object, "limits") {
                if matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    usage.insert(format!("limits.{name}"), value);
                }
            }
        }
        "services" => {
            usage.insert("services".into(), one());
            let kind = object.pointer("/spec/type").and_then(Value::as_str);
            let ports = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ports = Quantity::new(i64::try_from(ports).unwrap_or(0), Format::DecimalSI);
            match kind {
                Some("LoadBalancer") => {
                    usage.insert("services.loadbalancers".into(), one());
                    usage.insert("services.nodeports".into(), ports);
                }
                Some("NodePort") => {
                    usage.insert("services.nodeports".into(), ports);
                }
                _ => {}
            }
        }
        "persistentvolumeclaims" => {
            usage.insert("persistentvolumeclaims".into(), one());
            if let Some(storage) =
                parse_list(object.pointer("/spec/resources/requests")).remove("storage")
            {
                usage.insert("requests.storage".into(), storage);
            }
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            usage.insert(plural.to_owned(), one());
        }
        _ => {}
    }
    usage
}

/// `a + b` per resource.
pub fn sum(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (name, value) in b {
        add(&mut out, name, *value);
    }
    out
}

/// `list` restricted to `names` (kube's `Mask`).
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|n| Some((n.clone(), *list.get(n)?)))
        .collect()
}

/// The resources of `a` above `b`'s (kube's `LessThanOrEqual`; a resource `b` lacks is fine).
pub fn exceeded(a: &ResourceList, b: &ResourceList) -> Vec<String> {
    a.iter()
        .filter(|(name, value)| b.get(*name).is_some_and(|limit| *value > limit))
        .map(|(name, _)| name.clone())
        .collect()
}

/// kube's `prettyPrint`: `name=value` sorted by name, joined by `,`.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether an object falls in a quota's scopes (kube's `generic.Matches` with the pod
/// evaluator's `podMatchesScopeFunc`): every `spec.scopes` entry (read as `Exists`) and every
/// `spec.scopeSelector.matchExpressions` entry must match. A quota with no scopes covers every
/// object; a scoped one only pods (the other evaluators match no scope).
pub fn in_scope(spec: Option<&Value>, group: &str, plural: &str, object: &Value) -> bool {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let mut selectors: Vec<(String, String, Vec<String>)> = spec
        .and_then(|s| s.get("scopes"))
        .map(strings)
        .unwrap_or_default()
        .into_iter()
        .map(|scope| (scope, "Exists".to_owned(), Vec::new()))
        .collect();
    let expressions = spec
        .and_then(|s| s.pointer("/scopeSelector/matchExpressions"))
        .and_then(Value::as_array);
    for expression in expressions.into_iter().flatten() {
        let field = |name: &str| {
            expression
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let values = expression.get("values").map(strings).unwrap_or_default();
        selectors.push((field("scopeName"), field("operator"), values));
    }
    if selectors.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    selectors
        .iter()
        .all(|(scope, operator, values)| pod_in_scope(object, scope, operator, values))
}

/// kube's `isBestEffort`: no container (init containers too) requests or limits CPU or memory.
fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|field| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|part| {
                    let list = parse_list(c.pointer(&format!("/resources/{part}")));
                    !list.contains_key("cpu") && !list.contains_key("memory")
                })
            })
    })
}

/// Whether a pod uses cross-namespace pod affinity (a term with `namespaces` or a
/// `namespaceSelector`).
fn cross_namespace_affinity(pod: &Value) -> bool {
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(affinity) = pod.pointer(&format!("/spec/affinity/{kind}")) else {
            return false;
        };
        let required = affinity
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = affinity
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).any(|term| {
            term.get("namespaceSelector").is_some_and(|s| !s.is_null())
                || term
                    .get("namespaces")
                    .and_then(Value::as_array)
                    .is_some_and(|n| !n.is_empty())
        })
    })
}

fn pod_in_scope(pod: &Value, scope: &str, operator: &str, values: &[String]) -> bool {
    let deadline = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64);
    match scope {
        "Terminating" => deadline.is_some_and(|d| d >= 0),
        "NotTerminating" => deadline.is_none(),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match operator {
                "Exists" => !class.is_empty(),
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                // The class is always a key of the pod's scope labels (empty or not).
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn printed(list: &ResourceList) -> String {
        pretty(list)
    }

    #[test]
    fn scopes() {
        let best_effort = json!({"spec": {"containers": [{}]}});
        let burstable = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "100m"}}}],
            "activeDeadlineSeconds": 30, "priorityClassName": "high"}});
        let scoped = |scopes: Value| json!({"scopes": scopes});
        let selector = |name: &str, op: &str, values: Value| {
            json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": name, "operator": op, "values": values}]}})
        };
        let cases = [
            (
                "no scopes: every object",
                json!({}),
                "services",
                &best_effort,
                true,
            ),
            (
                "scoped: never a service",
                scoped(json!(["NotTerminating"])),
                "services",
                &best_effort,
                false,
            ),
            (
                "BestEffort",
                scoped(json!(["BestEffort"])),
                "pods",
                &best_effort,
                true,
            ),
            (
                "BestEffort, not burstable",
                scoped(json!(["BestEffort"])),
                "pods",
                &burstable,
                false,
            ),
            (
                "NotBestEffort",
                scoped(json!(["NotBestEffort"])),
                "pods",
                &burstable,
                true,
            ),
            (
                "Terminating",
                scoped(json!(["Terminating"])),
                "pods",
                &burstable,
                true,
            ),
            (
                "NotTerminating",
                scoped(json!(["NotTerminating"])),
                "pods",
                &burstable,
                false,
            ),
            (
                "all scopes must match",
                scoped(json!(["Terminating", "BestEffort"])),
                "pods",
                &burstable,
                false,
            ),
            (
                "PriorityClass In",
                selector("PriorityClass", "In", json!(["high"])),
                "pods",
                &burstable,
                true,
            ),
            (
                "PriorityClass In, no class",
                selector("PriorityClass", "In", json!(["high"])),
                "pods",
                &best_effort,
                false,
            ),
            (
                "PriorityClass NotIn",
                selector("PriorityClass", "NotIn", json!(["high"])),
                "pods",
                &best_effort,
                true,
            ),
            (
                "PriorityClass Exists",
                scoped(json!(["PriorityClass"])),
                "pods",
                &best_effort,
                false,
            ),
        ];
        for (name, spec, plural, object, want) in cases {
            assert_eq!(in_scope(Some(&spec), "", plural, object), want, "{name}");
        }
    }

    #[test]
    fn usages() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"resources": {"requests": {"cpu": "150m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "500m"}}}]},
            "status": {"phase": "Running"}});
        let cases = [
            (
                "",
                "pods",
                pod.clone(),
                "count/pods=1,cpu=500m,limits.cpu=1,memory=64Mi,pods=1,requests.cpu=500m,requests.memory=64Mi",
            ),
            ("", "pods", json!({"status": {"phase": "Succeeded"}}), ""),
            (
                "",
                "services",
                json!({"spec": {"type": "NodePort", "ports": [{}, {}]}}),
                "count/services=1,services=1,services.nodeports=2",
            ),
            (
                "",
                "configmaps",
                json!({}),
                "configmaps=1,count/configmaps=1",
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
                "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=1Gi",
            ),
            ("apps", "deployments", json!({}), "count/deployments.apps=1"),
        ];
        for (group, plural, object, want) in cases {
            assert_eq!(printed(&usage(group, plural, &object)), want, "{plural}");
        }
    }

    #[test]
    fn comparisons() {
        let list = |pairs: &[(&str, &str)]| -> ResourceList {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Quantity::parse(v).unwrap()))
                .collect()
        };
        let used = list(&[("pods", "2"), ("requests.cpu", "1500m")]);
        let requested = list(&[("pods", "1"), ("requests.cpu", "500m")]);
        let hard = list(&[("pods", "3"), ("requests.cpu", "1")]);
        let total = sum(&used, &requested);
        assert_eq!(printed(&total), "pods=3,requests.cpu=2");
        assert_eq!(exceeded(&total, &hard), vec!["requests.cpu".to_owned()]);
        assert_eq!(
            printed(&mask(&hard, &exceeded(&total, &hard))),
            "requests.cpu=1"
        );
    }
}
