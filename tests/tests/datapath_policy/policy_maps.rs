//! Hand-written NetworkPolicy map entries for the tests: what the policy compiler will write.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Mutex,
};

use aya::maps::lpm_trie::Key;
use keelson_ebpf_common::{
    EndpointPolicy, IdentityValue, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO,
    POLICY_PREFIX_FULL, PolicyEntry, PolicyKeyData, identity,
};
use keelson_node_agent::datapath::lb::{self, LoadBalancer};
use keelson_tests::{
    lbkit::error_chain,
    policykit::{GATEWAY, NODE_OUTSIDE_ADDR, PolicyNode, pod_addr},
};

/// An address as the maps key it (network order).
pub fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

/// Pod `pod`'s identity.
pub fn ident(pod: usize) -> u32 {
    identity::FIRST_ALLOCATED + 44 + pod as u32
}

/// Pod `pod`'s `port`.
pub fn target(pod: usize, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(pod_addr(pod), port)
}

/// A port match: exact, a range given by its start and the bits fixed, or any port.
#[derive(Clone, Copy)]
pub enum Ports {
    /// One port.
    Exact(u16),
    /// From a port, its first bits fixed (prefix length minus 80).
    Range(u16, u32),
    /// Every port of the protocol.
    Any,
    /// Every protocol and port.
    AnyProto,
}

/// Hand-written policy map entries (what the policy compiler will write).
pub struct Policy<'a>(pub &'a Mutex<LoadBalancer>);

pub trait HasPolicy {
    /// The node's policy maps.
    fn policy(&self) -> Policy<'_>;
}

impl HasPolicy for PolicyNode {
    fn policy(&self) -> Policy<'_> {
        Policy(&self.lb)
    }
}

impl Policy<'_> {
    pub fn edit<T>(&self, f: impl FnOnce(&mut lb::PolicyMaps<'_>) -> T) -> T {
        let mut guard = self.0.lock().expect("the datapath lock");
        let mut maps = guard
            .policy_maps()
            .unwrap_or_else(|e| panic!("policy maps: {}", error_chain(&e)));
        f(&mut maps)
    }

    /// Every pod's address with its identity, the node's addresses as the host.
    pub fn identities(&self, pods: usize) {
        self.edit(|m| {
            for i in 0..pods {
                let value = IdentityValue {
                    identity: ident(i),
                    _pad: 0,
                };
                m.ipcache
                    .insert(&Key::new(32, be(pod_addr(i))), value, 0)
                    .expect("ipcache insert");
            }
            for host in [GATEWAY, NODE_OUTSIDE_ADDR] {
                let value = IdentityValue {
                    identity: identity::HOST,
                    _pad: 0,
                };
                m.ipcache
                    .insert(&Key::new(32, be(host)), value, 0)
                    .expect("ipcache insert");
            }
        });
    }

    pub fn endpoint(&self, pod: usize, flags: u32) {
        self.edit(|m| {
            m.endpoints
                .insert(
                    be(pod_addr(pod)),
                    EndpointPolicy {
                        flags,
                        identity: ident(pod),
                    },
                    0,
                )
                .expect("endpoint insert")
        });
    }

    pub fn rule(
        &self,
        pod: usize,
        peer: u32,
        direction: u8,
        protocol: u8,
        ports: Ports,
        add: bool,
    ) {
        let (prefix, port) = match ports {
            Ports::Exact(port) => (POLICY_PREFIX_FULL, port),
            Ports::Range(start, bits) => (POLICY_PREFIX_ANY_PORT + bits, start),
            Ports::Any => (POLICY_PREFIX_ANY_PORT, 0),
            Ports::AnyProto => (POLICY_PREFIX_ANY_PROTO, 0),
        };
        let key = Key::new(
            prefix,
            PolicyKeyData {
                endpoint_be: be(pod_addr(pod)),
                identity_be: peer.to_be(),
                direction,
                proto: if matches!(ports, Ports::AnyProto) {
                    0
                } else {
                    protocol
                },
                dport_be: port.to_be(),
            },
        );
        self.edit(|m| {
            if add {
                m.policy
                    .insert(
                        &key,
                        PolicyEntry {
                            rule_id: 7,
                            _pad: 0,
                        },
                        0,
                    )
                    .expect("policy insert");
            } else {
                m.policy.remove(&key).expect("policy remove");
            }
        });
    }

    pub fn allow(&self, pod: usize, peer: u32, direction: u8, protocol: u8, ports: Ports) {
        self.rule(pod, peer, direction, protocol, ports, true);
    }
}
