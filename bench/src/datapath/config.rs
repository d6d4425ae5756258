//! The configurations the benchmark compares. Each is one [`Datapath`] variant with what it does
//! once per scale ([`Datapath::prepare`]), before and after each measurement
//! ([`Datapath::setup`], [`Datapath::teardown`]) and how it applies one endpoint change
//! ([`Datapath::endpoint_change`]). Adding a configuration is a variant in [`Datapath`] and
//! [`Datapath::ALL`], and its arms here: e.g. a TC variant fills the shared maps in `prepare`
//! with [`Lab::load_services`], attaches its programs to the node's veths in `setup`
//! ([`super::lab::NS_NODE`], [`super::lab::IF_NODE_CLIENT`]) and detaches them in `teardown`.

use std::{
    fmt,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use keelson_node_agent::datapath::lb::LoadBalancer;

use super::{
    lab::{Lab, TimedOut},
    scale::Scale,
};
use crate::{
    kubeproxy,
    report::ChangeRow,
    services::{HTTP_PORT_NAME, ServiceSpec},
    stats::Spread,
};

/// How long one rule load may take before the benchmark gives up on it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Repeated endpoint changes stop after this much time (and after at least one).
const CHANGE_BUDGET: Duration = Duration::from_secs(20);

/// One way of serving the same ClusterIP Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Datapath {
    /// The client connects to the backends' pod IPs: no Service in the way (the baseline).
    Direct,
    /// keelson's socket-level load balancer in cgroup connect4/sendmsg4/recvmsg4/getpeername4.
    SocketLb,
    /// keelson's per-packet load balancer at TC on the node's interfaces (DNAT + conntrack).
    Tc,
    /// kube-proxy's iptables layout in the node namespace.
    Iptables,
    /// kube-proxy's nftables layout in the node namespace.
    Nftables,
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Datapath {
    /// Every configuration, in table order (the baseline first).
    pub const ALL: [Self; 5] = [
        Self::Direct,
        Self::SocketLb,
        Self::Tc,
        Self::Iptables,
        Self::Nftables,
    ];

    /// The name in the table and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::SocketLb => "socket-lb",
            Self::Tc => "tc",
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
        }
    }

    /// What the configuration is, for the table's legend.
    pub fn description(self) -> &'static str {
        match self {
            Self::Direct => {
                "the client connects to the Service's backends by pod IP (round-robin over its 10 \
                 backends); the node only routes"
            }
            Self::SocketLb => {
                "keelson's eBPF socket-level load balancer: cgroup connect4/sendmsg4/recvmsg4/\
                 getpeername4 on the client's cgroup pick a backend at connect(); setup = filling \
                 the maps with every Service (once per scale)"
            }
            Self::Tc => {
                "keelson's eBPF per-packet load balancer: `tc_from_pod` on the node's ingress from \
                 the client (DNAT to a backend, LRU conntrack) and from the backends (reverse \
                 NAT); same maps as socket-lb, the client is not in a socket-LB cgroup"
            }
            Self::Iptables => {
                "kube-proxy's iptables layout (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*, \
                 `statistic --mode random`) in the node namespace, iptables 1.8 with the \
                 nf_tables backend; setup = one `iptables-restore` of the nat table"
            }
            Self::Nftables => {
                "kube-proxy's nftables layout (`service-ips` verdict map -> service chain with a \
                 `numgen random` vmap -> endpoint chains) in the node namespace; setup = `nft -f` \
                 in batches of 1000 Services"
            }
        }
    }

    /// Whether clients use the Service's cluster IP (everything but the baseline).
    pub fn via_cluster_ip(self) -> bool {
        self != Self::Direct
    }

    /// Once per scale, before the rounds. Returns how long loading the Services took, when
    /// that is this configuration's setup cost.
    pub fn prepare(self, lab: &mut Lab, scale: &Scale) -> anyhow::Result<Option<Duration>> {
        match self {
            Self::SocketLb => lab.load_services(scale).map(Some),
            // The maps socket-lb filled serve the TC programs too.
            Self::Tc | Self::Direct | Self::Iptables | Self::Nftables => Ok(None),
        }
    }

    /// Before each measurement: makes this configuration the one serving the Service. Returns
    /// how long loading took, when it loads something.
    pub fn setup(self, lab: &mut Lab, scale: &Scale) -> anyhow::Result<Option<Duration>> {
        match self {
            Self::Direct => Ok(None),
            Self::SocketLb => {
                let cgroup = lab.client_cgroup();
                lab.lb()?
                    .attach_cgroup(&cgroup)
                    .context("cannot attach the socket-LB programs to the client cgroup")?;
                Ok(None)
            }
            Self::Tc => {
                // Loads nothing when socket-lb already filled the maps for this scale.
                lab.load_services(scale)?;
                attach_tc_in_node(
                    lab.lb()?,
                    &[keelson_node_agent::datapath::lb::TcHook::FromPod],
                )?;
                Ok(None)
            }
            Self::Iptables => {
                let started = Instant::now();
                lab.node(
                    &["iptables-restore"],
                    Some(scale.iptables.as_bytes()),
                    LOAD_TIMEOUT,
                )
                .context("cannot load kube-proxy's iptables rules")?;
                Ok(Some(started.elapsed()))
            }
            Self::Nftables => {
                let started = Instant::now();
                for batch in &scale.nft_batches {
                    lab.check_stop()?;
                    lab.node(&["nft", "-f", "-"], Some(batch.as_bytes()), LOAD_TIMEOUT)
                        .context("cannot load kube-proxy's nftables rules")?;
                }
                Ok(Some(started.elapsed()))
            }
        }
    }

    /// After each measurement: removes what [`Datapath::setup`] installed.
    pub fn teardown(self, lab: &mut Lab) -> anyhow::Result<()> {
        match self {
            Self::Direct => Ok(()),
            // Removes every pinned link: the socket-LB hooks or the TC programs.
            Self::SocketLb | Self::Tc => LoadBalancer::detach_cgroup(&lab.pin_dir())
                .context("cannot detach the load-balancer programs"),
            // The node namespace holds nothing else: flushing its ruleset removes the nat tables
            // (iptables-nft's and nft's) and with them the conntrack and NAT hooks.
            Self::Iptables | Self::Nftables => lab
                .node(&["nft", "flush", "ruleset"], None, LOAD_TIMEOUT)
                .map(drop)
                .context("cannot remove the rules from the node namespace"),
        }
    }

    /// Times applying one endpoint change to the measured Service with every Service loaded:
    /// it loses one backend (and, where the benchmark must put it back, regains it). One row per
    /// way of applying it; none for the baseline, which has no Service to change.
    pub fn endpoint_change(
        self,
        lab: &mut Lab,
        scale: &Scale,
        limits: &ChangeLimits,
    ) -> anyhow::Result<Vec<ChangeRow>> {
        let service = scale.measured();
        let gone = service
            .port(HTTP_PORT_NAME)
            .and_then(|p| p.backends.first().copied())
            .context("the measured Service has no backend")?;
        let changed = service.without_backend(HTTP_PORT_NAME, gone);
        let repeats = limits.repeats.max(1);
        let row = |method: String, timings: Vec<Duration>, stopped_after| ChangeRow {
            datapath: self.name().to_owned(),
            services: scale.count,
            method,
            spread: Spread::of(&timings),
            stopped_after,
        };
        match self {
            // TC reads the same maps, changed by the same `LoadBalancer::update` as socket-lb.
            Self::Direct | Self::Tc => Ok(Vec::new()),
            Self::SocketLb => {
                let lb = lab.lb()?;
                let mut timings = Vec::with_capacity(repeats);
                let mut writes = 0;
                for _ in 0..repeats {
                    let started = Instant::now();
                    writes = lb.update(&changed.id(), changed.frontends())?;
                    timings.push(started.elapsed());
                    lb.update(&service.id(), service.frontends())?;
                }
                Ok(vec![row(
                    format!(
                        "`LoadBalancer::update` of the Service losing one backend ({writes} map \
                         writes); the backend is put back untimed between repeats"
                    ),
                    timings,
                    None,
                )])
            }
            Self::Iptables => {
                self.setup(lab, scale)?;
                let result = iptables_changes(lab, scale, service, &changed, repeats, limits);
                let removed = self.teardown(lab);
                let (partial, full) = result?;
                removed?;
                Ok(vec![
                    row(
                        "kube-proxy (>= 1.28) partial sync: regenerate and `iptables-restore \
                         --noflush --counters` the top-level chains (`KUBE-SERVICES` with every \
                         Service) and the changed Service's chains (alternately the backend \
                         leaves and comes back)"
                            .to_owned(),
                        partial,
                        None,
                    ),
                    row(
                        "kube-proxy full sync (startup, hourly, after errors): regenerate the \
                         whole nat table and `iptables-restore --noflush --counters` it"
                            .to_owned(),
                        full.as_ref().map_or_else(|_| Vec::new(), Clone::clone),
                        full.err(),
                    ),
                ])
            }
            Self::Nftables => {
                self.setup(lab, scale)?;
                let result = nft_changes(lab, service, &changed, repeats);
                let removed = self.teardown(lab);
                let timings = result?;
                removed?;
                Ok(vec![row(
                    "`nft -f` of the change only, as kube-proxy's nftables mode syncs one \
                     changed Service (service chain flushed and rewritten, its endpoint chains \
                     rewritten, the departed endpoint's chain deleted); the backend is put back \
                     untimed between repeats"
                        .to_owned(),
                    timings,
                    None,
                )])
            }
        }
    }
}

