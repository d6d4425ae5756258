//! The backend server (`keelson-echo`): answers every [`loadgen`](crate::loadgen) request with a
//! reply naming the address it was reached on, and closes after the reply when asked to.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::loadgen::{CLOSE, REQUEST_LEN, reply_for};

/// Serves on every address in `listen` until `lifetime` has passed, on a runtime with
/// `threads` workers. Calls `ready` once every listener is bound.
pub fn serve(
    listen: &[SocketAddrV4],
    threads: usize,
    lifetime: Duration,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let mut listeners = Vec::with_capacity(listen.len());
        for addr in listen {
            let socket = tokio::net::TcpSocket::new_v4().context("cannot create a socket")?;
            socket
                .set_reuseaddr(true)
                .context("cannot set SO_REUSEADDR")?;
            socket
                .bind(SocketAddr::V4(*addr))
                .with_context(|| format!("cannot bind {addr} (is the address configured?)"))?;
            listeners.push(
                socket
                    .listen(4096)
                    .with_context(|| format!("cannot listen on {addr}"))?,
            );
        }
        ready();
        for listener in listeners {
            tokio::spawn(accept_loop(listener));
        }
        tokio::time::sleep(lifetime).await;
        anyhow::Ok(())
    })
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream));
            }
            // Out of descriptors or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn serve_connection(mut stream: TcpStream) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let reply = reply_for(local);
    let mut request = [0u8; REQUEST_LEN];
    while stream.read_exact(&mut request).await.is_ok() {
        if stream.write_all(&reply).await.is_err() || request[0] == CLOSE {
            // Dropping the stream closes it: the server closes first.
            return;
        }
    }
}
