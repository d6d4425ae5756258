//! A run-time probe for `BPF_FIB_LOOKUP_SRC`: the flag is new behaviour of a helper older
//! kernels know under the same id, checked only when a packet runs the helper, so no load-time
//! probe tells. Debian backports it (6.1 has it, mainline since 6.7), so the version does not
//! tell either.
//!
//! The probe loads a 14-instruction TC program that calls `bpf_fib_lookup` (IPv4, interface 1:
//! the namespace's loopback, to 127.0.0.1) with the flags asked for and returns the helper's
//! result, and runs it once on a zeroed Ethernet frame with `BPF_PROG_TEST_RUN`. A kernel that
//! does not know a flag fails the call with `-EINVAL` before any lookup; one that knows it
//! answers with a lookup result (`>= 0`). The same program without the flag is run first, so an
//! `-EINVAL` for another reason is an unknown, not a missing feature.

use std::os::fd::{FromRawFd, OwnedFd};

use super::ProbeError;

/// `BPF_PROG_LOAD` and `BPF_PROG_TEST_RUN` (`enum bpf_cmd`, uapi `linux/bpf.h`).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_PROG_TYPE_SCHED_CLS`.
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_FUNC_fib_lookup`.
const BPF_FUNC_FIB_LOOKUP: i32 = 69;
/// `BPF_FIB_LOOKUP_SRC` (uapi `linux/bpf.h`, `1U << 4`).
pub const BPF_FIB_LOOKUP_SRC: u32 = 1 << 4;
/// `sizeof(struct bpf_fib_lookup)`.
const FIB_PARAMS_LEN: i32 = 64;

/// One `struct bpf_insn`: opcode, registers (dst low nibble, src high), offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let [o0, o1] = off.to_le_bytes();
    let [i0, i1, i2, i3] = imm.to_le_bytes();
    u64::from_le_bytes([code, (src << 4) | dst, o0, o1, i0, i1, i2, i3])
}

/// The probe program: zero a `struct bpf_fib_lookup` on the stack, set family AF_INET,
/// ifindex 1 and destination 127.0.0.1, call `bpf_fib_lookup(skb, &params, 64, flags)` (r1, the
/// skb, is still the context) and return its result.
fn program(flags: u32) -> [u64; 17] {
    const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
    const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
    const ST_DW: u8 = 0x7a; // BPF_ST | BPF_MEM | BPF_DW
    const ST_W: u8 = 0x62; // BPF_ST | BPF_MEM | BPF_W
    const ST_B: u8 = 0x72; // BPF_ST | BPF_MEM | BPF_B
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const R2: u8 = 2;
    const R3: u8 = 3;
    const R4: u8 = 4;
    const R10: u8 = 10;
    let loopback_be = i32::from_le_bytes([127, 0, 0, 1]);
    [
        insn(ST_DW, R10, 0, -64, 0),
        insn(ST_DW, R10, 0, -56, 0),
        insn(ST_DW, R10, 0, -48, 0),
        insn(ST_DW, R10, 0, -40, 0),
        insn(ST_DW, R10, 0, -32, 0),
        insn(ST_DW, R10, 0, -24, 0),
        insn(ST_DW, R10, 0, -16, 0),
        insn(ST_DW, R10, 0, -8, 0),
        insn(ST_B, R10, 0, -64, libc::AF_INET), // family
        insn(ST_W, R10, 0, -56, 1),             // ifindex
        insn(ST_W, R10, 0, -32, loopback_be),   // ipv4_dst
        insn(MOV64_REG, R2, R10, 0, 0),
        insn(ADD64_IMM, R2, 0, 0, -FIB_PARAMS_LEN),
        insn(MOV64_IMM, R3, 0, 0, FIB_PARAMS_LEN),
        insn(MOV64_IMM, R4, 0, 0, flags.cast_signed()),
        insn(CALL, 0, 0, 0, BPF_FUNC_FIB_LOOKUP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `prog_name`, then zeroes.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    rest: [u8; 80],
}

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`, up to `duration`, then zeroes.
#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    rest: [u8; 40],
}

/// Calls bpf(2) with `attr`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads (and for BPF_PROG_TEST_RUN writes back) at most `size_of::<T>()`
    // bytes of `attr`, a live exclusive borrow of exactly that size; the pointers inside it
    // point at buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>() as libc::c_ulong,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the probe program with `flags` and runs it once: `bpf_fib_lookup`'s result.
fn run_fib_lookup(flags: u32) -> Result<i32, ProbeError> {
    let insns = program(flags);
    let license = c"GPL";
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        rest: [0; 80],
    };
    let fd = bpf(BPF_PROG_LOAD, &mut load).map_err(|source| ProbeError::Bpf {
        command: "BPF_PROG_LOAD",
        source,
    })?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor this process owns alone.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let frame = [0u8; 64];
    let mut run = TestRunAttr {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
        retval: 0,
        data_size_in: frame.len() as u32,
        data_size_out: 0,
        data_in: frame.as_ptr() as u64,
        data_out: 0,
        repeat: 1,
        duration: 0,
        rest: [0; 40],
    };
    bpf(BPF_PROG_TEST_RUN, &mut run).map_err(|source| ProbeError::Bpf {
        command: "BPF_PROG_TEST_RUN",
        source,
    })?;
    Ok(run.retval.cast_signed())
}

/// What the two runs mean: the lookup without flags, then with `BPF_FIB_LOOKUP_SRC`.
pub fn judge(without: i32, with_src: i32) -> Result<bool, ProbeError> {
    let einval = -libc::EINVAL;
    if without < 0 {
        return Err(ProbeError::FibLookup { errno: -without });
    }
    match with_src {
        rc if rc == einval => Ok(false),
        rc if rc >= 0 => Ok(true),
        rc => Err(ProbeError::FibLookupSrc { errno: -rc }),
    }
}

/// Whether the running kernel's `bpf_fib_lookup` honours `BPF_FIB_LOOKUP_SRC` (needs CAP_BPF
/// and CAP_NET_ADMIN, i.e. root).
pub fn probe_fib_lookup_src() -> Result<bool, ProbeError> {
    let without = run_fib_lookup(0)?;
    let with_src = run_fib_lookup(BPF_FIB_LOOKUP_SRC)?;
    judge(without, with_src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_runs_tell_present_missing_and_unknown() {
        let cases = [
            ("6.7+: a lookup result", 0, 4, Ok(true)),
            (
                "5.10: the unknown flag is refused",
                4,
                -libc::EINVAL,
                Ok(false),
            ),
            (
                "the helper fails without the flag too",
                -libc::EINVAL,
                -libc::EINVAL,
                Err(
                    "bpf_fib_lookup without flags failed in the probe program: errno 22".to_owned(),
                ),
            ),
            (
                "another error with the flag",
                0,
                -libc::ENODEV,
                Err(
                    "bpf_fib_lookup with BPF_FIB_LOOKUP_SRC failed in the probe program: errno 19"
                        .to_owned(),
                ),
            ),
        ];
        for (name, without, with_src, want) in cases {
            assert_eq!(
                judge(without, with_src).map_err(|e| crate::error_chain(&e)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn the_program_calls_fib_lookup_with_the_flags_and_exits() {
        let insns = program(BPF_FIB_LOOKUP_SRC);
        assert_eq!(
            insns[14],
            insn(0xb7, 4, 0, 0, 16),
            "r4 = BPF_FIB_LOOKUP_SRC"
        );
        assert_eq!(insns[15], 0x0000_0045_0000_0085, "call 69");
        assert_eq!(insns[16], 0x95, "exit");
    }
}
