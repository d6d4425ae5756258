//! Kubernetes API machinery for keelson's control plane: everything about objects that needs no IO.
//!
//! Object-name validation and label/field selectors, with Kubernetes' own rules and messages;
//! defaulting and the merge/strategic-merge patches the API server applies to raw JSON.
#![forbid(unsafe_code)]

pub mod cidr;
pub mod defaulting;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod selectors;
pub mod tolerations;
