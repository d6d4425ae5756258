//! CPU and memory of a cgroup, read as cAdvisor reads them for the kubelet.
//!
//! Everything here is a pure function over the text of a kernel file, except [`read_cgroup`]
//! and [`read_node`], which do the reading.
//!
//! - CPU: the cumulative CPU time in nanoseconds: `cpu.stat` `usage_usec` (v2) or
//!   `cpuacct.usage` (v1).
//! - Memory: usage is `memory.current` (v2) or `memory.usage_in_bytes` (v1); the working set is
//!   the usage less the inactive file cache (`memory.stat` `inactive_file` on v2,
//!   `total_inactive_file` on v1), never below zero; RSS is `anon` (v2) or `total_rss` (v1).
//! - The node is the root cgroup, as the kubelet's summary takes it from cAdvisor's `/`
//!   container. The root of a v2 hierarchy has no `memory.current`: runc (which cAdvisor uses)
//!   takes the usage from `/proc/meminfo` as `MemTotal - MemFree` and the inactive file cache
//!   from the root's `memory.stat`; CPU comes from the root's `cpu.stat`, or from the `cpu` line
//!   of `/proc/stat` on kernels whose root cgroup has none.

use std::path::{Path, PathBuf};

/// Where the cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `USER_HZ`: the unit of `/proc/stat` (100 on every Linux architecture the agent runs on).
const USER_HZ: u64 = 100;

/// Which cgroup hierarchy the host uses for containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2 alone (`/sys/fs/cgroup/cgroup.controllers` exists).
    V2,
    /// cgroup v1 controllers (`/sys/fs/cgroup/<controller>`), possibly beside an empty v2.
    V1,
}

/// Memory of a cgroup, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Everything charged to the cgroup (page cache included).
    pub usage: u64,
    /// Usage less the inactive file cache: what `kubectl top` shows and eviction watches.
    pub working_set: u64,
    /// Anonymous memory (and swap cache).
    pub rss: u64,
}

/// What one sample of a cgroup reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cumulative CPU time, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory now.
    pub memory: Memory,
}

impl Usage {
    /// The sum of two cgroups' numbers (a pod of several containers).
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_ns: self.cpu_ns.saturating_add(other.cpu_ns),
            memory: Memory {
                usage: self.memory.usage.saturating_add(other.memory.usage),
                working_set: self
                    .memory
                    .working_set
                    .saturating_add(other.memory.working_set),
                rss: self.memory.rss.saturating_add(other.memory.rss),
            },
        }
    }
}

/// The directories of one cgroup: the one CPU is read from and the one memory is read from
/// (the same directory on v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// The hierarchy the directories belong to.
    pub hierarchy: Hierarchy,
    /// Holds `cpu.stat` (v2) or `cpuacct.usage` (v1).
    pub cpu: PathBuf,
    /// Holds `memory.current`/`memory.usage_in_bytes` and `memory.stat`.
    pub memory: PathBuf,
}

/// The value of `key` in a flat keyed file (`cpu.stat`, `memory.stat`: `key value` lines).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A file holding one number (`memory.current`, `cpuacct.usage`).
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `key` of `/proc/meminfo` (`MemTotal:   16318412 kB`), in bytes.
pub fn meminfo(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k != key {
            return None;
        }
        let rest = rest.trim();
        let (number, kib) = match rest.strip_suffix("kB") {
            Some(n) => (n.trim(), true),
            None => (rest, false),
        };
        let n: u64 = number.parse().ok()?;
        Some(if kib { n.saturating_mul(1024) } else { n })
    })
}

/// The CPU time of the whole machine from the `cpu` line of `/proc/stat`, in nanoseconds:
/// user, nice, system, irq, softirq and steal (not idle or iowait; guest time is already
/// counted in user and nice).
pub fn proc_stat_cpu_ns(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum();
    Some(busy.saturating_mul(1_000_000_000 / USER_HZ))
}

