//! The node agent's health checks, served at `/livez`, `/readyz` and `/healthz` on
//! `--metrics-listen` by [`keelson_daemon::health`] and told to systemd
//! ([`keelson_daemon::systemd`]):
//!
//! - `ping`, `runtime` (livez): the process answers and its async runtime runs tasks;
//! - `datapath`: the load balancer's pinned maps are readable (the programs were loaded and
//!   attached before the endpoints are served: `run` stops otherwise);
//! - `informers`: the Service and EndpointSlice watches finished their initial list and the
//!   datapath holds it;
//! - `docker`: the Docker engine answers a ping;
//! - `node`: the Node is registered and its Lease was renewed within the lease duration.
//!
//! The watches and the heartbeat report through [`SIGNALS`], process-wide so that they need no
//! extra parameter threaded through every layer (one agent runs per process).

use std::{
    path::PathBuf,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use keelson_daemon::health::{Health, Scope};

/// What the agent's loops report for the checks.
#[derive(Debug)]
pub struct Signals {
    services_synced: AtomicBool,
    lease_renewed: Mutex<Option<Instant>>,
}

/// The process's signals.
pub static SIGNALS: Signals = Signals {
    services_synced: AtomicBool::new(false),
    lease_renewed: Mutex::new(None),
};

impl Signals {
    /// The Service and EndpointSlice watches listed everything and the datapath holds it.
    pub fn services_synced(&self) {
        self.services_synced.store(true, Ordering::Release);
    }

    /// The node's Lease was renewed just now.
    pub fn lease_renewed(&self) {
        *self
            .lease_renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    fn lease_age(&self) -> Option<Duration> {
        self.lease_renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|at| at.elapsed())
    }
}

/// Why the `node` check fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No Lease was renewed since the agent started.
    #[error("the Node is not registered (no Lease renewed yet)")]
    NotRegistered,
    /// The last renewal is older than the lease duration.
    #[error(
        "the node Lease was last renewed {}s ago (lease duration {}s)",
        .age.as_secs(),
        .lease_duration.as_secs()
    )]
    Expired {
        /// Time since the last renewal.
        age: Duration,
        /// The Lease's duration.
        lease_duration: Duration,
    },
}

/// Whether a Lease renewed `age` ago (`None`: never) is recent enough for `lease_duration`.
pub fn lease_check(age: Option<Duration>, lease_duration: Duration) -> Result<(), LeaseError> {
    match age {
        None => Err(LeaseError::NotRegistered),
        Some(age) if age > lease_duration => Err(LeaseError::Expired {
            age,
            lease_duration,
        }),
        Some(_) => Ok(()),
    }
}

/// The checks for an agent whose maps are pinned under `pin_dir`, whose Docker engine listens
/// on `docker_socket` and whose Lease lasts `lease_duration`.
pub fn checks(pin_dir: PathBuf, docker_socket: String, lease_duration: Duration) -> Health {
    let health = Health::new();
    health.add("datapath", Scope::Ready, move || {
        let pin_dir = pin_dir.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                crate::datapath::lb::DatapathMetrics::read(&pin_dir)
            })
            .await
            .map_err(|error| format!("the map reader did not finish: {error}"))?
            .map(|_| ())
            .map_err(|error| format!("pinned maps unreadable: {}", crate::error_chain(&error)))
        }
    });
    health.add("informers", Scope::Ready, || async {
        if SIGNALS.services_synced.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("the Service and EndpointSlice watches have not synced yet".to_owned())
        }
    });
    health.add("docker", Scope::Ready, move || {
        let socket = docker_socket.clone();
        async move {
            let docker =
                bollard::Docker::connect_with_unix(&socket, 2, bollard::API_DEFAULT_VERSION)
                    .map_err(|error| format!("cannot reach Docker at {socket}: {error}"))?;
            docker
                .ping()
                .await
                .map(|_| ())
                .map_err(|error| format!("Docker at {socket} does not answer: {error}"))
        }
    });
    health.add("node", Scope::Ready, move || {
        let answer =
            lease_check(SIGNALS.lease_age(), lease_duration).map_err(|error| error.to_string());
        async move { answer }
    });
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_check_wants_a_lease_renewed_within_its_duration() {
        let duration = Duration::from_secs(40);
        let check = |age| lease_check(age, duration).map_err(|e| e.to_string());
        assert_eq!(
            check(None),
            Err("the Node is not registered (no Lease renewed yet)".to_owned())
        );
        assert_eq!(check(Some(Duration::from_secs(10))), Ok(()));
        assert_eq!(
            check(Some(Duration::from_secs(55))),
            Err("the node Lease was last renewed 55s ago (lease duration 40s)".to_owned())
        );
    }
}
