//! Results: libtest's output parsed, the per-kernel table, nextest-style lines and JUnit.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    CLUSTER_TEST,
    kernel::{Kernel, numbers},
};

/// One binary's outcome in one VM.
#[derive(Debug, Default)]
pub(super) struct BinaryResult {
    pub(super) passed: u32,
    pub(super) failed: u32,
    pub(super) rc: String,
    pub(super) seconds: f64,
    /// The panic lines of failed tests.
    pub(super) failures: Vec<String>,
    /// Each test's name and whether it passed, in the order they ended.
    pub(super) tests: Vec<(String, bool)>,
    /// Lines still to keep after a panic line.
    pub(super) panic_lines: u8,
}

impl BinaryResult {
    /// Takes one line of libtest's output; returns a `test ... ok|FAILED` line, for progress.
    pub(super) fn feed(&mut self, line: &str) -> Option<String> {
        if let Some(rest) = line.strip_prefix("test ") {
            for (suffix, ok) in [(" ... ok", true), (" ... FAILED", false)] {
                if let Some(name) = rest.strip_suffix(suffix) {
                    self.tests.push((name.to_owned(), ok));
                    return Some(line.to_owned());
                }
            }
        }
        if let Some(r) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                r.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.split_whitespace().last()?.parse().ok())
                    .unwrap_or(0)
            };
            self.passed = count(" passed");
            self.failed = count(" failed");
        }
        if line.starts_with("thread '") && line.contains("panicked at") {
            self.failures.push(line.to_owned());
            self.panic_lines = 3;
        } else if line.is_empty() || line.starts_with("test result:") || line == "failures:" {
            self.panic_lines = 0;
        } else if self.panic_lines > 0 {
            self.panic_lines -= 1;
            if !line.starts_with("note:") {
                self.failures.push(format!("  {line}"));
            }
        }
        None
    }
}

#[derive(Debug)]
pub(super) struct Report {
    /// The datapath suite ran (`--no-suite` skips it).
    pub(super) suite: bool,
    /// Seconds from qemu's start to the first test (the agent's check).
    pub(super) first_test: Option<f64>,
    /// How many modules the first check ran without (the netlink TC ones that are modules).
    pub(super) bare_withheld: u32,
    /// The first check's exit status.
    pub(super) bare_check: Option<i32>,
    /// Its `run ...` lines: what `run` would do.
    pub(super) bare_lines: Vec<String>,
    pub(super) series: String,
    pub(super) release: String,
    pub(super) boot: Option<f64>,
    pub(super) check: Option<i32>,
    pub(super) check_error: Vec<String>,
    pub(super) results: Vec<(String, BinaryResult)>,
    pub(super) finished: bool,
    pub(super) total: Duration,
    pub(super) log: PathBuf,
}

impl Report {
    pub(super) fn new(series: &str, kernel: &Kernel, log: &Path, suite: bool) -> Self {
        Self {
            suite,
            first_test: None,
            bare_withheld: 0,
            bare_check: None,
            bare_lines: Vec::new(),
            series: series.to_owned(),
            release: kernel.release.clone(),
            boot: None,
            check: None,
            check_error: Vec::new(),
            results: Vec::new(),
            finished: false,
            total: Duration::ZERO,
            log: log.to_path_buf(),
        }
    }
}

pub(super) fn summarize(reports: &[Report], vm_dir: &Path) -> anyhow::Result<()> {
    let mut bad = false;
    println!("\n==> vm-test results");
    for r in reports {
        if r.suite {
            println!(
                "\nkernel {} ({}): booted in {}, first test at {}, suite {:.0} s{}; log {}",
                r.series,
                r.release,
                r.boot
                    .map_or_else(|| "none".to_owned(), |b| format!("{b:.0} s")),
                r.first_test
                    .map_or_else(|| "none".to_owned(), |b| format!("{b:.0} s")),
                r.total.as_secs_f64(),
                if r.finished { "" } else { ", DID NOT FINISH" },
                r.log.display()
            );
            bad |= !r.finished || r.check != Some(0);
        } else {
            println!(
                "\nkernel {} ({}): datapath suite not run (--no-suite)",
                r.series, r.release
            );
        }
        println!(
            "  {:<34} {:>6} {:>6} {:>7}",
            "BINARY", "PASSED", "FAILED", "SECONDS"
        );
        if r.suite {
            let (bare_ok, bare) = bare_check_verdict(r);
            bad |= !bare_ok;
            println!("  {:<34} {bare:>21}", "check, no sch_ingress/cls_bpf");
            for line in &r.bare_lines {
                println!("      {line}");
            }
            let check = match r.check {
                Some(0) => "ok",
                Some(_) => "FAILED",
                None => "not run",
            };
            println!("  {:<34} {check:>21}", "keelson-node-agent check");
            for line in &r.check_error {
                println!("      {line}");
            }
        }
        for (name, result) in &r.results {
            let incomplete = result.rc.is_empty();
            let label = if name == CLUSTER_TEST {
                format!("{name} (two VMs, on the host)")
            } else {
                name.clone()
            };
            println!(
                "  {label:<34} {:>6} {:>6} {:>7.0}{}",
                result.passed,
                result.failed,
                result.seconds,
                if incomplete {
                    "  (did not finish)".to_owned()
                } else if result.failed == 0 && result.rc != "0" {
                    format!("  (exit status {} without failed tests)", result.rc)
                } else {
                    String::new()
                }
            );
            bad |= incomplete || result.failed > 0 || result.rc != "0";
            for line in &result.failures {
                println!("      {line}");
            }
        }
    }

    // The same results as nextest reports its own: a line per test, a summary line per kernel,
    // and a JUnit file per kernel for CI systems that collect them.
    println!("\n------------");
    for r in reports {
        let mut cases: Vec<(String, bool)> = Vec::new();
        if r.suite {
            cases.push((
                "keelson-node-agent check without sch_ingress and cls_bpf".to_owned(),
                bare_check_verdict(r).0,
            ));
            cases.push(("keelson-node-agent check".to_owned(), r.check == Some(0)));
        }
        for (binary, result) in &r.results {
            for (test, ok) in &result.tests {
                cases.push((format!("{binary}::{test}"), *ok));
            }
            if result.rc.is_empty() || (result.failed == 0 && result.rc != "0") {
                cases.push((format!("{binary} (did not finish)"), false));
            }
        }
        for (name, ok) in &cases {
            println!(
                "        {} [{:>5}] {name}",
                if *ok { "PASS" } else { "FAIL" },
                r.series
            );
        }
        let failed = cases.iter().filter(|(_, ok)| !ok).count();
        let seconds = r.total.as_secs_f64()
            + r.results
                .iter()
                .filter(|(n, _)| n == CLUSTER_TEST)
                .map(|(_, res)| res.seconds)
                .sum::<f64>();
        println!(
            "     Summary [{seconds:>8.3}s] {} tests run: {} passed, {failed} failed, 0 skipped \
             (kernel {})",
            cases.len(),
            cases.len() - failed,
            r.release
        );
        let junit = vm_dir.join(format!("junit-{}.xml", r.series));
        fs::write(&junit, junit_xml(&r.release, &cases, seconds))
            .with_context(|| format!("cannot write {}", junit.display()))?;
        println!("     JUnit   {}", junit.display());
    }
    if bad {
        bail!("some VM tests failed or did not finish (serial logs above)");
    }
    println!("\nall VM tests passed");
    Ok(())
}

