//! Pods' `/etc/resolv.conf`, as the kubelet writes it for each `dnsPolicy`: `ClusterFirst` points
//! at the cluster DNS with the namespace's search path, `Default` copies the node's resolver
//! configuration, `None` uses only `spec.dnsConfig`, which the other policies append to.
//!
//! [`resolv_conf`] decides the content (pure); [`HostResolv::read`] reads the node's file once.

use std::{net::Ipv4Addr, path::Path};

use k8s_openapi::api::core::v1::PodSpec;

/// The resolver allows three nameservers (glibc's `MAXNS`); the kubelet drops the rest.
const MAX_NAMESERVERS: usize = 3;
/// The kubelet's limit on search domains (glibc 2.26+ has none; Kubernetes keeps 32).
const MAX_SEARCHES: usize = 32;

/// `--cluster-dns`: which nameserver pods with `dnsPolicy: ClusterFirst` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterDnsMode {
    /// The agent serves cluster DNS itself on its pod CIDR's gateway address (port 53).
    Gateway,
    /// Someone else serves it at this address; the agent only points pods there.
    Address(Ipv4Addr),
    /// No cluster DNS: `ClusterFirst` pods get the node's resolvers (`Default`).
    Off,
}

/// A `--cluster-dns` value that is neither an address nor a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an IPv4 address, `gateway` or `off`")]
pub struct BadClusterDns {
    /// What was given.
    pub text: String,
    /// Why it is not an address.
    #[source]
    pub source: std::net::AddrParseError,
}

impl std::str::FromStr for ClusterDnsMode {
    type Err = BadClusterDns;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "gateway" => Ok(Self::Gateway),
            "off" => Ok(Self::Off),
            address => address
                .parse()
                .map(Self::Address)
                .map_err(|source| BadClusterDns {
                    text: text.to_owned(),
                    source,
                }),
        }
    }
}

/// Where pods' names resolve first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDnsConfig {
    /// The nameserver pods with `ClusterFirst` use (`--cluster-dns`).
    pub nameserver: Ipv4Addr,
    /// The cluster domain (`--cluster-domain`, e.g. `cluster.local`).
    pub domain: String,
}

/// A resolver configuration: what a `resolv.conf` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` list.
    pub searches: Vec<String>,
    /// `options`, as `name` or `name:value`.
    pub options: Vec<String>,
}

impl Resolv {
    /// Parses `resolv.conf` text (`domain` counts as a one-entry search list, the last of
    /// `search`/`domain` wins, as in glibc).
    pub fn parse(text: &str) -> Self {
        let mut resolv = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => resolv.nameservers.extend(words.next().map(str::to_owned)),
                Some("search" | "domain") => {
                    resolv.searches = words.map(str::to_owned).collect();
                }
                Some("options") => resolv.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        resolv
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for nameserver in &self.nameservers {
            text.push_str(&format!("nameserver {nameserver}\n"));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }

    /// Appends `spec.dnsConfig` as the kubelet does: nameservers and searches after the
    /// existing ones without duplicates, options replacing those of the same name.
    fn merge(&mut self, spec: &PodSpec) {
        let Some(config) = &spec.dns_config else {
            return;
        };
        for nameserver in config.nameservers.iter().flatten() {
            if !self.nameservers.contains(nameserver) {
                self.nameservers.push(nameserver.clone());
            }
        }
        for search in config.searches.iter().flatten() {
            if !self.searches.contains(search) {
                self.searches.push(search.clone());
            }
        }
        for option in config.options.iter().flatten() {
            let Some(option_name) = option.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let rendered = match &option.value {
                Some(value) => format!("{option_name}:{value}"),
                None => option_name.to_owned(),
            };
            let name = |o: &str| o.split(':').next().unwrap_or_default().to_owned();
            match self.options.iter_mut().find(|o| name(o) == option_name) {
                Some(existing) => *existing = rendered,
                None => self.options.push(rendered),
            }
        }
    }
}

/// The node's own resolver configuration, for `dnsPolicy: Default`.
#[derive(Debug, Clone, Default)]
pub struct HostResolv(pub Resolv);

impl HostResolv {
    /// Reads `/etc/resolv.conf`; when it only names loopback resolvers (systemd-resolved's
    /// stub), reads systemd-resolved's upstream list instead, as Docker and kubeadm do: a pod
    /// in its own network namespace cannot reach the node's loopback. Missing files: empty.
    pub fn read() -> Self {
        Self::read_from(
            Path::new("/etc/resolv.conf"),
            Path::new("/run/systemd/resolve/resolv.conf"),
        )
    }

