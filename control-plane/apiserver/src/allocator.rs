//! ClusterIP, NodePort and health-check NodePort allocation for Services, done in the API
//! server's service registry as kube-apiserver does, so a create response already carries
//! `spec.clusterIP`, `nodePort`s and `healthCheckNodePort`.
//!
//! `spec.healthCheckNodePort` comes from the NodePort range for `type: LoadBalancer` Services
//! with `externalTrafficPolicy: Local` (kube-apiserver's `allocHealthCheckNodePort`): a
//! requested one is reserved, else one is allocated; an update keeps it while the Service
//! still needs one and releases it when it stops needing one (`updateHealthCheckNodePort`;
//! [`prepare_update`] clears the field first, as `dropTypeDependentFields` does).
//!
//! Every allocated address and port is a key of its own in the same store as the Services,
//! created with create-if-absent: `/registry/ipaddresses/<ip>` (shaped like Kubernetes'
//! `networking.k8s.io/v1` `IPAddress`, whose `parentRef` names the Service) and
//! `/registry/servicenodeports/<port>`. Two concurrent creates can never get the same address,
//! and the allocation survives restarts because it lives with the data. A key is released
//! after its Service is deleted (or stops using it).

use std::{collections::BTreeSet, net::Ipv4Addr, ops::RangeInclusive};

use keelson_api::cidr::Ipv4Cidr;
use keelson_store::{ListOptions, Store, StoreError};
use serde_json::{Value, json};

use crate::{ApiError, registry::Resource};

const IP_PREFIX: &str = "/registry/ipaddresses/";
const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";

/// Random picks tried before falling back to a scan of what is allocated.
const RANDOM_ATTEMPTS: usize = 8;

/// The ranges Services are allocated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// ClusterIPs (`--service-cluster-ip-range`). The network and broadcast addresses are never
    /// handed out; the first address after the network is the `kubernetes` Service's.
    pub cluster_ip_range: Ipv4Cidr,
    /// NodePorts (`--service-node-port-range`).
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceNetwork {
    fn default() -> Self {
        Self {
            cluster_ip_range: Ipv4Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 12)
                .unwrap_or_else(|| unreachable!("10.96.0.0/12 is a valid block")),
            node_ports: 30000..=32767,
        }
    }
}

impl ServiceNetwork {
    /// The address of the `kubernetes` Service: the first one after the network address.
    pub fn kubernetes_service_ip(&self) -> Option<Ipv4Addr> {
        self.cluster_ip_range.nth(1)
    }

    /// The usable addresses: the block without its network and broadcast addresses (a /31 or
    /// /32 keeps all of them).
    fn usable(&self) -> RangeInclusive<u64> {
        let size = self.cluster_ip_range.size();
        if size <= 2 {
            0..=size - 1
        } else {
            1..=size - 2
        }
    }
}

/// Keys this request created; undone with [`Claims::undo`] when the write that needed them
/// fails.
#[derive(Debug, Default)]
#[must_use = "claims must be undone if the object is not written"]
pub(crate) struct Claims {
    keys: Vec<String>,
}

impl Claims {
    /// Deletes the keys this request created.
    pub(crate) async fn undo(self, store: &dyn Store) {
        for key in self.keys {
            if let Err(error) = store.delete(&key, None).await {
                tracing::warn!(key, %error, "cannot release an allocation");
            }
        }
    }
}

/// The allocation keys a Service holds: `(clusterIP key, node port keys)`.
fn held_keys(service: &Value) -> Vec<String> {
    let mut keys: Vec<String> = cluster_ip(service)
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .map(ip_key)
        .into_iter()
        .collect();
    keys.extend(node_ports(service).into_iter().map(port_key));
    keys.extend(health_check_node_port(service).map(port_key));
    keys
}

/// `needsHCNodePort`: a LoadBalancer Service whose external traffic stays on the node it
/// arrives at has a health-check NodePort (kube-proxy answers on it with the node's count of
/// local endpoints, for the load balancer to skip nodes without any).
fn needs_health_check(service: &Value) -> bool {
    service_type(service) == "LoadBalancer"
        && spec_str(service, "externalTrafficPolicy") == Some("Local")
}

