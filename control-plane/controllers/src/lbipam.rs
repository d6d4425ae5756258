//! LoadBalancer IPAM: `type: LoadBalancer` Services get an address from a built-in pool
//! (`--service-lb-pool`, in the manner of k3s ServiceLB, MetalLB and Cilium LB-IPAM) in
//! `status.loadBalancer.ingress[0].ip`, with `ipMode: VIP` (the `LoadBalancerIPMode` field,
//! GA in Kubernetes 1.32: the node datapath delivers traffic for the address itself).
//!
//! Rules:
//! - only Services whose `spec.loadBalancerClass` is unset or [`CLASS`] are handled; others
//!   belong to another implementation and are left alone;
//! - `spec.loadBalancerIP` is honoured when it is in the pool and no other Service holds it;
//!   otherwise the Service stays pending with a Warning Event `AllocationFailed`;
//! - an exhausted pool leaves the Service pending with the same Warning;
//! - an address is free again when its Service is deleted or stops being a LoadBalancer (the
//!   API server clears the status of a Service leaving `LoadBalancer`, as kube-apiserver does);
//! - the allocation is never kept in memory: each decision reads every Service's status from
//!   the API (so a restarted control plane starts from what is stored), and one Service is
//!   handled at a time, so two Services never get one address. Should two Services ever hold
//!   the same address (written by someone else), the older one keeps it and the other is
//!   moved to a free one.
//!
//! Pending Services are retried every [`PENDING_RETRY`], so an address freed by a deletion is
//! handed out within that time.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Service;
use keelson_api::cidr::Ipv4Cidr;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder},
        watcher,
    },
};
use serde_json::json;

use crate::{ApiContext, Result};

/// The `spec.loadBalancerClass` keelson's pool serves (besides Services without a class).
pub const CLASS: &str = "keelson.dev/lb";

/// How often a pending Service is tried again.
pub const PENDING_RETRY: Duration = Duration::from_secs(3);

/// The reason of the Warning Event of a Service that gets no address.
pub const ALLOCATION_FAILED: &str = "AllocationFailed";

/// The reason of the Normal Event of a Service that got its address.
pub const IP_ALLOCATED: &str = "IPAllocated";

/// The controller's name in Events.
const COMPONENT: &str = "service-lb-ipam";

/// One `--service-lb-pool` value: a CIDR (`10.0.0.0/24`: every address but the network and
/// broadcast ones, all of a /31 or /32) or an inclusive range `FIRST-LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRange {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl PoolRange {
    /// The first address handed out.
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    /// The last address handed out.
    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&ip)
    }

    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for PoolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PoolRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.contains('/') {
            let cidr: Ipv4Cidr = text
                .parse()
                .map_err(|e| format!("{text:?} is not a CIDR like 10.0.0.0/24: {e}"))?;
            let size = cidr.size();
            let (low, high) = if size <= 2 {
                (0, size - 1)
            } else {
                (1, size - 2)
            };
            let at = |i| {
                cidr.nth(i)
                    .ok_or_else(|| format!("{text:?} has no address {i}"))
            };
            return Ok(Self {
                first: at(low)?,
                last: at(high)?,
            });
        }
        let (first, last) = text.split_once('-').ok_or_else(|| {
            format!("expected CIDR or FIRST-LAST, e.g. 10.0.0.10-10.0.0.20, not {text:?}")
        })?;
        let parse = |t: &str| {
            t.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{t:?} is not an IPv4 address"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first > last {
            return Err(format!("{text:?}: the first address is after the last"));
        }
        Ok(Self { first, last })
    }
}

/// The addresses LoadBalancer Services may get: every `--service-lb-pool` value, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool(pub Vec<PoolRange>);

impl Pool {
    /// Whether no address is configured (the controller then does not run).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the pool's addresses.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.iter().any(|r| r.contains(ip))
    }

    /// The first address of the pool not in `taken`.
    pub fn first_free(&self, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.0
            .iter()
            .flat_map(PoolRange::addresses)
            .find(|ip| !taken.contains(ip))
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&ranges.join(","))
    }
}

/// What a Service needs from this controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not this controller's (another type or class, or being deleted).
    Ignore,
    /// Its status already holds its address as a VIP.
    UpToDate,
    /// Write `address` as its only ingress point.
    Assign(Ipv4Addr),
    /// It gets no address: a Warning Event with `message`; `clear` when its status still
    /// shows an address it may not keep.
    Pending {
        /// Why, for the Event.
        message: String,
        /// Empty the load-balancer status.
        clear: bool,
    },
}

/// Whether this controller serves `service`'s class.
pub fn is_ours(service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == CLASS)
}

