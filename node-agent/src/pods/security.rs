//! A pod's `securityContext` as Docker settings, with the kubelet's rules: the container's
//! fields win over the pod's (`runAsUser`, `runAsGroup`, `runAsNonRoot`, `seccompProfile`),
//! `fsGroup` joins the supplementary groups, `runAsNonRoot` is checked against the image's
//! `USER` when no `runAsUser` is set, and only the namespaced "safe" sysctls are admitted
//! (the kubelet's `SysctlForbidden` otherwise). Network sysctls go to the sandbox, whose
//! network namespace is the pod's; the others to each container.
//!
//! Sources: kubernetes `pkg/kubelet/kuberuntime/security_context.go`,
//! `security_context_others.go` (`verifyRunAsNonRoot`), `pkg/securitycontext/util.go`
//! (`AddNoNewPrivileges`), `pkg/kubelet/sysctl/safe_sysctls.go` and `allowlist.go`.

use std::{collections::HashMap, path::Path};

use bollard::models::{ContainerCreateBody, HostConfig};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, PodStatus, SeccompProfile, SecurityContext,
};

use super::spec::ConfigError;

/// The kubelet's admission reason for a pod with a sysctl it does not allow.
pub const SYSCTL_FORBIDDEN: &str = "SysctlForbidden";

/// The sysctls the kubelet allows without `--allowed-unsafe-sysctls`: namespaced, and with
/// no effect on other pods of the node.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Why a container may not run as its securityContext asks. The texts are the kubelet's: the
/// `runAsNonRoot` and seccomp ones are the container's `CreateContainerConfigError` message, the
/// sysctl ones follow `Pod was rejected: ` in the pod's status and `SysctlForbidden` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// `runAsNonRoot` with `runAsUser: 0`.
    #[error(
        "container's runAsUser breaks non-root policy (pod: \"{pod}\", container: {container})"
    )]
    RunAsUserRoot {
        /// The pod as the kubelet describes it, `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` with no `runAsUser` and an image `USER` given by name.
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user \
         is non-root (pod: \"{pod}\", container: {container})"
    )]
    NonNumericUser {
        /// The image's `USER`.
        user: String,
        /// The pod as the kubelet describes it.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` with no `runAsUser` and an image that runs as root.
    #[error(
        "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: \
         {container})"
    )]
    ImageRunsAsRoot {
        /// The pod as the kubelet describes it.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` with no `runAsUser` and an image uid outside 0..=2³¹-1.
    #[error(
        "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be \
         1-({max})): must be between 0 and 2147483647, inclusive (pod: \"{pod}\", container: \
         {container})",
        max = i32::MAX
    )]
    InvalidUid {
        /// The image's uid.
        uid: i64,
        /// The pod as the kubelet describes it.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// A `Localhost` seccomp profile without a path, or one leaving the seccomp directory.
    #[error("localhostProfile must be set to a path below the seccomp directory")]
    LocalhostProfile,
    /// A seccomp profile type other than RuntimeDefault, Unconfined and Localhost.
    #[error("unknown seccomp profile type {kind:?}")]
    SeccompType {
        /// The type given.
        kind: String,
    },
    /// A sysctl outside [`SAFE_SYSCTLS`].
    #[error("forbidden sysctl: \"{name}\" not allowlisted")]
    SysctlNotAllowed {
        /// The sysctl, dotted.
        name: String,
    },
    /// A network sysctl in a pod on the host's network.
    #[error("forbidden sysctl: \"{name}\" not allowed with host net enabled")]
    SysctlHostNetwork {
        /// The sysctl, dotted.
        name: String,
    },
    /// A non-network sysctl in a pod in the host's IPC namespace.
    #[error("forbidden sysctl: \"{name}\" not allowed with host ipc enabled")]
    SysctlHostIpc {
        /// The sysctl, dotted.
        name: String,
    },
}

