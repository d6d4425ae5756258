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
//! `target/vm/<series>.log`. The first `check` runs before the netlink TC modules are loaded:
//! below 6.6 (no TCX) `run` must refuse that kernel, naming what is missing.
//!
//! Then, per kernel, the two-VM scenario: a node initramfs (busybox, iproute2, Docker's
//! programs, the agent; `/init` brings up `eth0`, dockerd and `keelson-node-agent run`) and the
//! `vm_cluster` test binary run on the host, where keelson-testbed starts a control plane and
//! two VM nodes on a bridge. The results end in a table per kernel, lines in nextest's format
//! and `target/vm/junit-<series>.xml`.

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

use keelson_testbed::cpio::Cpio;

use crate::cmd::{self, command, repo_root};

/// The datapath test binaries (integration tests of keelson-tests) the VMs run.
const DATAPATH_TESTS: &[&str] = &[
    "datapath_sock_lb",
    "datapath_tc_lb",
    "datapath_counters",
    "datapath_ct_gc",
    "datapath_nodeport_snat",
    "datapath_verifier",
];

/// Kernel modules the tests need (with their dependencies); built-in ones are skipped.
const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf", "vxlan", "bridge"];

/// The modules netlink TC attach needs (the clsact qdisc, the BPF classifier): the suite's
/// first `check` runs without them.
const NETLINK_TC_MODULES: &[&str] = &["sch_ingress", "cls_bpf"];

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
    /// qemu's accelerator: `tcg` (emulation, works everywhere) or `kvm` (where `/dev/kvm`
    /// works; nested KVM on these build machines does not boot).
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    accel: String,
    /// Use this already-built node agent instead of building (keelson-test-client must be next
    /// to it); needs --test-binary.
    #[arg(long, requires = "test_binaries")]
    agent: Option<PathBuf>,
    /// An already-built datapath test binary to run instead of building them (repeatable).
    #[arg(long = "test-binary", requires = "agent")]
    test_binaries: Vec<PathBuf>,
    /// The already-built two-VM scenario test (`vm_cluster`); needs --agent.
    #[arg(long, requires = "agent")]
    cluster_test: Option<PathBuf>,
    /// Only the datapath suite in one VM per kernel, not the two-VM cluster.
    #[arg(long, conflicts_with = "no_suite")]
    no_cluster: bool,
    /// Only the two-VM cluster, not the datapath suite.
    #[arg(long)]
    no_suite: bool,
    /// Instead: the packages from `dist` on a Debian 12 OS (systemd, Docker from apt) in one
    /// VM, joined to a control plane on the host (see xtask/src/vm_os/).
    #[arg(long, conflicts_with_all = ["kernels", "agent", "no_cluster", "no_suite"])]
    os: bool,
}

