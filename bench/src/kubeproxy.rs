//! Baseline rule sets for the datapath benchmark: the rules kube-proxy itself writes for a
//! set of ClusterIP Services, in its `iptables` mode and in its `nftables` mode, and what it
//! writes when one endpoint of one Service changes. Pure: the benchmark loads the text with
//! `iptables-restore` and `nft -f`.
//!
//! The layouts follow kubernetes `pkg/proxy/iptables/proxier.go` and
//! `pkg/proxy/nftables/proxier.go` (v1.31+): the same chain names (hashes included), the same
//! per-service and per-endpoint chains, the same match order and the same masquerade handling,
//! for the NAT side, which is the part that translates packets. Deliberately left out, on both
//! sides alike:
//! - the `filter` parts (iptables `*filter` KUBE-SERVICES/KUBE-FORWARD/…, nftables
//!   `filter-*` base chains with `cluster-ips`, `no-endpoint-*`, `firewall-ips` and
//!   `reject-chain`): they only reject or drop traffic to Services without endpoints;
//! - the per-service "masquerade off-cluster traffic" rule, which kube-proxy only writes when a
//!   local-traffic detector (`--cluster-cidr` or similar) is configured;
//! - NodePorts, external IPs, load balancers, session affinity and traffic policies: the
//!   benchmark Services are plain ClusterIP Services with `Cluster` policy. The dispatch into the
//!   (empty) NodePort chain or map is kept, because kube-proxy always installs it.
//!
//! Services without endpoints are skipped (kube-proxy only writes `filter` rules for them),
//! duplicate endpoints of one Service are written once, and a Service whose port name or whose
//! VIP/port/protocol repeats an earlier one is skipped, as kube-proxy keys its maps that way.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use sha2::{Digest as _, Sha256};

use crate::services::ServiceSpec;

/// L4 protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// Lower-case name, as kube-proxy puts it into chain-name hashes and rules.
    fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One port of a ClusterIP Service together with its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineService {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Name of the Service port (may be empty for a single unnamed port).
    pub port_name: String,
    /// The ClusterIP.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The port's protocol.
    pub proto: Proto,
    /// Endpoints as (pod IP, target port), in the order kube-proxy would see them.
    pub backends: Vec<(Ipv4Addr, u16)>,
}

/// The masquerade mark kube-proxy uses by default (`--masquerade-bit=14`).
const MASQ_MARK: &str = "0x4000";

/// Above this many endpoints in total kube-proxy's iptables mode drops the per-endpoint
/// comments ("large cluster mode", `largeClusterEndpointsThreshold`).
const LARGE_CLUSTER_ENDPOINTS_THRESHOLD: usize = 1000;

/// nftables names may be 256 bytes long; kube-proxy reserves 16 of them for the prefix
/// (`chainNameBaseLengthMax`), so a hashed base name longer than this is truncated.
const NFT_CHAIN_BASE_MAX: usize = 256 - 16;

/// How many `service-ips` map elements go into one `add element` statement.
const NFT_ELEMENTS_PER_STATEMENT: usize = 1000;

/// Renders the `*nat` table kube-proxy's iptables mode writes for `services`.
///
/// Besides kube-proxy's own `iptables-restore` input (chains `KUBE-SERVICES`,
/// `KUBE-NODEPORTS`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`, `KUBE-SVC-*`, `KUBE-SEP-*`) the file
/// appends the jumps from `PREROUTING`, `OUTPUT` and `POSTROUTING` that kube-proxy adds with
/// separate `iptables -I` calls. Rule arguments are in the order kube-proxy writes them
/// (`iptables-save` prints the same rules normalised, e.g. `-d 10.96.0.1/32 -p tcp -m comment
/// ... -m tcp --dport 80`).
///
/// Load it with plain `iptables-restore` (it then replaces the whole `nat` table, which is what
/// a benchmark namespace wants), or with `iptables-restore --noflush` into a `nat` table that
/// does not hold it yet: with `--noflush` a second load would append the three jumps again.
pub fn iptables_restore(services: &[BaselineService]) -> String {
    let planned = plan(services);
    let total_endpoints: usize = planned.iter().map(|p| p.endpoints.len()).sum();
    let capacity = 1024 + planned.len() * 300 + total_endpoints * 330;
    finish(capacity, |out| {
        write_iptables(
            out,
            &planned,
            total_endpoints,
            &IptablesScope {
                builtin_jumps: true,
                stale_chains: &[],
                rewrite: None,
            },
        )
    })
}

/// What kube-proxy's iptables mode hands `iptables-restore --noflush` on a full sync after the
/// Services changed from `previous` to `services`: every `KUBE-*` chain declared (which
/// flushes it) and rewritten, and `-X` for each chain of `previous` that is gone. The jumps
/// from the built-in chains are not in it: kube-proxy keeps those with separate
/// `iptables -C`/`-I` calls.
pub fn iptables_full_sync(services: &[BaselineService], previous: &[BaselineService]) -> String {
    let planned = plan(services);
    let total_endpoints: usize = planned.iter().map(|p| p.endpoints.len()).sum();
    let capacity = 1024 + planned.len() * 300 + total_endpoints * 330;
    let current: HashSet<String> = iptables_chain_names(&planned).into_iter().collect();
    let stale: Vec<String> = iptables_chain_names(&plan(previous))
        .into_iter()
        .filter(|c| !current.contains(c))
        .collect();
    finish(capacity, |out| {
        write_iptables(
            out,
            &planned,
            total_endpoints,
            &IptablesScope {
                builtin_jumps: false,
                stale_chains: &stale,
                rewrite: None,
            },
        )
    })
}

