//! `keelson-node-agent reset`: removes what the agent put on this host, saying what it removed.
//!
//! What goes, in this order (each thing removed is one line of the report):
//! - the node-side veths of the node's pods (named after the pod uids of its containers and of
//!   the IPAM state's allocations, so another agent's pods on the same host keep theirs; the
//!   peers go with them) and the `keelson-vxlan` device of `--routing tunnel`;
//! - the routes it added: every route tagged with keelson's protocol number (pod CIDRs of
//!   other nodes), the blackhole route of the node's pod CIDR (read from the IPAM state) and the
//!   unreachable route of the Service CIDR;
//! - the pod containers and sandboxes of the node (Docker containers labelled
//!   `io.keelson.node=<node>`; no other container is looked at);
//! - the TC filters of kernels without TCX (`tc_from_pod`, `tc_from_netdev` on any interface
//!   but other pods' veths; the then empty `clsact` qdisc stays, as other programs may share
//!   it);
//! - the pinned links under the pin directory (detaching socket-LB from the cgroup and TCX
//!   programs from interfaces), then the pinned maps and the directory (and `/sys/fs/bpf/keelson`
//!   once empty);
//! - the credentials `join` wrote: `<config-dir>/node.kubeconfig` and the files it names inside
//!   the config directory. `<config-dir>/node-agent.yaml` stays: the package installs it as a
//!   configuration file, and removing it is the package manager's job (`apt purge`);
//! - the data directory (pod volumes, IPAM state), and `/var/lib/keelson-agent` once empty.
//!
//! It refuses to run while an agent holds the data directory's lock or answers on the metrics
//! address. A second run finds nothing and says so.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::TryStreamExt as _;
use keelson_api::cidr::Ipv4Cidr;
use netlink_packet_route::{
    link::LinkAttribute,
    route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType},
};

use crate::{datapath::lb::TcHook, pods::runtime, routing};

/// What `reset` works on (the flags of `run` that place things on the host).
#[derive(Debug, Clone)]
pub struct ResetConfig {
    /// The node's name (containers are found by it).
    pub node_name: String,
    /// The pin directory (`/sys/fs/bpf/keelson/<node>`).
    pub pin_dir: PathBuf,
    /// The data directory (`/var/lib/keelson-agent/<node>`).
    pub data_dir: PathBuf,
    /// Docker's socket.
    pub docker_socket: String,
    /// Where `join` wrote the node's credentials (`/etc/keelson`).
    pub config_dir: PathBuf,
    /// The Service CIDR whose unreachable route the agent added.
    pub service_cidr: Ipv4Cidr,
    /// The agent's metrics address; something answering there means an agent runs.
    pub metrics_listen: Option<SocketAddr>,
}

/// Why `reset` stopped or could not remove something.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// An agent is running.
    #[error("an agent is running ({0}): stop it first (`systemctl stop keelson-node-agent`)")]
    Running(String),
    /// Docker did not answer, so the pod containers were not removed.
    #[error("Docker is not reachable at {socket}: pod containers not removed")]
    Docker {
        /// The socket.
        socket: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// A netlink request failed.
    #[error("netlink: {what}")]
    Netlink {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: rtnetlink::Error,
    },
    /// A file or pin could not be removed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The file a running agent holds locked (see [`super::AgentLock`]).
pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent.lock")
}