    /// [`HostResolv::read`] from `etc` (the kubelet's `--resolv-conf`) and `resolved`.
    pub fn read_from(etc: &Path, resolved: &Path) -> Self {
        let parsed = Resolv::parse(&std::fs::read_to_string(etc).unwrap_or_default());
        let only_loopback = !parsed.nameservers.is_empty()
            && parsed.nameservers.iter().all(|n| {
                n.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
            });
        if only_loopback && let Ok(text) = std::fs::read_to_string(resolved) {
            return Self(Resolv::parse(&text));
        }
        Self(parsed)
    }
}

/// The `resolv.conf` of a pod in namespace `namespace` with `spec`, given the cluster DNS
/// (`None`: the agent runs without one, `--cluster-dns off`) and the node's configuration.
///
/// `ClusterFirst` (the default) falls back to `Default` for `hostNetwork` pods and when there
/// is no cluster DNS, as the kubelet does; `ClusterFirstWithHostNet` is `ClusterFirst` for
/// every pod.
pub fn resolv_conf(
    spec: &PodSpec,
    namespace: &str,
    cluster: Option<&ClusterDnsConfig>,
    host: &HostResolv,
) -> String {
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => cluster,
        "Default" => None,
        // ClusterFirst and anything unknown (the API validates the field).
        _ if host_network => None,
        _ => cluster,
    };
    let mut resolv = match (policy, cluster) {
        ("None", _) => Resolv::default(),
        (_, Some(cluster)) => {
            let domain = cluster.domain.trim_end_matches('.');
            Resolv {
                nameservers: vec![cluster.nameserver.to_string()],
                searches: vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_owned(),
                ],
                options: vec!["ndots:5".to_owned()],
            }
        }
        (_, None) => host.0.clone(),
    };
    resolv.merge(spec);
    resolv.nameservers.truncate(MAX_NAMESERVERS);
    resolv.searches.truncate(MAX_SEARCHES);
    resolv.render()
}

/// Writes `content` to `path` unless it already holds it. The file is rewritten in place (not
/// replaced): running containers have it bind-mounted by inode.
pub fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == content) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)
}

/// A pod's host name as the kubelet sets it: `spec.hostname`, else the pod's name, at most 63
/// characters and without a trailing `-` or `.` (`GeneratePodHostNameAndDomain`).
pub fn pod_hostname(pod: &k8s_openapi::api::core::v1::Pod, name: &str) -> String {
    let chosen = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    let short: String = chosen.chars().take(63).collect();
    short.trim_end_matches(['-', '.']).to_owned()
}