/// What kube-proxy's iptables mode (1.28 and later, `MinimizeIPTablesRestore`) hands
/// `iptables-restore --noflush` when only the Service ports in `changed` changed since
/// `previous`: the top-level chains (`KUBE-SERVICES` with one rule per Service port, and the
/// others) rewritten in full, the changed ports' `KUBE-SVC-*`/`KUBE-SEP-*` chains rewritten,
/// stale chains flushed and deleted, every other chain left alone. `changed` holds
/// `(namespace, name, port name)`.
pub fn iptables_partial_sync(
    services: &[BaselineService],
    previous: &[BaselineService],
    changed: &[(&str, &str, &str)],
) -> String {
    let planned = plan(services);
    let total_endpoints: usize = planned.iter().map(|p| p.endpoints.len()).sum();
    let rewrite: HashSet<String> = planned
        .iter()
        .filter(|p| {
            changed.iter().any(|&(ns, name, port)| {
                (
                    p.svc.namespace.as_str(),
                    p.svc.name.as_str(),
                    p.svc.port_name.as_str(),
                ) == (ns, name, port)
            })
        })
        .map(|p| p.port_name_string.clone())
        .collect();
    let current: HashSet<String> = iptables_chain_names(&planned).into_iter().collect();
    let stale: Vec<String> = iptables_chain_names(&plan(previous))
        .into_iter()
        .filter(|c| !current.contains(c))
        .collect();
    finish(1024 + planned.len() * 200, |out| {
        write_iptables(
            out,
            &planned,
            total_endpoints,
            &IptablesScope {
                builtin_jumps: false,
                stale_chains: &stale,
                rewrite: Some(&rewrite),
            },
        )
    })
}

/// The `KUBE-SVC-*` and `KUBE-SEP-*` chains of `planned`.
fn iptables_chain_names(planned: &[Planned<'_>]) -> Vec<String> {
    let mut names = Vec::new();
    for p in planned {
        let spn = p.port_name_string.as_str();
        names.push(iptables_service_chain(spn, p.svc.proto));
        for (ip, port) in &p.endpoints {
            names.push(iptables_endpoint_chain(
                spn,
                p.svc.proto,
                &format!("{ip}:{port}"),
            ));
        }
    }
    names
}

/// The nftables transaction kube-proxy's nftables mode runs when the endpoints of one Service
/// port change from `old` to `new` (same Service port): the service chain is flushed and gets
/// its new `numgen` vmap, each remaining endpoint chain is rewritten, and the chain of each
/// endpoint that left is flushed and deleted. (kube-proxy deletes stale chains a second later,
/// in a later transaction, because kernels before 6.2 noticed a dropped reference late; on the
/// benchmark's kernel one transaction is equivalent.) A Service without endpoints left is not
/// handled here: kube-proxy would move it to its `filter` side, which the benchmark leaves out.
pub fn nft_endpoint_change(old: &BaselineService, new: &BaselineService) -> String {
    const T: &str = "ip kube-proxy";
    let old_endpoints = dedup_endpoints(&old.backends);
    let new_endpoints = dedup_endpoints(&new.backends);
    finish(4096 + new_endpoints.len() * 400, |out| {
        let svc_chain = nft_service_chain(new);
        let endpoint_chains: Vec<String> = new_endpoints
            .iter()
            .map(|&(ip, port)| nft_endpoint_chain(new, ip, port))
            .collect();
        for ((ip, port), chain) in new_endpoints.iter().zip(&endpoint_chains) {
            for verb in ["add", "flush"] {
                write!(out, "{verb} chain {T} ")?;
                write_nft_name(out, chain);
                out.push('\n');
            }
            write!(out, "add rule {T} ")?;
            write_nft_name(out, chain);
            write!(
                out,
                " ip saddr {ip} jump mark-for-masquerade\nadd rule {T} "
            )?;
            write_nft_name(out, chain);
            writeln!(
                out,
                " meta l4proto {} dnat to {ip}:{port}",
                new.proto.as_str()
            )?;
        }
        for verb in ["add", "flush"] {
            write!(out, "{verb} chain {T} ")?;
            write_nft_name(out, &svc_chain);
            out.push('\n');
        }
        if !endpoint_chains.is_empty() {
            write!(out, "add rule {T} ")?;
            write_nft_name(out, &svc_chain);
            write!(out, " numgen random mod {} vmap {{ ", endpoint_chains.len())?;
            for (i, chain) in endpoint_chains.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write!(out, "{i} : goto ")?;
                write_nft_name(out, chain);
            }
            out.push_str(" }\n");
        }
        for &(ip, port) in old_endpoints.iter().filter(|e| !new_endpoints.contains(e)) {
            let chain = nft_endpoint_chain(old, ip, port);
            for verb in ["flush", "delete"] {
                write!(out, "{verb} chain {T} ")?;
                write_nft_name(out, &chain);
                out.push('\n');
            }
        }
        Ok(())
    })
}

/// Renders an `nft -f` script that creates kube-proxy's nftables-mode table `ip kube-proxy`.
///
/// The table holds the `nat-prerouting`/`nat-output` (`dstnat`) and `nat-postrouting`
/// (`srcnat`) base chains, the `services` chain dispatching through the `service-ips` verdict
/// map (and the empty `service-nodeports` map), `mark-for-masquerade`, `masquerading`, and per
/// Service a `service-<hash>-<ns>/<name>/<proto>/<port>` chain balancing with
/// `numgen random mod N vmap { 0 : goto endpoint-…, … }` over
/// `endpoint-<hash>-<ns>/<name>/<proto>/<port>__<ip>/<port>` chains.
///
/// The script is one transaction, like kube-proxy's own full sync, and begins with
/// `add table` + `delete table`, so loading it replaces an existing `ip kube-proxy` table
/// atomically. It uses knftables-style one-line statements (`add chain`, `add rule`), orders
/// them so the kernel binds each anonymous vmap while the transaction is still short, and adds
/// the `service-ips` elements at the end in `add element` statements of 1000 elements each.
/// The kernel's cost of one such transaction still grows super-linearly with the number of
/// Services, as it does for kube-proxy's (70-85 s for 10 000 Services with 10 endpoints
/// each on nft 1.0.6 and kernel 6.18); [`nft_script_batches`] spreads the same ruleset over
/// several transactions.
pub fn nft_script(services: &[BaselineService]) -> String {
    let planned = plan(services);
    finish(nft_capacity(&planned), |out| {
        write_nft_skeleton(out)?;
        write_nft_services(out, &planned)
    })
}

