//! Booting the datapath suite's VM and reading its serial console.

use std::{
    fs,
    io::{BufRead as _, BufReader, BufWriter, Read as _, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    kernel::Kernel,
    report::{BinaryResult, Report},
};
use crate::cmd;

/// Sends each line `stream` yields (lossily decoded: a serial console is not always UTF-8)
/// until it ends or nobody listens.
pub(super) fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// The lines [`forward_lines`] sends, until every sender is gone or `deadline` passes (then
/// `timed_out` is set).
pub(super) struct LinesUntil {
    pub(super) rx: mpsc::Receiver<String>,
    pub(super) deadline: Instant,
    pub(super) timed_out: bool,
}

impl Iterator for LinesUntil {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let received = self
            .deadline
            .checked_duration_since(Instant::now())
            .map(|wait| self.rx.recv_timeout(wait));
        match received {
            Some(Ok(line)) => Some(line),
            Some(Err(mpsc::RecvTimeoutError::Disconnected)) => None,
            None | Some(Err(mpsc::RecvTimeoutError::Timeout)) => {
                self.timed_out = true;
                None
            }
        }
    }
}

pub(super) fn boot(
    series: &str,
    kernel: &Kernel,
    initrd: &Path,
    log_path: &Path,
    timeout: Duration,
    accel: &str,
) -> anyhow::Result<Report> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-m", "2048", "-smp", "2", "-kernel"])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            // Entropy from the host, so nothing in the VM waits in getrandom().
            "-device",
            "virtio-rng-pci",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("$ {}", cmd::display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let mut stderr = child.stderr.take().context("qemu's stderr")?;
    let mut log = BufWriter::new(
        fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?,
    );
    let (tx, rx) = mpsc::channel();
    let reader = forward_lines(stdout, tx);

    let mut report = Report::new(series, kernel, log_path, true);
    let mut current: Option<(String, BinaryResult, Instant)> = None;
    let mut in_check = false;
    let mut in_bare = false;
    let mut lines = LinesUntil {
        rx,
        deadline: started + timeout,
        timed_out: false,
    };
    for line in lines.by_ref() {
        let _ = writeln!(log, "{line}");
        let marker = line.find("KEELSON-").map_or("", |at| &line[at..]);
        let words: Vec<&str> = marker.split_whitespace().collect();
        let at = format!("[{series} {:>5.0}s]", started.elapsed().as_secs_f64());
        match words.as_slice() {
            ["KEELSON-BOOTED", ..] => {
                report.boot = Some(started.elapsed().as_secs_f64());
                println!("{at} booted {}", words.get(2).unwrap_or(&""));
            }
            ["KEELSON-MODULE-FAILED", m] => println!("{at} module {m} failed to load"),
            ["KEELSON-BEGIN", "check"] => in_check = true,
            ["KEELSON-BEGIN", "bare-check", withheld] => {
                in_bare = true;
                report.bare_withheld = withheld.parse().unwrap_or(0);
                report.first_test = Some(started.elapsed().as_secs_f64());
            }
            ["KEELSON-BARE-CHECK", rc] => {
                in_bare = false;
                report.bare_check = Some(rc.parse().unwrap_or(-1));
                println!(
                    "{at} keelson-node-agent check without sch_ingress and cls_bpf: exit {rc}{}",
                    report
                        .bare_lines
                        .last()
                        .map_or_else(String::new, |l| format!(", {l}"))
                );
            }
            ["KEELSON-CHECK", rc] => {
                in_check = false;
                let rc = rc.parse().unwrap_or(-1);
                report.check = Some(rc);
                println!(
                    "{at} keelson-node-agent check: {}",
                    if rc == 0 { "ok" } else { "FAILED" }
                );
            }
            ["KEELSON-BEGIN", name, ..] => {
                println!("{at} {name}");
                current = Some(((*name).to_owned(), BinaryResult::default(), Instant::now()));
            }
            ["KEELSON-RESULT", name, passed, failed, rc, ..] => {
                if let Some((_, mut result, t)) = current.take() {
                    result.passed = passed.parse().unwrap_or(0);
                    result.failed = failed.parse().unwrap_or(0);
                    result.rc = rc.trim_start_matches("rc=").to_owned();
                    result.seconds = t.elapsed().as_secs_f64();
                    println!(
                        "{at} {name}: {} passed, {} failed ({:.0} s)",
                        result.passed, result.failed, result.seconds
                    );
                    report.results.push(((*name).to_owned(), result));
                }
            }
            ["KEELSON-DONE", ..] => report.finished = true,
            _ => {
                if in_bare && (line.starts_with("run ") || line.starts_with("run:")) {
                    report.bare_lines.push(line.clone());
                }
                if in_check && line.contains("keelson-node-agent check:") {
                    report.check_error.push(line.clone());
                }
                if let Some((_, result, _)) = current.as_mut()
                    && let Some(progress) = result.feed(&line)
                {
                    println!("{at}   {progress}");
                }
            }
        }
    }
    let timed_out = lines.timed_out;
    if timed_out {
        println!(
            "[{series}] no end after {} s: killing qemu",
            timeout.as_secs()
        );
        let _ = child.kill();
    }
    let status = child.wait()?;
    let _ = reader.join();
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    if !err.trim().is_empty() {
        let _ = writeln!(log, "--- qemu stderr ---\n{err}");
    }
    log.flush()?;
    if let Some((name, mut result, t)) = current.take() {
        result.seconds = t.elapsed().as_secs_f64();
        report.results.push((name, result));
    }
    if !report.finished {
        println!(
            "[{series}] the VM did not finish (qemu {status}{}); see {}",
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", err.trim())
            },
            log_path.display()
        );
    }
    Ok(report)
}
