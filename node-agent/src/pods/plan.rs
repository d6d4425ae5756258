//! The pod planner: from what the runtime shows of each container's newest instance and the
//! pod's restart policy, the next container actions, with the kubelet's ordering rules
//! (`pkg/kubelet/kuberuntime/kuberuntime_manager.go`, `computeInitContainerActions`):
//!
//! - init containers run one after the other; a regular one must exit 0 before the next
//!   starts, a failed one is restarted (or fails the pod under `restartPolicy: Never`);
//! - a sidecar (an init container with `restartPolicy: Always`) starts in its turn, the next
//!   one waits until it is started (its startup probe passed), and it keeps running: it is
//!   restarted whenever it exits, whatever the pod's policy;
//! - once initialized, regular init containers are not looked at again, the app containers
//!   start, and exited ones restart as the pod's policy says;
//! - sidecars do not hold the pod up: when every app container has ended for good, they are
//!   stopped.
//!
//! No IO: the worker executes the actions (and applies back-off to restarts).

/// What the runtime shows of a container's newest instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No instance.
    Absent,
    /// Running; `started` once its startup probe passed (at once without one).
    Running {
        /// The startup probe passed.
        started: bool,
    },
    /// Exited with `code` (128 for one that was created but never started).
    Exited {
        /// Its exit code.
        code: i32,
    },
}

/// Which list of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `spec.initContainers` (regular or sidecar).
    Init,
    /// `spec.containers`.
    App,
}

/// One thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create and start the first instance of container `index` of `role`.
    Start(Role, usize),
    /// Start a new instance after the exited one (subject to back-off).
    Restart(Role, usize),
    /// Run the due probes of the running container.
    Probe(Role, usize),
    /// Stop sidecar `index` (in `spec.initContainers`): the app containers have all ended.
    StopSidecar(usize),
}

/// The planner's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The actions, in order.
    pub actions: Vec<Action>,
    /// Every init container has done its part (regular ones exited 0, sidecars started).
    pub initialized: bool,
    /// A regular init container failed under `restartPolicy: Never`: the pod has failed.
    pub failed: bool,
}