/// A pod's domain name: `<subdomain>.<namespace>.svc.<cluster domain>` when it has a
/// `spec.subdomain` (and the node knows the cluster domain), so `hostname -f` gives the name
/// a headless Service publishes.
pub fn pod_domainname(
    pod: &k8s_openapi::api::core::v1::Pod,
    namespace: &str,
    cluster: Option<&ClusterDnsConfig>,
) -> Option<String> {
    let subdomain = pod
        .spec
        .as_ref()?
        .subdomain
        .as_deref()
        .filter(|s| !s.is_empty())?;
    let domain = cluster?.domain.trim_end_matches('.');
    Some(format!("{subdomain}.{namespace}.svc.{domain}"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};

    use super::*;

    fn cluster() -> ClusterDnsConfig {
        ClusterDnsConfig {
            nameserver: Ipv4Addr::new(10, 244, 3, 1),
            domain: "cluster.local".into(),
        }
    }

    fn host() -> HostResolv {
        HostResolv(Resolv::parse(
            "# generated\nnameserver 192.0.2.53\nnameserver 192.0.2.54 # second\n\
             search corp.example\noptions edns0 timeout:2\n",
        ))
    }

    fn spec(policy: Option<&str>, host_network: bool, config: Option<PodDNSConfig>) -> PodSpec {
        PodSpec {
            dns_policy: policy.map(str::to_owned),
            host_network: host_network.then_some(true),
            dns_config: config,
            ..PodSpec::default()
        }
    }

    fn config() -> PodDNSConfig {
        PodDNSConfig {
            nameservers: Some(vec!["192.0.2.99".into(), "192.0.2.53".into()]),
            searches: Some(vec!["extra.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("single-request".into()),
                    value: None,
                },
            ]),
        }
    }

    #[test]
    fn cluster_dns_flag_values() {
        assert_eq!("gateway".parse(), Ok(ClusterDnsMode::Gateway));
        assert_eq!("off".parse(), Ok(ClusterDnsMode::Off));
        assert_eq!(
            "10.96.0.10".parse(),
            Ok(ClusterDnsMode::Address(Ipv4Addr::new(10, 96, 0, 10)))
        );
        assert_eq!(
            "10.96.0"
                .parse::<ClusterDnsMode>()
                .map_err(|e| e.to_string()),
            Err("\"10.96.0\" is not an IPv4 address, `gateway` or `off`".to_owned())
        );
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns_with_the_namespace_search_path() {
        let text = resolv_conf(&spec(None, false, None), "shop", Some(&cluster()), &host());
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.244.3.1\noptions ndots:5\n"
        );
        let explicit = resolv_conf(
            &spec(Some("ClusterFirst"), false, None),
            "shop",
            Some(&cluster()),
            &host(),
        );
        assert_eq!(explicit, text);
    }

    #[test]
    fn dns_config_is_appended_and_its_options_override() {
        let text = resolv_conf(
            &spec(None, false, Some(config())),
            "default",
            Some(&cluster()),
            &host(),
        );
        assert_eq!(
            text,
            "search default.svc.cluster.local svc.cluster.local cluster.local extra.example\n\
             nameserver 10.244.3.1\nnameserver 192.0.2.99\nnameserver 192.0.2.53\n\
             options ndots:2 single-request\n"
        );
    }

    #[test]
    fn default_copies_the_node_and_none_uses_only_the_dns_config() {
        let default = resolv_conf(
            &spec(Some("Default"), false, None),
            "default",
            Some(&cluster()),
            &host(),
        );
        assert_eq!(
            default,
            "search corp.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n\
             options edns0 timeout:2\n"
        );
        let none = resolv_conf(
            &spec(Some("None"), false, Some(config())),
            "default",
            Some(&cluster()),
            &host(),
        );
        assert_eq!(
            none,
            "search extra.example\nnameserver 192.0.2.99\nnameserver 192.0.2.53\n\
             options ndots:2 single-request\n"
        );
        let merged = resolv_conf(
            &spec(Some("Default"), false, Some(config())),
            "default",
            None,
            &host(),
        );
        assert_eq!(
            merged,
            "search corp.example extra.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n\
             nameserver 192.0.2.99\noptions edns0 timeout:2 ndots:2 single-request\n",
            "duplicates dropped, at most three nameservers"
        );
    }

    #[test]
    fn host_network_and_a_missing_cluster_dns_fall_back_to_default() {
        let node = host().0.render();
        for (policy, host_network, cluster) in [
            (None, true, Some(cluster())),
            (Some("ClusterFirst"), true, Some(cluster())),
            (None, false, None),
            (Some("ClusterFirstWithHostNet"), true, None),
        ] {
            assert_eq!(
                resolv_conf(
                    &spec(policy, host_network, None),
                    "default",
                    cluster.as_ref(),
                    &host()
                ),
                node,
                "{policy:?} hostNetwork={host_network} cluster={cluster:?}"
            );
        }
        let with_host_net = resolv_conf(
            &spec(Some("ClusterFirstWithHostNet"), true, None),
            "default",
            Some(&cluster()),
            &host(),
        );
        assert!(
            with_host_net.contains("nameserver 10.244.3.1\n"),
            "{with_host_net}"
        );
    }

    #[test]
    fn a_loopback_stub_resolver_is_replaced_by_its_upstreams() {
        let dir = tempfile::tempdir().expect("temp dir");
        let etc = dir.path().join("resolv.conf");
        let resolved = dir.path().join("resolved.conf");
        std::fs::write(&etc, "nameserver 127.0.0.53\noptions edns0 trust-ad\n").expect("write");
        std::fs::write(&resolved, "nameserver 198.51.100.1\nsearch lan\n").expect("write");
        let host = HostResolv::read_from(&etc, &resolved);
        assert_eq!(host.0.nameservers, ["198.51.100.1"]);
        assert_eq!(host.0.searches, ["lan"]);
        std::fs::write(&etc, "nameserver 192.0.2.1\n").expect("write");
        let host = HostResolv::read_from(&etc, &resolved);
        assert_eq!(host.0.nameservers, ["192.0.2.1"]);
        let missing = HostResolv::read_from(&dir.path().join("nope"), &resolved);
        assert_eq!(missing.0, Resolv::default());
    }

    #[test]
    fn rewrites_in_place_only_on_change() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pod").join("resolv.conf");
        write_if_changed(&path, "nameserver 10.0.0.1\n").expect("first write");
        let inode = std::fs::metadata(&path).expect("stat").ino();
        write_if_changed(&path, "nameserver 10.0.0.2\n").expect("second write");
        assert_eq!(std::fs::metadata(&path).expect("stat").ino(), inode);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "nameserver 10.0.0.2\n"
        );
    }

    #[test]
    fn pod_host_and_domain_names() {
        let pod =
            |hostname: Option<&str>, subdomain: Option<&str>| k8s_openapi::api::core::v1::Pod {
                spec: Some(PodSpec {
                    hostname: hostname.map(str::to_owned),
                    subdomain: subdomain.map(str::to_owned),
                    ..PodSpec::default()
                }),
                ..Default::default()
            };
        let long = format!("{}-x", "a".repeat(62));
        let cases = [
            (pod(None, None), "pi-7xk2q", "pi-7xk2q", None),
            (
                pod(Some("pi-2"), Some("pi")),
                "pi-2-abcde",
                "pi-2",
                Some("pi.jobs.svc.cluster.local"),
            ),
            (pod(Some(""), None), "web-0", "web-0", None),
            (pod(None, None), long.as_str(), &*"a".repeat(62), None),
        ];
        for (pod, name, host, domain) in cases {
            assert_eq!(pod_hostname(&pod, name), host);
            assert_eq!(
                pod_domainname(&pod, "jobs", Some(&cluster())).as_deref(),
                domain
            );
        }
        assert_eq!(pod_domainname(&pod(None, Some("pi")), "jobs", None), None);
    }
}