impl VmTestArgs {
    /// One kernel series with the default timeout, building the binaries (what `cargo xtask
    /// test` runs).
    pub fn kernel(series: &str) -> Self {
        Self {
            kernels: vec![series.to_owned()],
            timeout_minutes: 20,
            accel: "tcg".to_owned(),
            agent: None,
            test_binaries: Vec::new(),
            cluster_test: None,
            no_cluster: false,
            no_suite: false,
            os: false,
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
    /// The two-VM scenario's test binary (run on the host; keelson-control-plane is next to
    /// the agent).
    cluster_test: PathBuf,
}

/// The two-VM scenario's test binary (tests/tests/vm_cluster.rs).
const CLUSTER_TEST: &str = "vm_cluster";

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    if args.os {
        return crate::vm_os::run(&args.accel, Duration::from_secs(args.timeout_minutes * 60));
    }
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
        Some(agent) => prebuilt(
            agent,
            &args.test_binaries,
            args.cluster_test
                .as_deref()
                .context("--agent needs --cluster-test too")?,
        )?,
        None => build()?,
    };
    let vm_dir = target_dir().join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("cannot create {}", vm_dir.display()))?;

    let mut reports = Vec::new();
    for s in series {
        println!("==> vm-test: kernel {s}");
        let started = Instant::now();
        let kernel = fetch_kernel(&vm_dir, s)?;
        let log = vm_dir.join(format!("{s}.log"));
        let mut report = if args.no_suite {
            Report::new(s, &kernel, &log, false)
        } else {
            let initrd = vm_dir.join(format!("initrd-{s}.gz"));
            let t = Instant::now();
            build_initramfs(&kernel, &suite_contents(&binaries), &initrd)?;
            println!(
                "  initramfs {} ({} MB, {:.1} s)",
                initrd.display(),
                fs::metadata(&initrd)?.len() / 1_000_000,
                t.elapsed().as_secs_f64()
            );
            boot(
                s,
                &kernel,
                &initrd,
                &log,
                Duration::from_secs(args.timeout_minutes * 60),
                &args.accel,
            )?
        };
        report.total = started.elapsed();
        if !args.no_cluster {
            let node_initrd = vm_dir.join(format!("initrd-{s}-node.gz"));
            let t = Instant::now();
            build_initramfs(&kernel, &node_contents(&binaries)?, &node_initrd)?;
            println!(
                "  node initramfs {} ({} MB, {:.1} s)",
                node_initrd.display(),
                fs::metadata(&node_initrd)?.len() / 1_000_000,
                t.elapsed().as_secs_f64()
            );
            let result = run_cluster_test(
                s,
                &kernel,
                &node_initrd,
                &binaries.cluster_test,
                Duration::from_secs(args.timeout_minutes * 60),
                &args.accel,
            )?;
            report.results.push((CLUSTER_TEST.to_owned(), result));
        }
        reports.push(report);
    }
    summarize(&reports, &vm_dir)
}

fn program_on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// Where `program` is on `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or the repository's `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| repo_root().join("target"), |d| repo_root().join(d))
}

