//! CPU time of the three processes that share the machine: orgd, PostgreSQL
//! (the postmaster and every backend and helper it forked) and this load
//! generator. It shows where a call's cost goes, and how busy the cores were
//! while latency was measured.

use std::ops::{Add, Sub};
use std::time::Duration;

/// CPU time (user + system) used by each process group.
#[derive(Clone, Copy, Default)]
pub struct CpuTime {
    pub orgd: Duration,
    pub postgres: Duration,
    pub generator: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.orgd + self.postgres + self.generator
    }
}

impl Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime {
            orgd: self.orgd + other.orgd,
            postgres: self.postgres + other.postgres,
            generator: self.generator + other.generator,
        }
    }
}

impl Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            orgd: self.orgd.saturating_sub(earlier.orgd),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            generator: self.generator.saturating_sub(earlier.generator),
        }
    }
}

/// Reads the processes' CPU time from /proc.
#[derive(Clone, Copy)]
pub struct CpuMeter {
    orgd: u32,
    postmaster: u32,
    generator: u32,
    /// Clock ticks per second, the unit of /proc/<pid>/stat.
    ticks: f64,
}

impl CpuMeter {
    pub fn new(orgd: u32, postmaster: u32) -> Self {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        CpuMeter {
            orgd,
            postmaster,
            generator: std::process::id(),
            ticks,
        }
    }

    /// The CPU time each group has used so far. A backend that exited since an
    /// earlier sample takes its time with it; the pools keep theirs open.
    pub fn sample(&self) -> CpuTime {
        let mut postgres = 0.0;
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for entry in processes.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some((parent, ticks)) = stat(pid)
                    && (pid == self.postmaster || parent == self.postmaster)
                {
                    postgres += ticks;
                }
            }
        }
        let seconds = |ticks: f64| Duration::from_secs_f64(ticks / self.ticks);
        let own = |pid| stat(pid).map_or(0.0, |(_, ticks)| ticks);
        CpuTime {
            orgd: seconds(own(self.orgd)),
            postgres: seconds(postgres),
            generator: seconds(own(self.generator)),
        }
    }
}

/// A process's parent and its user + system time in clock ticks, with the time
/// of all its threads.
fn stat(pid: u32) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name: state, ppid, ... utime is field 14 of the line, stime 15.
    let parent = fields.get(1)?.parse().ok()?;
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((parent, user + system))
}
