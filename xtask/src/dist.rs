//! `cargo xtask dist`: Debian packages of both binaries in `target/dist/`.
//!
//! Each package holds the release binary in `/usr/bin`, its systemd unit in
//! `/lib/systemd/system`, its default config in `/etc/keelson` (a conffile, so an upgrade keeps
//! the admin's edits) and maintainer scripts that enable nothing: `postinst` only reloads
//! systemd, `prerm` stops the unit on removal, `postrm purge` removes the config. `Depends` is
//! what `dpkg-shlibdeps` finds the binary linked against (libc), plus Docker for the agent. The
//! archive is built with `dpkg-deb --build --root-owner-group`, so no fakeroot is needed.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, repo_root};

/// One package: what goes in and what it says about itself.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    /// The package's and the binary's name.
    pub name: &'static str,
    /// The control file's one-line description, then its long description.
    pub summary: &'static str,
    /// The long description (one paragraph).
    pub description: &'static str,
    /// The default config under `deploy/`, installed as `/etc/keelson/<same name>`.
    pub config: &'static str,
    /// Depends beyond the shared libraries.
    pub extra_depends: &'static str,
    /// What the user does after installing (printed by postinst).
    pub next_step: &'static str,
}

/// The packages `dist` builds.
pub const PACKAGES: [Package; 2] = [
    Package {
        name: "keelson-node-agent",
        summary: "keelson node agent: pods on Docker, pod networking, eBPF service LB",
        description: "The node daemon of a keelson cluster. Join the node with the command \
                      `keelson-control-plane token create` prints, then start it with \
                      `systemctl enable --now keelson-node-agent`.",
        config: "node-agent.yaml",
        extra_depends: "docker.io | docker-ce",
        next_step: "join this node with the line `keelson-control-plane token create` prints, \
                    then run: systemctl enable --now keelson-node-agent",
    },
    Package {
        name: "keelson-control-plane",
        summary: "keelson control plane: Kubernetes-compatible API server, scheduler, controllers",
        description: "The control plane of a keelson cluster: the API server (HTTPS), the \
                      scheduler and the controllers, state in /var/lib/keelson. Configure \
                      /etc/keelson/control-plane.yaml, then start it with \
                      `systemctl enable --now keelson-control-plane`.",
        config: "control-plane.yaml",
        extra_depends: "",
        next_step: "set bind-address and advertise-address in /etc/keelson/control-plane.yaml, \
                    then run: systemctl enable --now keelson-control-plane",
    },
];

/// Builds the release binaries and both packages; prints and returns the `.deb` paths.
pub fn run() -> anyhow::Result<Vec<PathBuf>> {
    for program in ["dpkg-deb", "dpkg-shlibdeps"] {
        if !on_path(program) {
            bail!("`{program}` is not installed (apt-get install dpkg-dev)");
        }
    }
    println!("==> dist: building release binaries");
    let release = crate::up::build_release()?;
    let out = release
        .parent()
        .context("the release directory has a parent")?
        .join("dist");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let version = workspace_version()?;
    let mut debs = Vec::new();
    for package in PACKAGES {
        let deb = build_deb(&package, &release.join(package.name), &version, &out)?;
        println!(
            "  {} ({} MB)",
            deb.display(),
            fs::metadata(&deb)?.len() / 1_000_000
        );
        debs.push(deb);
    }
    Ok(debs)
}

/// Whether `program` is an executable file in a directory of `PATH`.
pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        || Path::new("/usr/sbin").join(program).is_file()
        || Path::new("/sbin").join(program).is_file()
}

/// `version = "..."` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version() -> anyhow::Result<String> {
    let path = repo_root().join("Cargo.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_workspace_version(&text)
        .with_context(|| format!("{} has no version in [workspace.package]", path.display()))
}

fn parse_workspace_version(manifest: &str) -> Option<String> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if in_section && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