/// The ruleset of [`nft_script`] as several `nft -f` scripts of `services_per_batch` Services
/// each (all Services in one script if it is 0), to be loaded one after another.
///
/// The first script replaces the table and creates the fixed chains and maps; each later one
/// only adds its Services' chains, rules and map elements. Loaded in order they give exactly the
/// table [`nft_script`] gives, but in one kernel transaction per script, which avoids most of
/// the super-linear cost of one big transaction: 10 000 Services with 10 endpoints each took
/// 21-26 s as 10 scripts of 1000 Services against 70-85 s as one script (nft 1.0.6,
/// kernel 6.18). kube-proxy itself programs a full sync as one transaction; use
/// [`nft_script`] to measure that.
pub fn nft_script_batches(services: &[BaselineService], services_per_batch: usize) -> Vec<String> {
    let planned = plan(services);
    let per_batch = if services_per_batch == 0 {
        planned.len().max(1)
    } else {
        services_per_batch
    };
    let mut batches = planned.chunks(per_batch);
    let first_batch = batches.next().unwrap_or_default();
    let mut scripts = Vec::with_capacity(planned.len().div_ceil(per_batch).max(1));
    scripts.push(finish(nft_capacity(first_batch), |out| {
        write_nft_skeleton(out)?;
        write_nft_services(out, first_batch)
    }));
    scripts.extend(
        batches.map(|batch| finish(nft_capacity(batch), |out| write_nft_services(out, batch))),
    );
    scripts
}

/// A generous size guess for the nft script of `planned`, so the String is allocated once.
fn nft_capacity(planned: &[Planned<'_>]) -> usize {
    let endpoints: usize = planned.iter().map(|p| p.endpoints.len()).sum();
    2048 + planned.len() * 500 + endpoints * 420
}

/// An `iptables-restore` file that removes what [`iptables_restore`] installed: it flushes
/// every chain of the `nat` table (the jumps from `PREROUTING`/`OUTPUT`/`POSTROUTING` included)
/// and deletes every user-defined chain (all `KUBE-*` chains).
///
/// It takes no Service list, so it cannot name the `KUBE-SVC-*`/`KUBE-SEP-*` chains one by one:
/// it resets the whole `nat` table of the namespace it is loaded into. It works with and without
/// `--noflush`, and loading it again is harmless. Use it only in the benchmark's own namespace.
pub fn iptables_cleanup() -> String {
    concat!(
        "*nat\n",
        ":PREROUTING ACCEPT [0:0]\n",
        ":INPUT ACCEPT [0:0]\n",
        ":OUTPUT ACCEPT [0:0]\n",
        ":POSTROUTING ACCEPT [0:0]\n",
        "-F\n",
        "-X\n",
        "COMMIT\n",
    )
    .to_owned()
}

/// An `nft -f` script that removes the table [`nft_script`] installed. It adds the table before
/// deleting it (as kube-proxy's knftables does), so it succeeds when the table is already gone.
pub fn nft_cleanup() -> String {
    "add table ip kube-proxy\ndelete table ip kube-proxy\n".to_owned()
}

/// One [`BaselineService`] per port of each of `services`, in order.
pub fn baseline_services(services: &[ServiceSpec]) -> Vec<BaselineService> {
    services
        .iter()
        .flat_map(|svc| {
            svc.ports.iter().map(|port| BaselineService {
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                port_name: port.name.clone(),
                vip: svc.vip,
                port: port.port,
                proto: Proto::Tcp,
                backends: port.backends.iter().map(|b| (*b.ip(), b.port())).collect(),
            })
        })
        .collect()
}

/// Runs `render` into a String of `capacity` bytes.
///
/// `fmt::Write` for `String` never fails, and every `Display` written here is std's, so the
/// `fmt::Result` is only checked in debug builds.
fn finish(capacity: usize, render: impl FnOnce(&mut String) -> fmt::Result) -> String {
    let mut out = String::with_capacity(capacity);
    let result = render(&mut out);
    debug_assert!(result.is_ok(), "formatting into a String failed");
    out
}

/// A Service that will be rendered, with its deduplicated endpoints.
struct Planned<'a> {
    svc: &'a BaselineService,
    /// kube-proxy's `ServicePortName.String()`: `ns/name:port`, or `ns/name` without a port name.
    port_name_string: String,
    endpoints: Vec<(Ipv4Addr, u16)>,
}

/// Picks the Services kube-proxy would program in the NAT table, in input order.
fn plan(services: &[BaselineService]) -> Vec<Planned<'_>> {
    let mut seen_names: HashSet<(String, Proto)> = HashSet::with_capacity(services.len());
    let mut seen_dests: HashSet<(Ipv4Addr, u16, Proto)> = HashSet::with_capacity(services.len());
    let mut planned = Vec::with_capacity(services.len());
    for svc in services {
        let endpoints = dedup_endpoints(&svc.backends);
        if endpoints.is_empty() {
            continue;
        }
        let port_name_string = if svc.port_name.is_empty() {
            format!("{}/{}", svc.namespace, svc.name)
        } else {
            format!("{}/{}:{}", svc.namespace, svc.name, svc.port_name)
        };
        let name_key = (port_name_string, svc.proto);
        let dest_key = (svc.vip, svc.port, svc.proto);
        if seen_names.contains(&name_key) || seen_dests.contains(&dest_key) {
            continue;
        }
        seen_dests.insert(dest_key);
        seen_names.insert(name_key.clone());
        planned.push(Planned {
            svc,
            port_name_string: name_key.0,
            endpoints,
        });
    }
    planned
}