fn prebuilt(agent: &Path, tests: &[PathBuf], cluster_test: &Path) -> anyhow::Result<Binaries> {
    let agent = fs::canonicalize(agent).with_context(|| format!("{}", agent.display()))?;
    for sibling in ["keelson-test-client", "keelson-control-plane"] {
        let path = agent.with_file_name(sibling);
        if !path.is_file() {
            bail!(
                "{} is missing (it must be next to the agent)",
                path.display()
            );
        }
    }
    let client = agent.with_file_name("keelson-test-client");
    let cluster_test =
        fs::canonicalize(cluster_test).with_context(|| format!("{}", cluster_test.display()))?;
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
        cluster_test,
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
        "-p",
        "keelson-control-plane",
        "--bin",
        "keelson-node-agent",
        "--bin",
        "keelson-control-plane",
    ]];
    let mut tests = vec!["build", "-p", "keelson-tests"];
    for t in DATAPATH_TESTS.iter().chain([&CLUSTER_TEST]) {
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
        cluster_test: find(CLUSTER_TEST, "test")?,
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
fn modules(kernel: &Kernel, wanted: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
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

/// What goes into an initramfs besides busybox, dash and iproute2.
struct Contents {
    /// Executables, each at its host path, with the shared libraries they need.
    executables: Vec<PathBuf>,
    /// Modules to load (with their dependencies) unless built in.
    modules: Vec<&'static str>,
    /// Those of `modules` that `/init` loads itself, later (`/etc/keelson-modules-late`).
    late_modules: Vec<&'static str>,
    /// The `/init` script.
    init: String,
}

/// The datapath suite's initramfs: the agent, the test client and the test binaries.
fn suite_contents(binaries: &Binaries) -> Contents {
    let mut executables = vec![binaries.agent.clone(), binaries.client.clone()];
    executables.extend(binaries.tests.iter().map(|(_, path)| path.clone()));
    let mut modules = MODULES.to_vec();
    modules.extend(["virtio_pci", "virtio_rng"]);
    Contents {
        executables,
        modules,
        late_modules: NETLINK_TC_MODULES.to_vec(),
        init: init_script(&binaries.agent, &binaries.tests),
    }
}

/// Docker's programs as `docker.io` installs them: the daemon, containerd and its runc shim,
/// runc, and the CLI (which imports the node's image).
const DOCKER_PROGRAMS: &[&str] = &[
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker",
];

/// A node's initramfs: the agent and Docker; `/init` starts both (see [`node_init_script`]).
fn node_contents(binaries: &Binaries) -> anyhow::Result<Contents> {
    let mut executables = vec![binaries.agent.clone()];
    for program in DOCKER_PROGRAMS {
        let path = find_on_path(program)
            .with_context(|| format!("`{program}` is not installed: run `cargo xtask setup`"))?;
        executables.push(path);
    }
    let mut modules = MODULES.to_vec();
    modules.extend(["virtio_pci", "virtio_net", "virtio_rng", "overlay"]);
    Ok(Contents {
        executables,
        modules,
        late_modules: Vec::new(),
        init: node_init_script(&binaries.agent),
    })
}

fn build_initramfs(kernel: &Kernel, contents: &Contents, initrd: &Path) -> anyhow::Result<()> {
    let file =
        fs::File::create(initrd).with_context(|| format!("cannot create {}", initrd.display()))?;
    let mut gzip = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("cannot start gzip")?;
    let stdin = gzip.stdin.take().context("gzip's stdin")?;
    let mut cpio = Cpio::new(BufWriter::with_capacity(1 << 20, stdin));
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
    for executable in &contents.executables {
        elves.push((executable.clone(), fs::canonicalize(executable)?));
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

    let modules = modules(kernel, &contents.modules)?;
    // The suite's VM loads the netlink TC modules only after a first `check` without them (a
    // kernel without TCX must then be refused, one with TCX must not care).
    let mut module_list = String::new();
    let mut late_list = String::new();
    for (name, bytes) in &modules {
        cpio.file(&format!("/lib/modules/{name}.ko"), 0o644, bytes)?;
        let list = if contents.late_modules.contains(&name.as_str()) {
            &mut late_list
        } else {
            &mut module_list
        };
        let _ = writeln!(list, "{name}");
    }
    cpio.file("/etc/keelson-modules", 0o644, module_list.as_bytes())?;
    cpio.file("/etc/keelson-modules-late", 0o644, late_list.as_bytes())?;
    cpio.file("/init", 0o755, contents.init.as_bytes())?;

    let out = cpio.finish()?;
    drop(out.into_inner().map_err(|e| e.into_error())?);
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip failed with {status}");
    }
    Ok(())
}

/// The start of every VM's `/init`: the kernel's file systems and the console.
const INIT_MOUNTS: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin HOME=/root RUST_BACKTRACE=0
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
# keelson's binaries sit at their host paths (tests find them by compile-time path): a scratch
# tmpfs goes only where it hides nothing, e.g. not over /tmp when the checkout is in /tmp (the
# initramfs itself is writable).
for d in /run /tmp; do [ -z "$(ls -A $d)" ] && mount -t tmpfs tmpfs $d; done
mount -t bpf bpf /sys/fs/bpf
"#;

/// Loads the initramfs's modules (`/etc/keelson-modules`, dependencies first).
const INIT_MODULES: &str = r#"for m in $(cat /etc/keelson-modules); do
  insmod /lib/modules/$m.ko || echo "KEELSON-MODULE-FAILED $m"
done
ip link set lo up
"#;

/// The datapath suite VM's `/init`: mounts, modules, then the agent's check and each test
/// binary, with markers the host parses.
fn init_script(agent: &Path, tests: &[(String, PathBuf)]) -> String {
    let mut s = format!(
        r#"{INIT_MOUNTS}mount -t tmpfs cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 none /sys/fs/cgroup/unified
mkdir -p /run/keelson-tests
{INIT_MODULES}echo "KEELSON-BOOTED $(cut -d' ' -f1 /proc/uptime) $(uname -r)"
echo "KEELSON-BEGIN bare-check $(wc -l < /etc/keelson-modules-late)"
{agent} check
echo "KEELSON-BARE-CHECK $?"
for m in $(cat /etc/keelson-modules-late); do
  insmod /lib/modules/$m.ko || echo "KEELSON-MODULE-FAILED $m"
done
"#,
        agent = agent.display()
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

/// A VM node's `/init` (see `keelson_testbed::VmNodes`): `eth0` from `/etc/keelson/node.env`,
/// dockerd on a tmpfs (`DOCKER_RAMDISK`: runc cannot pivot_root out of an initramfs; no
/// iptables and no bridge: pods get their network from the agent), the test image imported
/// from busybox as `cargo xtask images` builds it, then the agent. The VM powers off when the
/// agent exits.
fn node_init_script(agent: &Path) -> String {
    format!(
        r#"{INIT_MOUNTS}mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /var/lib/docker /var/lib/keelson /var/log
mount -t tmpfs tmpfs /var/lib/docker
{INIT_MODULES}. /etc/keelson/node.env
hostname "$NODE_NAME"
touch /etc/hosts /etc/resolv.conf
ip link set eth0 mtu 1500 up
ip addr add "$NODE_ADDRESS/24" dev eth0
echo "KEELSON-NODE-BOOTED $(cut -d' ' -f1 /proc/uptime) $(uname -r) $NODE_NAME $NODE_ADDRESS"
DOCKER_RAMDISK=true dockerd --iptables=false --ip6tables=false --bridge=none \
  --ip-forward=false --ip-masq=false --storage-driver=overlay2 >/var/log/dockerd.log 2>&1 &
i=0
until docker version >/dev/null 2>&1; do
  i=$((i + 1))
  if [ $i -gt 120 ]; then echo "KEELSON-NODE-FAILED dockerd"; tail -n 20 /var/log/dockerd.log; poweroff -f; fi
  sleep 1
done
mkdir -p /tmp/image/bin
cp /bin/busybox /tmp/image/bin/busybox
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox /tmp/image/bin/$a; done
tar -C /tmp/image -cf /tmp/image.tar . && docker import --change 'CMD ["sh"]' /tmp/image.tar keelson/busybox:1 >/dev/null \
  || {{ echo "KEELSON-NODE-FAILED image"; poweroff -f; }}
rm -rf /tmp/image /tmp/image.tar
echo "KEELSON-NODE-DOCKER $(cut -d' ' -f1 /proc/uptime)"
export KEELSON_ROUTING RUST_LOG=info
{agent} run --node-name "$NODE_NAME" --kubeconfig /etc/keelson/kubeconfig \
  --node-address "$NODE_ADDRESS" --uplink eth0 --cgroup /sys/fs/cgroup --data-dir /var/lib/keelson \
  --metrics-listen "$NODE_ADDRESS:10249" --kubelet-listen "$NODE_ADDRESS:10250" \
  --service-cidr "$SERVICE_CIDR" $AGENT_ARGS
echo "KEELSON-NODE-AGENT-EXITED $?"
poweroff -f
"#,
        agent = agent.display()
    )
}

/// One binary's outcome in one VM.
#[derive(Debug, Default)]
struct BinaryResult {
    passed: u32,
    failed: u32,
    rc: String,
    seconds: f64,
    /// The panic lines of failed tests.
    failures: Vec<String>,
    /// Each test's name and whether it passed, in the order they ended.
    tests: Vec<(String, bool)>,
    /// Lines still to keep after a panic line.
    panic_lines: u8,
}

impl BinaryResult {
    /// Takes one line of libtest's output; returns a `test ... ok|FAILED` line, for progress.
    fn feed(&mut self, line: &str) -> Option<String> {
        if let Some(rest) = line.strip_prefix("test ") {
            for (suffix, ok) in [(" ... ok", true), (" ... FAILED", false)] {
                if let Some(name) = rest.strip_suffix(suffix) {
                    self.tests.push((name.to_owned(), ok));
                    return Some(line.to_owned());
                }
            }
        }
        if let Some(r) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                r.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.split_whitespace().last()?.parse().ok())
                    .unwrap_or(0)
            };
            self.passed = count(" passed");
            self.failed = count(" failed");
        }
        if line.starts_with("thread '") && line.contains("panicked at") {
            self.failures.push(line.to_owned());
            self.panic_lines = 3;
        } else if line.is_empty() || line.starts_with("test result:") || line == "failures:" {
            self.panic_lines = 0;
        } else if self.panic_lines > 0 {
            self.panic_lines -= 1;
            if !line.starts_with("note:") {
                self.failures.push(format!("  {line}"));
            }
        }
        None
    }
}

#[derive(Debug)]
struct Report {
    /// The datapath suite ran (`--no-suite` skips it).
    suite: bool,
    /// Seconds from qemu's start to the first test (the agent's check).
    first_test: Option<f64>,
    /// How many modules the first check ran without (the netlink TC ones that are modules).
    bare_withheld: u32,
    /// The first check's exit status.
    bare_check: Option<i32>,
    /// Its `run ...` lines: what `run` would do.
    bare_lines: Vec<String>,
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

/// Sends each line `stream` yields (lossily decoded: a serial console is not always UTF-8)
/// until it ends or nobody listens.
fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
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
    })
}