/// Where a process's CPU and memory cgroups are, from its `/proc/<pid>/cgroup` (paths are
/// relative to the reader's cgroup namespace, which is what `root` shows). `None` when the file
/// names no cgroup for the hierarchy.
pub fn process_dirs(proc_cgroup: &str, root: &Path, hierarchy: Hierarchy) -> Option<Dirs> {
    let entries = proc_cgroup.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        Some((controllers, path.trim_start_matches('/')))
    });
    match hierarchy {
        Hierarchy::V2 => {
            let (_, path) = entries.into_iter().find(|(c, _)| c.is_empty())?;
            let dir = root.join(path);
            Some(Dirs {
                hierarchy,
                cpu: dir.clone(),
                memory: dir,
            })
        }
        Hierarchy::V1 => {
            let mut cpu = None;
            let mut memory = None;
            for (controllers, path) in entries {
                let names: Vec<&str> = controllers.split(',').collect();
                if names.contains(&"cpuacct") {
                    cpu = Some(root.join(controllers).join(path));
                }
                if names.contains(&"memory") {
                    memory = Some(root.join(controllers).join(path));
                }
            }
            Some(Dirs {
                hierarchy,
                cpu: cpu?,
                memory: memory?,
            })
        }
    }
}

/// The files of a cgroup [`cgroup_usage`] reads, in its order.
pub fn cgroup_files(dirs: &Dirs) -> [PathBuf; 3] {
    match dirs.hierarchy {
        Hierarchy::V2 => [
            dirs.cpu.join("cpu.stat"),
            dirs.memory.join("memory.current"),
            dirs.memory.join("memory.stat"),
        ],
        Hierarchy::V1 => [
            dirs.cpu.join("cpuacct.usage"),
            dirs.memory.join("memory.usage_in_bytes"),
            dirs.memory.join("memory.stat"),
        ],
    }
}

/// A cgroup's usage from the texts of its [`cgroup_files`]. A missing `memory.stat` key counts
/// as zero (an empty cgroup); an unreadable CPU or usage number is `None`.
pub fn cgroup_usage(hierarchy: Hierarchy, cpu: &str, usage: &str, stat: &str) -> Option<Usage> {
    let (cpu_ns, inactive, rss) = match hierarchy {
        Hierarchy::V2 => (
            keyed(cpu, "usage_usec")?.saturating_mul(1000),
            keyed(stat, "inactive_file"),
            keyed(stat, "anon"),
        ),
        Hierarchy::V1 => (
            single(cpu)?,
            keyed(stat, "total_inactive_file"),
            keyed(stat, "total_rss"),
        ),
    };
    Some(Usage {
        cpu_ns,
        memory: memory(single(usage)?, inactive.unwrap_or(0), rss.unwrap_or(0)),
    })
}

/// cAdvisor's working set: usage less inactive file pages, not below zero.
fn memory(usage: u64, inactive_file: u64, rss: u64) -> Memory {
    Memory {
        usage,
        working_set: usage.saturating_sub(inactive_file),
        rss,
    }
}

/// The node's usage (the root cgroup) from the texts the files of [`read_node`] hold: on v2
/// `cpu` is the root's `cpu.stat` (empty when the kernel has none; then `proc_stat` counts),
/// `usage` is unused and `meminfo` gives the usage; on v1 `cpu` is the root's `cpuacct.usage`
/// and `usage` its `memory.usage_in_bytes`.
pub fn node_usage(
    hierarchy: Hierarchy,
    cpu: &str,
    usage: &str,
    stat: &str,
    meminfo_text: &str,
    proc_stat: &str,
) -> Option<Usage> {
    match hierarchy {
        Hierarchy::V1 => cgroup_usage(hierarchy, cpu, usage, stat),
        Hierarchy::V2 => {
            let cpu_ns = keyed(cpu, "usage_usec")
                .map(|us| us.saturating_mul(1000))
                .or_else(|| proc_stat_cpu_ns(proc_stat))?;
            let total = meminfo(meminfo_text, "MemTotal")?;
            let free = meminfo(meminfo_text, "MemFree")?;
            Some(Usage {
                cpu_ns,
                memory: memory(
                    total.saturating_sub(free),
                    keyed(stat, "inactive_file").unwrap_or(0),
                    keyed(stat, "anon").unwrap_or(0),
                ),
            })
        }
    }
}

