//! What the numbers were measured on: CPU, cores, kernel, memory, build
//! profile, server versions and the exact command line. Read from `/proc`
//! (no extra dependency); a missing file gives "unknown", never an error.

use std::fs;
use std::process::Command;

use serde_json::{json, Value as Json};

/// The machine and the run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in bytes.
    pub memory: u64,
    /// "release" or "debug": a debug build measures the wrong thing.
    pub profile: &'static str,
    /// nkv's version.
    pub nkv_version: &'static str,
    /// `redis-server --version`, or `None` when it is not installed.
    pub redis_version: Option<String>,
    /// The command line, shell-quoted.
    pub command: String,
}

impl Machine {
    /// Reads it all.
    pub fn probe(redis_installed: bool) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|r| r.split_once(':'))
            .map_or("unknown".into(), |(_, v)| v.trim().to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |s| s.trim().to_owned());
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024);
        let redis_version = redis_installed.then(|| {
            Command::new("redis-server")
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|e| format!("unknown ({e})"))
        });
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            memory,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            nkv_version: env!("CARGO_PKG_VERSION"),
            redis_version,
            command: command_line(),
        }
    }

    /// For the top of the table.
    pub fn lines(&self) -> String {
        let mut s = format!(
            "machine: {} x {} cores, Linux {}, {:.1} GiB memory\n\
             build: {} (nkv {}), {}\n\
             command: {}\n",
            self.cpu,
            self.cores,
            self.kernel,
            self.memory as f64 / (1u64 << 30) as f64,
            self.profile,
            self.nkv_version,
            self.redis_version
                .as_deref()
                .unwrap_or("Redis not installed (apt-get install redis-server redis-tools)"),
            self.command
        );
        if self.profile == "debug" {
            s.push_str(
                "WARNING: a debug build; measure with cargo run --release --bin nkv-bench\n",
            );
        }
        s
    }

    /// For the JSON.
    pub fn json(&self) -> Json {
        json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "kernel": self.kernel,
            "memory_bytes": self.memory,
            "profile": self.profile,
            "nkv_version": self.nkv_version,
            "redis_version": self.redis_version,
            "command": self.command,
        })
    }
}

/// The command line as typed, quoted where a shell would need it.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
