//! Reading the pinned maps back for inspection (`keelson-node-agent lb list`), without loading
//! any program.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, path::Path};

use aya::maps::HashMap;
use keelson_ebpf_common::{Backend, ServiceKey, ServiceValue, backend_state, maps, proto, scope};

use super::{FrontendKey, open_pinned};
use crate::datapath::DatapathError;

/// One backend slot of a listed frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBackend {
    /// Slot number (1-based).
    pub slot: u16,
    /// Backend id.
    pub id: u32,
    /// Address:port, `None` when the slot points at a missing backend.
    pub backend: Option<(Ipv4Addr, u16)>,
    /// [`backend_state`].
    pub state: u8,
}

/// One frontend as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFrontend {
    /// Address, port, protocol and scope.
    pub key: FrontendKey,
    /// The header.
    pub header: ServiceValue,
    /// The backend slots, in slot order.
    pub backends: Vec<ListedBackend>,
}

impl fmt::Display for ListedFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.key.proto {
            proto::TCP => "TCP",
            proto::UDP => "UDP",
            _ => "?",
        };
        let scope = if self.key.scope == scope::EXTERNAL {
            " (external)"
        } else {
            ""
        };
        write!(f, "{}:{}/{proto}{scope}", self.key.address, self.key.port)?;
        if self.backends.is_empty() {
            return write!(f, " -> (no backends: refused)");
        }
        for (i, b) in self.backends.iter().enumerate() {
            let sep = if i == 0 { " -> " } else { ", " };
            match b.backend {
                Some((ip, port)) => write!(f, "{sep}{ip}:{port}")?,
                None => write!(f, "{sep}#{} (missing)", b.id)?,
            }
            if b.state == backend_state::TERMINATING {
                write!(f, " (terminating)")?;
            }
        }
        Ok(())
    }
}

/// Lists the frontends pinned under `pin_dir`, sorted by address, port, protocol and scope.
pub fn list_pinned(pin_dir: &Path) -> Result<Vec<ListedFrontend>, DatapathError> {
    let services_map = open_pinned(pin_dir, maps::SERVICES)?;
    let backends_map = open_pinned(pin_dir, maps::BACKENDS)?;
    let map_error = |map| {
        move |source| DatapathError::Map {
            map,
            source: Box::new(source),
        }
    };
    let services: HashMap<_, ServiceKey, ServiceValue> =
        HashMap::try_from(&services_map).map_err(map_error(maps::SERVICES))?;
    let backends: HashMap<_, u32, Backend> =
        HashMap::try_from(&backends_map).map_err(map_error(maps::BACKENDS))?;
    let backends: BTreeMap<u32, Backend> = backends.iter().filter_map(Result::ok).collect();

    let mut headers = BTreeMap::new();
    let mut slots: BTreeMap<FrontendKey, BTreeMap<u16, u32>> = BTreeMap::new();
    for (key, value) in services.iter().filter_map(Result::ok) {
        let frontend = FrontendKey {
            address: Ipv4Addr::from(u32::from_be(key.address_be)),
            port: u16::from_be(key.port_be),
            proto: key.proto,
            scope: key.scope,
        };
        if key.slot == 0 {
            headers.insert(frontend, value);
        } else {
            slots
                .entry(frontend)
                .or_default()
                .insert(key.slot, value.backend_id);
        }
    }
    Ok(headers
        .into_iter()
        .map(|(key, header)| {
            let listed = slots
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .filter(|(slot, _)| *slot <= header.count)
                .map(|(slot, id)| {
                    let backend = backends.get(&id);
                    ListedBackend {
                        slot,
                        id,
                        backend: backend.map(|b| {
                            (
                                Ipv4Addr::from(u32::from_be(b.address_be)),
                                u16::from_be(b.port_be),
                            )
                        }),
                        state: backend.map_or(0, |b| b.state),
                    }
                })
                .collect();
            ListedFrontend {
                key,
                header,
                backends: listed,
            }
        })
        .collect())
}