/// `backends` without repeats, first occurrence kept.
fn dedup_endpoints(backends: &[(Ipv4Addr, u16)]) -> Vec<(Ipv4Addr, u16)> {
    let mut out = Vec::with_capacity(backends.len());
    if backends.len() <= 32 {
        for b in backends {
            if !out.contains(b) {
                out.push(*b);
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(backends.len());
        out.extend(backends.iter().copied().filter(|b| seen.insert(*b)));
    }
    out
}

/// The first `bytes * 8 / 5` characters of base32(sha256(parts)), standard alphabet.
///
/// kube-proxy encodes the whole digest and cuts the string; base32 maps every 5 input bytes to
/// 8 output characters, so encoding only the first `bytes` (a multiple of 5) gives the same
/// prefix without padding.
pub(crate) fn hash_prefix(parts: &[&[u8]], bytes: usize) -> String {
    debug_assert!(bytes.is_multiple_of(5) && bytes <= 30);
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        &digest[..bytes],
    )
}

/// kube-proxy's `servicePortPolicyClusterChain` (a.k.a. `servicePortChainName`):
/// `KUBE-SVC-` + 16 chars of base32(sha256(portName + protocol)).
fn iptables_service_chain(port_name_string: &str, proto: Proto) -> String {
    let hash = hash_prefix(
        &[port_name_string.as_bytes(), proto.as_str().as_bytes()],
        10,
    );
    format!("KUBE-SVC-{hash}")
}

/// kube-proxy's `servicePortEndpointChainName`:
/// `KUBE-SEP-` + 16 chars of base32(sha256(portName + protocol + "ip:port")).
fn iptables_endpoint_chain(port_name_string: &str, proto: Proto, endpoint: &str) -> String {
    let hash = hash_prefix(
        &[
            port_name_string.as_bytes(),
            proto.as_str().as_bytes(),
            endpoint.as_bytes(),
        ],
        10,
    );
    format!("KUBE-SEP-{hash}")
}

/// kube-proxy's nftables `hashAndTruncate`: 8 chars of base32(sha256(name)), `-`, name, cut
/// to [`NFT_CHAIN_BASE_MAX`] bytes with a `...` tail.
fn nft_hash_and_truncate(name: &str) -> String {
    let hash = hash_prefix(&[name.as_bytes()], 5);
    let mut out = String::with_capacity(hash.len() + 1 + name.len());
    out.push_str(&hash);
    out.push('-');
    out.push_str(name);
    if out.len() > NFT_CHAIN_BASE_MAX {
        let mut cut = NFT_CHAIN_BASE_MAX - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// kube-proxy's nftables service chain: `service-` + `servicePortChainNameBase`
/// (`HASH-ns/name/proto/portname`).
fn nft_service_chain(svc: &BaselineService) -> String {
    let name = format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        svc.proto.as_str(),
        svc.port_name
    );
    format!("service-{}", nft_hash_and_truncate(&name))
}

/// kube-proxy's nftables endpoint chain: `endpoint-` + `servicePortEndpointChainNameBase`
/// (`HASH-ns/name/proto/portname__ip/port`).
fn nft_endpoint_chain(svc: &BaselineService, ip: Ipv4Addr, port: u16) -> String {
    let name = format!(
        "{}/{}/{}/{}__{}/{}",
        svc.namespace,
        svc.name,
        svc.proto.as_str(),
        svc.port_name,
        ip,
        port
    );
    format!("endpoint-{}", nft_hash_and_truncate(&name))
}

/// kube-proxy's `computeProbability`: `1/n` with 10 decimals (`%0.10f`).
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// The `--probability` strings for 0..=max endpoints (index 0 unused), as kube-proxy caches them.
fn probabilities(max: usize) -> Vec<String> {
    (0..=max)
        .map(|n| {
            if n == 0 {
                String::new()
            } else {
                probability(n)
            }
        })
        .collect()
}

/// Writes the `*nat` table: all chain declarations first, then all rules, as kube-proxy's
/// `natChains` and `natRules` buffers end up in its restore input.
/// What an `iptables-restore` input covers besides the top-level chains.
struct IptablesScope<'a> {
    /// Add the jumps from the built-in chains (a first load into an empty table).
    builtin_jumps: bool,
    /// Chains to flush and delete (`-X`).
    stale_chains: &'a [String],
    /// Write the `KUBE-SVC-*`/`KUBE-SEP-*` chains of these Service ports only (kube-proxy's
    /// `ServicePortName.String()`); all of them when `None`.
    rewrite: Option<&'a HashSet<String>>,
}

fn write_iptables(
    out: &mut String,
    planned: &[Planned<'_>],
    total_endpoints: usize,
    scope: &IptablesScope<'_>,
) -> fmt::Result {
    let rewritten = |p: &Planned<'_>| {
        scope
            .rewrite
            .is_none_or(|set| set.contains(&p.port_name_string))
    };
    let stale_chains = scope.stale_chains;
    let large_cluster = total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
    let max_endpoints = planned.iter().map(|p| p.endpoints.len()).max().unwrap_or(0);
    let probs = probabilities(max_endpoints);

    // First pass: chain names (KUBE-SVC-*, then its KUBE-SEP-*), each hashed once.
    let mut endpoint_string = String::with_capacity(24);
    let mut names: Vec<(String, Vec<String>)> = Vec::with_capacity(planned.len());
    for p in planned {
        let spn = p.port_name_string.as_str();
        let mut endpoint_chains = Vec::with_capacity(p.endpoints.len());
        for &(ip, port) in &p.endpoints {
            endpoint_string.clear();
            write!(endpoint_string, "{ip}:{port}")?;
            endpoint_chains.push(iptables_endpoint_chain(spn, p.svc.proto, &endpoint_string));
        }
        names.push((iptables_service_chain(spn, p.svc.proto), endpoint_chains));
    }

    out.push_str("*nat\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        writeln!(out, ":{chain} - [0:0]")?;
    }
    for (svc_chain, endpoint_chains) in planned
        .iter()
        .zip(&names)
        .filter(|(p, _)| rewritten(p))
        .map(|(_, n)| n)
    {
        writeln!(out, ":{svc_chain} - [0:0]")?;
        for chain in endpoint_chains {
            writeln!(out, ":{chain} - [0:0]")?;
        }
    }
    // Declaring a stale chain flushes it, so that `-X` can delete it (kube-proxy does the same).
    for chain in stale_chains {
        writeln!(out, ":{chain} - [0:0]")?;
    }

    // kube-proxy installs these three with `iptables -I` (EnsureRule) outside the restore.
    let jumps = if scope.builtin_jumps { 3 } else { 0 };
    for (builtin, comment, target) in [
        ("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
        ("OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
        (
            "POSTROUTING",
            "kubernetes postrouting rules",
            "KUBE-POSTROUTING",
        ),
    ]
    .into_iter()
    .take(jumps)
    {
        writeln!(
            out,
            "-A {builtin} -m comment --comment \"{comment}\" -j {target}"
        )?;
    }
    writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    )?;
    writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}")?;
    out.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n",
    );
    writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}")?;

    for (p, (svc_chain, endpoint_chains)) in planned.iter().zip(&names) {
        let svc = p.svc;
        let proto = svc.proto.as_str();
        let spn = p.port_name_string.as_str();
        writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{spn} cluster IP\" -m {proto} -p {proto} \
             -d {} --dport {} -j {svc_chain}",
            svc.vip, svc.port
        )?;
        if !rewritten(p) {
            continue;
        }

        let n = p.endpoints.len();
        for (i, ((ip, port), chain)) in p.endpoints.iter().zip(endpoint_chains).enumerate() {
            write!(out, "-A {svc_chain}")?;
            if !large_cluster {
                write!(out, " -m comment --comment \"{spn} -> {ip}:{port}\"")?;
            }
            if i + 1 < n {
                write!(
                    out,
                    " -m statistic --mode random --probability {}",
                    probs[n - i]
                )?;
            }
            writeln!(out, " -j {chain}")?;
        }

        for ((ip, port), chain) in p.endpoints.iter().zip(endpoint_chains) {
            write!(out, "-A {chain}")?;
            if !large_cluster {
                write!(out, " -m comment --comment {spn}")?;
            }
            writeln!(out, " -s {ip} -j KUBE-MARK-MASQ")?;
            write!(out, "-A {chain}")?;
            if !large_cluster {
                write!(out, " -m comment --comment {spn}")?;
            }
            writeln!(
                out,
                " -m {proto} -p {proto} -j DNAT --to-destination {ip}:{port}"
            )?;
        }
    }

    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    for chain in stale_chains {
        writeln!(out, "-X {chain}")?;
    }
    out.push_str("COMMIT\n");
    Ok(())
}