/// The lines [`forward_lines`] sends, until every sender is gone or `deadline` passes (then
/// `timed_out` is set).
struct LinesUntil {
    rx: mpsc::Receiver<String>,
    deadline: Instant,
    timed_out: bool,
}

impl Iterator for LinesUntil {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let received = self
            .deadline
            .checked_duration_since(Instant::now())
            .map(|wait| self.rx.recv_timeout(wait));
        match received {
            Some(Ok(line)) => Some(line),
            Some(Err(mpsc::RecvTimeoutError::Disconnected)) => None,
            None | Some(Err(mpsc::RecvTimeoutError::Timeout)) => {
                self.timed_out = true;
                None
            }
        }
    }
}

impl Report {
    fn new(series: &str, kernel: &Kernel, log: &Path, suite: bool) -> Self {
        Self {
            suite,
            first_test: None,
            bare_withheld: 0,
            bare_check: None,
            bare_lines: Vec::new(),
            series: series.to_owned(),
            release: kernel.release.clone(),
            boot: None,
            check: None,
            check_error: Vec::new(),
            results: Vec::new(),
            finished: false,
            total: Duration::ZERO,
            log: log.to_path_buf(),
        }
    }
}

fn boot(
    series: &str,
    kernel: &Kernel,
    initrd: &Path,
    log_path: &Path,
    timeout: Duration,
    accel: &str,
) -> anyhow::Result<Report> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-m", "2048", "-smp", "2", "-kernel"])
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
            // Entropy from the host, so nothing in the VM waits in getrandom().
            "-device",
            "virtio-rng-pci",
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
    let reader = forward_lines(stdout, tx);

    let mut report = Report::new(series, kernel, log_path, true);
    let mut current: Option<(String, BinaryResult, Instant)> = None;
    let mut in_check = false;
    let mut in_bare = false;
    let mut lines = LinesUntil {
        rx,
        deadline: started + timeout,
        timed_out: false,
    };
    for line in lines.by_ref() {
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
            ["KEELSON-BEGIN", "bare-check", withheld] => {
                in_bare = true;
                report.bare_withheld = withheld.parse().unwrap_or(0);
                report.first_test = Some(started.elapsed().as_secs_f64());
            }
            ["KEELSON-BARE-CHECK", rc] => {
                in_bare = false;
                report.bare_check = Some(rc.parse().unwrap_or(-1));
                println!(
                    "{at} keelson-node-agent check without sch_ingress and cls_bpf: exit {rc}{}",
                    report
                        .bare_lines
                        .last()
                        .map_or_else(String::new, |l| format!(", {l}"))
                );
            }
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
                if in_bare && (line.starts_with("run ") || line.starts_with("run:")) {
                    report.bare_lines.push(line.clone());
                }
                if in_check && line.contains("keelson-node-agent check:") {
                    report.check_error.push(line.clone());
                }
                if let Some((_, result, _)) = current.as_mut()
                    && let Some(progress) = result.feed(&line)
                {
                    println!("{at}   {progress}");
                }
            }
        }
    }
    let timed_out = lines.timed_out;
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