/// How hard [`Datapath::endpoint_change`] tries.
#[derive(Debug, Clone, Copy)]
pub struct ChangeLimits {
    /// Changes timed per way of applying them (fewer when they take over 20 s in all).
    pub repeats: usize,
    /// A kube-proxy iptables full sync is stopped after this long.
    pub full_sync: Duration,
}

/// Partial-sync timings, and full-sync timings or how long the one full sync ran before it
/// was stopped.
type IptablesTimings = (Vec<Duration>, Result<Vec<Duration>, Duration>);

fn iptables_changes(
    lab: &Lab,
    scale: &Scale,
    service: &ServiceSpec,
    changed: &ServiceSpec,
    repeats: usize,
    limits: &ChangeLimits,
) -> anyhow::Result<IptablesTimings> {
    let full = scale.baseline.clone();
    let mut without = scale.baseline.clone();
    let id = (
        service.namespace.as_str(),
        service.name.as_str(),
        HTTP_PORT_NAME,
    );
    let changed_port = kubeproxy::baseline_services(std::slice::from_ref(changed))
        .into_iter()
        .find(|b| b.port_name == HTTP_PORT_NAME)
        .context("the changed Service has no http port")?;
    for b in &mut without {
        if (b.namespace.as_str(), b.name.as_str(), b.port_name.as_str()) == id {
            *b = changed_port.clone();
        }
    }
    let restore = ["iptables-restore", "--noflush", "--counters"];

    let budget = Instant::now() + CHANGE_BUDGET;
    let mut partial = Vec::new();
    for i in 0..repeats {
        lab.check_stop()?;
        let (from, to) = if i % 2 == 0 {
            (&full, &without)
        } else {
            (&without, &full)
        };
        let started = Instant::now();
        let text = kubeproxy::iptables_partial_sync(to, from, &[id]);
        lab.node(&restore, Some(text.as_bytes()), LOAD_TIMEOUT)
            .context("kube-proxy's partial sync failed")?;
        partial.push(started.elapsed());
        if Instant::now() > budget {
            break;
        }
    }
    // The rules now match `full` when `partial` has an even length, `without` otherwise.
    let mut current_is_full = partial.len() % 2 == 0;

    let budget = Instant::now() + CHANGE_BUDGET;
    let mut full_syncs = Vec::new();
    for _ in 0..repeats {
        lab.check_stop()?;
        let (from, to) = if current_is_full {
            (&full, &without)
        } else {
            (&without, &full)
        };
        let started = Instant::now();
        let text = kubeproxy::iptables_full_sync(to, from);
        match lab.node(&restore, Some(text.as_bytes()), limits.full_sync) {
            Ok(_) => {}
            Err(e) if e.downcast_ref::<TimedOut>().is_some() && full_syncs.is_empty() => {
                return Ok((partial, Err(started.elapsed())));
            }
            Err(e) => return Err(e.context("kube-proxy's full sync failed")),
        }
        full_syncs.push(started.elapsed());
        current_is_full = !current_is_full;
        if Instant::now() > budget {
            break;
        }
    }
    Ok((partial, Ok(full_syncs)))
}

