//! Debian's kernel packages: the newest of a series, downloaded and extracted, and its modules.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Where apt finds a series' image packages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Archive {
    /// The host's own apt sources (bookworm, its updates and backports).
    Host,
    /// A Debian suite the host's sources do not carry (with its `-security` suite, where an
    /// LTS release's newest kernels are), read from deb.debian.org through a private apt
    /// configuration under `target/vm/apt-<suite>/`: the system's sources stay untouched.
    Suite(&'static str),
}

/// A kernel series this command knows.
#[derive(Debug)]
pub(super) struct Series {
    /// What `--kernel` takes, e.g. `6.1`.
    pub(super) name: &'static str,
    /// The apt-cache pattern of its unsigned image packages (the newest match is used).
    pattern: &'static str,
    archive: Archive,
}

/// The kernel series this command knows: Debian 11's 5.10 (the oldest the README promises),
/// Debian 12's 6.1 and its backport 6.12.
pub(super) const KERNELS: &[Series] = &[
    Series {
        name: "5.10",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$",
        archive: Archive::Suite("bullseye"),
    },
    Series {
        name: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        archive: Archive::Host,
    },
    Series {
        name: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
        archive: Archive::Host,
    },
];

/// How long a private suite's package lists are used before `apt-get update` refreshes them.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The `-o` options that point apt at `archive` (none for the host's sources); for a private
/// suite, its configuration is written and its lists fetched when missing or older than
/// [`LISTS_MAX_AGE`].
fn apt_options(vm_dir: &Path, archive: Archive) -> anyhow::Result<Vec<String>> {
    let Archive::Suite(suite) = archive else {
        return Ok(Vec::new());
    };
    let dir = vm_dir.join(format!("apt-{suite}"));
    let lists = dir.join("lists");
    for d in [
        lists.join("partial"),
        dir.join("cache/archives/partial"),
        dir.join("sources.list.d"),
    ] {
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let sources = format!(
        "deb [signed-by={keyring}] http://deb.debian.org/debian {suite} main\n\
         deb [signed-by={keyring}] http://deb.debian.org/debian-security {suite}-security main\n"
    );
    fs::write(dir.join("sources.list"), sources)?;
    let options: Vec<String> = [
        ("Dir::Etc::SourceList", dir.join("sources.list")),
        ("Dir::Etc::SourceParts", dir.join("sources.list.d")),
        ("Dir::State::Lists", lists.clone()),
        ("Dir::Cache", dir.join("cache")),
    ]
    .into_iter()
    .flat_map(|(key, path)| ["-o".to_owned(), format!("{key}={}", path.display())])
    .collect();
    let fresh = fs::read_dir(&lists)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .any(|modified| modified.elapsed().is_ok_and(|age| age < LISTS_MAX_AGE));
    if !fresh {
        cmd::run(Command::new("apt-get").args(&options).arg("update"))
            .with_context(|| format!("fetching {suite}'s package lists"))?;
    }
    Ok(options)
}

/// An extracted kernel package.
#[derive(Debug)]
pub(super) struct Kernel {
    /// e.g. `6.12.117+deb12-amd64`
    pub(super) release: String,
    pub(super) vmlinuz: PathBuf,
    pub(super) modules: PathBuf,
}

/// The newest image package of `series` in its archive, downloaded and extracted under `vm_dir`
/// (both steps skipped when already done).
pub(super) fn fetch_kernel(vm_dir: &Path, series: &str) -> anyhow::Result<Kernel> {
    let known = KERNELS
        .iter()
        .find(|k| k.name == series)
        .with_context(|| format!("unknown kernel series {series}"))?;
    let pattern = known.pattern;
    let apt = apt_options(vm_dir, known.archive)?;
    let listing =
        cmd::output(
            Command::new("apt-cache")
                .args(&apt)
                .args(["search", "--names-only", pattern]),
        )
        .with_context(|| format!("`apt-cache search --names-only '{pattern}'` failed"))?;
    let package = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| numbers(name))
        .with_context(|| format!("apt knows no package matching {pattern}: run `apt-get update`"))?
        .to_owned();
    let root = vm_dir.join(&package);
    if !root.join("boot").is_dir() {
        let debs = vm_dir.join("debs");
        fs::create_dir_all(&debs)?;
        let find_deb = || -> anyhow::Result<Option<PathBuf>> {
            Ok(fs::read_dir(&debs)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
                }))
        };
        let deb = match find_deb()? {
            Some(deb) => deb,
            None => {
                cmd::run(
                    Command::new("apt-get")
                        .args(&apt)
                        .args(["download", &package])
                        .current_dir(&debs),
                )?;
                find_deb()?.with_context(|| format!("apt-get downloaded no {package}_*.deb"))?
            }
        };
        let partial = vm_dir.join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &root)?;
    }
    let modules_root = root.join("lib/modules");
    let release = fs::read_dir(&modules_root)
        .with_context(|| format!("cannot read {}", modules_root.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} is empty", modules_root.display()))?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing", vmlinuz.display());
    }
    println!("  kernel {package} ({release})");
    Ok(Kernel {
        modules: modules_root.join(&release),
        release,
        vmlinuz,
    })
}

