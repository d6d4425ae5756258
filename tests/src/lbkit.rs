//! Helpers for the load-balancer tests: pinned-map directories, Kubernetes objects, parsing the
//! test client's output.

use std::path::{Path, PathBuf};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use keelson_node_agent::datapath::lb::{LbConfig, LoadBalancer};
use serde_json::json;

use crate::{topology::backend_addr, unique_name};

/// Pinned maps and links of one test under `/sys/fs/bpf/keelson-test/`, removed on drop.
#[derive(Debug)]
pub struct Pins(PathBuf);

impl Pins {
    /// A fresh, unique pin directory (created by the load balancer).
    pub fn new() -> Self {
        Self(PathBuf::from("/sys/fs/bpf/keelson-test").join(unique_name("lb")))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Small capacities: tests run side by side.
    pub fn config(&self) -> LbConfig {
        LbConfig {
            services: 4096,
            backends: 1024,
            sock_rev_nat: 4096,
            affinity: 1024,
            ct: 4096,
            maglev: 16,
            policy_ct: 4096,
            ..LbConfig::new(&self.0)
        }
    }
}

impl Default for Pins {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = LoadBalancer::remove_pins(&self.0)
            && !std::thread::panicking()
        {
            panic!("cleaning up {}: {}", self.0.display(), error_chain(&e));
        }
        // Shared by concurrent tests: only the last one out removes it.
        if let Some(parent) = self.0.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// A Service from its `spec` (JSON), named `web` in `default`.
pub fn service(spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": spec,
    }))
    .expect("a valid Service")
}

/// One EndpointSlice of `web` with the given ports (JSON) and endpoints: backend index, node
/// name, and (ready, serving, terminating).
pub fn slice(
    ports: serde_json::Value,
    endpoints: &[(usize, &str, bool, bool, bool)],
) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(i, node, ready, serving, terminating)| {
            json!({
                "addresses": [backend_addr(*i).to_string()],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": node,
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
    .expect("a valid EndpointSlice")
}

/// Splits the client's `peer=A reply=B` lines; panics on `error=` lines.
pub fn exchanges(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|line| {
            let (peer, reply) = line
                .strip_prefix("peer=")
                .and_then(|rest| rest.split_once(" reply="))
                .unwrap_or_else(|| panic!("client failed: {line}"));
            (peer.to_owned(), reply.to_owned())
        })
        .collect()
}

pub use keelson_node_agent::error_chain;

/// `target/<profile>/keelson-node-agent`, next to the test binaries' `deps/`.
pub fn node_agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let agent = dir.join("keelson-node-agent");
    assert!(
        agent.exists(),
        "{} is missing: build the workspace first (cargo xtask test does)",
        agent.display()
    );
    agent
}

/// Runs the `keelson-node-agent` binary built next to the test binaries and returns its stdout.
pub fn node_agent(args: &[&str]) -> String {
    let agent = node_agent_binary();
    let output = std::process::Command::new(&agent)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", agent.display()));
    assert!(
        output.status.success(),
        "keelson-node-agent {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