/// The health-check NodePort a Service holds: only while it needs one.
fn health_check_node_port(service: &Value) -> Option<u16> {
    if !needs_health_check(service) {
        return None;
    }
    requested_health_check(service)
}

/// `spec.healthCheckNodePort` when set and not 0.
fn requested_health_check(service: &Value) -> Option<u16> {
    service
        .pointer("/spec/healthCheckNodePort")
        .and_then(Value::as_u64)
        .filter(|p| *p != 0)
        .and_then(|p| u16::try_from(p).ok())
}

/// The Service parts of kube-apiserver's update preparation that run before validation
/// (`dropTypeDependentFields` and `patchAllocatedValues` in
/// pkg/registry/core/service/storage): a health-check NodePort the Service no longer needs is
/// cleared when the client left it as it was, one it still needs is kept when the client left
/// it out; `nodePort`s, `allocateLoadBalancerNodePorts`, `loadBalancerClass` and
/// `externalTrafficPolicy` left as they were go with the type they belong to; and a Service that is no longer a
/// LoadBalancer loses its load-balancer status.
pub(crate) fn prepare_update(old: &Value, new: &mut Value) {
    let (old_needs, new_needs) = (needs_health_check(old), needs_health_check(new));
    let old_port = old.pointer("/spec/healthCheckNodePort").cloned();
    let new_port = new.pointer("/spec/healthCheckNodePort").cloned();
    let is_zero = |v: &Option<Value>| v.as_ref().is_none_or(|p| p.as_u64().unwrap_or(0) == 0);
    let new_is_loadbalancer = service_type(new) == "LoadBalancer";
    let old_is_loadbalancer = service_type(old) == "LoadBalancer";
    let externally_accessible = |s: &Value| {
        matches!(service_type(s), "LoadBalancer" | "NodePort")
            || (service_type(s) == "ClusterIP"
                && s.pointer("/spec/externalIPs")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()))
    };
    let drop_traffic_policy = externally_accessible(old) && !externally_accessible(new);
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        // Fields of the old type the client left as they were.
        let mut drop_if_same = |field: &str, applies: bool| {
            if applies && spec.get(field) == old_spec.get(field) {
                spec.remove(field);
            }
        };
        drop_if_same(
            "allocateLoadBalancerNodePorts",
            old_is_loadbalancer && !new_is_loadbalancer,
        );
        drop_if_same(
            "loadBalancerClass",
            old_is_loadbalancer && !new_is_loadbalancer,
        );
        drop_if_same("externalTrafficPolicy", drop_traffic_policy);
        // NodePorts go with a type without them when the client added none.
        let new_ports: BTreeSet<u16> = spec
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.get("nodePort")?.as_u64()?).ok())
            .collect();
        if wants_node_ports(old)
            && !matches!(
                spec.get("type").and_then(Value::as_str),
                Some("NodePort" | "LoadBalancer")
            )
            && new_ports.is_subset(&node_ports(old))
        {
            for port in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                port.remove("nodePort");
            }
        }
        if old_needs && !new_needs && old_port == new_port {
            spec.remove("healthCheckNodePort");
        }
        if old_needs
            && new_needs
            && is_zero(&new_port)
            && let Some(port) = old_port.filter(|p| p.as_u64().unwrap_or(0) != 0)
        {
            spec.insert("healthCheckNodePort".into(), port);
        }
    }
    if !new_is_loadbalancer
        && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
        && status.contains_key("loadBalancer")
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: u16) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

fn spec_str<'a>(service: &'a Value, field: &str) -> Option<&'a str> {
    service.get("spec")?.get(field)?.as_str()
}

fn cluster_ip(service: &Value) -> Option<&str> {
    spec_str(service, "clusterIP").filter(|ip| !ip.is_empty() && *ip != "None")
}

fn service_type(service: &Value) -> &str {
    spec_str(service, "type").unwrap_or("ClusterIP")
}

fn wants_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