/// Whether the node-side veth name is one of the agent's (`kv` + 11 hex digits).
pub fn is_pod_veth(name: &str) -> bool {
    name.len() == 13 && name.starts_with("kv") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `route` is one the agent added: tagged with its protocol, or the blackhole of the
/// node's pod CIDR, or the unreachable route of the Service CIDR.
pub fn is_agent_route(
    protocol: RouteProtocol,
    kind: RouteType,
    destination: Option<Ipv4Cidr>,
    pod_cidr: Option<Ipv4Cidr>,
    service_cidr: Ipv4Cidr,
) -> bool {
    protocol == RouteProtocol::Other(routing::ROUTE_PROTOCOL)
        || (kind == RouteType::BlackHole && destination.is_some() && destination == pod_cidr)
        || (kind == RouteType::Unreachable && destination == Some(service_cidr))
}

/// The files `join` wrote that a kubeconfig names (certificate authority, client certificate
/// and key), kept only when they sit in `config_dir`.
pub fn kubeconfig_files(kubeconfig: &str, config_dir: &Path) -> Vec<PathBuf> {
    let keys = [
        "certificate-authority:",
        "client-certificate:",
        "client-key:",
    ];
    let mut files: Vec<PathBuf> = kubeconfig
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let value = keys.iter().find_map(|k| line.strip_prefix(k))?;
            let value = value.trim().trim_matches(['"', '\'']);
            let path = Path::new(value);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                config_dir.join(path)
            };
            (path.parent() == Some(config_dir)).then_some(path)
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Whether something answers at `addr` (an agent's /metrics).
fn answers(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Refuses when an agent holds `lock` or answers at `metrics`.
fn refuse_if_running(lock: &Path, metrics: Option<SocketAddr>) -> Result<(), ResetError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(lock);
    if let Ok(file) = file
        && let Err((_, errno)) =
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        && errno == nix::errno::Errno::EWOULDBLOCK
    {
        let pid = std::fs::read_to_string(lock).unwrap_or_default();
        return Err(ResetError::Running(format!(
            "pid {} holds {}",
            pid.trim(),
            lock.display()
        )));
    }
    if let Some(addr) = metrics.filter(|a| answers(*a)) {
        return Err(ResetError::Running(format!(
            "something answers on its metrics address {addr}"
        )));
    }
    Ok(())
}

/// Removes everything, calling `report` with one line per thing removed. Stops at the first
/// refusal (an agent runs); other failures are collected so that the rest still goes.
pub fn reset(
    config: &ResetConfig,
    report: &mut dyn FnMut(String),
) -> Result<usize, Vec<ResetError>> {
    refuse_if_running(&lock_path(&config.data_dir), config.metrics_listen).map_err(|e| vec![e])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| {
            vec![ResetError::Io {
                what: "starting the async runtime for",
                path: config.data_dir.clone(),
                source,
            }]
        })?;
    let mut removed = 0;
    let mut errors = Vec::new();
    let mut say = |line: String| {
        removed += 1;
        report(line);
    };
    let mut uids = allocated_uids(&config.data_dir);
    runtime.block_on(async {
        // The veths first (a pod's goes with its sandbox's namespace, unreported), then the
        // containers.
        let listed = list_containers(config).await;
        if let Ok((_, containers)) = &listed {
            uids.extend(container_uids(containers));
        }
        if let Err(e) = remove_network(config, &uids, &mut say).await {
            errors.push(e);
        }
        match listed {
            Ok((docker, containers)) => {
                if let Err(e) = remove_containers(config, &docker, containers, &mut say).await {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
    });
    remove_tc_filters(&mut say);
    if let Err(e) = remove_pins(&config.pin_dir, &mut say) {
        errors.push(e);
    }
    if let Err(e) = remove_credentials(&config.config_dir, &mut say) {
        errors.push(e);
    }
    if let Err(e) = remove_data_dir(&config.data_dir, &mut say) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(errors)
    }
}

/// Removes the node's containers; the pod uids they belonged to.
type Containers = Vec<(String, bollard::models::ContainerSummary)>;

/// The node's containers (application containers first, sandboxes last) and Docker.
async fn list_containers(
    config: &ResetConfig,
) -> Result<(bollard::Docker, Containers), ResetError> {
    use bollard::query_parameters::ListContainersOptions;
    let docker_error = |source| ResetError::Docker {
        socket: config.docker_socket.clone(),
        source,
    };
    let docker =
        bollard::Docker::connect_with_unix(&config.docker_socket, 30, bollard::API_DEFAULT_VERSION)
            .map_err(docker_error)?
            .negotiate_version()
            .await
            .map_err(docker_error)?;
    let options = ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            "label".to_owned(),
            vec![format!("{}={}", runtime::LABEL_NODE, config.node_name)],
        )])),
        ..ListContainersOptions::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(docker_error)?;
    // Application containers first, sandboxes (which hold the namespaces) last.
    let mut containers: Vec<_> = containers
        .into_iter()
        .filter_map(|c| Some((c.id.clone()?, c)))
        .collect();
    containers.sort_by_key(|(_, c)| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(runtime::LABEL_CONTAINER))
            .is_some_and(|name| name == runtime::SANDBOX)
    });
    Ok((docker, containers))
}

/// The pod uids of `containers`.
fn container_uids(containers: &Containers) -> impl Iterator<Item = String> + '_ {
    containers.iter().filter_map(|(_, c)| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(runtime::LABEL_POD_UID))
            .cloned()
    })
}

