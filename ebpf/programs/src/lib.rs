//! Empty library target: it lets `node-agent` name this crate as a build-dependency, so cargo
//! rebuilds the agent (and its embedded object) when the programs change.
#![no_std]