fn node_ports(service: &Value) -> BTreeSet<u16> {
    ports(service)
        .iter()
        .filter_map(|p| p.get("nodePort")?.as_u64())
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

fn ports(service: &Value) -> Vec<Value> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn owner(service: &Value) -> (String, String) {
    let meta = |f: &str| {
        service
            .pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (meta("namespace"), meta("name"))
}

/// What an allocation key holds: who it belongs to.
fn claim_value(key: &str, service: &Value) -> bytes::Bytes {
    let (namespace, name) = owner(service);
    let id = key.rsplit('/').next().unwrap_or_default();
    let kind = if key.starts_with(IP_PREFIX) {
        "IPAddress"
    } else {
        "ServiceNodePort"
    };
    bytes::Bytes::from(
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": id},
            "spec": {"parentRef": {
                "group": "", "resource": "services", "namespace": namespace, "name": name,
            }},
        })
        .to_string(),
    )
}

/// Whether the key exists and belongs to `service` (same namespace and name).
async fn held_by(store: &dyn Store, key: &str, service: &Value) -> Result<bool, StoreError> {
    let Some(kv) = store.get(key, None).await? else {
        return Ok(false);
    };
    let value: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    let (namespace, name) = owner(service);
    let parent = value.pointer("/spec/parentRef");
    Ok(
        parent.and_then(|p| p.get("namespace")?.as_str()) == Some(namespace.as_str())
            && parent.and_then(|p| p.get("name")?.as_str()) == Some(name.as_str()),
    )
}

/// Creates `key` for `service`: `Ok(false)` if it is taken.
async fn claim(store: &dyn Store, key: &str, service: &Value) -> Result<bool, StoreError> {
    match store.create(key, claim_value(key, service)).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn random_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// Allocates one free member of `range` (offsets into a key space), random first, then a scan
/// of the keys under `prefix` from a random start. `None` when the range is full.
async fn allocate(
    store: &dyn Store,
    range: RangeInclusive<u64>,
    prefix: &str,
    key_of: impl Fn(u64) -> String,
    parse: impl Fn(&str) -> Option<u64>,
    service: &Value,
) -> Result<Option<String>, StoreError> {
    let (low, high) = (*range.start(), *range.end());
    let size = high - low + 1;
    for _ in 0..RANDOM_ATTEMPTS {
        let key = key_of(low + random_u64() % size);
        if claim(store, &key, service).await? {
            return Ok(Some(key));
        }
    }
    // Dense range: look at what is taken and try the free ones in order from a random start.
    for _ in 0..3 {
        let taken: BTreeSet<u64> = store
            .list(prefix, ListOptions::default())
            .await?
            .items
            .iter()
            .filter_map(|kv| parse(kv.key.strip_prefix(prefix)?))
            .collect();
        let start = random_u64() % size;
        let mut raced = false;
        for step in 0..size {
            let candidate = low + (start + step) % size;
            if taken.contains(&candidate) {
                continue;
            }
            let key = key_of(candidate);
            if claim(store, &key, service).await? {
                return Ok(Some(key));
            }
            raced = true;
            break;
        }
        if !raced {
            return Ok(None);
        }
    }
    Ok(None)
}

struct Allocator<'a> {
    store: &'a dyn Store,
    network: &'a ServiceNetwork,
    resource: &'a Resource,
    name: &'a str,
    claims: Claims,
}

