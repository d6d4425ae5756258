//! The agent process's own health on `/metrics`, read at scrape time: the standard Prometheus
//! process metrics every Go component (the kubelet, kube-proxy) exports — `process_open_fds`,
//! `process_max_fds`, `process_resident_memory_bytes`, `process_start_time_seconds` — and
//! `keelson_runtime_alive_tasks`, the tokio tasks alive, which is where a leaked session or
//! watcher shows first.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, gauge::ConstGauge},
};

/// The collector (register it once per registry).
#[derive(Debug, Default)]
pub struct ProcessMetrics;

/// What [`ProcessMetrics`] reads from `/proc/self`, pure for tests.
#[derive(Debug, Default, Clone, PartialEq)]
struct Reading {
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    resident_bytes: Option<i64>,
    start_time_seconds: Option<f64>,
}

impl Reading {
    fn now() -> Self {
        let page = page_size();
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
        Self {
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| i64::try_from(dir.count()).unwrap_or(i64::MAX)),
            max_fds: max_open_files(&limits),
            resident_bytes: resident_pages(&statm).map(|pages| pages.saturating_mul(page)),
            start_time_seconds: start_time(&stat, &uptime, clock_ticks(), unix_now()),
        }
    }
}

fn page_size() -> i64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 { page } else { 4096 }
}

fn clock_ticks() -> f64 {
    // SAFETY: as above.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The second field of `/proc/self/statm`: resident pages.
fn resident_pages(statm: &str) -> Option<i64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The process's start as Unix seconds: its start in clock ticks after boot (field 22 of
/// `/proc/self/stat`, counted after the parenthesised command name) placed on the wall clock
/// through the system's uptime.
fn start_time(stat: &str, uptime: &str, ticks_per_second: f64, now: f64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 is the first after the name; 22 is the start time.
    let started_ticks: f64 = after_name.split_whitespace().nth(22 - 3)?.parse().ok()?;
    let up: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some(now - up + started_ticks / ticks_per_second)
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reading = Reading::now();
        let gauges = [
            (
                "process_open_fds",
                "Number of open file descriptors.",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                reading.max_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                reading.resident_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = ConstGauge::new(value);
                metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
        if let Some(start) = reading.start_time_seconds {
            let metric = ConstGauge::new(start);
            metric.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tasks = i64::try_from(handle.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
            ConstGauge::new(tasks).encode(encoder.encode_descriptor(
                "keelson_runtime_alive_tasks",
                "Tasks alive in the agent's async runtime (sessions, watchers, timers).",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_as_the_kernel_writes_them() {
        assert_eq!(resident_pages("9551 2210 1520 214 0 1056 0\n"), Some(2210));
        assert_eq!(resident_pages(""), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(max_open_files(limits), Some(1_048_576));
        // A command name with spaces and parentheses does not shift the fields.
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 300 0 0 0 5 3 0 0 20 0 4 0 \
                    123400 10000000 2210 18446744073709551615";
        let start = start_time(stat, "5000.00 9000.00\n", 100.0, 1_000_000.0);
        assert_eq!(start, Some(1_000_000.0 - 5000.0 + 1234.0));
    }

    #[tokio::test]
    async fn a_scrape_has_every_family() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessMetrics));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        keelson_testbed::exposition::check(&text).expect("a valid exposition");
        for family in [
            "process_open_fds ",
            "process_max_fds ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "keelson_runtime_alive_tasks ",
        ] {
            assert!(text.contains(family), "{family} in {text}");
        }
    }
}