/// Whether the first check (without the netlink TC modules) did what this kernel calls for,
/// and a word on it: below 6.6 (no TCX) `run` must refuse, naming TCX and the missing module;
/// from 6.6 on the modules are not needed.
pub(super) fn bare_check_verdict(r: &Report) -> (bool, &'static str) {
    let version = numbers(&r.release);
    let has_tcx = version.get(..2).is_some_and(|v| (v[0], v[1]) >= (6, 6));
    let refused = r
        .bare_lines
        .iter()
        .any(|l| l.starts_with("run refuses:") && l.contains("TCX (Linux >= 6.6)"));
    match r.bare_check {
        None => (false, "not run"),
        Some(_) if r.bare_withheld == 0 => (false, "nothing withheld"),
        Some(0) if has_tcx => (true, "ok (TCX)"),
        Some(rc) if rc != 0 && !has_tcx && refused => (true, "refused (expected)"),
        Some(_) => (false, "FAILED"),
    }
}

/// A JUnit report of one kernel's test cases.
pub(super) fn junit_xml(release: &str, cases: &[(String, bool)], seconds: f64) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failed = cases.iter().filter(|(_, ok)| !ok).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"vm-test\" tests=\"{}\" \
         failures=\"{failed}\" time=\"{seconds:.3}\">\n  <testsuite name=\"kernel {}\" tests=\"{}\" \
         failures=\"{failed}\">\n",
        cases.len(),
        escape(release),
        cases.len()
    );
    for (name, ok) in cases {
        let (class, test) = name
            .split_once("::")
            .unwrap_or((name.as_str(), name.as_str()));
        let _ = write!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\"",
            escape(class),
            escape(test)
        );
        if *ok {
            xml.push_str("/>\n");
        } else {
            xml.push_str("><failure message=\"failed\"/></testcase>\n");
        }
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_output_gives_each_test_and_the_counts() {
        let mut result = BinaryResult::default();
        let out = "running 2 tests\ntest a ... ok\ntest b ... FAILED\n\
                   thread 'b' (7) panicked at tests/x.rs:3:5:\nboom\n\
                   test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        let progress: Vec<String> = out.lines().filter_map(|l| result.feed(l)).collect();
        assert_eq!(progress, ["test a ... ok", "test b ... FAILED"]);
        assert_eq!(
            result.tests,
            [("a".to_owned(), true), ("b".to_owned(), false)]
        );
        assert_eq!((result.passed, result.failed), (1, 1));
        assert_eq!(
            result.failures,
            ["thread 'b' (7) panicked at tests/x.rs:3:5:", "  boom"]
        );
    }

    fn bare(release: &str, rc: i32, line: &str) -> Report {
        let kernel = Kernel {
            release: release.to_owned(),
            vmlinuz: PathBuf::new(),
            modules: PathBuf::new(),
        };
        let mut r = Report::new("x", &kernel, Path::new("log"), true);
        r.bare_withheld = 2;
        r.bare_check = Some(rc);
        r.bare_lines.push(line.to_owned());
        r
    }

    #[test]
    fn without_netlink_tc_a_kernel_before_6_6_must_be_refused() {
        let refusal = "run refuses: keelson-node-agent needs TC attach: TCX (Linux >= 6.6) or \
                       the clsact qdisc (sch_ingress, CONFIG_NET_SCH_INGRESS); this kernel is \
                       6.1.0 and has neither";
        assert!(bare_check_verdict(&bare("6.1.0-56-amd64", 1, refusal)).0);
        assert!(!bare_check_verdict(&bare("6.1.0-56-amd64", 0, "run: every feature used")).0);
        assert!(bare_check_verdict(&bare("6.12.117+deb12-amd64", 0, "run: every feature used")).0);
        assert!(!bare_check_verdict(&bare("6.12.117+deb12-amd64", 1, refusal)).0);
    }
}
