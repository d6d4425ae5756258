//! Streaming for exec, attach and port-forward: the wire protocols kubectl speaks.

pub mod spdy;
