//! Node IPAM: every Node without `spec.podCIDR` gets the first free `/mask` block of the
//! cluster CIDR (`--cluster-cidr`, `--node-cidr-mask-size`). Nodes are handled one at a time
//! and the taken blocks are read fresh from the API, so two nodes never get the same block. A
//! block is free when it overlaps no node's `spec.podCIDR`, whatever that CIDR's size or
//! spelling (host bits are cleared, as Kubernetes reads it).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use keelson_api::cidr::Ipv4Cidr;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{ApiContext, Error, Result};

struct Ctx {
    client: Client,
    cluster_cidr: Ipv4Cidr,
    mask: u8,
}

/// Runs the controller.
pub async fn run(client: Client, cluster_cidr: Ipv4Cidr, mask: u8) -> anyhow::Result<()> {
    if cluster_cidr.subnet_count(mask) == 0 {
        anyhow::bail!(
            "--node-cidr-mask-size {mask} does not fit in --cluster-cidr {cluster_cidr}: it must \
             be at least {}",
            cluster_cidr.prefix_len()
        );
    }
    let controller = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(1));
    let ctx = Arc::new(Ctx {
        client,
        cluster_cidr,
        mask,
    });
    crate::drive("nodeipam", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// The first block of `/mask` in `cluster` that overlaps none of `taken`.
pub fn first_free(cluster: Ipv4Cidr, mask: u8, taken: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    (0..cluster.subnet_count(mask))
        .filter_map(|i| cluster.subnet(mask, i))
        .find(|block| !taken.iter().any(|t| t.overlaps(block)))
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action> {
    let has_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if has_cidr || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    // The watch cache may not show our own earlier allocation yet: ask the API, or a second
    // pass would give this node another block.
    let name = node.name_any();
    let current = api
        .get_opt(&name)
        .await
        .action(|| format!("get node {name}"))?;
    let Some(current) = current else {
        return Ok(Action::await_change());
    };
    if current
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty())
    {
        return Ok(Action::await_change());
    }
    // A podCIDR that does not parse takes nothing (Kubernetes logs it and goes on).
    let taken: Vec<Ipv4Cidr> = api
        .list(&ListParams::default())
        .await
        .action(|| "list nodes".to_owned())?
        .items
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref())
        .filter_map(|c| Ipv4Cidr::parse_clearing_host_bits(c).ok())
        .collect();
    let block = first_free(ctx.cluster_cidr, ctx.mask, &taken).ok_or_else(|| {
        Error::Invalid(format!(
            "no free /{} left in the cluster CIDR {} for node {name}",
            ctx.mask, ctx.cluster_cidr
        ))
    })?;
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"podCIDR": block.to_string(), "podCIDRs": [block.to_string()]}}),
        ),
    )
    .await
    .action(|| format!("set the pod CIDR of node {name}"))?;
    tracing::info!(node = name, cidr = %block, "allocated a pod CIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(texts: &[&str]) -> Vec<Ipv4Cidr> {
        texts
            .iter()
            .map(|t| Ipv4Cidr::parse_clearing_host_bits(t).unwrap())
            .collect()
    }

    /// Taken podCIDRs -> the block the next node gets.
    #[test]
    fn takes_the_first_free_block() {
        let cluster: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        for (taken, expected) in [
            (&[][..], Some("10.244.0.0/24")),
            (&["10.244.0.0/24", "10.244.2.0/24"], Some("10.244.1.0/24")),
            (&["10.244.0.7/24"], Some("10.244.1.0/24")),
            (&["10.244.0.0/23"], Some("10.244.2.0/24")),
            (&["10.244.0.128/25"], Some("10.244.1.0/24")),
            (&["10.244.0.0/16"], None),
        ] {
            assert_eq!(
                first_free(cluster, 24, &blocks(taken)).map(|b| b.to_string()),
                expected.map(str::to_owned),
                "{taken:?}"
            );
        }
        let small: Ipv4Cidr = "10.0.0.0/31".parse().unwrap();
        assert_eq!(
            first_free(small, 32, &blocks(&["10.0.0.0/32", "10.0.0.1/32"])),
            None
        );
    }
}
