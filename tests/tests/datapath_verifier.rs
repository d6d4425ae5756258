//! Privileged: a deliberately broken eBPF program (a packet read with no bounds check, built only
//! for this test from `ebpf/selftest`) is refused by the kernel's verifier, and the node agent's
//! verification path reports that as an error carrying the verifier log, not as a panic. Its
//! correct twin (the same read after a `data_end` check) is accepted.
//!
//! Needs only bpf(2): no network namespace, no Docker, no files, so it runs in the kernel VMs too.

use aya::{
    Ebpf,
    programs::{ProgramError, SchedClassifier},
};
use keelson_node_agent::{
    datapath::{self, DatapathError},
    error_chain,
};
use keelson_tests::require_root;

/// The `keelson-broken` object built from `ebpf/selftest` by `tests/build.rs`.
fn broken_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keelson-broken"))
}

/// The verifier's complaint about a packet pointer dereferenced before a `data_end` check, as
/// kernels 5.x to 6.18 word it (`invalid access to packet, off=0 size=1, R1(id=0,off=0,r=0)`).
const PACKET_REJECTION: &str = "invalid access to packet";

#[test]
fn unchecked_packet_access_is_refused_with_the_verifier_log() {
    require_root();
    let error = match datapath::verify_object(broken_object()) {
        Ok(reports) => {
            panic!("the verifier accepted a program that reads past data_end: {reports:?}")
        }
        Err(error) => error,
    };
    let text = error_chain(&error);
    let DatapathError::LoadProgram { program, source } = &error else {
        panic!("expected the kernel to refuse a program, got: {text}");
    };
    assert_eq!(program, "broken_unchecked_access", "{text}");
    let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = source.as_ref()
    else {
        panic!("expected BPF_PROG_LOAD to fail, got: {text}");
    };
    // EACCES is the verifier's refusal; EPERM would be missing privileges instead.
    assert_eq!(
        io_error.raw_os_error(),
        Some(nix::errno::Errno::EACCES as i32),
        "{text}"
    );

    // What an operator sees (the agent prints errors with `error_chain`) names the program and
    // holds the verifier's log: its rejection line and the instruction trace that led there.
    let log = verifier_log.to_string();
    eprintln!("{text}");
    assert!(
        text.starts_with("the kernel refused program broken_unchecked_access: "),
        "{text}"
    );
    assert!(text.contains(&log), "the verifier log is missing: {text}");
    assert!(log.contains(PACKET_REJECTION), "{log}");
    let rejection = log
        .lines()
        .find(|line| line.contains(PACKET_REJECTION))
        .unwrap_or_default();
    assert!(
        rejection.contains("off=0 size=1"),
        "the rejection names the one-byte read at the packet start: {rejection}"
    );
    assert!(log.lines().count() >= 3, "not a trace: {log}");
    assert!(
        log.lines().any(|line| line.starts_with("0: ")),
        "no trace from instruction 0: {log}"
    );
    assert!(log.contains("R1"), "no register state: {log}");
}

#[test]
fn the_same_read_after_a_bounds_check_is_accepted() {
    require_root();
    let mut ebpf = Ebpf::load(broken_object())
        .unwrap_or_else(|e| panic!("parse keelson-broken: {}", error_chain(&e)));
    let program: &mut SchedClassifier = ebpf
        .program_mut("checked_access")
        .expect("keelson-broken has a program checked_access")
        .try_into()
        .unwrap_or_else(|e: ProgramError| panic!("checked_access: {}", error_chain(&e)));
    program
        .load()
        .unwrap_or_else(|e| panic!("the verifier refused checked_access: {}", error_chain(&e)));
    let info = program
        .info()
        .unwrap_or_else(|e| panic!("checked_access info: {}", error_chain(&e)));
    assert!(info.size_translated().is_some_and(|bytes| bytes > 0));
}
