//! `keelson-control-plane snapshot save|restore|ls` and scheduled snapshots with retention
//! (k3s's `etcd-snapshot` and `--etcd-snapshot-schedule-cron`, `--etcd-snapshot-retention`,
//! `--etcd-snapshot-dir`), for the SQLite and the etcd store (see `keelson_store::snapshot`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use keelson_controllers::cronjob::schedule::Zoned;
use keelson_store::snapshot::{self, SnapshotInfo};

use crate::args::{Args, StoreKind};

/// Scheduled snapshots.
#[derive(Debug, clap::Args)]
pub(crate) struct SnapshotArgs {
    /// Take a snapshot of the store on this cron schedule (`0 */12 * * *`, `@every 1h`, in
    /// the host's time zone) into --snapshot-dir; empty: no scheduled snapshots.
    #[arg(long, env = "KEELSON_SNAPSHOT_SCHEDULE_CRON", default_value = "")]
    pub(crate) snapshot_schedule_cron: String,
    /// How many scheduled snapshots to keep: after each one, the oldest beyond this many are
    /// deleted (snapshots saved by hand are never deleted).
    #[arg(long, env = "KEELSON_SNAPSHOT_RETENTION", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) snapshot_retention: u32,
    /// Where scheduled snapshots go [default: DATA_DIR/snapshots].
    #[arg(long, global = true, env = "KEELSON_SNAPSHOT_DIR")]
    pub(crate) snapshot_dir: Option<PathBuf>,
}

/// `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Saves a consistent snapshot of the store to FILE while the control plane may serve
    /// (SQLite: DATA_DIR/state.db; etcd: the first --etcd-endpoints member that answers, in
    /// etcd's own format).
    Save {
        /// The snapshot file to write (replaced once the new one is complete).
        file: PathBuf,
    },
    /// Restores the store from FILE with the control plane stopped. SQLite: DATA_DIR/state.db
    /// becomes the snapshot (keep DATA_DIR/pki: its keys decrypt the snapshot's Secrets).
    /// etcd: makes the new member data directory --etcd-data-dir with etcd's own tool; start
    /// etcd on it, then the control plane.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// Replace a store that is there (SQLite), or move an existing --etcd-data-dir aside
        /// to DIR.before-restore (etcd).
        #[arg(long)]
        force: bool,
        /// etcd: the new member data directory to create.
        #[arg(long)]
        etcd_data_dir: Option<PathBuf>,
        /// etcd: the restored member's name.
        #[arg(long, default_value = "default")]
        etcd_name: String,
        /// etcd: the restored member's peer URL.
        #[arg(long, default_value = "http://127.0.0.1:2380")]
        etcd_peer_url: String,
    },
    /// Lists the snapshots in --snapshot-dir, oldest first.
    Ls,
}

/// The file name of a scheduled snapshot taken at `unix_millis`.
fn scheduled_name(store: StoreKind, unix_millis: i64) -> String {
    format!("keelson-{}-{unix_millis}.snapshot", store_name(store))
}

fn store_name(store: StoreKind) -> &'static str {
    match store {
        StoreKind::Sqlite => "sqlite",
        StoreKind::Etcd => "etcd",
    }
}

/// Of the file names in the snapshot directory, the scheduled snapshots of `store` to delete
/// so that the `retention` newest stay (by the time in their names; other files are left
/// alone).
pub(crate) fn expired(names: &[String], store: StoreKind, retention: usize) -> Vec<String> {
    let prefix = format!("keelson-{}-", store_name(store));
    let mut scheduled: Vec<(i64, &String)> = names
        .iter()
        .filter_map(|name| {
            let millis = name.strip_prefix(&prefix)?.strip_suffix(".snapshot")?;
            Some((millis.parse().ok()?, name))
        })
        .collect();
    scheduled.sort_unstable();
    let excess = scheduled.len().saturating_sub(retention);
    scheduled
        .into_iter()
        .take(excess)
        .map(|(_, name)| name.clone())
        .collect()
}

pub(crate) fn snapshot_dir(args: &Args) -> PathBuf {
    args.snapshot
        .snapshot_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("snapshots"))
}

/// What a snapshot is taken of.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The SQLite database file.
    Sqlite(PathBuf),
    /// The etcd members, tried in order.
    Etcd {
        endpoints: Vec<String>,
        tls: Option<keelson_store::EtcdTls>,
    },
}

impl Source {
    /// The store the flags configure.
    pub(crate) fn from_args(args: &Args) -> anyhow::Result<Self> {
        Ok(match args.store {
            StoreKind::Sqlite => Self::Sqlite(args.data_dir.join("state.db")),
            StoreKind::Etcd => Self::Etcd {
                endpoints: args.etcd_endpoints.clone(),
                tls: crate::storage::etcd_tls(args)?,
            },
        })
    }

    fn kind(&self) -> StoreKind {
        match self {
            Self::Sqlite(_) => StoreKind::Sqlite,
            Self::Etcd { .. } => StoreKind::Etcd,
        }
    }

    /// Saves a snapshot to `file`.
    pub(crate) async fn save(&self, file: &Path) -> anyhow::Result<SnapshotInfo> {
        match self {
            Self::Sqlite(db) => {
                let (db, file) = (db.clone(), file.to_path_buf());
                tokio::task::spawn_blocking(move || snapshot::sqlite::save(&db, &file))
                    .await
                    .context("the snapshot task panicked")?
                    .map_err(anyhow::Error::new)
            }
            Self::Etcd { endpoints, tls } => {
                let mut failures = Vec::new();
                for endpoint in endpoints {
                    match snapshot::etcd::save(endpoint, tls.as_ref(), file).await {
                        Ok(info) => return Ok(info),
                        Err(error) => {
                            failures.push(format!("{endpoint}: {:#}", anyhow::Error::new(error)));
                        }
                    }
                }
                bail!("no etcd member gave a snapshot: {}", failures.join("; "))
            }
        }
    }
}