impl Allocator<'_> {
    fn invalid(&self, cause: String) -> ApiError {
        ApiError::invalid(self.resource, self.name, cause)
    }

    fn store_error(&self, error: StoreError) -> ApiError {
        ApiError::from_store(error, self.resource, self.name)
    }

    /// Takes the requested `ip` for `service` (or keeps it, when the Service holds it already).
    async fn request_ip(&mut self, text: &str, service: &Value) -> Result<(), ApiError> {
        let range = self.network.cluster_ip_range;
        let ip: Ipv4Addr = text.parse().map_err(|_| {
            self.invalid(format!(
                "spec.clusterIPs[0]: Invalid value: \"{text}\": must be a valid IP address, \
                 (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ))
        })?;
        let in_range = range
            .index_of(ip)
            .is_some_and(|i| self.network.usable().contains(&i));
        if !in_range {
            return Err(self.invalid(format!(
                "spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP \
                 {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs \
                 is {range}"
            )));
        }
        let key = ip_key(ip);
        if claim(self.store, &key, service)
            .await
            .map_err(|e| self.store_error(e))?
        {
            self.claims.keys.push(key);
        } else if !held_by(self.store, &key, service)
            .await
            .map_err(|e| self.store_error(e))?
        {
            return Err(self.invalid(format!(
                "spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP \
                 {ip}: provided IP is already allocated"
            )));
        }
        Ok(())
    }

    async fn allocate_ip(&mut self, service: &Value) -> Result<Ipv4Addr, ApiError> {
        let range = self.network.cluster_ip_range;
        let key = allocate(
            self.store,
            self.network.usable(),
            IP_PREFIX,
            |i| ip_key(range.nth(i).unwrap_or(Ipv4Addr::UNSPECIFIED)),
            |text| range.index_of(text.parse().ok()?),
            service,
        )
        .await
        .map_err(|e| self.store_error(e))?
        .ok_or_else(|| {
            self.invalid(format!(
                "spec.clusterIPs: Internal error: failed to allocate a serviceIP: range {range} \
                 is full"
            ))
        })?;
        self.claims.keys.push(key.clone());
        Ok(key
            .strip_prefix(IP_PREFIX)
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED))
    }

    async fn request_port(
        &mut self,
        index: usize,
        port: u16,
        service: &Value,
    ) -> Result<(), ApiError> {
        let range = &self.network.node_ports;
        if !range.contains(&port) {
            return Err(self.invalid(format!(
                "spec.ports[{index}].nodePort: Invalid value: {port}: provided port is not in \
                 the valid range. The range of valid ports is {}-{}",
                range.start(),
                range.end()
            )));
        }
        let key = port_key(port);
        if claim(self.store, &key, service)
            .await
            .map_err(|e| self.store_error(e))?
        {
            self.claims.keys.push(key);
        } else if !held_by(self.store, &key, service)
            .await
            .map_err(|e| self.store_error(e))?
        {
            return Err(self.invalid(format!(
                "spec.ports[{index}].nodePort: Invalid value: {port}: provided port is already \
                 allocated"
            )));
        }
        Ok(())
    }

    async fn allocate_port(&mut self, service: &Value) -> Result<u16, ApiError> {
        let range = &self.network.node_ports;
        let key = allocate(
            self.store,
            u64::from(*range.start())..=u64::from(*range.end()),
            NODE_PORT_PREFIX,
            |p| port_key(u16::try_from(p).unwrap_or_default()),
            |text| text.parse().ok(),
            service,
        )
        .await
        .map_err(|e| self.store_error(e))?
        .ok_or_else(|| {
            self.invalid(format!(
                "spec.ports: Internal error: failed to allocate a nodePort: range {}-{} is full",
                range.start(),
                range.end()
            ))
        })?;
        self.claims.keys.push(key.clone());
        Ok(key
            .strip_prefix(NODE_PORT_PREFIX)
            .and_then(|p| p.parse().ok())
            .unwrap_or_default())
    }

    /// Fills and claims `spec.clusterIP(s)` and the node ports of `service`; `old` is the
    /// stored Service on an update.
    async fn run(&mut self, service: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        let external_name = service_type(service) == "ExternalName";
        // clusterIP: immutable once set; kept when an update leaves it out.
        let old_ip = old.and_then(cluster_ip).map(str::to_owned);
        let old_headless = old.and_then(|o| spec_str(o, "clusterIP")) == Some("None");
        let requested = spec_str(service, "clusterIP").map(str::to_owned);
        let ip = match (requested.as_deref(), old_ip.as_deref()) {
            _ if external_name => None,
            (None | Some(""), Some(old)) => Some(old.to_owned()),
            (None | Some(""), None) if old_headless => Some("None".to_owned()),
            (Some(new), Some(old)) if new != old => {
                return Err(self.invalid(format!(
                    "spec.clusterIPs[0]: Invalid value: []string{{\"{new}\"}}: may not change \
                     once set"
                )));
            }
            (Some("None"), None) => Some("None".to_owned()),
            (None | Some(""), None) => Some(self.allocate_ip(service).await?.to_string()),
            (Some(new), _) => {
                self.request_ip(new, service).await?;
                Some(new.to_owned())
            }
        };
        if let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) {
            match ip {
                Some(ip) => {
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                    spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
                    spec.entry("ipFamilyPolicy")
                        .or_insert_with(|| json!("SingleStack"));
                    spec.entry("internalTrafficPolicy")
                        .or_insert_with(|| json!("Cluster"));
                }
                None => {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
            }
        }
        // Node ports.
        let wants = wants_node_ports(service);
        let old_ports = old.map(ports).unwrap_or_default();
        let mut new_ports = ports(service);
        for (index, port) in new_ports.iter_mut().enumerate() {
            let Some(port) = port.as_object_mut() else {
                continue;
            };
            let requested = port.get("nodePort").and_then(Value::as_u64);
            if !wants {
                if requested.is_some() {
                    if old.is_some_and(wants_node_ports) {
                        // The type changed away from NodePort: the ports are released.
                        port.remove("nodePort");
                        continue;
                    }
                    return Err(self.invalid(format!(
                        "spec.ports[{index}].nodePort: Forbidden: may not be used when `type` \
                         is '{}'",
                        service_type(service)
                    )));
                }
                continue;
            }
            let number = match requested {
                Some(p) => u16::try_from(p).map_err(|_| {
                    self.invalid(format!(
                        "spec.ports[{index}].nodePort: Invalid value: {p}: must be between 1 \
                         and 65535, inclusive"
                    ))
                })?,
                None => {
                    // An update that leaves nodePort out keeps the one the same port had.
                    let same = |o: &&Value| {
                        o.get("port") == port.get("port")
                            && o.get("protocol") == port.get("protocol")
                    };
                    match old_ports
                        .iter()
                        .find(same)
                        .and_then(|o| o.get("nodePort")?.as_u64())
                        .and_then(|p| u16::try_from(p).ok())
                    {
                        Some(kept) => kept,
                        None => self.allocate_port(service).await?,
                    }
                }
            };
            self.request_port(index, number, service).await?;
            port.insert("nodePort".into(), json!(number));
        }
        if let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut)
            && spec.contains_key("ports")
        {
            spec.insert("ports".into(), Value::Array(new_ports));
        }
        self.health_check(service, old).await
    }

    /// `spec.healthCheckNodePort`: reserved (a requested one) or allocated when the Service
    /// newly needs one; kept as it is while it goes on needing one.
    async fn health_check(
        &mut self,
        service: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if !needs_health_check(service) {
            return Ok(());
        }
        let requested = requested_health_check(service);
        let held = old.and_then(health_check_node_port);
        let port = match requested {
            Some(port) if held == Some(port) => port,
            Some(port) => {
                let range = &self.network.node_ports;
                let key = port_key(port);
                let free = range.contains(&port)
                    && claim(self.store, &key, service)
                        .await
                        .map_err(|e| self.store_error(e))?;
                if !free {
                    let why = if range.contains(&port) {
                        "provided port is already allocated".to_owned()
                    } else {
                        format!(
                            "provided port is not in the valid range. The range of valid ports \
                             is {}-{}",
                            range.start(),
                            range.end()
                        )
                    };
                    return Err(ApiError::internal_occurred(format!(
                        "failed to allocate requested HealthCheck NodePort {port}: {why}"
                    )));
                }
                self.claims.keys.push(key);
                port
            }
            None => self.allocate_port(service).await?,
        };
        if let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("healthCheckNodePort".into(), json!(port));
        }
        Ok(())
    }
}