/// `kubernetes.io/hostname`-style pod description the kubelet puts in messages:
/// `name_namespace(uid)`.
fn pod_description(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The security fields that exist at both levels, resolved (the container's win).
#[derive(Debug, Clone, Default, PartialEq)]
struct Effective {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    seccomp: Option<SeccompProfile>,
}

fn effective(pod: Option<&PodSecurityContext>, container: Option<&SecurityContext>) -> Effective {
    Effective {
        run_as_user: container
            .and_then(|c| c.run_as_user)
            .or_else(|| pod.and_then(|p| p.run_as_user)),
        run_as_group: container
            .and_then(|c| c.run_as_group)
            .or_else(|| pod.and_then(|p| p.run_as_group)),
        run_as_non_root: container
            .and_then(|c| c.run_as_non_root)
            .or_else(|| pod.and_then(|p| p.run_as_non_root)),
        seccomp: container
            .and_then(|c| c.seccomp_profile.clone())
            .or_else(|| pod.and_then(|p| p.seccomp_profile.clone())),
    }
}

/// An image's `USER` as the runtime reads it: a numeric uid, or a name (`""` is root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    /// `USER 1000` or `USER 1000:1000` (or none: 0).
    Uid(i64),
    /// `USER nobody`.
    Name(String),
}

impl ImageUser {
    /// Parses Docker's `Config.User` (`uid`, `uid:gid`, `name`, `name:group`, empty).
    pub fn parse(user: &str) -> Self {
        let user = user.split(':').next().unwrap_or_default().trim();
        if user.is_empty() {
            return Self::Uid(0);
        }
        user.parse()
            .map_or_else(|_| Self::Name(user.to_owned()), Self::Uid)
    }
}

/// The kubelet's `runAsNonRoot` check; the error is the container's
/// `CreateContainerConfigError` message.
pub fn verify_non_root(
    pod: &Pod,
    container: &Container,
    image: &ImageUser,
) -> Result<(), SecurityError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let eff = effective(pod_sc, container.security_context.as_ref());
    if eff.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod = pod_description(pod);
    let container = container.name.clone();
    match (eff.run_as_user, image) {
        (Some(0), _) => Err(SecurityError::RunAsUserRoot { pod, container }),
        (Some(_), _) => Ok(()),
        (None, ImageUser::Name(user)) => Err(SecurityError::NonNumericUser {
            user: user.clone(),
            pod,
            container,
        }),
        (None, ImageUser::Uid(0)) => Err(SecurityError::ImageRunsAsRoot { pod, container }),
        (None, ImageUser::Uid(uid)) if *uid < 0 || *uid > i64::from(i32::MAX) => {
            Err(SecurityError::InvalidUid {
                uid: *uid,
                pod,
                container,
            })
        }
        (None, ImageUser::Uid(_)) => Ok(()),
    }
}

/// Where a `Localhost` seccomp profile is read from (the kubelet's `<root>/seccomp`).
pub fn seccomp_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("seccomp")
}

/// The seccomp choice for Docker: `None` is Docker's default profile (`RuntimeDefault`),
/// `Some("unconfined")`, or a localhost profile's path below [`seccomp_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    /// The runtime's default profile.
    RuntimeDefault,
    /// No filter: the kubelet's choice when no profile is set (`seccompDefault: false`).
    Unconfined,
    /// A file below the seccomp directory.
    Localhost(String),
}

fn seccomp(profile: Option<&SeccompProfile>) -> Result<Seccomp, SecurityError> {
    let Some(profile) = profile else {
        return Ok(Seccomp::Unconfined);
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Unconfined" => Ok(Seccomp::Unconfined),
        "Localhost" => match profile.localhost_profile.as_deref() {
            Some(p) if !p.is_empty() && !p.split('/').any(|s| s == "..") => {
                Ok(Seccomp::Localhost(p.to_owned()))
            }
            _ => Err(SecurityError::LocalhostProfile),
        },
        other => Err(SecurityError::SeccompType {
            kind: other.to_owned(),
        }),
    }
}

/// Docker's settings for one container, before the localhost seccomp file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Docker's `User` (`uid`, `uid:gid`, `name:gid`); `None` keeps the image's.
    pub user: Option<String>,
    /// Supplementary groups.
    pub group_add: Vec<String>,
    /// Capabilities added and dropped (Docker's default set otherwise).
    pub cap_add: Vec<String>,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// `privileged`.
    pub privileged: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// The seccomp profile.
    pub seccomp: Option<Seccomp>,
    /// The container's (non-network) sysctls.
    pub sysctls: HashMap<String, String>,
}

/// The Docker settings for `container` of `pod`, whose image has `USER` `image_user`.
pub fn settings(
    pod: &Pod,
    container: &Container,
    image_user: &str,
) -> Result<Settings, SecurityError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    verify_non_root(pod, container, &ImageUser::parse(image_user))?;
    let eff = effective(pod_sc, sc);
    let user = match (eff.run_as_user, eff.run_as_group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => {
            let image = image_user.split(':').next().unwrap_or_default();
            let image = if image.is_empty() { "0" } else { image };
            Some(format!("{image}:{g}"))
        }
        (None, None) => None,
    };
    let mut group_add: Vec<String> = Vec::new();
    if let Some(fs_group) = pod_sc.and_then(|p| p.fs_group) {
        group_add.push(fs_group.to_string());
    }
    for g in pod_sc
        .and_then(|p| p.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
    {
        let g = g.to_string();
        if !group_add.contains(&g) {
            group_add.push(g);
        }
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);
    let seccomp = if privileged {
        None
    } else {
        Some(seccomp(eff.seccomp.as_ref())?)
    };
    let sysctls = pod_sysctls(pod)?
        .into_iter()
        .filter(|(k, _)| !is_net(k))
        .collect();
    Ok(Settings {
        user,
        group_add,
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        privileged,
        read_only_root: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp,
        sysctls,
    })
}

