//! Kubernetes API machinery for keelson's control plane: everything about objects that needs no IO.
//!
//! Object-name validation, label/field selectors and per-kind object validation, with
//! Kubernetes' own rules and messages; defaulting and the merge/strategic-merge patches the API
//! server applies to raw JSON; the `metadata.managedFields` entries that writes leave; Events in
//! core/v1 and events.k8s.io/v1.
//!
//! The typed helpers the scheduler, the controllers and the node agent share live here once:
//! resource quantities ([`quantity`]), taints and tolerations ([`tolerations`]), typed label
//! selectors and node affinity ([`selectors`]) and IPv4 blocks ([`cidr`]).
#![forbid(unsafe_code)]

pub mod admission_policy;
pub mod autoscaling;
pub mod bootstrap_token;
pub mod cidr;
pub mod cluster_dns;
pub mod crd;
pub mod csr;
pub mod defaulting;
pub mod events;
pub mod managed_fields;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod quota;
pub mod rbac;
pub mod rbac_policy;
pub mod schema;
pub mod selectors;
pub mod storage;
pub mod tolerations;
pub mod validation;