/// Runs the two-VM scenario (`vm_cluster`, on the host: it starts the control plane and the
/// VMs through keelson-testbed) with this kernel and node initramfs, one test at a time.
fn run_cluster_test(
    series: &str,
    kernel: &Kernel,
    node_initrd: &Path,
    test: &Path,
    timeout: Duration,
    accel: &str,
) -> anyhow::Result<BinaryResult> {
    println!("==> vm-test: two VMs on kernel {series} ({CLUSTER_TEST}, on the host)");
    let state = node_initrd.with_file_name(format!("cluster-{series}"));
    // A fresh state directory per run, so the logs left are this run's (after removing what a
    // killed earlier run may have left running).
    for routing in ["direct", "tunnel"] {
        keelson_testbed::down_from_state(&state.join(routing))
            .with_context(|| format!("removing a previous run's {routing} cluster"))?;
    }
    let _ = fs::remove_dir_all(&state);
    let mut cmd = Command::new(test);
    cmd.args(["--test-threads", "1"])
        .env("KEELSON_VM_KERNEL", &kernel.vmlinuz)
        .env("KEELSON_VM_INITRD", node_initrd)
        .env("KEELSON_VM_STATE_DIR", &state)
        .env("KEELSON_VM_ACCEL", accel)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("$ {}", cmd::display(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", test.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward_lines(child.stdout.take().context("stdout")?, tx.clone()),
        forward_lines(child.stderr.take().context("stderr")?, tx),
    ];
    let mut result = BinaryResult::default();
    let mut lines = LinesUntil {
        rx,
        deadline: started + timeout,
        timed_out: false,
    };
    for line in lines.by_ref() {
        let at = format!(
            "[{series} two-VM {:>5.0}s]",
            started.elapsed().as_secs_f64()
        );
        match result.feed(&line) {
            Some(progress) => println!("{at} {progress}"),
            // The test's own progress lines (stderr), and failures.
            None if line.starts_with("vm_cluster:") || line.starts_with("thread '") => {
                println!("{at} {line}");
            }
            None => {}
        }
    }
    let timed_out = lines.timed_out;
    if timed_out {
        println!(
            "[{series} two-VM] no end after {} s: killing it",
            timeout.as_secs()
        );
        let _ = child.kill();
    }
    let status = child.wait()?;
    for reader in readers {
        let _ = reader.join();
    }
    // A test that panics removes its cluster as it unwinds; a killed one leaves its state
    // file, which names what to remove.
    for routing in ["direct", "tunnel"] {
        if let Err(error) = keelson_testbed::down_from_state(&state.join(routing)) {
            println!("[{series} two-VM] removing the {routing} cluster: {error:#}");
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.rc = if timed_out {
        String::new()
    } else {
        status
            .code()
            .map_or_else(|| status.to_string(), |c| c.to_string())
    };
    println!(
        "[{series} two-VM] {} passed, {} failed ({:.0} s)",
        result.passed, result.failed, result.seconds
    );
    Ok(result)
}

fn summarize(reports: &[Report], vm_dir: &Path) -> anyhow::Result<()> {
    let mut bad = false;
    println!("\n==> vm-test results");
    for r in reports {
        if r.suite {
            println!(
                "\nkernel {} ({}): booted in {}, first test at {}, suite {:.0} s{}; log {}",
                r.series,
                r.release,
                r.boot
                    .map_or_else(|| "none".to_owned(), |b| format!("{b:.0} s")),
                r.first_test
                    .map_or_else(|| "none".to_owned(), |b| format!("{b:.0} s")),
                r.total.as_secs_f64(),
                if r.finished { "" } else { ", DID NOT FINISH" },
                r.log.display()
            );
            bad |= !r.finished || r.check != Some(0);
        } else {
            println!(
                "\nkernel {} ({}): datapath suite not run (--no-suite)",
                r.series, r.release
            );
        }
        println!(
            "  {:<34} {:>6} {:>6} {:>7}",
            "BINARY", "PASSED", "FAILED", "SECONDS"
        );
        if r.suite {
            let (bare_ok, bare) = bare_check_verdict(r);
            bad |= !bare_ok;
            println!("  {:<34} {bare:>21}", "check, no sch_ingress/cls_bpf");
            for line in &r.bare_lines {
                println!("      {line}");
            }
            let check = match r.check {
                Some(0) => "ok",
                Some(_) => "FAILED",
                None => "not run",
            };
            println!("  {:<34} {check:>21}", "keelson-node-agent check");
            for line in &r.check_error {
                println!("      {line}");
            }
        }
        for (name, result) in &r.results {
            let incomplete = result.rc.is_empty();
            let label = if name == CLUSTER_TEST {
                format!("{name} (two VMs, on the host)")
            } else {
                name.clone()
            };
            println!(
                "  {label:<34} {:>6} {:>6} {:>7.0}{}",
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

    // The same results as nextest reports its own: a line per test, a summary line per kernel,
    // and a JUnit file per kernel for CI systems that collect them.
    println!("\n------------");
    for r in reports {
        let mut cases: Vec<(String, bool)> = Vec::new();
        if r.suite {
            cases.push((
                "keelson-node-agent check without sch_ingress and cls_bpf".to_owned(),
                bare_check_verdict(r).0,
            ));
            cases.push(("keelson-node-agent check".to_owned(), r.check == Some(0)));
        }
        for (binary, result) in &r.results {
            for (test, ok) in &result.tests {
                cases.push((format!("{binary}::{test}"), *ok));
            }
            if result.rc.is_empty() || (result.failed == 0 && result.rc != "0") {
                cases.push((format!("{binary} (did not finish)"), false));
            }
        }
        for (name, ok) in &cases {
            println!(
                "        {} [{:>5}] {name}",
                if *ok { "PASS" } else { "FAIL" },
                r.series
            );
        }
        let failed = cases.iter().filter(|(_, ok)| !ok).count();
        let seconds = r.total.as_secs_f64()
            + r.results
                .iter()
                .filter(|(n, _)| n == CLUSTER_TEST)
                .map(|(_, res)| res.seconds)
                .sum::<f64>();
        println!(
            "     Summary [{seconds:>8.3}s] {} tests run: {} passed, {failed} failed, 0 skipped \
             (kernel {})",
            cases.len(),
            cases.len() - failed,
            r.release
        );
        let junit = vm_dir.join(format!("junit-{}.xml", r.series));
        fs::write(&junit, junit_xml(&r.release, &cases, seconds))
            .with_context(|| format!("cannot write {}", junit.display()))?;
        println!("     JUnit   {}", junit.display());
    }
    if bad {
        bail!("some VM tests failed or did not finish (serial logs above)");
    }
    println!("\nall VM tests passed");
    Ok(())
}

/// Whether the first check (without the netlink TC modules) did what this kernel calls for,
/// and a word on it: below 6.6 (no TCX) `run` must refuse, naming TCX and the missing module;
/// from 6.6 on the modules are not needed.
fn bare_check_verdict(r: &Report) -> (bool, &'static str) {
    let version = numbers(&r.release);
    let has_tcx = version.get(..2).is_some_and(|v| (v[0], v[1]) >= (6, 6));
    let refused = r
        .bare_lines
        .iter()
        .any(|l| l.starts_with("run refuses:") && l.contains("TCX (Linux >= 6.6)"));
    match r.bare_check {
        None => (false, "not run"),
        Some(_) if r.bare_withheld == 0 => (false, "nothing withheld"),
        Some(0) if has_tcx => (true, "ok (TCX)"),
        Some(rc) if rc != 0 && !has_tcx && refused => (true, "refused (expected)"),
        Some(_) => (false, "FAILED"),
    }
}

/// A JUnit report of one kernel's test cases.
fn junit_xml(release: &str, cases: &[(String, bool)], seconds: f64) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failed = cases.iter().filter(|(_, ok)| !ok).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"vm-test\" tests=\"{}\" \
         failures=\"{failed}\" time=\"{seconds:.3}\">\n  <testsuite name=\"kernel {}\" tests=\"{}\" \
         failures=\"{failed}\">\n",
        cases.len(),
        escape(release),
        cases.len()
    );
    for (name, ok) in cases {
        let (class, test) = name
            .split_once("::")
            .unwrap_or((name.as_str(), name.as_str()));
        let _ = write!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\"",
            escape(class),
            escape(test)
        );
        if *ok {
            xml.push_str("/>\n");
        } else {
            xml.push_str("><failure message=\"failed\"/></testcase>\n");
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
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
    fn libtest_output_gives_each_test_and_the_counts() {
        let mut result = BinaryResult::default();
        let out = "running 2 tests\ntest a ... ok\ntest b ... FAILED\n\
                   thread 'b' (7) panicked at tests/x.rs:3:5:\nboom\n\
                   test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        let progress: Vec<String> = out.lines().filter_map(|l| result.feed(l)).collect();
        assert_eq!(progress, ["test a ... ok", "test b ... FAILED"]);
        assert_eq!(
            result.tests,
            [("a".to_owned(), true), ("b".to_owned(), false)]
        );
        assert_eq!((result.passed, result.failed), (1, 1));
        assert_eq!(
            result.failures,
            ["thread 'b' (7) panicked at tests/x.rs:3:5:", "  boom"]
        );
    }

    fn bare(release: &str, rc: i32, line: &str) -> Report {
        let kernel = Kernel {
            release: release.to_owned(),
            vmlinuz: PathBuf::new(),
            modules: PathBuf::new(),
        };
        let mut r = Report::new("x", &kernel, Path::new("log"), true);
        r.bare_withheld = 2;
        r.bare_check = Some(rc);
        r.bare_lines.push(line.to_owned());
        r
    }

    #[test]
    fn without_netlink_tc_a_kernel_before_6_6_must_be_refused() {
        let refusal = "run refuses: keelson-node-agent needs TC attach: TCX (Linux >= 6.6) or \
                       the clsact qdisc (sch_ingress, CONFIG_NET_SCH_INGRESS); this kernel is \
                       6.1.0 and has neither";
        assert!(bare_check_verdict(&bare("6.1.0-56-amd64", 1, refusal)).0);
        assert!(!bare_check_verdict(&bare("6.1.0-56-amd64", 0, "run: every feature used")).0);
        assert!(bare_check_verdict(&bare("6.12.117+deb12-amd64", 0, "run: every feature used")).0);
        assert!(!bare_check_verdict(&bare("6.12.117+deb12-amd64", 1, refusal)).0);
    }

    #[test]
    fn modinfo_reads_depends() {
        let section = b"xx\0license=GPL\0depends=udp_tunnel,ip6_udp_tunnel\0name=vxlan\0";
        assert_eq!(modinfo(section, "depends"), "udp_tunnel,ip6_udp_tunnel");
        assert_eq!(modinfo(section, "missing"), "");
    }
}
