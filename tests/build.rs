//! Compiles `ebpf/selftest` (test-only eBPF programs the verifier must refuse) for the BPF target
//! (nightly + bpf-linker) and leaves the object in `OUT_DIR`, where the test `datapath_verifier`
//! embeds it with `include_bytes_aligned!`. The node agent never embeds it.

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let selftest = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "keelson-ebpf-selftest")
        .ok_or_else(|| anyhow!("keelson-ebpf-selftest is not a workspace member"))?;
    let root_dir = selftest
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", selftest.manifest_path))?
        .as_str();
    let package = aya_build::Package {
        name: selftest.name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the test-only eBPF programs failed; the toolchain comes from `cargo xtask \
         setup` (nightly with rust-src, and bpf-linker built against LLVM 22)",
    )?;
    Ok(())
}
