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
    )?;
    // Say in the build log what was built and by what, once per (re)build of the objects.
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let linker = std::process::Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "bpf-linker".to_owned());
    for object in ["keelson-lb", "keelson-counters"] {
        let size = std::fs::metadata(out_dir.join(object))
            .with_context(|| format!("the eBPF object {object} was not built"))?
            .len();
        println!("cargo:warning=eBPF object {object} ({size} bytes) linked by {linker}");
    }
    Ok(())
}