/// Allocates the addresses of a Service about to be created (any other kind is left alone).
/// On error nothing stays claimed.
pub(crate) async fn claim_for_create(
    store: &dyn Store,
    network: &ServiceNetwork,
    resource: &Resource,
    name: &str,
    object: &mut Value,
) -> Result<Claims, ApiError> {
    claim_for(store, network, resource, name, object, None).await
}

/// Allocates what an update of a Service newly needs; `old` is the stored Service.
pub(crate) async fn claim_for_update(
    store: &dyn Store,
    network: &ServiceNetwork,
    resource: &Resource,
    name: &str,
    old: &Value,
    object: &mut Value,
) -> Result<Claims, ApiError> {
    claim_for(store, network, resource, name, object, Some(old)).await
}

async fn claim_for(
    store: &dyn Store,
    network: &ServiceNetwork,
    resource: &Resource,
    name: &str,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<Claims, ApiError> {
    if resource.kind != "Service" {
        return Ok(Claims::default());
    }
    let mut allocator = Allocator {
        store,
        network,
        resource,
        name,
        claims: Claims::default(),
    };
    match allocator.run(object, old).await {
        Ok(()) => Ok(allocator.claims),
        Err(e) => {
            allocator.claims.undo(store).await;
            Err(e)
        }
    }
}

/// Releases what `old` held and `new` no longer does (after an update was written), or all of
/// it (`new` is `None`: the Service is gone).
pub(crate) async fn release(
    store: &dyn Store,
    resource: &Resource,
    old: &Value,
    new: Option<&Value>,
) {
    if resource.kind != "Service" {
        return;
    }
    let keep: BTreeSet<String> = new.map(held_keys).unwrap_or_default().into_iter().collect();
    for key in held_keys(old) {
        if keep.contains(&key) {
            continue;
        }
        match held_by(store, &key, old).await {
            Ok(true) => {
                if let Err(error) = store.delete(&key, None).await {
                    tracing::warn!(key, %error, "cannot release an allocation");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(key, %error, "cannot release an allocation"),
        }
    }
}

/// Creates (or repairs) the `kubernetes` Service in `default` with the first address of the
/// service range, port 443 (`https`) to the API server's `advertise` address, and renews this
/// plane's lease and writes its Endpoints and EndpointSlice with every live control plane
/// ([`crate::master_leases::reconcile`]; selectorless Services are not touched by the
/// EndpointSlice controller).
pub async fn ensure_kubernetes_service(
    store: &dyn Store,
    network: &ServiceNetwork,
    advertise: std::net::SocketAddr,
) -> Result<(), ApiError> {
    let find = |group: &str, plural: &str| {
        crate::registry::find(group, "v1", plural).ok_or_else(ApiError::no_route)
    };
    let services = find("", "services")?;
    let ip = network
        .kubernetes_service_ip()
        .ok_or_else(|| ApiError::bad_request("the service range has no room"))?;
    let key = services.key(Some("default"), "kubernetes");
    if store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::from_store(e, services, "kubernetes"))?
        .is_none()
    {
        let mut service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": advertise.port()}]},
        });
        crate::object::prepare_create(&mut service, services, Some("default"))?;
        let claims = claim_for_create(store, network, services, "kubernetes", &mut service).await?;
        match store.create(&key, crate::object::encode(&service)).await {
            Ok(revision) => tracing::info!(%ip, revision, "created the kubernetes Service"),
            Err(StoreError::AlreadyExists { .. }) => claims.undo(store).await,
            Err(e) => {
                claims.undo(store).await;
                return Err(ApiError::from_store(e, services, "kubernetes"));
            }
        }
    }
    crate::master_leases::reconcile(store, advertise, crate::master_leases::DEFAULT_TTL)
        .await
        .map(drop)
}

