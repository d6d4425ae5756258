//! Builders shared by the plugins' table tests.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use crate::plugins::NodeInfo;

/// A Ready node with 4 CPUs, 4Gi and 110 pods, labelled `kubernetes.io/hostname=<name>` and
/// `labels`.
pub fn labelled_node(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
    let mut all = BTreeMap::from([("kubernetes.io/hostname".to_owned(), name.to_owned())]);
    all.extend(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    NodeInfo::from_node(&Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(all),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(BTreeMap::from([
                ("cpu".into(), Quantity("4".into())),
                ("memory".into(), Quantity("4Gi".into())),
                ("pods".into(), Quantity("110".into())),
            ])),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    })
}

/// A pod `namespace/name` (uid = name) with `labels` and `affinity`.
pub fn pod_with(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    affinity: Option<Affinity>,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            affinity,
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}
