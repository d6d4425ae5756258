//! Kubernetes API machinery for keelson's control plane: everything about objects that needs no IO.
//!
//! Today: object-name validation with Kubernetes' own rules and messages. Selectors, defaulting
//! and the k8s-openapi types join it with the API server.
#![forbid(unsafe_code)]

pub mod names;
