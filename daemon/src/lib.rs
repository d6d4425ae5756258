//! What both keelson binaries (`keelson-control-plane`, `keelson-node-agent`) need to run as
//! host daemons under systemd: flags from a YAML config file ([`config_file`]), logs that read
//! well in journald ([`log`]), `/livez`, `/readyz` and `/healthz` over a registry of named
//! checks ([`health`]), and systemd's readiness and watchdog notifications ([`systemd`]), and the open-file limit raised
//! ([`limits`]).
#![forbid(unsafe_code)]

pub mod config_file;
pub mod health;
pub mod limits;
pub mod log;
pub mod systemd;
