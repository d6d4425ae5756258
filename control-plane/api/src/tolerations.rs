//! Taints and tolerations with Kubernetes' matching rules: `Toleration.ToleratesTaint`
//! (k8s.io/api `core/v1/toleration.go`), the helpers built on it (`TolerationsTolerateTaint`,
//! `FindMatchingUntoleratedTaint`, `GetMatchingTolerations`) and the taint-eviction
//! controller's choice of how long a pod stays on a node with `NoExecute` taints.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// The taint effect that keeps new pods off a node.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// The taint effect the scheduler only tries to respect.
pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
/// The taint effect that also evicts running pods that do not tolerate it.
pub const NO_EXECUTE: &str = "NoExecute";

/// Whether `toleration` tolerates `taint`, as Kubernetes decides it:
///
/// 1. an empty (or absent) effect matches every effect, otherwise the effects must be equal;
/// 2. an empty key matches every key, otherwise the keys must be equal (validation only allows
///    an empty key with `Exists`, which then tolerates everything);
/// 3. the operator `Equal` (also when absent or empty) compares the values, `Exists` matches
///    any value, `Lt`/`Gt` compare the taint's value with the toleration's as 64-bit integers
///    (false when either is not one), and any other operator matches nothing.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    let value = toleration.value.as_deref().unwrap_or_default();
    let taint_value = taint.value.as_deref().unwrap_or_default();
    let numbers = || Some((taint_value.parse::<i64>().ok()?, value.parse::<i64>().ok()?));
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => value == taint_value,
        "Exists" => true,
        "Lt" => numbers().is_some_and(|(taint, toleration)| taint < toleration),
        "Gt" => numbers().is_some_and(|(taint, toleration)| taint > toleration),
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint` (Kubernetes' `TolerationsTolerateTaint`).
pub fn tolerates_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first of `taints` that `applies` selects and none of `tolerations` tolerates
/// (Kubernetes' `FindMatchingUntoleratedTaint`); `None` when every such taint is tolerated.
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    applies: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|taint| applies(taint))
        .find(|taint| !tolerates_taint(tolerations, taint))
}

/// Whether `tolerations` tolerate every one of `taints` that `applies` selects (Kubernetes'
/// `TolerationsTolerateTaintsWithFilter`).
pub fn tolerates_all(
    tolerations: &[Toleration],
    taints: &[Taint],
    applies: impl Fn(&Taint) -> bool,
) -> bool {
    find_untolerated(taints, tolerations, applies).is_none()
}

/// Whether a taint keeps pods that do not tolerate it from being scheduled (`NoSchedule` or
/// `NoExecute`; `PreferNoSchedule` only lowers a node's score).
pub fn blocks_scheduling(taint: &Taint) -> bool {
    taint.effect == NO_SCHEDULE || taint.effect == NO_EXECUTE
}

/// For each of `taints`, the first of `tolerations` that tolerates it; `None` if one is not
/// tolerated at all (Kubernetes' `GetMatchingTolerations`).
pub fn matching_tolerations<'a>(
    taints: &[Taint],
    tolerations: &'a [Toleration],
) -> Option<Vec<&'a Toleration>> {
    taints
        .iter()
        .map(|taint| tolerations.iter().find(|t| tolerates(t, taint)))
        .collect()
}

/// How long a pod may stay on a node, given the node's `NoExecute` taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExecuteTolerance {
    /// A `NoExecute` taint is not tolerated: the pod goes now.
    Evict,
    /// The pod goes this long after the taint appeared.
    For(Duration),
    /// The pod stays (no `NoExecute` taint, or no `tolerationSeconds` on what tolerates them).
    Forever,
}

/// What Kubernetes' taint-eviction controller decides for a pod with `tolerations` on a node
/// with `taints` (other effects than `NoExecute` are ignored): every `NoExecute` taint must be
/// tolerated, by the first toleration that matches it; the shortest `tolerationSeconds` among
/// those tolerations then applies (zero or negative means now), and when none of them sets it
/// the pod stays for ever.
pub fn no_execute_tolerance(tolerations: &[Toleration], taints: &[Taint]) -> NoExecuteTolerance {
    let no_execute: Vec<Taint> = taints
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .cloned()
        .collect();
    if no_execute.is_empty() {
        return NoExecuteTolerance::Forever;
    }
    let Some(used) = matching_tolerations(&no_execute, tolerations) else {
        return NoExecuteTolerance::Evict;
    };
    used.iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map_or(NoExecuteTolerance::Forever, |seconds| {
            NoExecuteTolerance::For(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> Toleration {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Toleration {
            key: some(key),
            operator: some(operator),
            value: some(value),
            effect: some(effect),
            toleration_seconds: None,
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    /// Kubernetes' `TestTolerationToleratesTaint` cases, and the empty-key, default-operator
    /// and unknown-operator rules.
    #[test]
    fn tolerates_like_kubernetes() {
        let sla = "node.kubernetes.io/sla";
        for (toleration, taint, expected) in [
            (
                toleration("foo", "Exists", "", NO_SCHEDULE),
                taint("foo", "", NO_SCHEDULE),
                true,
            ),
            (
                toleration("foo", "Exists", "", NO_SCHEDULE),
                taint("foo", "bar", NO_SCHEDULE),
                true,
            ),
            (
                toleration("", "Exists", "", NO_SCHEDULE),
                taint("foo", "bar", NO_SCHEDULE),
                true,
            ),
            (
                toleration("foo", "Equal", "bar", NO_SCHEDULE),
                taint("foo", "bar", NO_SCHEDULE),
                true,
            ),
            (
                toleration("foo", "Equal", "value1", NO_SCHEDULE),
                taint("foo", "value2", NO_SCHEDULE),
                false,
            ),
            (
                toleration("foo", "Equal", "bar", NO_SCHEDULE),
                taint("foo", "bar", NO_EXECUTE),
                false,
            ),
            (
                toleration(sla, "Gt", "950", NO_SCHEDULE),
                taint(sla, "800", NO_SCHEDULE),
                false,
            ),
            (
                toleration(sla, "Gt", "750", NO_SCHEDULE),
                taint(sla, "950", NO_SCHEDULE),
                true,
            ),
            (
                toleration(sla, "Lt", "800", NO_SCHEDULE),
                taint(sla, "950", NO_SCHEDULE),
                false,
            ),
            (
                toleration(sla, "Lt", "950", NO_SCHEDULE),
                taint(sla, "800", NO_SCHEDULE),
                true,
            ),
            (
                toleration(sla, "Gt", "950", NO_SCHEDULE),
                taint(sla, "950", NO_SCHEDULE),
                false,
            ),
            (
                toleration(sla, "Gt", "950", NO_SCHEDULE),
                taint(sla, "high", NO_SCHEDULE),
                false,
            ),
            (
                toleration("k", "Gt", "-100", NO_SCHEDULE),
                taint("k", "-200", NO_SCHEDULE),
                false,
            ),
            (
                toleration("k", "Gt", "9223372036854775806", NO_SCHEDULE),
                taint("k", "100", NO_SCHEDULE),
                false,
            ),
            // Empty key and effect with Exists: everything.
            (
                toleration("", "Exists", "", ""),
                taint("any", "thing", NO_EXECUTE),
                true,
            ),
            // An empty effect matches every effect.
            (
                toleration("foo", "Exists", "", ""),
                taint("foo", "", PREFER_NO_SCHEDULE),
                true,
            ),
            // No operator means Equal.
            (
                toleration("foo", "", "bar", ""),
                taint("foo", "bar", NO_SCHEDULE),
                true,
            ),
            (
                toleration("foo", "", "", ""),
                taint("foo", "bar", NO_SCHEDULE),
                false,
            ),
            // An empty key with Equal (which validation refuses) compares values only.
            (
                toleration("", "Equal", "", NO_EXECUTE),
                taint("node.kubernetes.io/unreachable", "", NO_EXECUTE),
                true,
            ),
            (
                toleration("", "Equal", "", NO_EXECUTE),
                taint("dedicated", "db", NO_EXECUTE),
                false,
            ),
            // An unknown operator tolerates nothing.
            (
                toleration("foo", "Matches", "bar", ""),
                taint("foo", "bar", NO_SCHEDULE),
                false,
            ),
            (
                toleration("bar", "Exists", "", ""),
                taint("foo", "", NO_SCHEDULE),
                false,
            ),
        ] {
            assert_eq!(
                tolerates(&toleration, &taint),
                expected,
                "{toleration:?} vs {taint:?}"
            );
        }
    }

    #[test]
    fn finds_the_first_untolerated_scheduling_taint() {
        let taints = [
            taint("soft", "", PREFER_NO_SCHEDULE),
            taint("a", "", NO_SCHEDULE),
            taint("b", "x", NO_EXECUTE),
        ];
        let none: [Toleration; 0] = [];
        assert_eq!(
            find_untolerated(&taints, &none, blocks_scheduling).map(|t| t.key.as_str()),
            Some("a"),
            "PreferNoSchedule does not block"
        );
        let some = [toleration("a", "Exists", "", "")];
        assert_eq!(
            find_untolerated(&taints, &some, blocks_scheduling).map(|t| t.key.as_str()),
            Some("b")
        );
        let all = [toleration("", "Exists", "", "")];
        assert!(tolerates_all(&all, &taints, |_| true));
        assert!(!tolerates_all(&some, &taints, |_| true));
        assert!(tolerates_all(&none, &[], |_| true));
    }

    #[test]
    fn no_execute_tolerance_follows_the_taint_eviction_controller() {
        use NoExecuteTolerance::*;
        let unreachable = [taint("node.kubernetes.io/unreachable", "", NO_EXECUTE)];
        let seconds = |t: Toleration, s: i64| Toleration {
            toleration_seconds: Some(s),
            ..t
        };
        let exists = toleration("node.kubernetes.io/unreachable", "Exists", "", NO_EXECUTE);
        let anything = toleration("", "Exists", "", "");
        let other = toleration("node.kubernetes.io/not-ready", "Exists", "", NO_EXECUTE);
        let s = Duration::from_secs;
        for (tolerations, taints, expected) in [
            (vec![], &unreachable[..], Evict),
            (vec![other.clone()], &unreachable, Evict),
            (vec![exists.clone()], &unreachable, Forever),
            (vec![seconds(exists.clone(), 5)], &unreachable, For(s(5))),
            (vec![seconds(exists.clone(), -3)], &unreachable, For(s(0))),
            // The first toleration that matches a taint is the one used.
            (
                vec![seconds(exists.clone(), 5), seconds(anything.clone(), 2)],
                &unreachable,
                For(s(5)),
            ),
            (
                vec![exists.clone(), seconds(anything.clone(), 2)],
                &unreachable,
                Forever,
            ),
            (
                vec![seconds(exists.clone(), 5), exists.clone()],
                &unreachable,
                For(s(5)),
            ),
            (vec![], &[taint("a", "", NO_SCHEDULE)], Forever),
            (vec![], &[], Forever),
        ] {
            assert_eq!(
                no_execute_tolerance(&tolerations, taints),
                expected,
                "{tolerations:?} on {taints:?}"
            );
        }
        // With two NoExecute taints, the shortest of the two tolerations used.
        let taints = [
            taint("node.kubernetes.io/unreachable", "", NO_EXECUTE),
            taint("node.kubernetes.io/not-ready", "", NO_EXECUTE),
        ];
        assert_eq!(
            no_execute_tolerance(&[seconds(exists, 300), seconds(other, 60)], &taints),
            For(s(60))
        );
    }
}