/// Whether a container that exited with `exit_code` is restarted under the pod's `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The next actions for a pod whose init containers are `init` (sidecar or not, and what is
/// seen of each) and whose app containers are `apps`, under restart `policy`.
pub fn plan(init: &[(bool, Seen)], apps: &[Seen], policy: &str) -> Plan {
    let mut out = Plan::default();
    // App containers exist only after initialization: the kubelet's "previously initialized".
    let was_initialized = apps.iter().any(|s| *s != Seen::Absent);
    for (index, (sidecar, seen)) in init.iter().copied().enumerate() {
        match (sidecar, seen) {
            (false, _) if was_initialized => {}
            (_, Seen::Absent) => {
                out.actions.push(Action::Start(Role::Init, index));
                return out;
            }
            (false, Seen::Running { .. }) => return out,
            (false, Seen::Exited { code: 0 }) => {}
            (false, Seen::Exited { .. }) => {
                if policy == "Never" {
                    out.failed = true;
                } else {
                    out.actions.push(Action::Restart(Role::Init, index));
                }
                return out;
            }
            (true, Seen::Running { started }) => {
                out.actions.push(Action::Probe(Role::Init, index));
                if !started && !was_initialized {
                    return out;
                }
            }
            (true, Seen::Exited { .. }) => {
                out.actions.push(Action::Restart(Role::Init, index));
                if !was_initialized {
                    return out;
                }
            }
        }
    }
    out.initialized = true;
    let done_for_good =
        |s: &Seen| matches!(s, Seen::Exited { code } if !should_restart(policy, *code));
    if !apps.is_empty() && apps.iter().all(done_for_good) {
        // Completed: sidecars stop (in reverse order) and are not restarted.
        out.actions.clear();
        for (index, (sidecar, seen)) in init.iter().enumerate().rev() {
            if *sidecar && matches!(seen, Seen::Running { .. }) {
                out.actions.push(Action::StopSidecar(index));
            }
        }
        return out;
    }
    for (index, seen) in apps.iter().enumerate() {
        match seen {
            Seen::Absent => out.actions.push(Action::Start(Role::App, index)),
            Seen::Running { .. } => out.actions.push(Action::Probe(Role::App, index)),
            Seen::Exited { code } if should_restart(policy, *code) => {
                out.actions.push(Action::Restart(Role::App, index));
            }
            Seen::Exited { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Action::*, Role::*, Seen::*, *};

    const RUNNING: Seen = Running { started: true };
    const STARTING: Seen = Running { started: false };
    const OK: Seen = Exited { code: 0 };
    const ERR: Seen = Exited { code: 1 };

    #[test]
    fn containers_start_restart_and_stop_in_the_kubelet_order() {
        // (case, init (sidecar, seen), apps, policy, actions, initialized, failed)
        type Case = (
            &'static str,
            Vec<(bool, Seen)>,
            Vec<Seen>,
            &'static str,
            Vec<Action>,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "no init containers: apps start together",
                vec![],
                vec![Absent, Absent],
                "Always",
                vec![Start(App, 0), Start(App, 1)],
                true,
                false,
            ),
            (
                "first init container first",
                vec![(false, Absent), (false, Absent)],
                vec![Absent],
                "Always",
                vec![Start(Init, 0)],
                false,
                false,
            ),
            (
                "a running init container blocks the next",
                vec![(false, RUNNING), (false, Absent)],
                vec![Absent],
                "Always",
                vec![],
                false,
                false,
            ),
            (
                "a succeeded one lets the next start",
                vec![(false, OK), (false, Absent)],
                vec![Absent],
                "Always",
                vec![Start(Init, 1)],
                false,
                false,
            ),
            (
                "a failed one restarts",
                vec![(false, ERR), (false, Absent)],
                vec![Absent],
                "OnFailure",
                vec![Restart(Init, 0)],
                false,
                false,
            ),
            (
                "a failed one fails the pod under Never",
                vec![(false, ERR)],
                vec![Absent],
                "Never",
                vec![],
                false,
                true,
            ),
            (
                "a sidecar not yet started holds the next init container",
                vec![(true, STARTING), (false, Absent)],
                vec![Absent],
                "Always",
                vec![Probe(Init, 0)],
                false,
                false,
            ),
            (
                "a started sidecar lets the next one run beside it",
                vec![(true, RUNNING), (false, Absent)],
                vec![Absent],
                "Never",
                vec![Probe(Init, 0), Start(Init, 1)],
                false,
                false,
            ),
            (
                "sidecars started and init done: the apps start",
                vec![(true, RUNNING), (false, OK)],
                vec![Absent],
                "Never",
                vec![Probe(Init, 0), Start(App, 0)],
                true,
                false,
            ),
            (
                "a sidecar that exits restarts even under Never, the apps go on",
                vec![(true, ERR), (false, OK)],
                vec![RUNNING],
                "Never",
                vec![Restart(Init, 0), Probe(App, 0)],
                true,
                false,
            ),
            (
                "after initialization regular init containers are not looked at",
                vec![(false, Absent), (true, RUNNING)],
                vec![RUNNING],
                "Always",
                vec![Probe(Init, 1), Probe(App, 0)],
                true,
                false,
            ),
            (
                "apps done for good: sidecars stop, last first, and do not restart",
                vec![(true, RUNNING), (true, RUNNING), (true, ERR)],
                vec![OK],
                "OnFailure",
                vec![StopSidecar(1), StopSidecar(0)],
                true,
                false,
            ),
            (
                "an app that will restart keeps the sidecars",
                vec![(true, RUNNING)],
                vec![ERR],
                "OnFailure",
                vec![Probe(Init, 0), Restart(App, 0)],
                true,
                false,
            ),
            (
                "restart policies for apps",
                vec![],
                vec![OK, ERR, RUNNING],
                "OnFailure",
                vec![Restart(App, 1), Probe(App, 2)],
                true,
                false,
            ),
        ];
        for (case, init, apps, policy, actions, initialized, failed) in cases {
            let got = plan(&init, &apps, policy);
            assert_eq!(
                got,
                Plan {
                    actions,
                    initialized,
                    failed
                },
                "{case}"
            );
        }
    }

    #[test]
    fn restart_policy_table() {
        let cases = [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 137, true),
            ("Never", 1, false),
        ];
        for (policy, code, want) in cases {
            assert_eq!(should_restart(policy, code), want, "{policy} {code}");
        }
    }
}
