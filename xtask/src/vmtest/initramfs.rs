//! The VMs' initramfs: busybox, iproute2, the binaries with their libraries, modules, `/init`.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::BufWriter,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use keelson_testbed::cpio::Cpio;

use super::{
    binaries::Binaries,
    find_on_path,
    kernel::{Kernel, modules},
};
use crate::cmd;

/// Kernel modules the tests need (with their dependencies); built-in ones are skipped.
pub(super) const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf", "vxlan", "bridge"];

/// The modules netlink TC attach needs (the clsact qdisc, the BPF classifier): the suite's
/// first `check` runs without them.
pub(super) const NETLINK_TC_MODULES: &[&str] = &["sch_ingress", "cls_bpf"];

/// The shared libraries and loader `ldd` lists for `binary` (none for static binaries).
pub(super) fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
pub(super) struct Contents {
    /// Executables, each at its host path, with the shared libraries they need.
    pub(super) executables: Vec<PathBuf>,
    /// Modules to load (with their dependencies) unless built in.
    pub(super) modules: Vec<&'static str>,
    /// Those of `modules` that `/init` loads itself, later (`/etc/keelson-modules-late`).
    pub(super) late_modules: Vec<&'static str>,
    /// The `/init` script.
    pub(super) init: String,
}

/// The datapath suite's initramfs: the agent, the test client and the test binaries.
pub(super) fn suite_contents(binaries: &Binaries) -> Contents {
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
pub(super) const DOCKER_PROGRAMS: &[&str] = &[
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker",
];

/// A node's initramfs: the agent and Docker; `/init` starts both (see [`node_init_script`]).
pub(super) fn node_contents(binaries: &Binaries) -> anyhow::Result<Contents> {
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

pub(super) fn build_initramfs(
    kernel: &Kernel,
    contents: &Contents,
    initrd: &Path,
) -> anyhow::Result<()> {
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
pub(super) const INIT_MOUNTS: &str = r#"#!/bin/sh
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
pub(super) const INIT_MODULES: &str = r#"for m in $(cat /etc/keelson-modules); do
  insmod /lib/modules/$m.ko || echo "KEELSON-MODULE-FAILED $m"
done
ip link set lo up
"#;

/// The datapath suite VM's `/init`: mounts, modules, then the agent's check and each test
/// binary, with markers the host parses.
pub(super) fn init_script(agent: &Path, tests: &[(String, PathBuf)]) -> String {
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
pub(super) fn node_init_script(agent: &Path) -> String {
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