fn is_net(sysctl: &str) -> bool {
    sysctl.starts_with("net.")
}

/// A sysctl name with `/` separators written with dots (`net/ipv4/x` → `net.ipv4.x`): when
/// the first separator is a slash, slashes and dots swap (the kubelet's rule, so a dot inside
/// an interface name survives).
fn dotted(name: &str) -> String {
    if name
        .find(['.', '/'])
        .is_some_and(|i| name[i..].starts_with('/'))
    {
        name.replace('.', "\u{0}")
            .replace('/', ".")
            .replace('\u{0}', "/")
    } else {
        name.to_owned()
    }
}

/// Sysctl values by dotted name.
type Sysctls = HashMap<String, String>;

/// The pod's sysctls, or why the kubelet rejects the pod.
fn pod_sysctls(pod: &Pod) -> Result<Sysctls, SecurityError> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let host_ipc = spec.and_then(|s| s.host_ipc).unwrap_or(false);
    let mut out = HashMap::new();
    for s in spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|p| p.sysctls.as_ref())
        .into_iter()
        .flatten()
    {
        let name = dotted(&s.name);
        if !SAFE_SYSCTLS.contains(&name.as_str()) {
            return Err(SecurityError::SysctlNotAllowed { name });
        }
        if is_net(&name) && host_network {
            return Err(SecurityError::SysctlHostNetwork { name });
        }
        if !is_net(&name) && host_ipc {
            return Err(SecurityError::SysctlHostIpc { name });
        }
        out.insert(name, s.value.clone());
    }
    Ok(out)
}

/// Why the kubelet would refuse to run the pod at all (its admission), as the message of
/// its `SysctlForbidden` event.
pub fn rejection(pod: &Pod) -> Option<String> {
    pod_sysctls(pod).err().map(|e| e.to_string())
}

/// Marks `status` as the kubelet's rejected pod (phase `Failed`, reason `SysctlForbidden`);
/// returns whether the pod is rejected.
pub fn reject_status(pod: &Pod, status: &mut PodStatus) -> bool {
    let Some(message) = rejection(pod) else {
        return false;
    };
    status.phase = Some("Failed".into());
    status.reason = Some(SYSCTL_FORBIDDEN.into());
    status.message = Some(format!("Pod was rejected: {message}"));
    true
}

/// The network sysctls, set on the sandbox (the pod's network namespace); `None` when there
/// are none (or the pod is rejected, which starts no sandbox).
pub fn sandbox_sysctls(pod: &Pod) -> Option<HashMap<String, String>> {
    let net: HashMap<String, String> = pod_sysctls(pod)
        .ok()?
        .into_iter()
        .filter(|(k, _)| is_net(k))
        .collect();
    (!net.is_empty()).then_some(net)
}

/// Puts [`settings`] into a container body; a `Localhost` seccomp profile is read from
/// [`seccomp_dir`] (Docker takes the profile's JSON, not its path).
pub fn apply(
    body: &mut ContainerCreateBody,
    pod: &Pod,
    container: &Container,
    image_user: &str,
    data_dir: &Path,
) -> Result<(), ConfigError> {
    let s = settings(pod, container, image_user).map_err(|e| ConfigError(e.to_string()))?;
    if s.user.is_some() {
        body.user = s.user;
    }
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    host.group_add = some(s.group_add);
    host.cap_add = some(s.cap_add);
    host.cap_drop = some(s.cap_drop);
    host.privileged = s.privileged.then_some(true);
    host.readonly_rootfs = s.read_only_root.then_some(true);
    host.sysctls = (!s.sysctls.is_empty()).then_some(s.sysctls);
    let mut opts = Vec::new();
    if s.no_new_privileges {
        opts.push("no-new-privileges".to_owned());
    }
    match s.seccomp {
        None | Some(Seccomp::RuntimeDefault) => {}
        Some(Seccomp::Unconfined) => opts.push("seccomp=unconfined".into()),
        Some(Seccomp::Localhost(file)) => {
            let path = seccomp_dir(data_dir).join(file);
            let json = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(format!(
                    "failed to load seccomp profile {}: {e}",
                    path.display()
                ))
            })?;
            opts.push(format!("seccomp={json}"));
        }
    }
    host.security_opt = some(opts);
    Ok(())
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
