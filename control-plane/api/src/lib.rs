//! Kubernetes API machinery for keelson's control plane: everything about objects that needs no IO.
//!
//! Object-name validation and label/field selectors, with Kubernetes' own rules and messages.
//! Defaulting and the k8s-openapi types join it with the API server.
#![forbid(unsafe_code)]

pub mod names;
pub mod selectors;
