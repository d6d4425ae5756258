//! Which containers the kernel's OOM killer struck.
//!
//! Docker's `State.OOMKilled` is only as good as containerd's OOM event, and on a cgroup v1
//! host that event is lost twice over:
//! - the shim starts watching the memory cgroup after the container's process started
//!   (containerd's `Start`), so a process killed in its first milliseconds is never seen;
//! - Docker 20.10 sets the flag on the exit only if the OOM event arrived first; one that lands
//!   after the exit only becomes an `oom` event.
//!
//! Both happen under load (the `dd` of the OOM e2e test hit the first in CI). The kernel itself
//! logs every memory-cgroup OOM kill with the victim's cgroup
//! (`oom-kill:...,task_memcg=/docker/<id>,...`, the record cAdvisor's oomparser reads for the
//! kubelet's OOM watcher), so the agent reads `/dev/kmsg` and Docker's `oom` events into one
//! [`OomLog`] and the runtime ORs it into what Docker says.

use std::{
    collections::{HashSet, VecDeque},
    io::{Read as _, Seek as _, SeekFrom},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;

/// How many container ids the log keeps; the oldest go first (ids also go when the container
/// is removed).
const CAPACITY: usize = 4096;

/// How long after a container's exit an OOM record may still arrive: the kernel logs the kill
/// before the process dies, but the reading thread or Docker's event may run late under load.
pub const LATE_RECORD: Duration = Duration::from_millis(250);

/// Container ids with a recorded OOM kill, and a wake-up for those waiting on one.
#[derive(Debug, Default)]
pub struct OomLog {
    ids: Mutex<Recent>,
    recorded: Notify,
}

#[derive(Debug, Default)]
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl OomLog {
    /// Records an OOM kill in container `id` (the full 64-hex id).
    pub fn record(&self, id: &str) {
        {
            let mut recent = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            if recent.ids.insert(id.to_owned()) {
                recent.order.push_back(id.to_owned());
                while recent.order.len() > CAPACITY {
                    if let Some(old) = recent.order.pop_front() {
                        recent.ids.remove(&old);
                    }
                }
            }
        }
        self.recorded.notify_waiters();
    }

    /// Drops container `id` (removed: its record is of no more use).
    pub fn forget(&self, id: &str) {
        let mut recent = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if recent.ids.remove(id) {
            recent.order.retain(|i| i != id);
        }
    }

    /// Whether an OOM kill was recorded in container `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ids
            .contains(id)
    }

    /// Whether an OOM kill is (or within `wait` gets) recorded in container `id`.
    pub async fn wait_for(&self, id: &str, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let recorded = self.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if self.contains(id) {
                return true;
            }
            if tokio::time::timeout_at(deadline, recorded).await.is_err() {
                return self.contains(id);
            }
        }
    }
}

/// How long to wait for a late OOM record of a container that exited at `finished_at`, seen
/// `now`: what is left of [`LATE_RECORD`] (nothing for a container that ended long ago).
pub fn late_record_wait(finished_at: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(finished) = finished_at else {
        return Duration::ZERO;
    };
    let since = now.duration_since(finished);
    let late = k8s_openapi::jiff::SignedDuration::try_from(LATE_RECORD).unwrap_or_default();
    late.checked_sub(since)
        .and_then(|left| Duration::try_from(left).ok())
        .map_or(Duration::ZERO, |left| left.min(LATE_RECORD))
}

