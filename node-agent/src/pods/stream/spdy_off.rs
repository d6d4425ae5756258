//! The SPDY side while the SPDY session is not in the tree: [`AVAILABLE`] is false, so the
//! endpoints refuse SPDY before upgrading and these are never called. `spdy_glue.rs` has the
//! same items over the SPDY session.

use std::sync::Arc;

use super::{AsyncIo, dial::Forwarder, session::Start};
use crate::pods::runtime::{ContainerRuntime, stream::StreamOptions};

/// Whether SPDY is served.
pub const AVAILABLE: bool = false;

/// Serves an exec or attach session over SPDY.
pub async fn serve_exec(
    io: Box<dyn AsyncIo>,
    _protocol: &'static str,
    _runtime: Arc<dyn ContainerRuntime>,
    _start: Start,
    _options: StreamOptions,
) {
    drop(io);
}

/// Serves port-forward over SPDY.
pub async fn serve_port_forward(io: Box<dyn AsyncIo>, _forwarder: Forwarder) {
    drop(io);
}
