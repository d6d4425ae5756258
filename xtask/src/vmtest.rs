//! `cargo xtask vm-test`: the privileged datapath tests inside qemu VMs, one per Debian kernel.
//!
//! For each kernel series (6.1, bookworm's own; 6.12, bookworm's backport) this downloads the
//! newest `linux-image-*-amd64-unsigned` package with `apt-get download` into `target/vm/`,
//! extracts it, builds an initramfs (busybox, iproute2's `ip` with its libraries, the modules the
//! tests need, the node agent, the test client and the datapath test binaries, each at its host
//! path because the tests find the agent and the client by path) and boots it in qemu (TCG: no
//! KVM needed). The VM's `/init` runs `keelson-node-agent check` and every test binary with
//! `--test-threads 1`, printing `KEELSON-*` markers on the serial console, which this command
//! parses into a table per kernel. The serial output of each VM is kept in
//! `target/vm/<series>.log`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, BufWriter, Read as _, Write},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cmd::{self, command, repo_root};

/// The datapath test binaries (integration tests of keelson-tests) the VMs run.
const DATAPATH_TESTS: &[&str] = &[
    "datapath_sock_lb",
    "datapath_tc_lb",
    "datapath_counters",
    "datapath_ct_gc",
    "datapath_nodeport_snat",
];

/// Kernel modules the tests need (with their dependencies); built-in ones are skipped.
const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf", "vxlan", "bridge"];

/// The kernel series this command knows: the series, the apt-cache pattern of its unsigned
/// image packages (the newest match is used).
const KERNELS: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
];

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// A kernel series to test on (6.1 or 6.12); repeat for several. Default: both.
    #[arg(long = "kernel", value_parser = ["6.1", "6.12"])]
    kernels: Vec<String>,
    /// Minutes after which a VM that has not finished is killed (and counts as failed).
    #[arg(long, default_value_t = 20)]
    timeout_minutes: u64,
    /// Use this already-built node agent instead of building (keelson-test-client must be next
    /// to it); needs --test-binary.
    #[arg(long, requires = "test_binaries")]
    agent: Option<PathBuf>,
    /// An already-built datapath test binary to run instead of building them (repeatable).
    #[arg(long = "test-binary", requires = "agent")]
    test_binaries: Vec<PathBuf>,
}

impl VmTestArgs {
    /// One kernel series with the default timeout, building the binaries (what `cargo xtask
    /// test` runs).
    pub fn kernel(series: &str) -> Self {
        Self {
            kernels: vec![series.to_owned()],
            timeout_minutes: 20,
            agent: None,
            test_binaries: Vec::new(),
        }
    }
}

/// What the VMs run.
#[derive(Debug)]
struct Binaries {
    agent: PathBuf,
    client: PathBuf,
    /// (test name, executable)
    tests: Vec<(String, PathBuf)>,
}

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    for program in [
        "qemu-system-x86_64",
        "busybox",
        "apt-get",
        "apt-cache",
        "dpkg-deb",
        "xz",
        "gzip",
        "ldd",
        "ip",
    ] {
        if !program_on_path(program) {
            bail!("`{program}` is not installed: run `cargo xtask setup`");
        }
    }
    let series: Vec<&str> = if args.kernels.is_empty() {
        KERNELS.iter().map(|(s, _)| *s).collect()
    } else {
        args.kernels.iter().map(String::as_str).collect()
    };

    let binaries = match &args.agent {
        Some(agent) => prebuilt(agent, &args.test_binaries)?,
        None => build()?,
    };
    let vm_dir = target_dir().join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("cannot create {}", vm_dir.display()))?;

    let mut reports = Vec::new();
    for s in series {
        println!("==> vm-test: kernel {s}");
        let started = Instant::now();
        let kernel = fetch_kernel(&vm_dir, s)?;
        let initrd = vm_dir.join(format!("initrd-{s}.gz"));
        let t = Instant::now();
        build_initramfs(&kernel, &binaries, &initrd)?;
        println!(
            "  initramfs {} ({} MB, {:.1} s)",
            initrd.display(),
            fs::metadata(&initrd)?.len() / 1_000_000,
            t.elapsed().as_secs_f64()
        );
        let log = vm_dir.join(format!("{s}.log"));
        let mut report = boot(
            s,
            &kernel,
            &initrd,
            &log,
            Duration::from_secs(args.timeout_minutes * 60),
        )?;
        report.total = started.elapsed();
        reports.push(report);
    }
    summarize(&reports)
}

fn program_on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or the repository's `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| repo_root().join("target"), |d| repo_root().join(d))
}

