//! `kubectl logs -f` that follows a container across its restarts: when the followed instance
//! ends, the stream waits for the container's next attempt and goes on with its output from the
//! start, until the pod's containers are gone or no new attempt comes within [`NEXT_ATTEMPT`].
//! (The kubelet's own `-f` ends with the instance; a restarting container then needs a new
//! `kubectl logs -f`.)

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt as _;

use super::runtime::{ContainerRuntime, LogOptions, LogStream, Observed};

/// How long a followed stream waits for the container's next attempt: the kubelet's longest
/// restart back-off (5 minutes) and a minute more.
pub const NEXT_ATTEMPT: Duration = Duration::from_secs(6 * 60);
/// How often it looks for one.
const POLL: Duration = Duration::from_millis(500);

/// Which container instance to read.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
}

/// The newest attempt of `container` among `instances` newer than `after`.
pub fn next_attempt<'a>(
    instances: &'a [Observed],
    container: &str,
    after: u32,
) -> Option<&'a Observed> {
    instances
        .iter()
        .filter(|c| c.name == container && c.role != "sandbox" && c.attempt > after)
        .max_by_key(|c| c.attempt)
}

/// What the follower does once the current instance's output ended.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Read this instance (its id and attempt).
    Read(String, u32),
    /// Nothing new yet: look again.
    Wait,
    /// The stream ends.
    End,
}

fn decide(instances: &[Observed], followed: &Followed, after: u32, waited: Duration) -> Next {
    if !instances
        .iter()
        .any(|c| c.name == followed.container && c.role != "sandbox")
    {
        return Next::End;
    }
    match next_attempt(instances, &followed.container, after) {
        Some(next) => Next::Read(next.id.clone(), next.attempt),
        None if waited >= NEXT_ATTEMPT => Next::End,
        None => Next::Wait,
    }
}

/// The output of instance `first` (attempt `attempt`) read with `options`; with
/// `options.follow`, then that of every later attempt, each from its start.
pub fn stream(
    runtime: Arc<dyn ContainerRuntime>,
    followed: Followed,
    first: String,
    attempt: u32,
    options: LogOptions,
) -> LogStream {
    let head = runtime.logs(&first, options);
    if !options.follow {
        return head;
    }
    let later = LogOptions {
        follow: true,
        tail: None,
        timestamps: options.timestamps,
        since: None,
    };
    let tail = futures_util::stream::unfold(
        (runtime, followed, attempt),
        move |(runtime, followed, after)| {
            async move {
                let started = tokio::time::Instant::now();
                // Bounded by NEXT_ATTEMPT (and by the client: a gone client drops the stream).
                loop {
                    let instances = runtime
                        .list_named(&followed.namespace, &followed.pod)
                        .await
                        .unwrap_or_default();
                    match decide(&instances, &followed, after, started.elapsed()) {
                        Next::Read(id, attempt) => {
                            let logs = runtime.logs(&id, later);
                            return Some((logs, (runtime, followed, attempt)));
                        }
                        Next::Wait => tokio::time::sleep(POLL).await,
                        Next::End => return None,
                    }
                }
            }
        },
    )
    .flatten();
    Box::pin(head.chain(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, attempt: u32, role: &str) -> Observed {
        Observed {
            id: format!("{name}-{attempt}"),
            name: name.to_owned(),
            role: role.to_owned(),
            attempt,
            running: false,
            created_only: false,
            created: 0,
        }
    }

    #[test]
    fn the_follower_moves_to_newer_attempts_and_ends_with_the_pod() {
        let followed = Followed {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "app".into(),
        };
        let sandbox = instance("POD", 0, "sandbox");
        let zero = instance("app", 0, "container");
        let one = instance("app", 1, "container");
        let two = instance("app", 2, "container");
        let short = Duration::from_secs(1);
        let cases = [
            (vec![sandbox.clone(), zero.clone()], 0, short, Next::Wait),
            (
                vec![sandbox.clone(), zero.clone(), one.clone()],
                0,
                short,
                Next::Read("app-1".into(), 1),
            ),
            (
                vec![zero.clone(), one.clone(), two.clone()],
                0,
                short,
                Next::Read("app-2".into(), 2),
            ),
            (vec![zero.clone(), one.clone()], 1, NEXT_ATTEMPT, Next::End),
            (vec![sandbox.clone()], 0, short, Next::End),
            (vec![], 0, short, Next::End),
        ];
        for (instances, after, waited, expected) in cases {
            assert_eq!(
                decide(&instances, &followed, after, waited),
                expected,
                "{instances:?} after {after}"
            );
        }
    }
}
