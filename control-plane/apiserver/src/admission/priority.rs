//! The Priority admission plugin (kube 1.33's `plugin/pkg/admission/priority/admission.go`).
//!
//! - Pod creates: `spec.priorityClassName` is resolved to `spec.priority` and
//!   `spec.preemptionPolicy` from the PriorityClass of that name (403
//!   `no PriorityClass with name <x> was found` when there is none). A pod without a class gets
//!   the `globalDefault` class (the lowest-valued one if several claim it), its name included,
//!   or priority 0 and `PreemptLowerPriority` when no class is the default. A pod that already
//!   carries a different priority or preemption policy is refused with kube's 403.
//! - PriorityClass creates: a second `globalDefault` class is refused with kube's 403.
//!   (Updates making a class the default are not checked.)

use serde_json::{Value, json};

use super::Admit;
use crate::{ApiError, request::Target};

/// The preemption policy of pods without a class (kube's default).
const PREEMPT_LOWER: &str = "PreemptLowerPriority";

/// A PriorityClass as the plugin needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    name: String,
    value: i64,
    preemption_policy: Option<String>,
    global_default: bool,
}

impl Class {
    fn from_value(object: &Value) -> Option<Self> {
        Some(Self {
            name: object.pointer("/metadata/name")?.as_str()?.to_owned(),
            value: object.get("value")?.as_i64()?,
            preemption_policy: object
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(str::to_owned),
            global_default: object
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// The default class: the lowest-valued one marked `globalDefault`.
fn default_class(classes: &[Class]) -> Option<&Class> {
    classes
        .iter()
        .filter(|c| c.global_default)
        .min_by_key(|c| c.value)
}

/// Resolves the priority of a pod being created (pure). `Err` is the 403 message after
/// `pods "<name>" is forbidden: `.
pub(crate) fn resolve(pod: &mut Value, classes: &[Class]) -> Result<(), String> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let named = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let (priority, policy) = match named {
        Some(name) => {
            let class = classes
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| format!("no PriorityClass with name {name} was found"))?;
            (class.value, class.preemption_policy.clone())
        }
        None => match default_class(classes) {
            Some(class) => {
                spec.insert("priorityClassName".into(), json!(class.name));
                (class.value, class.preemption_policy.clone())
            }
            None => (0, None),
        },
    };
    let policy = policy.unwrap_or_else(|| PREEMPT_LOWER.to_owned());
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; \
             priority admission controller computed {priority} from the given PriorityClass name"
        ));
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; \
             priority admission controller computed {policy} from the given PriorityClass name"
        ));
    }
    spec.insert("priority".into(), json!(priority));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

/// Checks a PriorityClass being created (pure): `Err` is the 403 message after
/// `priorityclasses.scheduling.k8s.io "<name>" is forbidden: `.
pub(crate) fn check_class(class: &Value, classes: &[Class]) -> Result<(), String> {
    let wants_default = class
        .get("globalDefault")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match default_class(classes) {
        Some(existing) if wants_default => Err(format!(
            "PriorityClass {} is already marked as default. Only one default can exist",
            existing.name
        )),
        _ => Ok(()),
    }
}

/// Every stored PriorityClass.
async fn classes(admit: &Admit<'_>) -> Result<Vec<Class>, ApiError> {
    let resource = crate::registry::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(ApiError::no_route)?;
    let listed = admit
        .store
        .list(&resource.prefix(), keelson_store::ListOptions::default())
        .await
        .map_err(|e| ApiError::internal("failed to list PriorityClasses", &e))?;
    Ok(listed
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter_map(|v| Class::from_value(&v))
        .collect())
}

