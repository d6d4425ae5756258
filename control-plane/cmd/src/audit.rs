//! The audit log flags, kube-apiserver's (`--audit-policy-file`, `--audit-log-*`).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::ValueEnum;
use keelson_apiserver::audit::{Auditor, LogOptions, Mode, Policy};

/// What a request does when the audit writer is a full buffer behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuditMode {
    /// Wait for room: no event is lost (Kubernetes' default).
    Blocking,
    /// Drop the event, counted in apiserver_audit_error_total{plugin="log"}.
    Batch,
}

/// The audit log.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AuditArgs {
    /// The audit policy (audit.k8s.io/v1 Policy, YAML): which requests are recorded at which
    /// level. Without it nothing is recorded.
    #[arg(long, env = "KEELSON_AUDIT_POLICY_FILE")]
    pub(crate) audit_policy_file: Option<PathBuf>,
    /// Write audit events (JSON lines of audit.k8s.io/v1 Event) to this file; `-` means
    /// standard output.
    #[arg(long, env = "KEELSON_AUDIT_LOG_PATH")]
    pub(crate) audit_log_path: Option<PathBuf>,
    /// The maximum size in megabytes of the audit log file before it gets rotated (0: 100).
    #[arg(long, env = "KEELSON_AUDIT_LOG_MAXSIZE", default_value_t = 0)]
    pub(crate) audit_log_maxsize: u64,
    /// The maximum number of old audit log files to retain (0: all).
    #[arg(long, env = "KEELSON_AUDIT_LOG_MAXBACKUP", default_value_t = 0)]
    pub(crate) audit_log_maxbackup: usize,
    /// The maximum number of days to retain old audit log files, by the time in their name
    /// (0: no limit).
    #[arg(long, env = "KEELSON_AUDIT_LOG_MAXAGE", default_value_t = 0)]
    pub(crate) audit_log_maxage: u64,
    /// What requests do when the writer falls a whole buffer behind.
    #[arg(long, env = "KEELSON_AUDIT_LOG_MODE", value_enum, default_value_t = AuditMode::Blocking)]
    pub(crate) audit_log_mode: AuditMode,
    /// How many events may wait for the writer.
    #[arg(long, env = "KEELSON_AUDIT_LOG_BATCH_BUFFER_SIZE", default_value_t = 10000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) audit_log_batch_buffer_size: u64,
}

impl AuditArgs {
    /// The auditor the flags ask for: `None` unless both a policy and a log path are given
    /// (as kube-apiserver, which records nothing without a policy).
    pub(crate) fn start(
        &self,
        metrics: &keelson_apiserver::Metrics,
    ) -> anyhow::Result<Option<Arc<Auditor>>> {
        let (Some(policy), Some(path)) = (&self.audit_policy_file, &self.audit_log_path) else {
            if self.audit_log_path.is_some() {
                tracing::info!("no audit policy file: no audit events are recorded");
            }
            return Ok(None);
        };
        let policy = Policy::load(policy)?;
        let options = LogOptions {
            path: path.clone(),
            max_size_mb: self.audit_log_maxsize,
            max_backups: self.audit_log_maxbackup,
            max_age_days: self.audit_log_maxage,
            buffer: usize::try_from(self.audit_log_batch_buffer_size).unwrap_or(usize::MAX),
            mode: match self.audit_log_mode {
                AuditMode::Blocking => Mode::Blocking,
                AuditMode::Batch => Mode::Batch,
            },
        };
        let auditor = Auditor::start(policy, &options, metrics)
            .context("cannot start the audit log writer")?;
        tracing::info!(path = %path.display(), "writing the audit log");
        Ok(Some(auditor))
    }
}
