//! `cargo xtask fuzz [--seconds N] [--target NAME]...`: builds the cargo-fuzz crate (`fuzz/`,
//! libFuzzer on the nightly toolchain) and runs each target for N seconds (default 60), one
//! after the other (the machine's cores are shared), starting from its committed corpus
//! (`fuzz/corpus/<target>`). New interesting inputs go to `target/fuzz/corpus/<target>` (not
//! the committed corpus); a crash stops the run with the reproducer's path, to be fixed and
//! then committed as `fuzz/corpus/<target>/crash-<what>` (the replay test checks it forever).

use std::{path::PathBuf, process::Stdio, time::Instant};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, repo_root};

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Only these targets (repeatable); all of them by default.
    #[arg(long = "target")]
    targets: Vec<String>,
}

/// Every target: the binaries in `fuzz/fuzz_targets/`.
fn all_targets() -> anyhow::Result<Vec<String>> {
    let dir = repo_root().join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Installs cargo-fuzz if it is missing (also a `cargo xtask setup` step).
pub fn ensure_cargo_fuzz() -> anyhow::Result<bool> {
    if cmd::output(command("cargo").args(["fuzz", "--version"])).is_some() {
        return Ok(false);
    }
    println!("    installing cargo-fuzz from crates.io (about 2 minutes)");
    cmd::run(command("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    Ok(true)
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let known = all_targets()?;
    let targets = if args.targets.is_empty() {
        known.clone()
    } else {
        args.targets.clone()
    };
    if let Some(unknown) = targets.iter().find(|t| !known.contains(t)) {
        bail!(
            "no fuzz target {unknown:?}; the targets are {}",
            known.join(", ")
        );
    }
    let root = repo_root();
    let target_dir = root.join("target/fuzz");
    // Sanitizer none: the product is safe Rust; debug assertions (overflow checks) stay on.
    let build_flags = ["--sanitizer", "none", "--target-dir"];
    let mut build = command("cargo");
    build
        .args(["+nightly", "fuzz", "build"])
        .args(build_flags)
        .arg(&target_dir)
        .current_dir(root.join("fuzz"));
    cmd::run(&mut build)?;
    let mut summary = Vec::new();
    for target in &targets {
        let seeds = root.join("fuzz/corpus").join(target);
        let work = target_dir.join("corpus").join(target);
        let artifacts = target_dir.join("artifacts").join(target);
        for dir in [&work, &artifacts] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        println!("==> fuzz {target} for {} s", args.seconds);
        let started = Instant::now();
        let mut run = command("cargo");
        run.args(["+nightly", "fuzz", "run"])
            .args(build_flags)
            .arg(&target_dir)
            .arg(target)
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1")
            .current_dir(root.join("fuzz"))
            .stderr(Stdio::piped());
        println!("$ {}", cmd::display(&run));
        let out = run
            .output()
            .with_context(|| format!("cannot start `{}`", cmd::display(&run)))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let execs = stat(&log, "stat::number_of_executed_units");
        let per_second = stat(&log, "stat::average_exec_per_sec");
        if !out.status.success() {
            let reproducer = crash_file(&log).unwrap_or_else(|| artifacts.clone());
            eprintln!("{}", tail(&log, 40));
            bail!(
                "fuzz target {target} crashed after {:.0} s; reproducer: {} (replay: cargo \
                 +nightly fuzz run --sanitizer none {target} {})",
                started.elapsed().as_secs_f64(),
                reproducer.display(),
                reproducer.display()
            );
        }
        summary.push(format!(
            "{target:<24} {execs:>12} execs {per_second:>8} exec/s  no crash"
        ));
    }
    println!(
        "==> fuzz: every target ran {} s without a crash",
        args.seconds
    );
    for line in summary {
        println!("    {line}");
    }
    Ok(())
}

/// A `-print_final_stats` value from libFuzzer's output.
fn stat(log: &str, name: &str) -> String {
    log.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .next_back()
        .unwrap_or("?")
        .to_owned()
}

/// The path libFuzzer wrote the crashing input to.
fn crash_file(log: &str) -> Option<PathBuf> {
    log.lines()
        .filter_map(|l| l.split("Test unit written to ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .next_back()
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
