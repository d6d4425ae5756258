//! Leader election through a `coordination.k8s.io/v1` Lease, as Kubernetes' components do it
//! (kube-rs has no helper for this): candidates read the Lease every retry period; the holder
//! renews `spec.renewTime`; a candidate takes the Lease over once it has seen the record stand
//! still for `leaseDurationSeconds`. Every write carries the `resourceVersion` that was read, so
//! of two candidates racing for an expired Lease only one wins (the other gets 409 Conflict).
//! A leader that cannot renew for the renew deadline (shorter than the lease duration) stops
//! its work before anybody else may take over.
//!
//! Expiry is timed by when this process *observed* the record change (a monotonic clock), not
//! by the `renewTime` written by another machine, so clock skew does not shorten a lease. The
//! observation is back-dated by the record's apparent age, at most one retry period, so that
//! polling does not add a retry period to the takeover; the margin between the renew deadline
//! and the lease duration absorbs that much skew.

use std::{future::Future, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::time::Instant;

/// Where the Lease lives, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Lease's namespace (`kube-system`).
    pub namespace: String,
    /// The Lease's name (`keelson-controller-manager`, `keelson-scheduler`).
    pub name: String,
    /// This candidate's `holderIdentity` (unique per process).
    pub identity: String,
    /// How long a Lease holds without renewal (`leaseDurationSeconds`, 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal (10 s).
    pub renew_deadline: Duration,
    /// How often candidates try and the leader renews (2 s).
    pub retry_period: Duration,
}

impl Config {
    /// Fails unless retry period < renew deadline < lease duration.
    pub fn check(&self) -> Result<(), Error> {
        if self.renew_deadline >= self.lease_duration || self.retry_period >= self.renew_deadline {
            return Err(Error::Timings {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(())
    }

    /// Kubernetes' defaults (15 s, 10 s, 2 s) for `kube-system/<name>`.
    pub fn new(name: &str, identity: &str) -> Self {
        Self {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A leader-election failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timings cannot work.
    #[error(
        "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration \
         ({lease_duration:?}) and longer than the retry period ({retry_period:?})"
    )]
    Timings {
        /// The lease duration.
        lease_duration: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
        /// The retry period.
        retry_period: Duration,
    },
}

/// The parts of a Lease record whose change shows its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `spec.holderIdentity` (empty when released).
    pub holder: String,
    /// `spec.renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Option<i32>,
    /// `spec.leaseTransitions`.
    pub transitions: Option<i32>,
}

impl Record {
    /// The record of `lease`.
    pub fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            duration: spec.and_then(|s| s.lease_duration_seconds),
            transitions: spec.and_then(|s| s.lease_transitions),
        }
    }
}

/// A record and when it was (back-dated) first observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The record.
    pub record: Record,
    /// When it changed, by this process's monotonic clock.
    pub at: Instant,
}

/// The observation after reading `record` at `now` (monotonic) / `wall_now`: unchanged if the
/// record did not change, otherwise back-dated by its apparent age, at most `max_backdate`.
pub fn observe(
    previous: Option<&Observed>,
    record: Record,
    now: Instant,
    wall_now: Timestamp,
    max_backdate: Duration,
) -> Observed {
    if let Some(p) = previous
        && p.record == record
    {
        return p.clone();
    }
    let age = record
        .renew_time
        .map(|t| wall_now.duration_since(t))
        .filter(|d| d.is_positive())
        .map_or(Duration::ZERO, |d| d.unsigned_abs().min(max_backdate));
    Observed {
        record,
        at: now.checked_sub(age).unwrap_or(now),
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Somebody else holds it.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decides from the observed record (`None` when there is no Lease).
pub fn decide(
    observed: Option<&Observed>,
    identity: &str,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(observed) = observed else {
        return Decision::Create;
    };
    let record = &observed.record;
    if record.holder == identity {
        return Decision::Renew;
    }
    let duration = record
        .duration
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    if record.holder.is_empty() || now.saturating_duration_since(observed.at) >= duration {
        Decision::TakeOver
    } else {
        Decision::Follow {
            holder: record.holder.clone(),
        }
    }
}

/// A candidate for one Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    observed: Option<Observed>,
    /// The holder last reported, so changes are logged once.
    reported_holder: Option<String>,
}

impl Elector {
    /// A candidate; fails if the timings cannot work.
    pub fn new(client: Client, config: Config) -> Result<Self, Error> {
        config.check()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            reported_holder: None,
        })
    }

    /// Reads the Lease and creates, renews or takes it over when that is ours to do. `Ok(true)`
    /// when we hold it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.config.name).await?;
        let now = Instant::now();
        let wall_now = Timestamp::now();
        self.observed = current.as_ref().map(|lease| {
            observe(
                self.observed.as_ref(),
                Record::of(lease),
                now,
                wall_now,
                self.config.retry_period,
            )
        });
        let decision = decide(
            self.observed.as_ref(),
            &self.config.identity,
            now,
            self.config.lease_duration,
        );
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let stamp = MicroTime(wall_now);
        let result = match (decision, current) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = Some(seconds);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.config.identity.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.acquire_time = Some(stamp.clone());
                spec.renew_time = Some(stamp);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Follow { holder }, _) => {
                if self.reported_holder.as_ref() != Some(&holder) {
                    tracing::info!(lease = %self.config.name, %holder, "another instance leads");
                    self.reported_holder = Some(holder);
                }
                return Ok(false);
            }
            (Decision::Renew | Decision::TakeOver, None) => return Ok(false),
        };
        match result {
            Ok(lease) => {
                self.observed = Some(Observed {
                    record: Record::of(&lease),
                    at: now,
                });
                self.reported_holder = Some(self.config.identity.clone());
                Ok(true)
            }
            // Somebody else wrote first: they hold it (or renewed it); read again next time.
            Err(error) if crate::is_status(&error, 409) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Hands the Lease back (empty holder) if we hold it, so a successor need not wait for
    /// it to expire.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if let Some(mut lease) = self.api.get_opt(&self.config.name).await?
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.config.identity.as_str())
        {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await?;
        }
        Ok(())
    }
}