/// Runs a `snapshot` subcommand.
pub(crate) async fn command(args: &Args, action: &SnapshotCommand) -> anyhow::Result<()> {
    match action {
        SnapshotCommand::Save { file } => {
            let info = Source::from_args(args)?.save(file).await?;
            println!("saved {} ({info})", file.display());
        }
        SnapshotCommand::Restore {
            file,
            force,
            etcd_data_dir,
            etcd_name,
            etcd_peer_url,
        } => match args.store {
            StoreKind::Sqlite => {
                let db = args.data_dir.join("state.db");
                let info = snapshot::sqlite::restore(file, &db, *force)?;
                println!("restored {} into {} ({info})", file.display(), db.display());
            }
            StoreKind::Etcd => {
                let Some(data_dir) = etcd_data_dir else {
                    bail!("--store etcd: give --etcd-data-dir, the new member data directory");
                };
                let member = snapshot::etcd::Member {
                    name: etcd_name.clone(),
                    peer_url: etcd_peer_url.clone(),
                };
                let (info, moved) = snapshot::etcd::restore(file, data_dir, &member, *force)?;
                if let Some(moved) = moved {
                    println!("moved the old data directory to {}", moved.display());
                }
                println!(
                    "restored {} into {} ({info}); start etcd with --name={} --data-dir={} \
                     --initial-advertise-peer-urls={}",
                    file.display(),
                    data_dir.display(),
                    member.name,
                    data_dir.display(),
                    member.peer_url
                );
            }
        },
        SnapshotCommand::Ls => {
            let dir = snapshot_dir(args);
            let mut names = list_names(&dir)?;
            names.sort_unstable();
            for name in names {
                let size = std::fs::metadata(dir.join(&name)).map_or(0, |m| m.len());
                println!("{}\t{size}", dir.join(name).display());
            }
        }
    }
    Ok(())
}

fn list_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    Ok(entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".snapshot"))
        .collect())
}

/// The parsed `--snapshot-schedule-cron`, `None` when empty; a bad schedule fails the start.
pub(crate) fn schedule(args: &Args) -> anyhow::Result<Option<Zoned>> {
    let text = args.snapshot.snapshot_schedule_cron.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let local = jiff::tz::TimeZone::system();
    Zoned::parse(text, None, &local)
        .map(Some)
        .with_context(|| format!("--snapshot-schedule-cron {text:?}"))
}

/// Takes a snapshot at every run time of `schedule` into the snapshot directory and deletes
/// the scheduled snapshots beyond `--snapshot-retention`. Runs until dropped; failures are
/// logged and the next run time comes as planned.
pub(crate) async fn run_schedule(source: Source, dir: PathBuf, retention: u32, schedule: Zoned) {
    let store = source.kind();
    let retention = usize::try_from(retention).unwrap_or(usize::MAX);
    loop {
        let now = jiff::Timestamp::now();
        let Some(next) = schedule.next(now) else {
            tracing::warn!("--snapshot-schedule-cron has no run time within five years");
            return;
        };
        let wait = now.duration_until(next).unsigned_abs();
        tokio::time::sleep(wait).await;
        let file = dir.join(scheduled_name(store, next.as_millisecond()));
        match source.save(&file).await {
            Ok(info) => tracing::info!(file = %file.display(), %info, "saved a scheduled snapshot"),
            Err(error) => {
                tracing::warn!(file = %file.display(), error = format!("{error:#}"),
                    "scheduled snapshot failed");
                continue;
            }
        }
        let names = match list_names(&dir) {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot list the snapshots");
                continue;
            }
        };
        for name in expired(&names, store, retention) {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => tracing::info!(%name, "deleted a snapshot beyond the retention"),
                Err(error) => tracing::warn!(%name, %error, "cannot delete an old snapshot"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_deletes_the_oldest_scheduled_snapshots_of_the_store() {
        let names = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let dir = names(&[
            "keelson-sqlite-300.snapshot",
            "keelson-sqlite-1000.snapshot",
            "keelson-sqlite-20.snapshot",
            "keelson-etcd-10.snapshot",
            "by-hand.snapshot",
            "keelson-sqlite-x.snapshot",
            "keelson-sqlite-5.snapshot.partial",
        ]);
        let cases: &[(StoreKind, usize, &[&str])] = &[
            (StoreKind::Sqlite, 3, &[]),
            (StoreKind::Sqlite, 2, &["keelson-sqlite-20.snapshot"]),
            (
                StoreKind::Sqlite,
                1,
                &["keelson-sqlite-20.snapshot", "keelson-sqlite-300.snapshot"],
            ),
            (StoreKind::Etcd, 1, &[]),
            (StoreKind::Etcd, 0, &["keelson-etcd-10.snapshot"]),
        ];
        for (store, retention, want) in cases {
            assert_eq!(
                expired(&dir, *store, *retention),
                names(want),
                "{store:?} keeping {retention}"
            );
        }
    }

    #[test]
    fn scheduled_names_sort_by_time_in_retention() {
        let name = scheduled_name(StoreKind::Etcd, 1_700_000_000_123);
        assert_eq!(name, "keelson-etcd-1700000000123.snapshot");
        assert_eq!(expired(&[name], StoreKind::Etcd, 1), Vec::<String>::new());
    }
}