/// Removes `containers`, sandboxes last.
async fn remove_containers(
    config: &ResetConfig,
    docker: &bollard::Docker,
    containers: Containers,
    say: &mut dyn FnMut(String),
) -> Result<(), ResetError> {
    use bollard::query_parameters::RemoveContainerOptions;
    let docker_error = |source| ResetError::Docker {
        socket: config.docker_socket.clone(),
        source,
    };
    for (id, container) in containers {
        let labels = container.labels.unwrap_or_default();
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {}
            Err(e) if runtime::is_not_found(&e) => continue,
            Err(source) => return Err(docker_error(source)),
        }
        let name = container
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| id.clone());
        let what = if label(runtime::LABEL_CONTAINER) == runtime::SANDBOX {
            "sandbox".to_owned()
        } else {
            format!("container {}", label(runtime::LABEL_CONTAINER))
        };
        say(format!(
            "removed Docker container {} ({what} of pod {}/{})",
            name.trim_start_matches('/'),
            label(runtime::LABEL_POD_NAMESPACE),
            label(runtime::LABEL_POD_NAME),
        ));
    }
    Ok(())
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> ResetError {
    let what = what.into();
    move |source| ResetError::Netlink { what, source }
}

/// The pod uids the IPAM state of `data_dir` holds addresses for.
fn allocated_uids(data_dir: &Path) -> std::collections::BTreeSet<String> {
    let state = std::fs::read_to_string(data_dir.join("ipam.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    state
        .as_ref()
        .and_then(|s| s.get("allocations")?.as_object())
        .map(|allocations| {
            allocations
                .values()
                .filter_map(|uid| uid.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod CIDR recorded in the IPAM state of `data_dir`.
fn pod_cidr(data_dir: &Path) -> Option<Ipv4Cidr> {
    let text = std::fs::read_to_string(data_dir.join("ipam.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state.get("cidr")?.as_str()?.parse().ok()
}

fn destination(route: &RouteMessage) -> Option<Ipv4Cidr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(netlink_packet_route::route::RouteAddress::Inet(addr)) => {
            Ipv4Cidr::new(*addr, route.header.destination_prefix_length)
        }
        _ => None,
    })
}

async fn remove_network(
    config: &ResetConfig,
    uids: &std::collections::BTreeSet<String>,
    say: &mut dyn FnMut(String),
) -> Result<(), ResetError> {
    let veths: std::collections::BTreeSet<String> = uids
        .iter()
        .map(|uid| crate::network::host_veth_name(uid))
        .collect();
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| ResetError::Io {
        what: "opening a netlink socket for",
        path: config.data_dir.clone(),
        source,
    })?;
    let connection = tokio::spawn(connection);
    let result = async {
        // Links: pod veths and the tunnel device.
        let mut links = handle.link().get().execute();
        let mut doomed = Vec::new();
        while let Some(link) = links.try_next().await.map_err(netlink("listing links"))? {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            });
            if let Some(name) = name.filter(|n| veths.contains(n) || n == routing::TUNNEL_DEVICE) {
                doomed.push((link.header.index, name));
            }
        }
        for (index, name) in doomed {
            match handle.link().del(index).execute().await {
                Ok(()) => say(format!("removed link {name}")),
                // Gone with its peer in between.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                Err(e) => return Err(netlink(format!("removing link {name}"))(e)),
            }
        }
        // Routes.
        let pod_cidr = pod_cidr(&config.data_dir);
        let mut routes = handle
            .route()
            .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut doomed = Vec::new();
        while let Some(route) = routes.try_next().await.map_err(netlink("listing routes"))? {
            let dest = destination(&route);
            if is_agent_route(
                route.header.protocol,
                route.header.kind,
                dest,
                pod_cidr,
                config.service_cidr,
            ) {
                doomed.push((route, dest));
            }
        }
        for (route, dest) in doomed {
            let kind = match route.header.kind {
                RouteType::BlackHole => "blackhole ",
                RouteType::Unreachable => "unreachable ",
                _ => "",
            };
            let dest = dest.map_or_else(|| "default".to_owned(), |d| d.to_string());
            match handle.route().del(route).execute().await {
                Ok(()) => say(format!("removed route {kind}{dest}")),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => {}
                Err(e) => return Err(netlink(format!("removing route {kind}{dest}"))(e)),
            }
        }
        Ok(())
    }
    .await;
    connection.abort();
    result
}

/// TC filters of the agent's programs on interfaces of a kernel without TCX.
fn remove_tc_filters(say: &mut dyn FnMut(String)) {
    use aya::programs::tc;
    let Ok(interfaces) = nix::net::if_::if_nameindex() else {
        return;
    };
    for interface in interfaces.iter() {
        let Ok(name) = interface.name().to_str() else {
            continue;
        };
        // Another agent's pod veth (this node's are gone by now).
        if is_pod_veth(name) {
            continue;
        }
        for hook in TcHook::ALL {
            if tc::qdisc_detach_program(name, hook.attach_type(), hook.program()).is_ok() {
                say(format!(
                    "removed tc filter {} from {name} {}",
                    hook.program(),
                    hook.direction()
                ));
            }
        }
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ResetError {
    let path = path.to_path_buf();
    move |source| ResetError::Io { what, path, source }
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, ResetError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths = entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(io("listing", dir))?;
            paths.sort();
            Ok(paths)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io("listing", dir)(e)),
    }
}

/// Unpins the links (which detaches them: the agent holds no other reference once it is
/// stopped), then the maps, then the directories left empty.
fn remove_pins(pin_dir: &Path, say: &mut dyn FnMut(String)) -> Result<(), ResetError> {
    let links = pin_dir.join("links");
    for pin in entries(&links)? {
        let name = pin.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        match aya::programs::links::PinnedLink::from_pin(&pin) {
            Ok(link) => drop(link.unpin().map_err(io("unpinning link", &pin))?),
            Err(_) => std::fs::remove_file(&pin).map_err(io("removing pin", &pin))?,
        }
        say(format!(
            "detached and unpinned bpf link {name} ({})",
            pin.display()
        ));
    }
    remove_empty_dir(&links)?;
    for pin in entries(pin_dir)? {
        if pin.is_dir() {
            continue;
        }
        std::fs::remove_file(&pin).map_err(io("removing pinned map", &pin))?;
        say(format!("unpinned bpf map {}", pin.display()));
    }
    if remove_empty_dir(pin_dir)? {
        say(format!("removed pin directory {}", pin_dir.display()));
    }
    if let Some(parent) = pin_dir.parent().filter(|p| p.ends_with("keelson"))
        && remove_empty_dir(parent)?
    {
        say(format!("removed pin directory {}", parent.display()));
    }
    Ok(())
}

/// Removes `dir` if it exists and is empty; whether it did.
fn remove_empty_dir(dir: &Path) -> Result<bool, ResetError> {
    if !dir.is_dir() || !entries(dir)?.is_empty() {
        return Ok(false);
    }
    std::fs::remove_dir(dir).map_err(io("removing", dir))?;
    Ok(true)
}

fn remove_credentials(config_dir: &Path, say: &mut dyn FnMut(String)) -> Result<(), ResetError> {
    let kubeconfig = config_dir.join("node.kubeconfig");
    let Ok(text) = std::fs::read_to_string(&kubeconfig) else {
        return Ok(());
    };
    for file in kubeconfig_files(&text, config_dir) {
        if file.exists() {
            std::fs::remove_file(&file).map_err(io("removing", &file))?;
            say(format!("removed {}", file.display()));
        }
    }
    std::fs::remove_file(&kubeconfig).map_err(io("removing", &kubeconfig))?;
    say(format!("removed {}", kubeconfig.display()));
    Ok(())
}

fn remove_data_dir(data_dir: &Path, say: &mut dyn FnMut(String)) -> Result<(), ResetError> {
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).map_err(io("removing", data_dir))?;
        say(format!("removed data directory {}", data_dir.display()));
    }
    if let Some(parent) = data_dir.parent().filter(|p| p.ends_with("keelson-agent"))
        && remove_empty_dir(parent)?
    {
        say(format!("removed data directory {}", parent.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_veths_are_pod_veths() {
        let cases = [
            (
                crate::network::host_veth_name("0b5c6c1e-uid").as_str(),
                true,
            ),
            ("kv0123456789a", true),
            ("kv0123456789", false),
            ("kv0123456789ag", false),
            ("kvg123456789a", false),
            ("eth0", false),
            ("veth1a2b3c4", false),
        ]
        .map(|(n, w)| (n.to_owned(), w));
        for (name, want) in cases {
            assert_eq!(is_pod_veth(&name), want, "{name}");
        }
    }

    #[test]
    fn only_the_agents_routes_are_removed() {
        let cidr = |s: &str| s.parse::<Ipv4Cidr>().expect("cidr");
        let pods = Some(cidr("10.244.1.0/24"));
        let services = cidr("10.96.0.0/12");
        let ours = RouteProtocol::Other(routing::ROUTE_PROTOCOL);
        let cases = [
            (
                ours,
                RouteType::Unicast,
                Some(cidr("10.244.2.0/24")),
                pods,
                true,
            ),
            (RouteProtocol::Boot, RouteType::BlackHole, pods, pods, true),
            (RouteProtocol::Boot, RouteType::BlackHole, pods, None, false),
            (
                RouteProtocol::Boot,
                RouteType::BlackHole,
                Some(cidr("10.9.0.0/16")),
                pods,
                false,
            ),
            (
                RouteProtocol::Boot,
                RouteType::Unreachable,
                Some(services),
                pods,
                true,
            ),
            (
                RouteProtocol::Boot,
                RouteType::Unreachable,
                Some(cidr("10.0.0.0/8")),
                pods,
                false,
            ),
            (RouteProtocol::Boot, RouteType::Unicast, pods, pods, false),
            (RouteProtocol::Kernel, RouteType::Unicast, None, pods, false),
        ];
        for (protocol, kind, dest, pod_cidr, want) in cases {
            assert_eq!(
                is_agent_route(protocol, kind, dest, pod_cidr, services),
                want,
                "{protocol:?} {kind:?} {dest:?}"
            );
        }
    }

    #[test]
    fn credentials_are_the_kubeconfig_and_its_files_in_the_config_dir() {
        let kubeconfig = "\
apiVersion: v1
clusters:
- cluster:
    certificate-authority: /etc/keelson/ca.crt
    server: https://192.0.2.1:6443
users:
- name: system:node:worker-1
  user:
    client-certificate: node.crt
    client-key: \"/etc/keelson/node.key\"
- name: other
  user:
    client-key: /root/.kube/admin.key
";
        assert_eq!(
            kubeconfig_files(kubeconfig, Path::new("/etc/keelson")),
            [
                "/etc/keelson/ca.crt",
                "/etc/keelson/node.crt",
                "/etc/keelson/node.key"
            ]
            .map(PathBuf::from)
        );
        // Embedded data names no file.
        assert!(kubeconfig_files("client-key-data: AAAA\n", Path::new("/etc/keelson")).is_empty());
    }

    #[test]
    fn files_and_pins_are_removed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("keelson-agent").join("worker-1");
        std::fs::create_dir_all(data.join("pods/uid-1")).expect("data dir");
        std::fs::write(data.join("ipam.json"), "{}").expect("ipam");
        let config = dir.path().join("etc");
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(
            config.join("node.kubeconfig"),
            "client-certificate: node.crt\nclient-key: node.key\n",
        )
        .expect("kubeconfig");
        std::fs::write(config.join("node.crt"), "c").expect("crt");
        std::fs::write(config.join("node-agent.yaml"), "node-name: w\n").expect("yaml");
        let mut lines = Vec::new();
        remove_credentials(&config, &mut |l| lines.push(l)).expect("credentials");
        remove_data_dir(&data, &mut |l| lines.push(l)).expect("data");
        let c = config.display();
        let d = data.display();
        assert_eq!(
            lines,
            [
                format!("removed {c}/node.crt"),
                format!("removed {c}/node.kubeconfig"),
                format!("removed data directory {d}"),
                format!(
                    "removed data directory {}",
                    dir.path().join("keelson-agent").display()
                ),
            ]
        );
        assert!(
            config.join("node-agent.yaml").exists(),
            "the package's config stays"
        );
        let mut again = Vec::new();
        remove_credentials(&config, &mut |l| again.push(l)).expect("credentials");
        remove_data_dir(&data, &mut |l| again.push(l)).expect("data");
        remove_pins(&dir.path().join("bpf/keelson/worker-1"), &mut |l| {
            again.push(l)
        })
        .expect("pins");
        assert_eq!(again, Vec::<String>::new());
    }

    #[test]
    fn the_ipam_state_names_the_pod_cidr_and_the_pods() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(pod_cidr(dir.path()), None);
        assert!(allocated_uids(dir.path()).is_empty());
        std::fs::write(
            dir.path().join("ipam.json"),
            r#"{"cidr":"10.244.1.0/24","allocations":{"10.244.1.2":"uid-a","10.244.1.3":"uid-b"}}"#,
        )
        .expect("ipam");
        assert_eq!(pod_cidr(dir.path()), "10.244.1.0/24".parse().ok());
        assert_eq!(
            allocated_uids(dir.path()).into_iter().collect::<Vec<_>>(),
            ["uid-a", "uid-b"]
        );
    }

    #[test]
    fn a_held_lock_refuses_in_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = super::super::AgentLock::take(dir.path()).expect("lock");
        let error = refuse_if_running(&lock_path(dir.path()), None).expect_err("held");
        assert_eq!(
            error.to_string(),
            format!(
                "an agent is running (pid {} holds {}): stop it first (`systemctl stop \
                 keelson-node-agent`)",
                std::process::id(),
                lock_path(dir.path()).display()
            )
        );
        drop(lock);
        assert!(refuse_if_running(&lock_path(dir.path()), None).is_ok());
    }
}