/// Runs `work()` whenever this process holds the Lease: waits to acquire it, starts the work,
/// renews every retry period, and drops (stops) the work if renewal has not succeeded for the
/// renew deadline or somebody else took the Lease; then campaigns again. Returns when the work
/// returns.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    config: Config,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut elector = Elector::new(client, config.clone())?;
    let lease = format!("{}/{}", config.namespace, config.name);
    loop {
        loop {
            match tokio::time::timeout(config.retry_period, elector.try_acquire_or_renew()).await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%lease, error = %crate::error_chain(&error), "cannot read the lease");
                }
                Err(_) => tracing::debug!(%lease, "reading the lease timed out"),
            }
            tokio::time::sleep(config.retry_period).await;
        }
        tracing::info!(%lease, identity = %config.identity, "acquired the lease; leading");
        let mut renewed = Instant::now();
        let mut running = std::pin::pin!(work());
        let lost = loop {
            tokio::select! {
                result = &mut running => {
                    if let Err(error) = elector.release().await {
                        tracing::debug!(%lease, error = %crate::error_chain(&error), "cannot release the lease");
                    }
                    return result;
                }
                () = tokio::time::sleep(config.retry_period) => {}
            }
            let left = config.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => break "another instance holds the lease",
                Ok(Err(error)) => {
                    tracing::warn!(%lease, error = %crate::error_chain(&error), "cannot renew the lease");
                }
                Err(_) => {}
            }
            if renewed.elapsed() >= config.renew_deadline {
                break "the lease was not renewed within the renew deadline";
            }
        };
        tracing::error!(%lease, reason = lost, "lost the lease; stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, renew: i64) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some(Timestamp::from_second(1_700_000_000 + renew).unwrap()),
            duration: Some(15),
            transitions: Some(0),
        }
    }

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let d = Duration::from_secs(15);
        let backdate = Duration::from_secs(2);
        assert_eq!(decide(None, "me", t0, d), Decision::Create);
        let mine = observe(None, record("me", 0), t0, wall(0), backdate);
        assert_eq!(decide(Some(&mine), "me", t0, d), Decision::Renew);
        let theirs = observe(None, record("them", 0), t0, wall(0), backdate);
        assert_eq!(
            decide(Some(&theirs), "me", t0 + Duration::from_secs(14), d),
            Decision::Follow {
                holder: "them".into()
            }
        );
        // Unchanged for 15 s: expired.
        let same = observe(
            Some(&theirs),
            record("them", 0),
            t0 + Duration::from_secs(10),
            wall(10),
            backdate,
        );
        assert_eq!(same.at, t0);
        assert_eq!(
            decide(Some(&same), "me", t0 + Duration::from_secs(15), d),
            Decision::TakeOver
        );
        // Renewed: the clock starts again.
        let renewed = observe(
            Some(&same),
            record("them", 12),
            t0 + Duration::from_secs(12),
            wall(12),
            backdate,
        );
        assert_eq!(
            decide(Some(&renewed), "me", t0 + Duration::from_secs(26), d),
            Decision::Follow {
                holder: "them".into()
            }
        );
        let released = observe(None, record("", 0), t0, wall(0), backdate);
        assert_eq!(decide(Some(&released), "me", t0, d), Decision::TakeOver);
    }

    #[test]
    fn observations_are_backdated_at_most_one_retry_period() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let backdate = Duration::from_secs(2);
        let seen_late = observe(None, record("them", 0), t0, wall(1), backdate);
        assert_eq!(seen_late.at, t0 - Duration::from_secs(1));
        let skewed = observe(None, record("them", 0), t0, wall(60), backdate);
        assert_eq!(skewed.at, t0 - backdate, "a skewed clock gains at most 2 s");
        let future = observe(None, record("them", 30), t0, wall(0), backdate);
        assert_eq!(future.at, t0, "a renewTime ahead of us is not trusted");
    }

    #[test]
    fn timings_are_checked() {
        assert!(Config::new("x", "me").check().is_ok());
        let long_deadline = Config {
            renew_deadline: Duration::from_secs(20),
            ..Config::new("x", "me")
        };
        assert!(long_deadline.check().is_err());
        let slow_retry = Config {
            retry_period: Duration::from_secs(10),
            ..Config::new("x", "me")
        };
        assert!(slow_retry.check().is_err());
    }
}
