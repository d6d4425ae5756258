//! Kubernetes API machinery for keelson's control plane: everything about objects that needs no IO.
//!
//! Object-name validation and label/field selectors, with Kubernetes' own rules and messages;
//! defaulting and the merge/strategic-merge patches the API server applies to raw JSON.
//!
//! The typed helpers the scheduler, the controllers and the node agent share live here once:
//! resource quantities ([`quantity`]), taints and tolerations ([`tolerations`]), typed label
//! selectors and node affinity ([`selectors`]) and IPv4 blocks ([`cidr`]).
#![forbid(unsafe_code)]

pub mod cidr;
pub mod defaulting;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod selectors;
pub mod tolerations;