fn nft_changes(
    lab: &Lab,
    service: &ServiceSpec,
    changed: &ServiceSpec,
    repeats: usize,
) -> anyhow::Result<Vec<Duration>> {
    let http = |s: &ServiceSpec| {
        kubeproxy::baseline_services(std::slice::from_ref(s))
            .into_iter()
            .find(|b| b.port_name == HTTP_PORT_NAME)
            .context("the Service has no http port")
    };
    let (full, without) = (http(service)?, http(changed)?);
    let budget = Instant::now() + CHANGE_BUDGET;
    let mut timings = Vec::new();
    for _ in 0..repeats {
        lab.check_stop()?;
        let started = Instant::now();
        let text = kubeproxy::nft_endpoint_change(&full, &without);
        lab.node(&["nft", "-f", "-"], Some(text.as_bytes()), LOAD_TIMEOUT)
            .context("the nftables endpoint change failed")?;
        timings.push(started.elapsed());
        let back = kubeproxy::nft_endpoint_change(&without, &full);
        lab.node(&["nft", "-f", "-"], Some(back.as_bytes()), LOAD_TIMEOUT)
            .context("putting the backend back failed")?;
        if Instant::now() > budget {
            break;
        }
    }
    Ok(timings)
}

/// Attaches `hooks` (e.g. `tc_from_pod` at the TC ingress) to the node namespace's veths
/// towards the client and the backends. Interface names resolve in the calling thread's network
/// namespace, so the thread enters the node namespace for the attach and returns to its own
/// afterwards.
pub(crate) fn attach_tc_in_node(
    lb: &mut LoadBalancer,
    hooks: &[keelson_node_agent::datapath::lb::TcHook],
) -> anyhow::Result<()> {
    use std::fs::File;

    use nix::sched::{CloneFlags, setns};

    use super::lab::{IF_NODE_BACKENDS, IF_NODE_CLIENT, NS_NODE};

    let own = File::open("/proc/thread-self/ns/net").context("cannot open this thread's netns")?;
    let node = File::open(format!("/run/netns/{NS_NODE}"))
        .with_context(|| format!("cannot open network namespace {NS_NODE}"))?;
    setns(&node, CloneFlags::CLONE_NEWNET).context("cannot enter the node namespace")?;
    let attached = [IF_NODE_CLIENT, IF_NODE_BACKENDS]
        .into_iter()
        .try_for_each(|interface| {
            hooks.iter().try_for_each(|&hook| {
                lb.attach_tc(interface, hook)
                    .with_context(|| format!("cannot attach {hook:?} to {interface}"))
            })
        });
    setns(&own, CloneFlags::CLONE_NEWNET).context("cannot return to the original namespace")?;
    attached
}
