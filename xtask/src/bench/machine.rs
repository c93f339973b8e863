//! The machine a benchmark group ran on, read from `/proc`, `/etc/os-release` and
//! `rustc --version`, for the report's header.

use serde::{Deserialize, Serialize};

/// The machine a group ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// Total RAM in GiB.
    pub ram_gib: f64,
    /// Distribution and kernel.
    pub os: String,
    /// `rustc --version`.
    pub rustc: String,
}

impl Machine {
    /// The machine this process runs on.
    pub(crate) fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib: f64 = field(&meminfo, "MemTotal")
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0.0);
        let distro = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| format!(", Linux {}", k.trim()))
            .unwrap_or_default();
        let rustc =
            std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
                .arg("--version")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unknown rustc".to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            ram_gib: (ram_kib / f64::from(1_u32 << 20) * 10.0).round() / 10.0,
            os: format!("{distro}{kernel}"),
            rustc,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{}, {} cores, {} GiB RAM; {}; {}",
            self.cpu, self.cores, self.ram_gib, self.os, self.rustc
        )
    }
}

/// The value of `key: value` in a `/proc` file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}
