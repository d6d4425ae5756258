//! The eBPF datapath: the embedded object, loading it into the kernel, attaching its programs and
//! reading its maps.

mod counters;
mod error;
pub mod flows;
pub mod lb;
pub mod maglev;
pub mod memlock;
pub mod policy;

pub use counters::{Direction, IfaceCounterProgram};
pub use error::DatapathError;

use aya::{Ebpf, programs::Program};

/// The `keelson-counters` object built from `ebpf/programs` by `build.rs`.
pub fn counters_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keelson-counters"))
}

/// The embedded objects, by name.
pub fn objects() -> [(&'static str, &'static [u8]); 2] {
    [
        ("keelson-counters", counters_object()),
        ("keelson-lb", lb::object()),
    ]
}

/// The program `name` of `ebpf` as its concrete type (`SchedClassifier`, `CgroupSockAddr`, ...).
pub(crate) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut Program>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram { program: name })?;
    let kind = format!("{:?}", program.prog_type());
    program
        .try_into()
        .map_err(|_| DatapathError::UnexpectedProgramType {
            program: name.to_owned(),
            kind,
        })
}

/// Parses the counters object and creates its maps in the kernel.
pub(crate) fn load_object() -> Result<Ebpf, DatapathError> {
    memlock::ensure()?;
    Ebpf::load(counters_object()).map_err(|e| DatapathError::LoadObject(Box::new(e)))
}

/// What [`verify_all`] found for one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramReport {
    /// Program name as exported by the object.
    pub name: String,
    /// Program type, e.g. `SchedClassifier`.
    pub kind: &'static str,
    /// Instructions the kernel holds for it after loading.
    pub instructions: u32,
    /// Instructions the verifier processed to prove it safe (kernels >= 5.16 report it).
    pub verified_instructions: Option<u32>,
}

/// Loads every program of every embedded object into the kernel, so the verifier checks each
/// one, and reports what it accepted. Nothing is attached and nothing is pinned.
pub fn verify_all() -> Result<Vec<ProgramReport>, DatapathError> {
    let mut reports = Vec::new();
    for (_, object) in objects() {
        reports.extend(verify_object(object)?);
    }
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(reports)
}

/// Parses `object`, creates its maps and loads each of its programs into the kernel (in name
/// order), so the verifier checks every one; reports what it accepted, by name. Nothing is
/// attached and nothing is pinned; all of it is released on return.
///
/// The first program the kernel refuses ends the check with [`DatapathError::LoadProgram`],
/// whose source carries the verifier log.
pub fn verify_object(object: &[u8]) -> Result<Vec<ProgramReport>, DatapathError> {
    memlock::ensure()?;
    let mut ebpf = Ebpf::load(object).map_err(|e| DatapathError::LoadObject(Box::new(e)))?;
    let mut programs: Vec<_> = ebpf.programs_mut().collect();
    programs.sort_by_key(|(name, _)| *name);
    let mut reports = Vec::with_capacity(programs.len());
    for (name, program) in programs {
        let load_error = |source| DatapathError::LoadProgram {
            program: name.to_owned(),
            source: Box::new(source),
        };
        let kind = match program {
            Program::SchedClassifier(p) => {
                p.load().map_err(load_error)?;
                "SchedClassifier"
            }
            Program::CgroupSockAddr(p) => {
                p.load().map_err(load_error)?;
                "CgroupSockAddr"
            }
            other => {
                return Err(DatapathError::UnexpectedProgramType {
                    program: name.to_owned(),
                    kind: format!("{:?}", other.prog_type()),
                });
            }
        };
        let info = program.info().map_err(load_error)?;
        reports.push(ProgramReport {
            name: name.to_owned(),
            kind,
            instructions: info.size_translated().map_or(0, |bytes| bytes / 8),
            verified_instructions: info.verified_instruction_count(),
        });
    }
    Ok(reports)
}