/// Creates `object` in `default`, or replaces its content when it differs.
pub(crate) async fn put(
    store: &dyn Store,
    resource: &Resource,
    mut object: Value,
) -> Result<(), ApiError> {
    let name = crate::object::meta_str(&object, "name")
        .unwrap_or_default()
        .to_owned();
    let key = resource.key(Some("default"), &name);
    let current = store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::from_store(e, resource, &name))?;
    match current {
        None => {
            crate::object::prepare_system_create(&mut object, resource, Some("default"))?;
            match store.create(&key, crate::object::encode(&object)).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(ApiError::from_store(e, resource, &name)),
            }
        }
        Some(kv) => {
            let mut stored = crate::object::decode_kv(&kv)?;
            let body = |v: &Value| {
                let mut v = v.clone();
                if let Some(root) = v.as_object_mut() {
                    root.remove("metadata");
                }
                v
            };
            if body(&stored) == body(&object) {
                return Ok(());
            }
            if let (Some(root), Some(new)) = (stored.as_object_mut(), object.as_object()) {
                for (field, value) in new.iter().filter(|(f, _)| *f != "metadata") {
                    root.insert(field.clone(), value.clone());
                }
            }
            store
                .update(&key, crate::object::encode(&stored), kv.mod_revision)
                .await
                .map(drop)
                .map_err(|e| ApiError::from_store(e, resource, &name))
        }
    }
}
