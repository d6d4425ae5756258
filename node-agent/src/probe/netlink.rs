//! Netlink TC attachment without TCX: whether the `clsact` qdisc and the `cls_bpf` classifier
//! work, tried for real in a throwaway network namespace.

use std::{sync::mpsc, time::Duration};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType,
    tc::{self, NlOptions, TcAttachOptions, TcError},
};
use keelson_ebpf_common::programs::TC_COUNT_INGRESS;

use super::{Presence, ProbeError};

/// What [`probe_netlink_tc`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkTc {
    /// Whether a `clsact` qdisc could be added.
    pub clsact: Presence,
    /// Whether a `cls_bpf` filter running a real TC program could be attached to it.
    pub cls_bpf: Presence,
}

impl NetlinkTc {
    fn unknown(why: &str) -> Self {
        Self {
            clsact: Presence::Unknown(why.to_owned()),
            cls_bpf: Presence::Unknown(why.to_owned()),
        }
    }
}

/// How long [`probe_netlink_tc`] waits for its thread. Each step is one syscall or netlink
/// round trip (a module the kernel autoloads included) plus loading one small program, so this
/// only bounds a kernel that never answers; it is generous because the verifier alone takes
/// seconds under emulation (2 s in a TCG VM).
const NETLINK_TC_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether TC programs can be attached through netlink, as the agent does without TCX: in a
/// new, empty network namespace, adds a `clsact` qdisc to its `lo` and attaches
/// `tc_count_ingress` (from the counters object, the smallest) to the qdisc's ingress hook with a
/// `cls_bpf` filter. Where the kernel lacks the qdisc or the classifier and cannot load the
/// module, the request fails with `ENOENT` (an unknown kind) or `EOPNOTSUPP` (no TC netlink at
/// all): the feature is missing. Any other failure (not root, the program not loading) leaves it
/// unknown, with the cause.
///
/// The namespace belongs to a thread of its own (`unshare(CLONE_NEWNET)` moves only the calling
/// thread), so the host's interfaces are never touched, and it disappears with the qdisc and the
/// filter when that thread ends. `lo` stays down: neither a qdisc nor a filter needs the link up.
/// Needs root (CAP_SYS_ADMIN for the namespace, CAP_NET_ADMIN, CAP_BPF).
pub fn probe_netlink_tc() -> NetlinkTc {
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("probe-netlink-tc".into())
        .spawn(move || {
            // Everything the probe created is dropped before this send; the receiver is gone
            // only after a timeout, and then there is no one left to tell.
            sender.send(netlink_tc_in_new_netns()).ok();
        });
    let thread = match spawned {
        Ok(thread) => thread,
        Err(error) => return NetlinkTc::unknown(&format!("spawning the probe thread: {error}")),
    };
    match receiver.recv_timeout(NETLINK_TC_TIMEOUT) {
        Ok(found) => {
            // The thread has sent its last word: wait for it to end, and its namespace with it.
            if thread.join().is_err() {
                return NetlinkTc::unknown("the probe thread panicked after answering");
            }
            found
        }
        Err(mpsc::RecvTimeoutError::Timeout) => NetlinkTc::unknown(&format!(
            "no answer within {} s (the thread is left to finish on its own)",
            NETLINK_TC_TIMEOUT.as_secs()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            NetlinkTc::unknown("the probe thread panicked")
        }
    }
}

/// The body of [`probe_netlink_tc`]'s thread.
fn netlink_tc_in_new_netns() -> NetlinkTc {
    // Programs are not bound to a namespace: load first, so that a failure here does not hide
    // what the qdisc probe finds.
    let program = load_counter_program();
    if let Err(errno) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        return NetlinkTc::unknown(&format!("unshare(CLONE_NEWNET): {errno}"));
    }
    if let Err(error) = tc::qdisc_add_clsact("lo") {
        return NetlinkTc {
            clsact: netlink_presence(
                tc_errno(&error),
                format!("adding a clsact qdisc: {}", crate::error_chain(&error)),
            ),
            cls_bpf: Presence::Unknown("not probed: no clsact qdisc to attach to".to_owned()),
        };
    }
    let cls_bpf = match program {
        Err(why) => Presence::Unknown(crate::error_chain(&why)),
        Ok(mut ebpf) => {
            match crate::datapath::program_mut::<SchedClassifier>(&mut ebpf, TC_COUNT_INGRESS) {
                Err(error) => Presence::Unknown(crate::error_chain(&error)),
                Ok(program) => match program.attach_with_options(
                    "lo",
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions::default()),
                ) {
                    // Dropping `ebpf` (below) detaches the filter; the namespace goes anyway.
                    Ok(_) => Presence::Present,
                    Err(error) => {
                        let errno = match &error {
                            ProgramError::TcError(error) => tc_errno(error),
                            _ => None,
                        };
                        netlink_presence(
                            errno,
                            format!(
                                "attaching {TC_COUNT_INGRESS} with cls_bpf: {}",
                                crate::error_chain(&error)
                            ),
                        )
                    }
                },
            }
        }
    };
    NetlinkTc {
        clsact: Presence::Present,
        cls_bpf,
    }
}

/// The counters object with `tc_count_ingress` loaded (verified) into the kernel.
fn load_counter_program() -> Result<aya::Ebpf, ProbeError> {
    let mut ebpf = crate::datapath::load_object()?;
    crate::datapath::program_mut::<SchedClassifier>(&mut ebpf, TC_COUNT_INGRESS)?
        .load()
        .map_err(|source| ProbeError::Load {
            program: TC_COUNT_INGRESS,
            source: Box::new(source),
        })?;
    Ok(ebpf)
}

/// The errno of a netlink request that failed, if that is what failed.
fn tc_errno(error: &TcError) -> Option<i32> {
    match error {
        TcError::NetlinkError(error) => error.raw_os_error(),
        _ => None,
    }
}

/// A TC netlink request's failure as the presence of what it asked for: `ENOENT` is the kernel's
/// answer to a qdisc or classifier kind it does not know (and could not load a module for),
/// `EOPNOTSUPP` to TC requests without TC support built in; anything else is a failed probe.
pub(super) fn netlink_presence(errno: Option<i32>, why: String) -> Presence {
    match errno {
        Some(libc::ENOENT | libc::EOPNOTSUPP) => Presence::Missing,
        _ => Presence::Unknown(why),
    }
}