/// Writes `name` as an nft identifier, in double quotes unless it only holds characters an
/// unquoted nft string may hold (`[A-Za-z0-9/._-]`, starting with a letter).
fn write_nft_name(out: &mut String, name: &str) {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    if plain {
        out.push_str(name);
    } else {
        out.push('"');
        out.push_str(name);
        out.push('"');
    }
}

/// The table, base chains, maps and fixed chains of kube-proxy's `setupNFTables` (NAT side),
/// replacing any previous `ip kube-proxy` table in the same transaction (knftables' add+delete
/// idiom). kube-proxy asks for priority `dstnat` on both nat-prerouting and nat-output; nft
/// before 1.0.9 only accepts that name on the prerouting hook, so nat-output gets its numeric
/// value, -100 (`NF_IP_PRI_NAT_DST`).
fn write_nft_skeleton(out: &mut String) -> fmt::Result {
    const T: &str = "ip kube-proxy";
    writeln!(out, "add table {T}\ndelete table {T}")?;
    writeln!(
        out,
        "add table {T} {{ comment \"rules for kube-proxy\" ; }}"
    )?;
    for (chain, hook, priority) in [
        ("nat-prerouting", "prerouting", "dstnat"),
        ("nat-output", "output", "-100"),
        ("nat-postrouting", "postrouting", "srcnat"),
    ] {
        writeln!(
            out,
            "add chain {T} {chain} {{ type nat hook {hook} priority {priority} ; policy accept ; }}"
        )?;
    }
    for chain in ["services", "masquerading", "mark-for-masquerade"] {
        writeln!(out, "add chain {T} {chain}")?;
    }
    for (chain, target) in [
        ("nat-output", "services"),
        ("nat-prerouting", "services"),
        ("nat-postrouting", "masquerading"),
    ] {
        writeln!(out, "add rule {T} {chain} jump {target}")?;
    }
    writeln!(
        out,
        "add rule {T} mark-for-masquerade mark set mark or {MASQ_MARK}"
    )?;
    writeln!(
        out,
        "add rule {T} masquerading mark and {MASQ_MARK} == 0 return"
    )?;
    writeln!(
        out,
        "add rule {T} masquerading mark set mark xor {MASQ_MARK}"
    )?;
    writeln!(out, "add rule {T} masquerading masquerade fully-random")?;
    writeln!(
        out,
        "add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    )?;
    writeln!(
        out,
        "add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; \
         comment \"NodePort traffic\" ; }}"
    )?;
    writeln!(
        out,
        "add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips"
    )?;
    writeln!(
        out,
        "add rule {T} services fib daddr type local ip daddr != 127.0.0.0/8 \
         meta l4proto . th dport vmap @service-nodeports"
    )
}

/// The chains, rules and `service-ips` elements of `planned`, in the order that keeps the
/// transaction cheapest for the kernel.
///
/// Binding each Service's anonymous `numgen` vmap walks the whole pending transaction in the
/// kernel (`__nft_set_trans_bind`), so the load time grows with (number of Services) x
/// (transaction length at that point): the known super-linear cold sync of kube-proxy's nftables
/// mode. Each Service's chain and vmap therefore come right after its (still empty) endpoint
/// chains, and the 2 rules per endpoint and the map elements only after all Services. The
/// resulting ruleset is the same as with kube-proxy's order (each chain created and filled in
/// turn), which took about 3 times as long to load for 10 000 Services.
fn write_nft_services(out: &mut String, planned: &[Planned<'_>]) -> fmt::Result {
    const T: &str = "ip kube-proxy";
    let mut service_chains: Vec<String> = Vec::with_capacity(planned.len());
    let mut endpoint_chains: Vec<String> = Vec::new();
    let mut all_endpoint_chains: Vec<String> =
        Vec::with_capacity(planned.iter().map(|p| p.endpoints.len()).sum());
    for p in planned {
        endpoint_chains.clear();
        for &(ip, port) in &p.endpoints {
            let chain = nft_endpoint_chain(p.svc, ip, port);
            write!(out, "add chain {T} ")?;
            write_nft_name(out, &chain);
            out.push('\n');
            endpoint_chains.push(chain);
        }
        let svc_chain = nft_service_chain(p.svc);
        write!(out, "add chain {T} ")?;
        write_nft_name(out, &svc_chain);
        write!(out, "\nadd rule {T} ")?;
        write_nft_name(out, &svc_chain);
        write!(out, " numgen random mod {} vmap {{ ", endpoint_chains.len())?;
        for (i, chain) in endpoint_chains.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(out, "{i} : goto ")?;
            write_nft_name(out, chain);
        }
        out.push_str(" }\n");
        service_chains.push(svc_chain);
        all_endpoint_chains.append(&mut endpoint_chains);
    }

    let mut chains = all_endpoint_chains.iter();
    for p in planned {
        let proto = p.svc.proto.as_str();
        for ((ip, port), chain) in p.endpoints.iter().zip(chains.by_ref()) {
            write!(out, "add rule {T} ")?;
            write_nft_name(out, chain);
            write!(
                out,
                " ip saddr {ip} jump mark-for-masquerade\nadd rule {T} "
            )?;
            write_nft_name(out, chain);
            writeln!(out, " meta l4proto {proto} dnat to {ip}:{port}")?;
        }
    }

    for (chunk_planned, chunk_chains) in planned
        .chunks(NFT_ELEMENTS_PER_STATEMENT)
        .zip(service_chains.chunks(NFT_ELEMENTS_PER_STATEMENT))
    {
        write!(out, "add element {T} service-ips {{")?;
        for (i, (p, chain)) in chunk_planned.iter().zip(chunk_chains).enumerate() {
            let svc = p.svc;
            let sep = if i == 0 { " " } else { ", " };
            write!(
                out,
                "{sep}{} . {} . {} : goto ",
                svc.vip,
                svc.proto.as_str(),
                svc.port
            )?;
            write_nft_name(out, chain);
        }
        out.push_str(" }\n");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns1_svc1() -> BaselineService {
        BaselineService {
            namespace: "ns1".to_owned(),
            name: "svc1".to_owned(),
            port_name: "p80".to_owned(),
            vip: Ipv4Addr::new(172, 30, 0, 41),
            port: 80,
            proto: Proto::Tcp,
            backends: vec![(Ipv4Addr::new(10, 180, 0, 1), 80)],
        }
    }

    /// `n` Services `bench/svc-{i}` (port `http`, TCP 80, VIPs from the benchmark's range) with
    /// `backends_each` endpoints each, taken round-robin from `pool`.
    fn synthetic(n: usize, backends_each: usize, pool: &[(Ipv4Addr, u16)]) -> Vec<BaselineService> {
        let mut cursor = 0;
        (0..n)
            .map(|i| BaselineService {
                namespace: "bench".to_owned(),
                name: format!("svc-{i}"),
                port_name: "http".to_owned(),
                vip: crate::services::vip(i),
                port: 80,
                proto: Proto::Tcp,
                backends: (0..backends_each.min(pool.len()))
                    .map(|_| {
                        cursor += 1;
                        pool[(cursor - 1) % pool.len()]
                    })
                    .collect(),
            })
            .collect()
    }

    fn pool(n: u8) -> Vec<(Ipv4Addr, u16)> {
        (1..=n)
            .map(|i| (Ipv4Addr::new(10, 244, 0, i), 8080))
            .collect()
    }

    /// Declared chain names (`:NAME - [0:0]` lines) of an iptables-restore file.
    fn iptables_chains(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    /// Chain names an nft script creates (`add chain ip kube-proxy NAME ...` lines).
    fn nft_chains(text: &str) -> Vec<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("add chain ip kube-proxy "))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    #[test]
    fn iptables_chain_names_match_kube_proxy() {
        // Pinned from kubernetes pkg/proxy/iptables/proxier_test.go, where Service port
        // "ns1/svc1:p80" (TCP) is KUBE-SVC-XPGD46QRK7WJZT7O and its endpoint 10.180.0.1:80 is
        // KUBE-SEP-SXIVWICOYRO3J4NJ.
        assert_eq!(
            iptables_service_chain("ns1/svc1:p80", Proto::Tcp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            iptables_endpoint_chain("ns1/svc1:p80", Proto::Tcp, "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        // The protocol is part of the hash.
        assert_ne!(
            iptables_service_chain("ns1/svc1:p80", Proto::Udp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
    }

    #[test]
    fn nft_chain_names_match_kube_proxy() {
        // Pinned from the doc comments of servicePortChainNameBase and
        // servicePortEndpointChainNameBase in kubernetes pkg/proxy/nftables/proxier.go.
        let svc = ns1_svc1();
        assert_eq!(nft_service_chain(&svc), "service-ULMVA6XW-ns1/svc1/tcp/p80");
        assert_eq!(
            nft_endpoint_chain(&svc, Ipv4Addr::new(10, 180, 0, 1), 80),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
    }

    #[test]
    fn nft_long_names_are_truncated_like_kube_proxy() {
        let long = "a".repeat(300);
        let name = nft_hash_and_truncate(&long);
        assert_eq!(name.len(), NFT_CHAIN_BASE_MAX);
        assert!(name.ends_with("..."));
        assert_eq!(name.as_bytes()[8], b'-');
    }

    #[test]
    fn probabilities_for_three_endpoints() {
        let mut svc = ns1_svc1();
        svc.backends = pool(3);
        let text = iptables_restore(&[svc]);
        let svc_chain = iptables_service_chain("ns1/svc1:p80", Proto::Tcp);
        let balancing: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc_chain} ")))
            .collect();
        assert_eq!(balancing.len(), 3);
        assert!(balancing[0].contains("-m statistic --mode random --probability 0.3333333333 "));
        assert!(balancing[1].contains("-m statistic --mode random --probability 0.5000000000 "));
        assert!(!balancing[2].contains("statistic"));
        assert!(!balancing[2].contains("probability"));
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(7), "0.1428571429");
    }

    #[test]
    fn one_service_renders_kube_proxy_iptables_rules() {
        let text = iptables_restore(&[ns1_svc1()]);
        assert!(text.starts_with("*nat\n"));
        assert!(text.ends_with("COMMIT\n"));
        for line in [
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-NODEPORTS - [0:0]",
            ":KUBE-POSTROUTING - [0:0]",
            ":KUBE-MARK-MASQ - [0:0]",
            ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]",
            ":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]",
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            "-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
            "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -j KUBE-SEP-SXIVWICOYRO3J4NJ",
            "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in\n{text}"
            );
        }
        // The NodePorts dispatch is the last rule of KUBE-SERVICES.
        let last_services_rule = text.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES "));
        assert_eq!(
            last_services_rule,
            Some(
                "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this \
                 must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
            )
        );
        // Chains are declared before any rule.
        let lines: Vec<&str> = text.lines().collect();
        let first_rule = lines.iter().position(|l| l.starts_with("-A "));
        let last_chain = lines.iter().rposition(|l| l.starts_with(':'));
        assert!(last_chain < first_rule);
    }

    #[test]
    fn one_service_renders_kube_proxy_nft_rules() {
        let mut svc = ns1_svc1();
        svc.backends.push((Ipv4Addr::new(10, 180, 0, 2), 80));
        let ep1 = nft_endpoint_chain(&svc, Ipv4Addr::new(10, 180, 0, 1), 80);
        let ep2 = nft_endpoint_chain(&svc, Ipv4Addr::new(10, 180, 0, 2), 80);
        let text = nft_script(&[svc]);
        let t = "ip kube-proxy";
        let svc_chain = "service-ULMVA6XW-ns1/svc1/tcp/p80";
        let expected = [
            format!("add table {t}"),
            format!("delete table {t}"),
            format!("add table {t} {{ comment \"rules for kube-proxy\" ; }}"),
            format!(
                "add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; }}"
            ),
            format!(
                "add chain {t} nat-output {{ type nat hook output priority -100 ; policy accept ; }}"
            ),
            format!(
                "add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}"
            ),
            format!("add rule {t} nat-prerouting jump services"),
            format!("add rule {t} nat-output jump services"),
            format!("add rule {t} nat-postrouting jump masquerading"),
            format!("add rule {t} mark-for-masquerade mark set mark or 0x4000"),
            format!("add rule {t} masquerading mark and 0x4000 == 0 return"),
            format!("add rule {t} masquerading mark set mark xor 0x4000"),
            format!("add rule {t} masquerading masquerade fully-random"),
            format!(
                "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
            ),
            format!("add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"),
            format!("add chain {t} {svc_chain}"),
            format!("add chain {t} endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
            format!(
                "add rule {t} {svc_chain} numgen random mod 2 vmap {{ 0 : goto {ep1}, 1 : goto {ep2} }}"
            ),
            format!("add rule {t} {ep1} ip saddr 10.180.0.1 jump mark-for-masquerade"),
            format!("add rule {t} {ep1} meta l4proto tcp dnat to 10.180.0.1:80"),
            format!("add rule {t} {ep2} ip saddr 10.180.0.2 jump mark-for-masquerade"),
            format!("add rule {t} {ep2} meta l4proto tcp dnat to 10.180.0.2:80"),
            format!("add element {t} service-ips {{ 172.30.0.41 . tcp . 80 : goto {svc_chain} }}"),
        ];
        for line in &expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in\n{text}"
            );
        }
        // Every chain is created before a rule or element refers to it.
        let lines: Vec<&str> = text.lines().collect();
        let created = |name: &str| {
            lines
                .iter()
                .position(|l| *l == format!("add chain {t} {name}"))
        };
        let first_use = |needle: &str| lines.iter().position(|l| l.contains(needle));
        for chain in [ep1.as_str(), ep2.as_str(), svc_chain] {
            assert!(created(chain) < first_use(&format!("goto {chain}")));
            assert!(created(chain).is_some());
        }
    }

    #[test]
    fn nft_quotes_names_only_when_needed() {
        let mut out = String::new();
        write_nft_name(&mut out, "service-ULMVA6XW-ns1/svc1/tcp/p80");
        assert_eq!(out, "service-ULMVA6XW-ns1/svc1/tcp/p80");
        out.clear();
        write_nft_name(&mut out, "service-ABC-ns/Weird Name/tcp/");
        assert_eq!(out, "\"service-ABC-ns/Weird Name/tcp/\"");
    }

    #[test]
    fn large_cluster_mode_drops_endpoint_comments() {
        let services = synthetic(200, 10, &pool(50));
        let text = iptables_restore(&services);
        assert!(!text.contains(" -> "));
        assert!(!text.contains("--comment bench/"));
        assert!(text.contains("--comment \"bench/svc-0:http cluster IP\""));
        let small = iptables_restore(&services[..100]);
        assert!(small.contains("--comment \"bench/svc-0:http -> 10.244.0.1:8080\""));
        assert!(small.contains("--comment bench/svc-0:http -s 10.244.0.1 -j KUBE-MARK-MASQ"));
    }

    #[test]
    fn unnamed_ports_empty_services_and_duplicates() {
        let mut unnamed = ns1_svc1();
        unnamed.port_name.clear();
        unnamed.backends.push(unnamed.backends[0]);
        let mut empty = ns1_svc1();
        empty.name = "empty".to_owned();
        empty.vip = Ipv4Addr::new(172, 30, 0, 42);
        empty.backends.clear();
        let same_vip = BaselineService {
            name: "other".to_owned(),
            ..unnamed.clone()
        };
        let services = [unnamed, empty, same_vip];
        let text = iptables_restore(&services);
        assert!(text.contains("--comment \"ns1/svc1 cluster IP\""));
        assert!(!text.contains("empty"));
        assert!(!text.contains("ns1/other"));
        // One service chain and one endpoint chain besides the four fixed chains.
        assert_eq!(iptables_chains(&text).len(), 6);
        let nft = nft_script(&services);
        assert!(
            nft.lines()
                .any(|l| l.starts_with("add chain ip kube-proxy service-")
                    && l.ends_with("-ns1/svc1/tcp/"))
        );
        assert_eq!(nft.matches("numgen random mod 1 ").count(), 1);
    }

    #[test]
    fn ten_thousand_services_have_no_duplicate_chain_names() {
        let services = synthetic(10_000, 10, &pool(250));
        let text = iptables_restore(&services);
        let chains = iptables_chains(&text);
        assert_eq!(chains.len(), 4 + 10_000 + 100_000);
        let unique: HashSet<&str> = chains.iter().copied().collect();
        assert_eq!(unique.len(), chains.len());
        assert!(
            chains.iter().all(|c| c.len() <= 28),
            "iptables chain name too long"
        );

        let nft = nft_script(&services);
        let chains = nft_chains(&nft);
        assert_eq!(chains.len(), 6 + 10_000 + 100_000);
        let unique: HashSet<&str> = chains.iter().copied().collect();
        assert_eq!(unique.len(), chains.len());
        assert_eq!(nft.matches(" : goto service-").count(), 10_000);
    }

    #[test]
    fn nft_batches_hold_the_same_ruleset() {
        let services = synthetic(25, 3, &pool(20));
        let whole = nft_script(&services);
        assert_eq!(nft_script_batches(&services, 0), vec![whole.clone()]);
        let batches = nft_script_batches(&services, 10);
        assert_eq!(batches.len(), 3);
        assert!(batches[0].starts_with("add table ip kube-proxy\ndelete table ip kube-proxy\n"));
        assert!(
            batches[1..]
                .iter()
                .all(|b| !b.contains("table ip kube-proxy {") && !b.contains("delete"))
        );
        let mut joined: Vec<&str> = batches.iter().flat_map(|b| b.lines()).collect();
        let mut single: Vec<&str> = whole.lines().collect();
        // Same statements; only the element statements are cut differently.
        joined.retain(|l| !l.starts_with("add element"));
        single.retain(|l| !l.starts_with("add element"));
        joined.sort_unstable();
        single.sort_unstable();
        assert_eq!(joined, single);
        let elements: usize = batches
            .iter()
            .map(|b| b.matches(" : goto service-").count())
            .sum();
        assert_eq!(elements, 25);
    }

    #[test]
    fn a_full_sync_rewrites_every_chain_and_deletes_the_departed_endpoint() {
        let before = synthetic(3, 3, &pool(6));
        let mut after = before.clone();
        let gone = after[2].backends.remove(0);
        let text = iptables_full_sync(&after, &before);
        let gone_chain = iptables_endpoint_chain(
            "bench/svc-2:http",
            Proto::Tcp,
            &format!("{}:{}", gone.0, gone.1),
        );
        // Every remaining chain is declared (flushed) and rewritten, the stale one declared and
        // deleted; the built-in jumps are not repeated.
        assert_eq!(iptables_chains(&text).len(), 4 + 3 + 8 + 1);
        assert!(text.lines().any(|l| l == format!(":{gone_chain} - [0:0]")));
        assert!(text.lines().any(|l| l == format!("-X {gone_chain}")));
        assert!(!text.contains("-A PREROUTING"));
        assert!(
            text.contains("--probability 0.5000000000"),
            "two endpoints left"
        );
        // Putting the backend back deletes nothing.
        assert!(!iptables_full_sync(&before, &after).contains("-X "));
    }

    #[test]
    fn a_partial_sync_rewrites_only_the_changed_service_and_the_top_level_chains() {
        let before = synthetic(3, 3, &pool(6));
        let mut after = before.clone();
        after[2].backends.remove(0);
        let text = iptables_partial_sync(&after, &before, &[("bench", "svc-2", "http")]);
        let chains = iptables_chains(&text);
        // KUBE-SERVICES & co, svc-2's service chain, its two endpoint chains, the stale one.
        assert_eq!(chains.len(), 4 + 1 + 2 + 1, "{chains:?}");
        assert!(chains.contains(&iptables_service_chain("bench/svc-2:http", Proto::Tcp).as_str()));
        assert!(!chains.contains(&iptables_service_chain("bench/svc-0:http", Proto::Tcp).as_str()));
        // KUBE-SERVICES still sends every Service to its chain.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("-A KUBE-SERVICES ") && l.contains("cluster IP"))
                .count(),
            3
        );
        assert_eq!(text.matches("-X KUBE-SEP-").count(), 1);
        assert_eq!(
            text.matches("-A KUBE-SVC-").count(),
            2,
            "svc-2 balances over 2"
        );
    }

    #[test]
    fn an_nft_endpoint_change_rewrites_one_service() {
        let before = synthetic(1, 3, &pool(3)).remove(0);
        let mut after = before.clone();
        let (ip, port) = after.backends.remove(1);
        let gone = nft_endpoint_change(&before, &after);
        let svc_chain = nft_service_chain(&after);
        let gone_chain = nft_endpoint_chain(&before, ip, port);
        let t = "ip kube-proxy";
        let lines: Vec<&str> = gone.lines().collect();
        assert!(lines.contains(&format!("flush chain {t} {svc_chain}").as_str()));
        assert_eq!(gone.matches("numgen random mod 2 vmap").count(), 1);
        assert!(!gone.contains(&format!("goto {gone_chain}")));
        let delete = lines
            .iter()
            .position(|l| *l == format!("delete chain {t} {gone_chain}"))
            .expect("the departed endpoint's chain is deleted");
        let vmap = lines
            .iter()
            .position(|l| l.contains("numgen"))
            .expect("a new vmap");
        assert!(vmap < delete, "the reference goes before the chain");
        assert_eq!(gone.matches(" dnat to ").count(), 2);
        let back = nft_endpoint_change(&after, &before);
        assert_eq!(back.matches("numgen random mod 3 vmap").count(), 1);
        assert!(!back.contains("delete chain"));
        assert!(back.contains(&format!("add chain {t} {gone_chain}")));
    }

    #[test]
    fn the_benchmark_services_become_one_baseline_service_per_port() {
        let services = crate::services::bench_services(2, 10, Ipv4Addr::new(10, 201, 0, 11));
        let baseline = baseline_services(&services);
        assert_eq!(
            baseline.len(),
            3,
            "the last Service also has the iperf3 port"
        );
        assert_eq!(baseline[2].port_name, "iperf3");
        assert_eq!(
            baseline[2].backends,
            [(Ipv4Addr::new(10, 201, 0, 11), 5201)]
        );
        assert_eq!(baseline[1].backends.len(), 10);
        assert_eq!(
            (baseline[0].vip, baseline[0].port),
            (Ipv4Addr::new(10, 96, 0, 1), 80)
        );
    }

    #[test]
    fn cleanup_scripts() {
        let ipt = iptables_cleanup();
        assert!(ipt.starts_with("*nat\n") && ipt.ends_with("COMMIT\n"));
        assert!(ipt.lines().any(|l| l == "-F") && ipt.lines().any(|l| l == "-X"));
        assert_eq!(
            nft_cleanup(),
            "add table ip kube-proxy\ndelete table ip kube-proxy\n"
        );
    }
}