/// The admission of a create (`object` in storage form, already named): pods and
/// PriorityClasses; everything else passes.
pub(crate) async fn admit(
    admit: &Admit<'_>,
    target: &Target,
    name: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    if target.custom.is_some() {
        return Ok(());
    }
    let resource = target.resource;
    match (resource.group, resource.plural) {
        ("", "pods") => {
            let classes = classes(admit).await?;
            resolve(object, &classes)
                .map_err(|why| ApiError::forbidden(format!("pods \"{name}\" is forbidden: {why}")))
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            let classes = classes(admit).await?;
            check_class(object, &classes).map_err(|why| {
                ApiError::forbidden(format!(
                    "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: {why}"
                ))
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, policy: Option<&str>, default: bool) -> Class {
        Class {
            name: name.into(),
            value,
            preemption_policy: policy.map(str::to_owned),
            global_default: default,
        }
    }

    #[test]
    fn pods_get_their_class_priority() {
        let system = class(
            "system-node-critical",
            2_000_001_000,
            Some(PREEMPT_LOWER),
            false,
        );
        let high = class("high", 1000, Some("Never"), false);
        let low_default = class("low", 10, None, true);
        let higher_default = class("other-default", 20, None, true);
        type Case = (
            &'static str,
            Value,
            Vec<Class>,
            Result<(Value, Value, Value), String>,
        );
        let cases: Vec<Case> = vec![
            (
                "a named class",
                json!({"priorityClassName": "high"}),
                vec![high.clone()],
                Ok((json!("high"), json!(1000), json!("Never"))),
            ),
            (
                "a system class",
                json!({"priorityClassName": "system-node-critical"}),
                vec![system.clone()],
                Ok((
                    json!("system-node-critical"),
                    json!(2_000_001_000),
                    json!(PREEMPT_LOWER),
                )),
            ),
            (
                "no class and no default",
                json!({}),
                vec![high.clone()],
                Ok((Value::Null, json!(0), json!(PREEMPT_LOWER))),
            ),
            (
                "no class: the lowest global default",
                json!({}),
                vec![higher_default, low_default.clone()],
                Ok((json!("low"), json!(10), json!(PREEMPT_LOWER))),
            ),
            (
                "an unknown class",
                json!({"priorityClassName": "gold"}),
                vec![high.clone()],
                Err("no PriorityClass with name gold was found".into()),
            ),
            (
                "a priority that disagrees",
                json!({"priorityClassName": "high", "priority": 5}),
                vec![high.clone()],
                Err(
                    "the integer value of priority (5) must not be provided in pod spec; \
                     priority admission controller computed 1000 from the given PriorityClass \
                     name"
                        .into(),
                ),
            ),
            (
                "the same priority is accepted",
                json!({"priorityClassName": "high", "priority": 1000, "preemptionPolicy": "Never"}),
                vec![high.clone()],
                Ok((json!("high"), json!(1000), json!("Never"))),
            ),
            (
                "a preemption policy that disagrees",
                json!({"priorityClassName": "high", "preemptionPolicy": PREEMPT_LOWER}),
                vec![high],
                Err(
                    "the string value of PreemptionPolicy (PreemptLowerPriority) must not be \
                     provided in pod spec; priority admission controller computed Never from \
                     the given PriorityClass name"
                        .into(),
                ),
            ),
        ];
        for (name, spec, classes, expected) in cases {
            let mut pod = json!({"spec": spec});
            let got = resolve(&mut pod, &classes).map(|()| {
                (
                    pod["spec"]["priorityClassName"].clone(),
                    pod["spec"]["priority"].clone(),
                    pod["spec"]["preemptionPolicy"].clone(),
                )
            });
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn only_one_default_class() {
        let existing = vec![class("low", 10, None, true)];
        assert_eq!(
            check_class(&json!({"globalDefault": true}), &existing),
            Err(
                "PriorityClass low is already marked as default. Only one default can exist".into()
            )
        );
        assert_eq!(
            check_class(&json!({"globalDefault": false}), &existing),
            Ok(())
        );
        assert_eq!(check_class(&json!({"globalDefault": true}), &[]), Ok(()));
    }
}
