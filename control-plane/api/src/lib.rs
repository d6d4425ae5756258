//! Kubernetes API machinery for keelson's control plane: everything about objects that needs no IO.
//!
//! Object-name validation, label/field selectors and per-kind object validation, with
//! Kubernetes' own rules and messages; defaulting and the merge/strategic-merge patches the API
//! server applies to raw JSON.
#![forbid(unsafe_code)]

pub mod cidr;
pub mod defaulting;
pub mod names;
pub mod patch;
pub mod selectors;
pub mod validation;
