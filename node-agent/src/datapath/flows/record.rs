//! Pure: a kernel [`FlowEvent`] decoded from the ring buffer's bytes, explained with the policy
//! compiler's tables ([`PolicyTables`]) as a [`FlowRecord`], filtered ([`FlowFilter`]) and
//! printed (a table like `hubble observe`, or one JSON object per line).

use std::net::Ipv4Addr;

use keelson_ebpf_common::{FlowEvent, flow_verdict, metric, policy_direction, proto};
use serde::{Deserialize, Serialize};

use crate::datapath::policy::{Direction, PolicyTables};

/// A flow's verdict at one enforcement point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    /// The packet passed.
    Allowed,
    /// The packet was dropped.
    Dropped,
}

impl std::str::FromStr for FlowVerdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "allowed" | "forwarded" => Ok(Self::Allowed),
            "dropped" => Ok(Self::Dropped),
            other => Err(format!("{other:?} is neither `allowed` nor `dropped`")),
        }
    }
}

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPeer {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its port (host order; the identifier for ICMP echo, 0 when none).
    pub port: u16,
    /// The pod holding the address (`namespace/name`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// A flow event as the agent serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When the packet was judged (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The verdict.
    pub verdict: FlowVerdict,
    /// Why: the datapath counter the packet was counted in (`policy_denied_ingress`, ...).
    pub reason: String,
    /// The enforcement point: `ingress` of the destination pod, `egress` of the source pod.
    pub direction: String,
    /// `TCP`, `UDP`, `SCTP`, `ICMP` or the protocol number.
    pub proto: String,
    /// The sender.
    pub source: FlowPeer,
    /// The receiver (after service translation).
    pub destination: FlowPeer,
    /// The peer's security identity as the datapath resolved it.
    pub peer_identity: u32,
    /// Allowed by a rule: that rule (`namespace/name ingress[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Dropped: the policies selecting the pod in that direction. No single policy drops a
    /// packet; the pod is isolated by all of them and none allows the packet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// Reads a [`FlowEvent`] from a ring buffer record (`None` when it is too short).
pub fn decode(bytes: &[u8]) -> Option<FlowEvent> {
    let b = bytes.get(..std::mem::size_of::<FlowEvent>())?;
    let u16_at = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
    let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut time = [0u8; 8];
    time.copy_from_slice(&b[0..8]);
    Some(FlowEvent {
        time_ns: u64::from_ne_bytes(time),
        saddr_be: u32_at(8),
        daddr_be: u32_at(12),
        sport_be: u16_at(16),
        dport_be: u16_at(18),
        proto: b[20],
        verdict: b[21],
        direction: b[22],
        _pad: b[23],
        reason: u32_at(24),
        endpoint_be: u32_at(28),
        peer_identity: u32_at(32),
        rule_id: u32_at(36),
    })
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

/// The protocol's name.
pub fn proto_name(number: u8) -> String {
    match number {
        proto::TCP => "TCP".to_owned(),
        proto::UDP => "UDP".to_owned(),
        proto::SCTP => "SCTP".to_owned(),
        proto::ICMP => "ICMP".to_owned(),
        other => other.to_string(),
    }
}

/// `event` explained: pods by address, the allowing rule or the isolating policies, the time
/// on the wall clock (`monotonic_to_unix_ns`: add to `CLOCK_MONOTONIC` for Unix time).
pub fn describe(
    event: &FlowEvent,
    tables: &PolicyTables,
    monotonic_to_unix_ns: i128,
) -> FlowRecord {
    let pod = |a: Ipv4Addr| tables.pods.get(&a).map(|(ns, name)| format!("{ns}/{name}"));
    let (saddr, daddr) = (addr(event.saddr_be), addr(event.daddr_be));
    let endpoint = addr(event.endpoint_be);
    let direction = if event.direction == policy_direction::EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let verdict = if event.verdict == flow_verdict::DROPPED {
        FlowVerdict::Dropped
    } else {
        FlowVerdict::Allowed
    };
    let rule = (event.rule_id != 0)
        .then(|| tables.rules.get(&event.rule_id))
        .flatten()
        .map(ToString::to_string);
    let policies = if verdict == FlowVerdict::Dropped {
        tables
            .selected_by
            .get(&(endpoint, direction))
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let unix_ns = i128::from(event.time_ns) + monotonic_to_unix_ns;
    let time = i64::try_from(unix_ns / 1_000_000)
        .ok()
        .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| unix_ns.to_string(), |t| t.to_string());
    FlowRecord {
        time,
        verdict,
        reason: metric::NAMES
            .get(event.reason as usize)
            .map_or_else(|| event.reason.to_string(), |n| (*n).to_owned()),
        direction: direction.to_string(),
        proto: proto_name(event.proto),
        source: FlowPeer {
            ip: saddr,
            port: u16::from_be(event.sport_be),
            pod: pod(saddr),
        },
        destination: FlowPeer {
            ip: daddr,
            port: u16::from_be(event.dport_be),
            pod: pod(daddr),
        },
        peer_identity: event.peer_identity,
        rule,
        policies,
    }
}

/// Which records a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// `namespace/name`: flows from or to this pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Only this verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<FlowVerdict>,
}

impl FlowFilter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &FlowRecord) -> bool {
        let pod_ok = self.pod.as_ref().is_none_or(|pod| {
            record.source.pod.as_ref() == Some(pod) || record.destination.pod.as_ref() == Some(pod)
        });
        pod_ok && self.verdict.is_none_or(|v| v == record.verdict)
    }
}

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<24} {:<34} {:<34} {:<5} {:<8} {:<22} POLICY",
        "TIME", "SOURCE", "DESTINATION", "PROTO", "VERDICT", "REASON"
    )
}

fn peer_text(peer: &FlowPeer, proto: &str) -> String {
    let who = peer.pod.clone().unwrap_or_else(|| peer.ip.to_string());
    if peer.port == 0 || proto == "ICMP" {
        who
    } else {
        format!("{who}:{}", peer.port)
    }
}

/// What the POLICY column says.
pub fn policy_text(record: &FlowRecord) -> String {
    match (record.verdict, &record.rule) {
        (FlowVerdict::Allowed, Some(rule)) => format!("allowed by {rule}"),
        (FlowVerdict::Allowed, None) => "node traffic (always allowed)".to_owned(),
        (FlowVerdict::Dropped, _) if record.policies.is_empty() => {
            format!("{} isolated (policies not known yet)", record.direction)
        }
        (FlowVerdict::Dropped, _) => format!(
            "no rule of {} allows it ({})",
            record.policies.join(","),
            record.direction
        ),
    }
}

/// One table line.
pub fn table_row(record: &FlowRecord) -> String {
    let verdict = match record.verdict {
        FlowVerdict::Allowed => "ALLOWED",
        FlowVerdict::Dropped => "DROPPED",
    };
    format!(
        "{:<24} {:<34} {:<34} {:<5} {:<8} {:<22} {}",
        record.time,
        peer_text(&record.source, &record.proto),
        peer_text(&record.destination, &record.proto),
        record.proto,
        verdict,
        record.reason,
        policy_text(record)
    )
}