/// Which hierarchy the host under `root` uses.
pub fn detect(root: &Path) -> Hierarchy {
    if root.join("cgroup.controllers").exists() {
        Hierarchy::V2
    } else {
        Hierarchy::V1
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Reads one cgroup (the IO of [`cgroup_usage`]).
pub fn read_cgroup(dirs: &Dirs) -> std::io::Result<Option<Usage>> {
    let [cpu, usage, stat] = cgroup_files(dirs);
    Ok(cgroup_usage(
        dirs.hierarchy,
        &read(&cpu)?,
        &read(&usage)?,
        &read(&stat)?,
    ))
}

/// Reads the node's usage under `root` (the IO of [`node_usage`]); files the kernel lacks read
/// as empty.
pub fn read_node(root: &Path, hierarchy: Hierarchy) -> Option<Usage> {
    let text = |path: PathBuf| read(&path).unwrap_or_default();
    let (cpu, usage, stat) = match hierarchy {
        Hierarchy::V2 => (
            text(root.join("cpu.stat")),
            String::new(),
            text(root.join("memory.stat")),
        ),
        Hierarchy::V1 => (
            // `cpuacct` is its own mount on some hosts, a link to `cpu,cpuacct` on systemd's.
            text(root.join("cpuacct/cpuacct.usage")),
            text(root.join("memory/memory.usage_in_bytes")),
            text(root.join("memory/memory.stat")),
        ),
    };
    node_usage(
        hierarchy,
        &cpu,
        &usage,
        &stat,
        &text(PathBuf::from("/proc/meminfo")),
        &text(PathBuf::from("/proc/stat")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU_STAT_V2: &str = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";
    const MEMORY_STAT_V2: &str = "anon 4096000\nfile 8192000\nkernel 100000\n\
        active_anon 4000000\ninactive_anon 96000\nactive_file 2192000\ninactive_file 6000000\n";
    const MEMORY_STAT_V1: &str = "cache 9000000\nrss 3000000\ninactive_file 11\n\
        total_cache 9000000\ntotal_rss 3000000\ntotal_inactive_file 5000000\n\
        total_active_file 4000000\n";

    #[test]
    fn container_usage_as_cadvisor_reads_it() {
        let cases = [
            (
                "v2: usec to ns, working set = current - inactive_file",
                Hierarchy::V2,
                CPU_STAT_V2,
                "20000000\n",
                MEMORY_STAT_V2,
                Some(Usage {
                    cpu_ns: 2_500_000_000,
                    memory: Memory {
                        usage: 20_000_000,
                        working_set: 14_000_000,
                        rss: 4_096_000,
                    },
                }),
            ),
            (
                "v1: total_ keys, not the cgroup-local ones",
                Hierarchy::V1,
                "123456789\n",
                "12000000\n",
                MEMORY_STAT_V1,
                Some(Usage {
                    cpu_ns: 123_456_789,
                    memory: Memory {
                        usage: 12_000_000,
                        working_set: 7_000_000,
                        rss: 3_000_000,
                    },
                }),
            ),
            (
                "inactive file above usage: working set 0",
                Hierarchy::V2,
                CPU_STAT_V2,
                "1000\n",
                MEMORY_STAT_V2,
                Some(Usage {
                    cpu_ns: 2_500_000_000,
                    memory: Memory {
                        usage: 1000,
                        working_set: 0,
                        rss: 4_096_000,
                    },
                }),
            ),
            (
                "empty memory.stat: working set = usage",
                Hierarchy::V2,
                CPU_STAT_V2,
                "4096",
                "",
                Some(Usage {
                    cpu_ns: 2_500_000_000,
                    memory: Memory {
                        usage: 4096,
                        working_set: 4096,
                        rss: 0,
                    },
                }),
            ),
            (
                "no usage_usec",
                Hierarchy::V2,
                "nr_periods 0\n",
                "4096",
                "",
                None,
            ),
            ("garbage usage", Hierarchy::V1, "1", "max", "", None),
        ];
        for (what, hierarchy, cpu, usage, stat, want) in cases {
            assert_eq!(cgroup_usage(hierarchy, cpu, usage, stat), want, "{what}");
        }
    }

    #[test]
    fn node_usage_of_the_root_cgroup() {
        let meminfo_text = "MemTotal:       16000000 kB\nMemFree:         6000000 kB\n\
            MemAvailable:   12000000 kB\nBuffers:          100000 kB\n";
        let proc_stat = "cpu  100 20 30 5000 40 6 7 8 9 10\ncpu0 50 10 15 2500 20 3 3 4 4 5\n";
        let cases = [
            (
                "v2: meminfo total - free, root memory.stat inactive_file",
                Hierarchy::V2,
                CPU_STAT_V2,
                MEMORY_STAT_V2,
                Some(Usage {
                    cpu_ns: 2_500_000_000,
                    memory: Memory {
                        usage: 10_240_000_000,
                        working_set: 10_234_000_000,
                        rss: 4_096_000,
                    },
                }),
            ),
            (
                "v2 without a root cpu.stat: /proc/stat busy ticks",
                Hierarchy::V2,
                "",
                "",
                Some(Usage {
                    // user 100 + nice 20 + system 30 + irq 6 + softirq 7 + steal 8 = 171 ticks
                    cpu_ns: 1_710_000_000,
                    memory: Memory {
                        usage: 10_240_000_000,
                        working_set: 10_240_000_000,
                        rss: 0,
                    },
                }),
            ),
        ];
        for (what, hierarchy, cpu, stat, want) in cases {
            assert_eq!(
                node_usage(hierarchy, cpu, "", stat, meminfo_text, proc_stat),
                want,
                "{what}"
            );
        }
        assert_eq!(
            node_usage(
                Hierarchy::V1,
                "5000000000",
                "9000000",
                MEMORY_STAT_V1,
                "",
                ""
            ),
            Some(Usage {
                cpu_ns: 5_000_000_000,
                memory: Memory {
                    usage: 9_000_000,
                    working_set: 4_000_000,
                    rss: 3_000_000
                }
            }),
            "v1: the root's own files"
        );
    }

    #[test]
    fn a_process_cgroup_under_each_driver() {
        let root = Path::new("/sys/fs/cgroup");
        let cases = [
            (
                "v2 systemd driver",
                "0::/system.slice/docker-abc.scope\n",
                Hierarchy::V2,
                Some((
                    "system.slice/docker-abc.scope",
                    "system.slice/docker-abc.scope",
                )),
            ),
            (
                "v2 cgroupfs driver under a parent",
                "0::/keelson-pods/abc\n",
                Hierarchy::V2,
                Some(("keelson-pods/abc", "keelson-pods/abc")),
            ),
            (
                "hybrid host read as v2 would take the unified line only",
                "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
                Hierarchy::V2,
                Some(("docker/abc", "docker/abc")),
            ),
            (
                "v1 with cpu and cpuacct mounted apart",
                "4:memory:/docker/abc\n2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n",
                Hierarchy::V1,
                Some(("cpuacct/docker/abc", "memory/docker/abc")),
            ),
            (
                "v1: a controller directory each",
                "12:memory:/docker/abc\n11:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n\
                 1:name=systemd:/docker/abc\n0::/\n",
                Hierarchy::V1,
                Some(("cpu,cpuacct/docker/abc", "memory/docker/abc")),
            ),
            (
                "v1 without a memory controller",
                "4:cpu,cpuacct:/docker/abc\n",
                Hierarchy::V1,
                None,
            ),
            ("v2 with no unified line", "4:cpu:/x\n", Hierarchy::V2, None),
        ];
        for (what, text, hierarchy, want) in cases {
            let want = want.map(|(cpu, memory)| Dirs {
                hierarchy,
                cpu: root.join(cpu),
                memory: root.join(memory),
            });
            assert_eq!(process_dirs(text, root, hierarchy), want, "{what}");
        }
    }

    #[test]
    fn meminfo_and_keyed_values() {
        let text = "MemTotal:       16318412 kB\nHugePages_Total:       0\n";
        assert_eq!(meminfo(text, "MemTotal"), Some(16_318_412 * 1024));
        assert_eq!(meminfo(text, "HugePages_Total"), Some(0));
        assert_eq!(meminfo(text, "MemFree"), None);
        // A key that is a prefix of another is not confused with it.
        assert_eq!(keyed("file_mapped 5\nfile 7\n", "file"), Some(7));
    }
}