/// The container id of the victim in one `/dev/kmsg` record, if it is the kernel's OOM-kill
/// summary: the last part of `task_memcg`, as the cgroupfs driver names it (`/docker/<id>`,
/// `<parent>/<id>`) or systemd's (`.../docker-<id>.scope`).
pub fn victim_container(record: &str) -> Option<&str> {
    let message = record.split_once(';').map_or(record, |(_, m)| m);
    let fields = message.lines().next()?.strip_prefix("oom-kill:")?;
    let memcg = fields
        .split(',')
        .find_map(|f| f.strip_prefix("task_memcg="))?;
    let last = memcg.rsplit('/').next()?;
    let id = last
        .strip_prefix("docker-")
        .and_then(|l| l.strip_suffix(".scope"))
        .unwrap_or(last);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Reads the kernel log from now on into `log`, on a thread of its own for the agent's life.
/// Fails when `/dev/kmsg` cannot be read (not root, no such device): Docker's flag and events
/// are then all there is.
pub fn watch_kernel_log(log: Arc<OomLog>) -> std::io::Result<()> {
    let mut kmsg = std::fs::File::open("/dev/kmsg")?;
    // Only what happens from now on: older OOM kills are in Docker's state already.
    kmsg.seek(SeekFrom::End(0))?;
    std::thread::Builder::new()
        .name("kmsg-oom".to_owned())
        .spawn(move || {
            // One record per read; the kernel's limit is 8 KiB (`CONSOLE_EXT_LOG_MAX`).
            let mut buf = vec![0u8; 8192];
            loop {
                match kmsg.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let record = String::from_utf8_lossy(&buf[..n]);
                        if let Some(id) = victim_container(&record) {
                            tracing::info!(
                                container = id,
                                "the kernel OOM-killed a process of a container"
                            );
                            log.record(id);
                        }
                    }
                    // Records overwritten before we read them: go on with the next.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading /dev/kmsg failed: OOM kills are \
                            known from Docker only from now on");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "264ebd7617e68f0aa1e0283e5087178727306153a69842a5327dea2e02185fde";

    #[test]
    fn the_oom_kill_summary_names_the_victims_container() {
        let cgroupfs = format!(
            "6,11975,65442999237,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\
             cpuset={ID},mems_allowed=0,oom_memcg=/docker/{ID},task_memcg=/docker/{ID},\
             task=dd,pid=28663,uid=0\n"
        );
        assert_eq!(victim_container(&cgroupfs), Some(ID));
        let parent = format!(
            "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/keelson/pods/{ID},\
             task_memcg=/keelson/pods/{ID},task=x,pid=1,uid=0"
        );
        assert_eq!(victim_container(&parent), Some(ID));
        let systemd = format!(
            "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,\
             task_memcg=/system.slice/docker-{ID}.scope,task=x,pid=1,uid=0"
        );
        assert_eq!(victim_container(&systemd), Some(ID));
    }

    #[test]
    fn other_records_and_host_ooms_name_no_container() {
        for record in [
            "3,11976,65442999256,-;Memory cgroup out of memory: Killed process 28663 (dd)",
            "4,11860,1,-;dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
            // The whole host out of memory: the victim is in no container.
            "6,1,2,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,\
             mems_allowed=0,global_oom,task_memcg=/user.slice,task=x,pid=1,uid=0",
            "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/docker/abc,task=x",
            "",
        ] {
            assert_eq!(victim_container(record), None, "{record}");
        }
    }

    #[test]
    fn the_log_forgets_removed_and_oldest_containers() {
        let log = OomLog::default();
        log.record("a");
        log.record("a");
        assert!(log.contains("a"));
        log.forget("a");
        assert!(!log.contains("a"));
        for i in 0..=CAPACITY {
            log.record(&i.to_string());
        }
        assert!(!log.contains("0"), "the oldest goes past the capacity");
        assert!(log.contains("1") && log.contains(&CAPACITY.to_string()));
    }

    #[test]
    fn only_a_fresh_exit_waits_for_a_late_record() {
        let now: Timestamp = "2026-12-07T08:05:06.300Z".parse().expect("time");
        let at = |t: &str| Some(t.parse::<Timestamp>().expect("time"));
        assert_eq!(
            late_record_wait(at("2026-12-07T08:05:06.200Z"), now),
            Duration::from_millis(150)
        );
        assert_eq!(
            late_record_wait(at("2026-12-07T08:05:06Z"), now),
            Duration::ZERO
        );
        assert_eq!(late_record_wait(None, now), Duration::ZERO);
        // A clock that reads the exit in the future waits no more than the whole window.
        assert_eq!(
            late_record_wait(at("2026-12-07T08:05:07Z"), now),
            LATE_RECORD
        );
    }

    #[tokio::test]
    async fn a_waiter_sees_a_record_that_arrives_late_and_gives_up_after_its_wait() {
        let log = Arc::new(OomLog::default());
        let writer = log.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.record("late");
        });
        assert!(log.wait_for("late", Duration::from_secs(5)).await);
        late.await.expect("writer");
        let started = std::time::Instant::now();
        assert!(!log.wait_for("never", Duration::from_millis(50)).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