/// The IPv4 ingress addresses in a Service's status.
fn ingress_ips(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// Whether the status is exactly one ingress point `ip` with `ipMode: VIP`.
fn shows_exactly(service: &Service, ip: Ipv4Addr) -> bool {
    let ingress: Vec<_> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .collect();
    matches!(ingress.as_slice(), [one] if one.ip.as_deref() == Some(ip.to_string().as_str())
        && one.ip_mode.as_deref() == Some("VIP")
        && one.hostname.is_none())
}

/// Who wins an address both hold: the older Service, then the smaller `namespace/name`.
fn precedence(service: &Service) -> (Option<jiff::Timestamp>, String, String) {
    (
        service.metadata.creation_timestamp.as_ref().map(|t| t.0),
        service.namespace().unwrap_or_default(),
        service.name_any(),
    )
}

fn same_service(a: &Service, b: &Service) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

/// The decision for `service`, given every Service of the cluster (`all`, which may include
/// `service` itself) and the pool. Pure: see the module docs for the rules.
pub fn decide(service: &Service, all: &[Service], pool: &Pool) -> Decision {
    if service.metadata.deletion_timestamp.is_some() || !is_ours(service) {
        return Decision::Ignore;
    }
    let others: Vec<&Service> = all
        .iter()
        .filter(|o| !same_service(o, service))
        .filter(|o| o.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
        .collect();
    // Addresses any other Service shows (of any class: never hand out one in use), and those
    // an older one shows (which this Service must give up).
    let in_use: BTreeSet<Ipv4Addr> = others.iter().flat_map(|o| ingress_ips(o)).collect();
    let mine = precedence(service);
    let won_by_others: BTreeSet<Ipv4Addr> = others
        .iter()
        .filter(|o| precedence(o) < mine)
        .flat_map(|o| ingress_ips(o))
        .collect();
    let current = ingress_ips(service);
    let requested = service
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|ip| !ip.is_empty());
    let clear = !current.is_empty();
    if let Some(text) = requested {
        let Ok(ip) = text.parse::<Ipv4Addr>() else {
            return Decision::Pending {
                message: format!("spec.loadBalancerIP {text:?} is not an IPv4 address"),
                clear,
            };
        };
        if !pool.contains(ip) {
            return Decision::Pending {
                message: format!("spec.loadBalancerIP {ip} is not in the service LB pool ({pool})"),
                clear,
            };
        }
        let held_here = current.contains(&ip);
        if won_by_others.contains(&ip) || (!held_here && in_use.contains(&ip)) {
            return Decision::Pending {
                message: format!("spec.loadBalancerIP {ip} is already in use by another Service"),
                clear,
            };
        }
        return if shows_exactly(service, ip) {
            Decision::UpToDate
        } else {
            Decision::Assign(ip)
        };
    }
    // Keep the pool address it holds, unless an older Service holds it too.
    if let Some(&ip) = current
        .iter()
        .find(|ip| pool.contains(**ip) && !won_by_others.contains(ip))
    {
        return if shows_exactly(service, ip) {
            Decision::UpToDate
        } else {
            Decision::Assign(ip)
        };
    }
    match pool.first_free(&in_use) {
        Some(ip) => Decision::Assign(ip),
        None => Decision::Pending {
            message: format!("no address left in the service LB pool ({pool})"),
            clear,
        },
    }
}

struct Ctx {
    client: Client,
    pool: Pool,
    recorder: Recorder,
    /// The last Warning message recorded per Service uid, so one is recorded once.
    warned: Mutex<BTreeMap<String, String>>,
}

/// Runs the controller over every Service.
pub async fn run(client: Client, pool: Pool) -> anyhow::Result<()> {
    tracing::info!(%pool, class = CLASS, "LoadBalancer IPAM serves Services from its pool");
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(1));
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT.into()),
        client,
        pool,
        warned: Mutex::new(BTreeMap::new()),
    });
    crate::drive("lbipam", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

async fn event(ctx: &Ctx, service: &Service, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "AllocateLoadBalancerIP".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &service.object_ref(&())).await {
        tracing::debug!(error = %crate::error_chain(&error), "cannot record an event");
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    if !is_ours(&service) || service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    // Every decision reads the stored statuses afresh: the watch may not show this
    // controller's own last write yet, and a restarted control plane has nothing in memory.
    let all = Api::<Service>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .action(|| "list Services".to_owned())?
        .items;
    let Some(current) = all
        .iter()
        .find(|s| s.namespace().as_deref() == Some(&namespace) && s.name_any() == name)
    else {
        return Ok(Action::await_change());
    };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = current.metadata.uid.clone().unwrap_or_default();
    let resource_version = current.resource_version();
    match decide(current, &all, &ctx.pool) {
        Decision::Ignore => Ok(Action::await_change()),
        Decision::UpToDate => {
            ctx.warned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&uid);
            Ok(Action::await_change())
        }
        Decision::Assign(ip) => {
            // The resourceVersion makes a write on a stale read fail (409) and retry.
            let patch = json!({
                "metadata": {"resourceVersion": resource_version},
                "status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}},
            });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .action(|| {
                    format!("set the load-balancer address of Service {namespace}/{name}")
                })?;
            ctx.warned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&uid);
            tracing::info!(service = %format!("{namespace}/{name}"), %ip, "allocated a LoadBalancer address");
            event(
                &ctx,
                current,
                EventType::Normal,
                IP_ALLOCATED,
                format!("Assigned IP [\"{ip}\"]"),
            )
            .await;
            Ok(Action::await_change())
        }
        Decision::Pending { message, clear } => {
            if clear {
                let patch = json!({
                    "metadata": {"resourceVersion": resource_version},
                    "status": {"loadBalancer": {"ingress": null}},
                });
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .action(|| {
                        format!("clear the load-balancer address of Service {namespace}/{name}")
                    })?;
            }
            let new = {
                let mut warned = ctx
                    .warned
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if warned.len() >= 10_000 {
                    // Bounded: forgetting only means a Warning may be recorded again.
                    warned.clear();
                }
                warned.insert(uid, message.clone()).as_ref() != Some(&message)
            };
            if new {
                tracing::warn!(service = %format!("{namespace}/{name}"), %message, "no LoadBalancer address");
                event(
                    &ctx,
                    current,
                    EventType::Warning,
                    ALLOCATION_FAILED,
                    message,
                )
                .await;
            }
            Ok(Action::requeue(PENDING_RETRY))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(ranges: &[&str]) -> Pool {
        Pool(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    /// A Service from its name, creation second, spec and ingress IPs (VIP mode).
    fn svc(name: &str, created: i64, spec: serde_json::Value, ips: &[&str]) -> Service {
        let ingress: Vec<_> = ips
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        let mut spec = spec;
        if spec.get("type").is_none() {
            spec["type"] = json!("LoadBalancer");
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "creationTimestamp": jiff::Timestamp::from_second(1_700_000_000 + created).unwrap().to_string()},
            "spec": spec,
            "status": {"loadBalancer": if ingress.is_empty() { json!({}) } else { json!({"ingress": ingress}) }},
        }))
        .unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn pool_values_parse_as_cidrs_and_ranges() {
        for (text, want) in [
            ("10.0.0.0/30", Ok(("10.0.0.1", "10.0.0.2"))),
            ("10.0.0.4/31", Ok(("10.0.0.4", "10.0.0.5"))),
            ("10.0.0.9/32", Ok(("10.0.0.9", "10.0.0.9"))),
            ("10.0.0.0/24", Ok(("10.0.0.1", "10.0.0.254"))),
            ("10.0.0.10-10.0.0.20", Ok(("10.0.0.10", "10.0.0.20"))),
            (" 10.0.0.7 - 10.0.0.7 ", Ok(("10.0.0.7", "10.0.0.7"))),
            ("10.0.0.20-10.0.0.10", Err("after the last")),
            ("10.0.0.1", Err("expected CIDR or FIRST-LAST")),
            ("10.0.0.1-x", Err("not an IPv4 address")),
            ("10.0.0.0/33", Err("not a CIDR")),
        ] {
            let parsed = text.parse::<PoolRange>();
            match (parsed, want) {
                (Ok(r), Ok((first, last))) => {
                    assert_eq!((r.first(), r.last()), (ip(first), ip(last)), "{text}")
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{text}: {e}"),
                (got, want) => panic!("{text}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn decisions() {
        let p = pool(&["10.9.0.0/30", "10.9.1.5-10.9.1.5"]);
        let lb = json!({});
        let cases: Vec<(&str, Service, Vec<Service>, Decision)> = vec![
            (
                "the first free address",
                svc("a", 0, lb.clone(), &[]),
                vec![],
                Decision::Assign(ip("10.9.0.1")),
            ),
            (
                "skips addresses in use, also across ranges",
                svc("c", 5, lb.clone(), &[]),
                vec![
                    svc("a", 0, lb.clone(), &["10.9.0.1"]),
                    svc("b", 1, lb.clone(), &["10.9.0.2"]),
                ],
                Decision::Assign(ip("10.9.1.5")),
            ),
            (
                "exhausted: pending, nothing to clear",
                svc("d", 5, lb.clone(), &[]),
                vec![
                    svc("a", 0, lb.clone(), &["10.9.0.1"]),
                    svc("b", 1, lb.clone(), &["10.9.0.2"]),
                    svc("c", 2, lb.clone(), &["10.9.1.5"]),
                ],
                Decision::Pending {
                    message: "no address left in the service LB pool (10.9.0.1-10.9.0.2,10.9.1.5-10.9.1.5)".into(),
                    clear: false,
                },
            ),
            (
                "a deleted Service's address is free (it is no longer listed)",
                svc("d", 5, lb.clone(), &[]),
                vec![svc("b", 1, lb.clone(), &["10.9.0.2"])],
                Decision::Assign(ip("10.9.0.1")),
            ),
            (
                "keeps what it has (e.g. after a restart)",
                svc("a", 0, lb.clone(), &["10.9.0.2"]),
                vec![svc("z", 9, lb.clone(), &[])],
                Decision::UpToDate,
            ),
            (
                "a status without ipMode is rewritten with VIP",
                {
                    let mut s = svc("a", 0, lb.clone(), &["10.9.0.2"]);
                    s.status.as_mut().unwrap().load_balancer.as_mut().unwrap().ingress.as_mut().unwrap()[0].ip_mode = None;
                    s
                },
                vec![],
                Decision::Assign(ip("10.9.0.2")),
            ),
            (
                "two hold one address: the younger moves",
                svc("young", 5, lb.clone(), &["10.9.0.1"]),
                vec![svc("old", 1, lb.clone(), &["10.9.0.1"])],
                Decision::Assign(ip("10.9.0.2")),
            ),
            (
                "two hold one address: the older keeps it",
                svc("old", 1, lb.clone(), &["10.9.0.1"]),
                vec![svc("young", 5, lb.clone(), &["10.9.0.1"])],
                Decision::UpToDate,
            ),
            (
                "an address outside the pool (pool changed) is replaced",
                svc("a", 0, lb.clone(), &["192.0.2.1"]),
                vec![],
                Decision::Assign(ip("10.9.0.1")),
            ),
            (
                "loadBalancerIP in the pool and free",
                svc("a", 0, json!({"loadBalancerIP": "10.9.1.5"}), &[]),
                vec![],
                Decision::Assign(ip("10.9.1.5")),
            ),
            (
                "loadBalancerIP already shown",
                svc("a", 0, json!({"loadBalancerIP": "10.9.1.5"}), &["10.9.1.5"]),
                vec![],
                Decision::UpToDate,
            ),
            (
                "loadBalancerIP outside the pool: pending",
                svc("a", 0, json!({"loadBalancerIP": "192.0.2.7"}), &[]),
                vec![],
                Decision::Pending {
                    message: "spec.loadBalancerIP 192.0.2.7 is not in the service LB pool (10.9.0.1-10.9.0.2,10.9.1.5-10.9.1.5)".into(),
                    clear: false,
                },
            ),
            (
                "loadBalancerIP taken: pending, and the old address is given up",
                svc("b", 3, json!({"loadBalancerIP": "10.9.0.1"}), &["10.9.0.2"]),
                vec![svc("a", 0, lb.clone(), &["10.9.0.1"])],
                Decision::Pending {
                    message: "spec.loadBalancerIP 10.9.0.1 is already in use by another Service".into(),
                    clear: true,
                },
            ),
            (
                "another class: left alone",
                svc("a", 0, json!({"loadBalancerClass": "other"}), &[]),
                vec![],
                Decision::Ignore,
            ),
            (
                "keelson's class",
                svc("a", 0, json!({"loadBalancerClass": CLASS}), &[]),
                vec![],
                Decision::Assign(ip("10.9.0.1")),
            ),
            (
                "another class's address is not handed out",
                svc("b", 3, lb.clone(), &[]),
                vec![svc("a", 0, json!({"loadBalancerClass": "other"}), &["10.9.0.1"])],
                Decision::Assign(ip("10.9.0.2")),
            ),
            (
                "not a LoadBalancer",
                svc("a", 0, json!({"type": "NodePort"}), &[]),
                vec![],
                Decision::Ignore,
            ),
            (
                "a ClusterIP Service's leftover status takes nothing",
                svc("b", 3, lb.clone(), &[]),
                vec![svc("a", 0, json!({"type": "ClusterIP"}), &["10.9.0.1"])],
                Decision::Assign(ip("10.9.0.1")),
            ),
        ];
        for (what, service, mut others, want) in cases {
            // The list the controller reads includes the Service itself.
            others.push(service.clone());
            assert_eq!(decide(&service, &others, &p), want, "{what}");
        }
        let mut deleting = svc("a", 0, lb, &[]);
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        assert_eq!(decide(&deleting, &[], &p), Decision::Ignore);
    }
}