/// The numbers in `s`, for comparing package versions.
pub(super) fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// A module's name as the kernel knows it (`-` and `_` are the same).
pub(super) fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules to load, dependencies first, each as (name, uncompressed contents).
pub(super) fn modules(kernel: &Kernel, wanted: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let builtin: BTreeSet<String> = fs::read_to_string(kernel.modules.join("modules.builtin"))
        .context("cannot read modules.builtin")?
        .lines()
        .filter_map(|l| Path::new(l).file_name())
        .map(|n| module_key(n.to_string_lossy().trim_end_matches(".ko")))
        .collect();
    let mut files = BTreeMap::new();
    let mut dirs = vec![kernel.modules.join("kernel")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned())
                && let Some(stem) = name
                    .strip_suffix(".ko")
                    .or_else(|| name.strip_suffix(".ko.xz"))
            {
                files.insert(module_key(stem), path);
            }
        }
    }
    let mut ordered: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(String, bool)> = wanted
        .iter()
        .rev()
        .map(|m| (module_key(m), false))
        .collect();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Depth-first, dependencies before dependents; bounded by the number of module files.
    let mut budget = 10_000_usize;
    while let Some((name, expanded)) = stack.pop() {
        budget = budget.checked_sub(1).context("module dependencies loop")?;
        if builtin.contains(&name) || (seen.contains(&name) && !expanded) {
            continue;
        }
        if expanded {
            if let Some(bytes) = contents.remove(&name) {
                ordered.push((name, bytes));
            }
            continue;
        }
        seen.insert(name.clone());
        let path = files.get(&name).with_context(|| {
            format!(
                "module {name} is neither built in nor in {}",
                kernel.release
            )
        })?;
        let bytes = if path.extension().is_some_and(|e| e == "xz") {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(path)
                .output()
                .context("cannot run xz")?;
            if !out.status.success() {
                bail!("xz -dc {} failed", path.display());
            }
            out.stdout
        } else {
            fs::read(path)?
        };
        let depends = modinfo(&bytes, "depends");
        contents.insert(name.clone(), bytes);
        stack.push((name, true));
        for dep in depends.split(',').filter(|d| !d.is_empty()) {
            stack.push((module_key(dep), false));
        }
    }
    Ok(ordered)
}

/// A `key=value` string of a module's `.modinfo` section (NUL-separated), or "".
pub(super) fn modinfo(module: &[u8], key: &str) -> String {
    let needle = format!("\0{key}=");
    module
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .map(|at| {
            let rest = &module[at + needle.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_by_numbers() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-55-amd64-unsigned",
        ];
        assert_eq!(
            names.iter().max_by_key(|n| numbers(n)),
            Some(&"linux-image-6.1.0-56-amd64-unsigned")
        );
    }

    #[test]
    fn modinfo_reads_depends() {
        let section = b"xx\0license=GPL\0depends=udp_tunnel,ip6_udp_tunnel\0name=vxlan\0";
        assert_eq!(modinfo(section, "depends"), "udp_tunnel,ip6_udp_tunnel");
        assert_eq!(modinfo(section, "missing"), "");
    }
}
