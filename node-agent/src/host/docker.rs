//! Docker's cgroup driver and where pod containers land in the cgroup2 tree.
//!
//! Docker names a container's cgroup parent in one of two forms, after its cgroup driver
//! (`docker info`: `CgroupDriver`): under `cgroupfs` a path (`/keelson-pods`, the container at
//! `<parent>/<id>`), under `systemd` (the default on cgroup v2) a slice (`keelson-pods.slice`,
//! the container in the scope `docker-<id>.scope` of that slice, which systemd nests by the
//! dashes of its name: `a-b.slice` lives in `a.slice/a-b.slice`). The agent reads the driver
//! from the engine, refuses a `--cgroup-parent` of the other form, and computes the cgroup2
//! directory holding its pods (pure functions below).

use std::path::{Path, PathBuf};

/// Docker's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Cgroups are directories the engine creates (`--cgroup-parent` is a path).
    Cgroupfs,
    /// Cgroups are systemd units (`--cgroup-parent` is a slice name).
    Systemd,
}

impl std::fmt::Display for CgroupDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cgroupfs => "cgroupfs",
            Self::Systemd => "systemd",
        })
    }
}

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// Its version (`ServerVersion`).
    pub version: String,
    /// Its cgroup driver.
    pub driver: CgroupDriver,
    /// The cgroup version it runs containers under (`1` or `2`; empty when it does not say).
    pub cgroup_version: String,
}

/// Why Docker or a `--cgroup-parent` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine did not answer.
    #[error(
        "Docker is not reachable at {socket} (install it with `apt-get install docker.io`, start \
         it with `systemctl start docker`)"
    )]
    Unreachable {
        /// The socket tried.
        socket: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine runs without cgroups or with a driver keelson does not know.
    #[error("Docker's cgroup driver is {0:?}: keelson needs `systemd` or `cgroupfs`")]
    Driver(String),
    /// `--cgroup-parent` is of the wrong form for the engine's driver.
    #[error(transparent)]
    Parent(#[from] ParentError),
}

/// A `--cgroup-parent` of the wrong form for the driver.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParentError {
    /// The systemd driver takes a slice name.
    #[error(
        "--cgroup-parent {parent:?}: Docker uses the systemd cgroup driver, which takes a slice \
         name such as `keelson-pods.slice` (no `/`; dashes nest: `a-b.slice` is in `a.slice`)"
    )]
    NotASlice {
        /// The value given.
        parent: String,
    },
    /// The cgroupfs driver takes a path.
    #[error(
        "--cgroup-parent {parent:?}: Docker uses the cgroupfs cgroup driver, which takes a path \
         such as `/keelson-pods`, not a systemd slice"
    )]
    NotAPath {
        /// The value given.
        parent: String,
    },
}

/// Checks `parent` (`--cgroup-parent`) against Docker's `driver`.
pub fn check_parent(driver: CgroupDriver, parent: &str) -> Result<(), ParentError> {
    match driver {
        CgroupDriver::Systemd => {
            slice_path(parent)
                .map(drop)
                .ok_or_else(|| ParentError::NotASlice {
                    parent: parent.to_owned(),
                })
        }
        CgroupDriver::Cgroupfs => {
            let last = parent.rsplit('/').next().unwrap_or(parent);
            if parent.trim_matches('/').is_empty() || last.ends_with(".slice") {
                Err(ParentError::NotAPath {
                    parent: parent.to_owned(),
                })
            } else {
                Ok(())
            }
        }
    }
}

/// The directory, relative to the cgroup2 root, of systemd's slice `name` (`a-b.slice` →
/// `a.slice/a-b.slice`; `-.slice`, the root slice, → the root itself). `None` if `name` is no
/// valid slice name (a `/`, no `.slice` suffix, an empty dash-separated part).
pub fn slice_path(name: &str) -> Option<PathBuf> {
    let stem = name.strip_suffix(".slice")?;
    if name.contains('/') || stem.is_empty() {
        return None;
    }
    if stem == "-" {
        return Some(PathBuf::new());
    }
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    let mut path = PathBuf::new();
    for end in 1..=parts.len() {
        path.push(format!("{}.slice", parts[..end].join("-")));
    }
    Some(path)
}

/// The cgroup2 directory under `root` that holds the pod containers Docker creates with
/// `parent` (`--cgroup-parent`; `None` for Docker's own default) under `driver`: each container
/// is a child of it (`<id>` under cgroupfs, `docker-<id>.scope` under systemd).
pub fn pods_cgroup(root: &Path, driver: CgroupDriver, parent: Option<&str>) -> PathBuf {
    match driver {
        CgroupDriver::Systemd => {
            let slice = parent.unwrap_or("system.slice");
            root.join(slice_path(slice).unwrap_or_else(|| PathBuf::from(slice)))
        }
        CgroupDriver::Cgroupfs => root.join(parent.unwrap_or("/docker").trim_start_matches('/')),
    }
}

/// The cgroup2 directory of the container `id` created under `parent` (see [`pods_cgroup`]).
pub fn container_cgroup(
    root: &Path,
    driver: CgroupDriver,
    parent: Option<&str>,
    id: &str,
) -> PathBuf {
    let dir = pods_cgroup(root, driver, parent);
    match driver {
        CgroupDriver::Systemd => dir.join(format!("docker-{id}.scope")),
        CgroupDriver::Cgroupfs => dir.join(id),
    }
}

