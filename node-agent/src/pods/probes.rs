//! Container probes: exec through Docker, httpGet (HTTP or HTTPS), tcpSocket and gRPC from the
//! node to the pod's address, with Kubernetes' timing (initial delay, period, timeout, success and failure
//! thresholds).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Container, Probe};

use super::{
    handlers::{self, ActionError},
    runtime::ContainerRuntime,
};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

/// One probe's running state for one container instance.
#[derive(Debug, Clone)]
pub struct ProbeState {
    kind: Kind,
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The current verdict (after thresholds).
    pub passing: bool,
    /// The last failure's message.
    pub last_message: String,
}

impl ProbeState {
    fn new(kind: Kind, probe: Probe, started: Instant) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Self {
            kind,
            probe,
            next: started + delay,
            successes: 0,
            failures: 0,
            // Liveness and startup count as passing until they fail; readiness starts failing.
            passing: kind != Kind::Readiness,
            last_message: String::new(),
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.probe.timeout_seconds.unwrap_or(1).max(1) as u64)
    }
}

/// The probes of one running container instance.
#[derive(Debug, Clone)]
pub struct Probes {
    /// The Docker container id these belong to.
    pub container_id: String,
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    /// Whether the startup probe has passed (true without one).
    pub started: bool,
    /// The container's named ports, for probes that name theirs.
    ports: Vec<(String, i32)>,
}

/// What probing found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The liveness (or startup) probe failed past its threshold: restart the container.
    pub kill: Option<String>,
}

impl Probes {
    /// The probes of `container` for the instance `container_id` started at `started`.
    pub fn new(container: &Container, container_id: &str, started: Instant) -> Self {
        let startup = container
            .startup_probe
            .clone()
            .map(|p| ProbeState::new(Kind::Startup, p, started));
        let ports = container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, p.container_port)))
            .collect();
        Self {
            ports,
            container_id: container_id.to_owned(),
            started: startup.is_none(),
            startup,
            liveness: container
                .liveness_probe
                .clone()
                .map(|p| ProbeState::new(Kind::Liveness, p, started)),
            readiness: container
                .readiness_probe
                .clone()
                .map(|p| ProbeState::new(Kind::Readiness, p, started)),
        }
    }

    /// Carries over what the last status said about this same container instance (an agent
    /// restart): started, and ready until a probe says otherwise.
    pub fn assume_ready(&mut self) {
        self.started = true;
        if let Some(r) = self.readiness.as_mut() {
            r.passing = true;
        }
    }

    /// Ready as the readiness probe says (true without one, false before startup passes).
    pub fn ready(&self) -> bool {
        self.started && self.readiness.as_ref().is_none_or(|r| r.passing)
    }

    /// The earliest time a probe is due.
    pub fn next_due(&self) -> Option<Instant> {
        let active: Vec<&ProbeState> = if self.started {
            self.liveness.iter().chain(self.readiness.iter()).collect()
        } else {
            self.startup.iter().collect()
        };
        active.iter().map(|p| p.next).min()
    }

    /// Runs the probes that are due.
    pub async fn run_due(
        &mut self,
        runtime: &dyn ContainerRuntime,
        pod_ip: Option<Ipv4Addr>,
    ) -> Outcome {
        let now = Instant::now();
        let mut outcome = Outcome::default();
        let id = self.container_id.clone();
        if !self.started {
            if let Some(state) = self.startup.as_mut()
                && state.next <= now
            {
                step(state, runtime, &id, pod_ip, &self.ports).await;
                if state.passing && state.successes > 0 {
                    self.started = true;
                } else if !state.passing {
                    outcome.kill = Some(format!("Startup probe failed: {}", state.last_message));
                }
            }
            return outcome;
        }
        if let Some(state) = self.liveness.as_mut()
            && state.next <= now
        {
            step(state, runtime, &id, pod_ip, &self.ports).await;
            if !state.passing {
                outcome.kill = Some(format!("Liveness probe failed: {}", state.last_message));
            }
        }
        if let Some(state) = self.readiness.as_mut()
            && state.next <= now
        {
            step(state, runtime, &id, pod_ip, &self.ports).await;
        }
        outcome
    }

    /// The readiness failure message, for the pod's conditions.
    pub fn readiness_message(&self) -> Option<String> {
        self.readiness
            .as_ref()
            .filter(|r| !r.passing && !r.last_message.is_empty())
            .map(|r| format!("Readiness probe failed: {}", r.last_message))
    }
}

async fn step(
    state: &mut ProbeState,
    runtime: &dyn ContainerRuntime,
    id: &str,
    pod_ip: Option<Ipv4Addr>,
    ports: &[(String, i32)],
) {
    let result = probe_once(&state.probe, state.timeout(), runtime, id, pod_ip, ports).await;
    state.next = Instant::now() + state.period();
    match result {
        Ok(()) => {
            state.failures = 0;
            state.successes += 1;
            let needed = match state.kind {
                Kind::Readiness => state.probe.success_threshold.unwrap_or(1).max(1),
                _ => 1,
            };
            if state.successes >= needed {
                state.passing = true;
            }
        }
        Err(message) => {
            state.successes = 0;
            state.failures += 1;
            state.last_message = message.to_string();
            if state.failures >= state.probe.failure_threshold.unwrap_or(3).max(1) {
                state.passing = false;
            }
        }
    }
}

async fn probe_once(
    probe: &Probe,
    timeout: Duration,
    runtime: &dyn ContainerRuntime,
    id: &str,
    pod_ip: Option<Ipv4Addr>,
    ports: &[(String, i32)],
) -> Result<(), ActionError> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let (code, output) = runtime
            .exec(id, command, timeout)
            .await
            .map_err(|e| ActionError::Exec(e.to_string()))?;
        return if code == 0 {
            Ok(())
        } else {
            Err(ActionError::ExecExit {
                code,
                output: output.trim().to_owned(),
            })
        };
    }
    let ip = pod_ip.ok_or(ActionError::NoAddress)?;
    if let Some(tcp) = &probe.tcp_socket {
        return handlers::tcp(ip, handlers::port_of(&tcp.port, ports)?, timeout).await;
    }
    if let Some(http) = &probe.http_get {
        return handlers::http_get(http, ip, ports, timeout).await;
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| ActionError::InvalidPort(grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        return handlers::grpc_check(ip, port, &service, timeout).await;
    }
    Ok(())
}