/// Builds `<out>/<name>_<version>_amd64.deb` from `binary`.
pub fn build_deb(
    package: &Package,
    binary: &Path,
    version: &str,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    let stage = out.join(format!("{}.stage", package.name));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    }
    let deploy = repo_root().join("deploy");
    let unit = format!("{}.service", package.name);
    let files: [(PathBuf, String, u32); 3] = [
        (
            binary.to_path_buf(),
            format!("usr/bin/{}", package.name),
            0o755,
        ),
        (
            deploy.join(&unit),
            format!("lib/systemd/system/{unit}"),
            0o644,
        ),
        (
            deploy.join(package.config),
            format!("etc/keelson/{}", package.config),
            0o644,
        ),
    ];
    for (from, to, mode) in &files {
        let dest = stage.join(to);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::copy(from, &dest)
            .with_context(|| format!("cannot copy {} to {}", from.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))?;
    }

    let depends = shlib_depends(&stage, &stage.join(&files[0].1))?;
    let installed_kib = dir_size(&stage)?.div_ceil(1024);
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let mut scripts = vec![
        (
            "control",
            control(package, version, &depends, installed_kib),
        ),
        ("conffiles", format!("/etc/keelson/{}\n", package.config)),
    ];
    scripts.extend(maintainer_scripts(package));
    for (name, text) in scripts {
        let path = debian.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let mode = if matches!(name, "control" | "conffiles") {
            0o644
        } else {
            0o755
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    let deb = out.join(format!("{}_{version}_amd64.deb", package.name));
    cmd::run(
        command("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zxz"])
            .arg(&stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    Ok(deb)
}

/// `Depends`: the shared libraries `dpkg-shlibdeps` finds in `binary` (it reads a
/// `debian/control` in its working directory, so a throwaway one is made in `stage`).
fn shlib_depends(stage: &Path, binary: &Path) -> anyhow::Result<String> {
    let work = stage.join("debian");
    fs::create_dir_all(&work)?;
    fs::write(
        work.join("control"),
        "Source: keelson\n\nPackage: keelson\nArchitecture: amd64\n",
    )?;
    let output = command("dpkg-shlibdeps")
        .args(["-O", "-e"])
        .arg(binary)
        .current_dir(stage)
        .output()
        .context("cannot start dpkg-shlibdeps")?;
    fs::remove_dir_all(&work)?;
    if !output.status.success() {
        bail!(
            "dpkg-shlibdeps {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {stdout}"))
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The control file.
fn control(package: &Package, version: &str, shlibs: &str, installed_kib: u64) -> String {
    let depends = if package.extra_depends.is_empty() {
        shlibs.to_owned()
    } else {
        format!("{shlibs}, {}", package.extra_depends)
    };
    format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: keelson \
         developers <keelson@example.invalid>\nInstalled-Size: {installed_kib}\nDepends: \
         {depends}\nSection: admin\nPriority: optional\nHomepage: https://example.invalid/keelson\n\
         Description: {summary}\n {description}\n",
        name = package.name,
        summary = package.summary,
        description = package.description,
    )
}

/// postinst, prerm and postrm: nothing is enabled or started; removal stops the unit; purge
/// removes the config file.
fn maintainer_scripts(package: &Package) -> Vec<(&'static str, String)> {
    let unit = format!("{}.service", package.name);
    let config = format!("/etc/keelson/{}", package.config);
    vec![
        (
            "postinst",
            format!(
                "#!/bin/sh\nset -e\nif [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then\n  \
                 systemctl daemon-reload || true\nfi\nif [ \"$1\" = configure ] && [ -z \"$2\" ]; then\n  \
                 echo \"{name}: installed, not enabled: {next}\"\nfi\nexit 0\n",
                name = package.name,
                next = package.next_step,
            ),
        ),
        (
            "prerm",
            format!(
                "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n  \
                 systemctl stop {unit} || true\n  systemctl disable {unit} || true\nfi\nexit 0\n"
            ),
        ),
        (
            "postrm",
            format!(
                "#!/bin/sh\nset -e\nif [ \"$1\" = purge ]; then\n  rm -f {config}\n  \
                 rmdir --ignore-fail-on-non-empty /etc/keelson 2>/dev/null || true\nfi\n\
                 if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\nfi\nexit 0\n"
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_workspace_package() {
        let cases = [
            ("[workspace.package]\nversion = \"0.1.0\"\n", Some("0.1.0")),
            (
                "[package]\nversion = \"9.9.9\"\n[workspace.package]\nedition = \"2024\"\nversion = \"1.2.3\"\n",
                Some("1.2.3"),
            ),
            ("[package]\nversion = \"9.9.9\"\n", None),
        ];
        for (manifest, want) in cases {
            assert_eq!(
                parse_workspace_version(manifest).as_deref(),
                want,
                "{manifest}"
            );
        }
    }

    #[test]
    fn control_lists_libc_and_docker_for_the_agent_only() {
        let agent = control(&PACKAGES[0], "0.1.0", "libc6 (>= 2.34)", 12);
        assert!(
            agent.contains("\nDepends: libc6 (>= 2.34), docker.io | docker-ce\n"),
            "{agent}"
        );
        assert!(agent.starts_with("Package: keelson-node-agent\nVersion: 0.1.0\n"));
        let cp = control(&PACKAGES[1], "0.1.0", "libc6 (>= 2.34)", 12);
        assert!(cp.contains("\nDepends: libc6 (>= 2.34)\n"), "{cp}");
    }

    #[test]
    fn maintainer_scripts_enable_nothing() {
        for package in PACKAGES {
            let scripts = maintainer_scripts(&package);
            let names: Vec<&str> = scripts.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, ["postinst", "prerm", "postrm"]);
            for (name, script) in &scripts {
                // The commands the scripts run (postinst's message may name the next step).
                let commands: Vec<&str> = script
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("systemctl "))
                    .collect();
                let want: &[&str] = match *name {
                    "postinst" => &["systemctl daemon-reload || true"],
                    "prerm" => &[
                        &format!("systemctl stop {}.service || true", package.name),
                        &format!("systemctl disable {}.service || true", package.name),
                    ],
                    _ => &["systemctl daemon-reload || true"],
                };
                assert_eq!(commands, want, "{name} of {}", package.name);
            }
            let (_, postrm) = &scripts[2];
            assert!(
                postrm.contains(&format!(
                    "if [ \"$1\" = purge ]; then\n  rm -f /etc/keelson/{}\n",
                    package.config
                )),
                "{postrm}"
            );
        }
    }

    /// Builds a package from a stand-in binary and reads it back with `dpkg-deb`: the files,
    /// their modes, the conffile and the control fields a user (and dpkg) sees.
    #[test]
    fn built_deb_holds_binary_unit_conffile_and_fields() {
        if !on_path("dpkg-deb") || !on_path("dpkg-shlibdeps") {
            panic!("dpkg-deb and dpkg-shlibdeps are needed (apt-get install dpkg-dev)");
        }
        let dir = std::env::temp_dir().join(format!("keelson-dist-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        for package in PACKAGES {
            // Any dynamically linked binary stands in for ours.
            let deb = build_deb(&package, Path::new("/bin/true"), "0.1.0", &dir)
                .expect("build the package");
            assert_eq!(
                deb.file_name().and_then(|n| n.to_str()),
                Some(format!("{}_0.1.0_amd64.deb", package.name).as_str())
            );
            let contents = dpkg_deb(&["-c"], &deb);
            for (mode, path) in [
                (
                    "-rwxr-xr-x root/root",
                    format!("./usr/bin/{}", package.name),
                ),
                (
                    "-rw-r--r-- root/root",
                    format!("./lib/systemd/system/{}.service", package.name),
                ),
                (
                    "-rw-r--r-- root/root",
                    format!("./etc/keelson/{}", package.config),
                ),
            ] {
                assert!(
                    contents
                        .lines()
                        .any(|l| l.starts_with(mode) && l.ends_with(&path)),
                    "{path} ({mode}) is not in {}:\n{contents}",
                    deb.display()
                );
            }
            let field = |name: &str| {
                dpkg_deb(&["-f"], &deb)
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            };
            assert_eq!(field("Package").as_deref(), Some(package.name));
            assert_eq!(field("Version").as_deref(), Some("0.1.0"));
            assert_eq!(field("Architecture").as_deref(), Some("amd64"));
            let depends = field("Depends").expect("Depends");
            assert!(depends.starts_with("libc6 (>= "), "{depends}");
            assert_eq!(
                depends.contains("docker.io | docker-ce"),
                package.name == "keelson-node-agent",
                "{depends}"
            );
            let info = dpkg_deb(&["-I"], &deb);
            for member in ["conffiles", "postinst", "prerm", "postrm"] {
                assert!(info.contains(&format!(" {member}")), "no {member}: {info}");
            }
            let listed = std::process::Command::new("dpkg-deb")
                .arg("--info")
                .arg(&deb)
                .arg("conffiles")
                .output()
                .expect("dpkg-deb --info");
            assert_eq!(
                String::from_utf8_lossy(&listed.stdout),
                format!("/etc/keelson/{}\n", package.config)
            );
        }
        fs::remove_dir_all(&dir).expect("remove temp dir");
    }

    fn dpkg_deb(args: &[&str], deb: &Path) -> String {
        let out = std::process::Command::new("dpkg-deb")
            .args(args)
            .arg(deb)
            .output()
            .expect("dpkg-deb");
        assert!(out.status.success(), "dpkg-deb {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