/// Asks the engine behind `socket` (a path or `unix://` URL) for its version and cgroup driver.
pub async fn engine(socket: &str) -> Result<Engine, DockerError> {
    use bollard::models::{SystemInfoCgroupDriverEnum as D, SystemInfoCgroupVersionEnum as V};
    let unreachable = |source| DockerError::Unreachable {
        socket: socket.to_owned(),
        source,
    };
    // Negotiated: Debian's Docker 20.10 speaks API 1.41, older than bollard's default.
    let docker = bollard::Docker::connect_with_unix(socket, 10, bollard::API_DEFAULT_VERSION)
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)?;
    let info = docker.info().await.map_err(unreachable)?;
    let driver = match info.cgroup_driver {
        Some(D::SYSTEMD) => CgroupDriver::Systemd,
        Some(D::CGROUPFS) => CgroupDriver::Cgroupfs,
        other => {
            return Err(DockerError::Driver(
                other.map(|d| d.to_string()).unwrap_or_default(),
            ));
        }
    };
    Ok(Engine {
        version: info.server_version.unwrap_or_default(),
        driver,
        cgroup_version: match info.cgroup_version {
            Some(V::_1) => "1".to_owned(),
            Some(V::_2) => "2".to_owned(),
            _ => String::new(),
        },
    })
}

/// Reads the engine and checks `parent` against its driver: the preflight of `run`.
pub async fn preflight(socket: &str, parent: Option<&str>) -> Result<Engine, DockerError> {
    let engine = engine(socket).await?;
    if let Some(parent) = parent {
        check_parent(engine.driver, parent)?;
    }
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_nest_by_their_dashes() {
        let cases = [
            (
                "keelson-pods.slice",
                Some("keelson.slice/keelson-pods.slice"),
            ),
            ("system.slice", Some("system.slice")),
            ("a-b-c.slice", Some("a.slice/a-b.slice/a-b-c.slice")),
            ("-.slice", Some("")),
            ("keelson-pods", None),
            ("/keelson-pods", None),
            ("a/b.slice", None),
            ("a--b.slice", None),
            ("-a.slice", None),
            ("a-.slice", None),
            (".slice", None),
        ];
        for (name, want) in cases {
            assert_eq!(slice_path(name), want.map(PathBuf::from), "{name}");
        }
    }

    #[test]
    fn parents_of_the_wrong_form_are_refused_in_one_line() {
        use CgroupDriver::{Cgroupfs, Systemd};
        let cases = [
            (Systemd, "keelson-pods.slice", Ok(())),
            (
                Systemd,
                "/keelson-pods",
                Err(ParentError::NotASlice {
                    parent: "/keelson-pods".into(),
                }),
            ),
            (Cgroupfs, "/keelson-pods", Ok(())),
            (Cgroupfs, "/keelson/worker-1", Ok(())),
            (
                Cgroupfs,
                "keelson-pods.slice",
                Err(ParentError::NotAPath {
                    parent: "keelson-pods.slice".into(),
                }),
            ),
            (
                Cgroupfs,
                "/",
                Err(ParentError::NotAPath { parent: "/".into() }),
            ),
        ];
        for (driver, parent, want) in cases {
            assert_eq!(check_parent(driver, parent), want, "{driver} {parent}");
        }
        assert_eq!(
            check_parent(Systemd, "/keelson-pods")
                .expect_err("a path")
                .to_string(),
            "--cgroup-parent \"/keelson-pods\": Docker uses the systemd cgroup driver, which \
             takes a slice name such as `keelson-pods.slice` (no `/`; dashes nest: `a-b.slice` \
             is in `a.slice`)"
        );
        assert_eq!(
            check_parent(Cgroupfs, "keelson-pods.slice")
                .expect_err("a slice")
                .to_string(),
            "--cgroup-parent \"keelson-pods.slice\": Docker uses the cgroupfs cgroup driver, \
             which takes a path such as `/keelson-pods`, not a systemd slice"
        );
    }

    #[test]
    fn where_pod_containers_land() {
        use CgroupDriver::{Cgroupfs, Systemd};
        let v2 = Path::new("/sys/fs/cgroup");
        let hybrid = Path::new("/sys/fs/cgroup/unified");
        let cases = [
            (
                v2,
                Systemd,
                Some("keelson-pods.slice"),
                "/sys/fs/cgroup/keelson.slice/keelson-pods.slice/docker-c0ffee.scope",
            ),
            (
                v2,
                Systemd,
                None,
                "/sys/fs/cgroup/system.slice/docker-c0ffee.scope",
            ),
            (
                v2,
                Cgroupfs,
                Some("/keelson-pods"),
                "/sys/fs/cgroup/keelson-pods/c0ffee",
            ),
            (v2, Cgroupfs, None, "/sys/fs/cgroup/docker/c0ffee"),
            (
                hybrid,
                Cgroupfs,
                Some("/keelson-worker-1"),
                "/sys/fs/cgroup/unified/keelson-worker-1/c0ffee",
            ),
            (
                hybrid,
                Systemd,
                Some("keelson.slice"),
                "/sys/fs/cgroup/unified/keelson.slice/docker-c0ffee.scope",
            ),
        ];
        for (root, driver, parent, want) in cases {
            assert_eq!(
                container_cgroup(root, driver, parent, "c0ffee"),
                PathBuf::from(want),
                "{driver} {parent:?}"
            );
        }
        assert_eq!(
            pods_cgroup(v2, Systemd, Some("keelson-pods.slice")),
            PathBuf::from("/sys/fs/cgroup/keelson.slice/keelson-pods.slice")
        );
    }
}
