//! Compiles `ebpf/programs` for the BPF target (nightly + bpf-linker) and leaves the object in
//! `OUT_DIR`, where `datapath::programs` embeds it with `include_bytes_aligned!`.

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "keelson-ebpf")
        .ok_or_else(|| anyhow!("keelson-ebpf is not a workspace member"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", ebpf.manifest_path))?
        .as_str();
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default()).context(
        "building the eBPF programs failed; the toolchain comes from `cargo xtask setup` \
         (nightly with rust-src, and bpf-linker built against LLVM 22)",
    )
}
