//! systemd's notification protocol (`Type=notify`): `READY=1` once `/readyz` would pass,
//! `STATUS=` lines saying what the process waits for, `WATCHDOG=1` at half of `WATCHDOG_USEC`
//! while `/livez` passes (so systemd restarts a process whose runtime stopped answering), and
//! `STOPPING=1` on shutdown. Everything is a no-op when `NOTIFY_SOCKET` is unset (the process
//! was not started by systemd as a notify service).

use std::time::Duration;

use sd_notify::NotifyState;

use crate::health::{Health, Probe};

/// How often the checks run until the process is ready (and at most between watchdog pings).
const POLL: Duration = Duration::from_secs(1);
/// How often readiness is re-checked for `STATUS=` once the process was ready.
const STATUS_PERIOD: Duration = Duration::from_secs(10);

/// Whether systemd listens for notifications from this process.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|socket| !socket.is_empty())
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "cannot notify systemd");
    }
}

/// Tells systemd the process is stopping (`STOPPING=1`).
pub fn stopping() {
    if enabled() {
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

/// The `STATUS=` line for the failing checks of a probe.
pub fn status_line(probe: Probe, failed: &[(String, String)]) -> String {
    if failed.is_empty() {
        return "ready".to_owned();
    }
    let names: Vec<&str> = failed.iter().map(|(name, _)| name.as_str()).collect();
    format!("{} failing: {}", probe.name(), names.join(", "))
}

/// Starts the task that notifies systemd from `health`'s checks, or `None` when
/// `NOTIFY_SOCKET` is unset. It runs until the process ends.
pub fn spawn(health: Health) -> Option<tokio::task::JoinHandle<()>> {
    if !enabled() {
        return None;
    }
    let mut usec = 0;
    let watchdog =
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
    Some(tokio::spawn(notify_loop(health, watchdog)))
}

async fn notify_loop(health: Health, watchdog: Option<Duration>) {
    let period = watchdog.map_or(POLL, |half| half.min(POLL));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready = false;
    let mut last_status = String::new();
    let mut last_ping = tokio::time::Instant::now();
    let mut last_status_check: Option<tokio::time::Instant> = None;
    notify(&[NotifyState::Status("starting")]);
    loop {
        ticks.tick().await;
        let live = health.passes(Probe::Livez).await;
        if let Some(half) = watchdog
            && live.is_ok()
            && last_ping.elapsed() + period >= half
        {
            notify(&[NotifyState::Watchdog]);
            last_ping = tokio::time::Instant::now();
        }
        if ready && live.is_ok() && last_status_check.is_some_and(|at| at.elapsed() < STATUS_PERIOD)
        {
            continue;
        }
        last_status_check = Some(tokio::time::Instant::now());
        let status = match (&live, health.passes(Probe::Readyz).await) {
            (Err(failed), _) => status_line(Probe::Livez, failed),
            (Ok(()), Err(failed)) => status_line(Probe::Readyz, &failed),
            (Ok(()), Ok(())) => {
                if !ready {
                    ready = true;
                    notify(&[NotifyState::Ready]);
                    tracing::info!("ready: told systemd");
                }
                status_line(Probe::Readyz, &[])
            }
        };
        if status != last_status {
            notify(&[NotifyState::Status(&status)]);
            last_status = status;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `systemctl stop` sends); a signal that cannot be
/// listened for is logged and never fires.
pub async fn stop_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_failing_checks() {
        assert_eq!(status_line(Probe::Readyz, &[]), "ready");
        assert_eq!(
            status_line(
                Probe::Readyz,
                &[
                    ("etcd".to_owned(), "timeout".to_owned()),
                    ("informers".to_owned(), "not synced".to_owned())
                ]
            ),
            "readyz failing: etcd, informers"
        );
    }
}
