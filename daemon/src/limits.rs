//! Process limits a daemon with many connections needs: the soft limit on open files raised to
//! the hard one at start, as Go's runtime does for kube-apiserver and the kubelet since Go 1.19.
//! Under systemd the soft limit is 1024 while the hard one is 524288; each streamed `exec` or
//! port-forward holds two sockets in the API server and more in the node agent.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force.
pub fn raise_open_files() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let limit = raise_open_files().expect("raise");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("read");
        assert_eq!((soft, hard), (limit, limit));
    }
}