fn prebuilt(agent: &Path, tests: &[PathBuf]) -> anyhow::Result<Binaries> {
    let agent = fs::canonicalize(agent).with_context(|| format!("{}", agent.display()))?;
    let client = agent.with_file_name("keelson-test-client");
    if !client.is_file() {
        bail!(
            "{} is missing (it must be next to the agent)",
            client.display()
        );
    }
    let tests = tests
        .iter()
        .map(|t| {
            let path = fs::canonicalize(t).with_context(|| format!("{}", t.display()))?;
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let name = file.rsplit_once('-').map_or(&*file, |(n, _)| n).to_owned();
            Ok((name, path))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Binaries {
        agent,
        client,
        tests,
    })
}

/// Builds the agent, the test client and the datapath tests, and finds their executables in
/// cargo's JSON messages.
fn build() -> anyhow::Result<Binaries> {
    println!("==> vm-test: building the node agent and the datapath tests");
    let mut executables: Vec<(String, Vec<String>, PathBuf)> = Vec::new();
    let mut builds = vec![vec![
        "build",
        "-p",
        "keelson-node-agent",
        "--bin",
        "keelson-node-agent",
    ]];
    let mut tests = vec!["build", "-p", "keelson-tests"];
    for t in DATAPATH_TESTS {
        tests.extend(["--test", t]);
    }
    builds.push(tests);
    for args in builds {
        let mut cmd = command("cargo");
        cmd.args(&args)
            .arg("--message-format=json-render-diagnostics")
            .stdout(Stdio::piped());
        // As `cargo xtask test` builds: no incremental state (gigabytes, useless for one build).
        if std::env::var_os("CARGO_INCREMENTAL").is_none() {
            cmd.env("CARGO_INCREMENTAL", "0");
        }
        println!("$ {}", cmd::display(&cmd));
        let output = cmd
            .spawn()
            .and_then(std::process::Child::wait_with_output)
            .context("cannot start cargo")?;
        if !output.status.success() {
            bail!("`cargo {}` failed with {}", args.join(" "), output.status);
        }
        executables.extend(executables_in(&String::from_utf8_lossy(&output.stdout)));
    }
    let find = |name: &str, kind: &str| {
        executables
            .iter()
            .find(|(n, k, _)| n == name && k.iter().any(|x| x == kind))
            .map(|(_, _, p)| p.clone())
            .with_context(|| format!("cargo reported no {kind} executable named {name}"))
    };
    Ok(Binaries {
        agent: find("keelson-node-agent", "bin")?,
        client: find("keelson-test-client", "bin")?,
        tests: DATAPATH_TESTS
            .iter()
            .map(|t| Ok(((*t).to_owned(), find(t, "test")?)))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// (target name, target kinds, executable) of each compiler-artifact message with an
/// executable in cargo's `--message-format=json` output.
fn executables_in(json_lines: &str) -> Vec<(String, Vec<String>, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            let exe = PathBuf::from(msg["executable"].as_str()?);
            let name = msg["target"]["name"].as_str()?.to_owned();
            let kinds = msg["target"]["kind"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            Some((name, kinds, exe))
        })
        .collect()
}

/// An extracted kernel package.
#[derive(Debug)]
struct Kernel {
    /// e.g. `6.12.117+deb12-amd64`
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// The newest image package of `series` apt knows, downloaded and extracted under `vm_dir`
/// (both steps skipped when already done).
fn fetch_kernel(vm_dir: &Path, series: &str) -> anyhow::Result<Kernel> {
    let pattern = KERNELS
        .iter()
        .find(|(s, _)| *s == series)
        .map(|(_, p)| *p)
        .with_context(|| format!("unknown kernel series {series}"))?;
    let listing = cmd::output(Command::new("apt-cache").args(["search", "--names-only", pattern]))
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
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// A module's name as the kernel knows it (`-` and `_` are the same).
fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules to load, dependencies first, each as (name, uncompressed contents).
fn modules(kernel: &Kernel) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
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
    let mut stack: Vec<(String, bool)> = MODULES
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
fn modinfo(module: &[u8], key: &str) -> String {
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

/// A cpio "newc" archive writer.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<PathBuf>,
}

impl<W: Write> Cpio<W> {
    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        let header = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            0,
            0,
            1,
            0,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        pad(&mut self.out, 110 + name.len() + 1)?;
        self.out.write_all(data)?;
        pad(&mut self.out, data.len())
    }

    /// `path`'s parent directories, each once.
    fn parents(&mut self, path: &str) -> std::io::Result<()> {
        let mut missing = Vec::new();
        let mut dir = Path::new(path).parent();
        while let Some(d) = dir {
            if d.as_os_str().is_empty() || d == Path::new("/") || self.dirs.contains(d) {
                break;
            }
            missing.push(d.to_path_buf());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            self.entry(&d.to_string_lossy(), 0o040_755, (0, 0), &[])?;
            self.dirs.insert(d);
        }
        Ok(())
    }

    fn dir(&mut self, path: &str) -> std::io::Result<()> {
        self.parents(&format!("{path}/x"))
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o100_000 | mode, (0, 0), data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o120_777, (0, 0), target.as_bytes())
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o020_600, (major, minor), &[])
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }
}

fn pad(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    out.write_all(&[0; 3][..(4 - len % 4) % 4])
}

/// The shared libraries and loader `ldd` lists for `binary` (none for static binaries).
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn build_initramfs(kernel: &Kernel, binaries: &Binaries, initrd: &Path) -> anyhow::Result<()> {
    let file =
        fs::File::create(initrd).with_context(|| format!("cannot create {}", initrd.display()))?;
    let mut gzip = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("cannot start gzip")?;
    let stdin = gzip.stdin.take().context("gzip's stdin")?;
    let mut cpio = Cpio {
        out: BufWriter::with_capacity(1 << 20, stdin),
        ino: 0,
        dirs: BTreeSet::new(),
    };
    for dir in [
        "/proc", "/sys", "/dev", "/run", "/tmp", "/var", "/etc", "/root",
    ] {
        cpio.dir(dir)?;
    }
    cpio.symlink("/var/run", "/run")?;
    cpio.char_device("/dev/console", 5, 1)?;
    cpio.char_device("/dev/null", 1, 3)?;
    cpio.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;

    // busybox with its applets, except `ip` (iproute2's, which the tests need) and `sh`: Debian's
    // busybox shell prefers its own applets to PATH, so `sh -c 'ip netns exec ...'` in the tests
    // would run busybox's `ip`; dash is /bin/sh.
    let busybox = fs::read("/bin/busybox").context("cannot read /bin/busybox (busybox-static)")?;
    cpio.file("/bin/busybox", 0o755, &busybox)?;
    let applets = cmd::output(Command::new("/bin/busybox").arg("--list-full"))
        .context("`busybox --list-full` failed")?;
    for applet in applets
        .lines()
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
    {
        if Path::new(applet)
            .file_name()
            .is_some_and(|n| n == "ip" || n == "sh")
        {
            continue;
        }
        cpio.symlink(&format!("/{applet}"), "/bin/busybox")?;
    }

    let ip = fs::canonicalize("/usr/sbin/ip")
        .or_else(|_| fs::canonicalize("/sbin/ip"))
        .context("iproute2's ip is missing: run `cargo xtask setup`")?;
    let dash = fs::canonicalize("/bin/dash").context("dash (Debian's /bin/sh) is missing")?;
    let mut elves = vec![
        (PathBuf::from("/usr/sbin/ip"), ip),
        (PathBuf::from("/bin/sh"), dash),
    ];
    elves.push((binaries.agent.clone(), binaries.agent.clone()));
    elves.push((binaries.client.clone(), binaries.client.clone()));
    for (_, test) in &binaries.tests {
        elves.push((test.clone(), test.clone()));
    }
    let mut libs = BTreeSet::new();
    for (_, source) in &elves {
        libs.extend(libraries(source)?);
    }
    for lib in libs {
        elves.push((lib.clone(), fs::canonicalize(&lib)?));
    }
    for (at, source) in &elves {
        let data = fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        let mode = fs::metadata(source)?.permissions().mode() & 0o777;
        cpio.file(&at.to_string_lossy(), mode | 0o500, &data)?;
    }

    let modules = modules(kernel)?;
    let mut module_list = String::new();
    for (name, bytes) in &modules {
        cpio.file(&format!("/lib/modules/{name}.ko"), 0o644, bytes)?;
        let _ = writeln!(module_list, "{name}");
    }
    cpio.file("/etc/keelson-modules", 0o644, module_list.as_bytes())?;
    cpio.file(
        "/init",
        0o755,
        init_script(&binaries.agent, &binaries.tests).as_bytes(),
    )?;

    let out = cpio.finish()?;
    drop(out.into_inner().map_err(|e| e.into_error())?);
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip failed with {status}");
    }
    Ok(())
}

/// The VM's `/init`: mounts, modules, then the agent's check and each test binary, with
/// markers the host parses.
fn init_script(agent: &Path, tests: &[(String, PathBuf)]) -> String {
    let mut s = String::from(
        r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root RUST_BACKTRACE=0
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
# keelson's binaries sit at their host paths (tests find them by compile-time path): a scratch
# tmpfs goes only where it hides nothing, e.g. not over /tmp when the checkout is in /tmp (the
# initramfs itself is writable).
for d in /run /tmp; do [ -z "$(ls -A $d)" ] && mount -t tmpfs tmpfs $d; done
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 none /sys/fs/cgroup/unified
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/keelson-tests
for m in $(cat /etc/keelson-modules); do
  insmod /lib/modules/$m.ko || echo "KEELSON-MODULE-FAILED $m"
done
ip link set lo up
echo "KEELSON-BOOTED $(cut -d' ' -f1 /proc/uptime) $(uname -r)"
"#,
    );
    let _ = writeln!(
        s,
        r#"echo "KEELSON-BEGIN check"
{} check
echo "KEELSON-CHECK $?""#,
        agent.display()
    );
    for (name, path) in tests {
        let _ = writeln!(
            s,
            r#"echo "KEELSON-BEGIN {name} $(cut -d' ' -f1 /proc/uptime)"
{{ {} --test-threads 1; echo $? > /tmp/rc; }} 2>&1 | tee /tmp/out
rc=$(cat /tmp/rc)
r=$(grep '^test result:' /tmp/out | tail -n 1)
passed=$(echo "$r" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
failed=$(echo "$r" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
echo "KEELSON-RESULT {name} ${{passed:-0}} ${{failed:-0}} rc=$rc $(cut -d' ' -f1 /proc/uptime)""#,
            path.display()
        );
    }
    s.push_str("echo \"KEELSON-DONE $(cut -d' ' -f1 /proc/uptime)\"\npoweroff -f\n");
    s
}

/// One binary's outcome in one VM.
#[derive(Debug, Default)]
struct BinaryResult {
    passed: u32,
    failed: u32,
    rc: String,
    seconds: f64,
    /// `test name ... FAILED` names and the panic lines.
    failures: Vec<String>,
}

#[derive(Debug)]
struct Report {
    series: String,
    release: String,
    boot: Option<f64>,
    check: Option<i32>,
    check_error: Vec<String>,
    results: Vec<(String, BinaryResult)>,
    finished: bool,
    total: Duration,
    log: PathBuf,
}

fn boot(
    series: &str,
    kernel: &Kernel,
    initrd: &Path,
    log_path: &Path,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "2048", "-smp", "2", "-kernel"])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("$ {}", cmd::display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let mut stderr = child.stderr.take().context("qemu's stderr")?;
    let mut log = BufWriter::new(
        fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?,
    );
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let mut report = Report {
        series: series.to_owned(),
        release: kernel.release.clone(),
        boot: None,
        check: None,
        check_error: Vec::new(),
        results: Vec::new(),
        finished: false,
        total: Duration::ZERO,
        log: log_path.to_path_buf(),
    };
    let mut current: Option<(String, BinaryResult, Instant)> = None;
    let mut in_check = false;
    let mut panic_lines = 0;
    let deadline = started + timeout;
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let line = match rx.recv_timeout(deadline - now) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let _ = writeln!(log, "{line}");
        let marker = line.find("KEELSON-").map_or("", |at| &line[at..]);
        let words: Vec<&str> = marker.split_whitespace().collect();
        let at = format!("[{series} {:>5.0}s]", started.elapsed().as_secs_f64());
        match words.as_slice() {
            ["KEELSON-BOOTED", ..] => {
                report.boot = Some(started.elapsed().as_secs_f64());
                println!("{at} booted {}", words.get(2).unwrap_or(&""));
            }
            ["KEELSON-MODULE-FAILED", m] => println!("{at} module {m} failed to load"),
            ["KEELSON-BEGIN", "check"] => in_check = true,
            ["KEELSON-CHECK", rc] => {
                in_check = false;
                let rc = rc.parse().unwrap_or(-1);
                report.check = Some(rc);
                println!(
                    "{at} keelson-node-agent check: {}",
                    if rc == 0 { "ok" } else { "FAILED" }
                );
            }
            ["KEELSON-BEGIN", name, ..] => {
                println!("{at} {name}");
                current = Some(((*name).to_owned(), BinaryResult::default(), Instant::now()));
            }
            ["KEELSON-RESULT", name, passed, failed, rc, ..] => {
                if let Some((_, mut result, t)) = current.take() {
                    result.passed = passed.parse().unwrap_or(0);
                    result.failed = failed.parse().unwrap_or(0);
                    result.rc = rc.trim_start_matches("rc=").to_owned();
                    result.seconds = t.elapsed().as_secs_f64();
                    println!(
                        "{at} {name}: {} passed, {} failed ({:.0} s)",
                        result.passed, result.failed, result.seconds
                    );
                    report.results.push(((*name).to_owned(), result));
                }
            }
            ["KEELSON-DONE", ..] => report.finished = true,
            _ => {
                if in_check && line.contains("keelson-node-agent check:") {
                    report.check_error.push(line.clone());
                }
                if let Some((_, result, _)) = current.as_mut() {
                    if line.starts_with("test ")
                        && (line.ends_with(" ... FAILED") || line.ends_with(" ... ok"))
                    {
                        println!("{at}   {line}");
                    }
                    if line.starts_with("thread '") && line.contains("panicked at") {
                        result.failures.push(line.clone());
                        panic_lines = 3;
                    } else if panic_lines > 0 {
                        panic_lines -= 1;
                        if !line.starts_with("note:") && !line.is_empty() {
                            result.failures.push(format!("  {line}"));
                        }
                    }
                }
            }
        }
    }
    if timed_out {
        println!(
            "[{series}] no end after {} s: killing qemu",
            timeout.as_secs()
        );
        let _ = child.kill();
    }
    let status = child.wait()?;
    let _ = reader.join();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    if !err.trim().is_empty() {
        let _ = writeln!(log, "--- qemu stderr ---\n{err}");
    }
    log.flush()?;
    if let Some((name, mut result, t)) = current.take() {
        result.seconds = t.elapsed().as_secs_f64();
        report.results.push((name, result));
    }
    if !report.finished {
        println!(
            "[{series}] the VM did not finish (qemu {status}{}); see {}",
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", err.trim())
            },
            log_path.display()
        );
    }
    Ok(report)
}

