//! Running netlink requests inside another network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that opened it, so the work runs on a
//! dedicated thread that enters the target namespace with `setns` and opens its own netlink
//! connection there. The thread ends with the work; the agent's other threads never change
//! namespace.

use std::{fs::File, future::Future, path::PathBuf};

use super::NetworkError;

/// The network namespace of process `pid`.
pub fn netns_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Opens the namespace file of process `pid`.
pub fn open(pid: u32) -> Result<File, NetworkError> {
    let path = netns_path(pid);
    File::open(&path).map_err(|source| NetworkError::Netns { path, source })
}

/// Runs `work` with a netlink handle inside the namespace `ns` and returns its result.
pub async fn run_in<F, Fut, T>(ns: File, work: F) -> Result<T, NetworkError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let result = (|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetworkError::Netns {
                        path: PathBuf::from("(pod namespace)"),
                        source: e.into(),
                    }
                })?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(NetworkError::Netlink)?;
                runtime.block_on(async move {
                    let (connection, handle, _) =
                        rtnetlink::new_connection().map_err(NetworkError::Netlink)?;
                    tokio::spawn(connection);
                    work(handle).await
                })
            })();
            let _ = tx.send(result);
        })
        .map_err(NetworkError::Netlink)?;
    rx.await.map_err(|_| {
        NetworkError::Netlink(std::io::Error::other("the namespace thread panicked"))
    })?
}