fn summarize(reports: &[Report]) -> anyhow::Result<()> {
    let mut bad = false;
    println!("\n==> vm-test results");
    for r in reports {
        println!(
            "\nkernel {} ({}): boot {}, total {:.0} s{}; log {}",
            r.series,
            r.release,
            r.boot
                .map_or_else(|| "none".to_owned(), |b| format!("{b:.0} s")),
            r.total.as_secs_f64(),
            if r.finished { "" } else { ", DID NOT FINISH" },
            r.log.display()
        );
        bad |= !r.finished;
        println!(
            "  {:<26} {:>6} {:>6} {:>7}",
            "BINARY", "PASSED", "FAILED", "SECONDS"
        );
        let check = match r.check {
            Some(0) => "ok",
            Some(_) => "FAILED",
            None => "not run",
        };
        println!("  {:<26} {check:>21}", "keelson-node-agent check");
        bad |= r.check != Some(0);
        for line in &r.check_error {
            println!("      {line}");
        }
        for (name, result) in &r.results {
            let incomplete = result.rc.is_empty();
            println!(
                "  {name:<26} {:>6} {:>6} {:>7.0}{}",
                result.passed,
                result.failed,
                result.seconds,
                if incomplete {
                    "  (did not finish)".to_owned()
                } else if result.failed == 0 && result.rc != "0" {
                    format!("  (exit status {} without failed tests)", result.rc)
                } else {
                    String::new()
                }
            );
            bad |= incomplete || result.failed > 0 || result.rc != "0";
            for line in &result.failures {
                println!("      {line}");
            }
        }
    }
    if bad {
        bail!("some VM tests failed or did not finish (serial logs above)");
    }
    println!("\nall VM tests passed");
    Ok(())
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
    fn executables_from_cargo_messages() {
        let out = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"keelson_tests"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"keelson-test-client"},"executable":"/t/debug/keelson-test-client","fresh":true}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"datapath_tc_lb"},"executable":"/t/debug/deps/datapath_tc_lb-0123","fresh":false}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executables_in(out),
            vec![
                (
                    "keelson-test-client".to_owned(),
                    vec!["bin".to_owned()],
                    PathBuf::from("/t/debug/keelson-test-client")
                ),
                (
                    "datapath_tc_lb".to_owned(),
                    vec!["test".to_owned()],
                    PathBuf::from("/t/debug/deps/datapath_tc_lb-0123")
                ),
            ]
        );
    }

    #[test]
    fn modinfo_reads_depends() {
        let section = b"xx\0license=GPL\0depends=udp_tunnel,ip6_udp_tunnel\0name=vxlan\0";
        assert_eq!(modinfo(section, "depends"), "udp_tunnel,ip6_udp_tunnel");
        assert_eq!(modinfo(section, "missing"), "");
    }
}
