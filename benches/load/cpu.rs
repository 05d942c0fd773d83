//! CPU time of the three processes that share the machine: the server under
//! load (orgd, or the peer measured next to it, Cerbos), PostgreSQL (the
//! postmaster and every backend and helper it forked) and this load
//! generator. It shows where a call's cost goes, and how busy the cores were
//! while latency was measured.

use std::ops::{Add, Sub};
use std::time::Duration;

/// CPU time (user + system) used by each process group.
#[derive(Clone, Copy, Default)]
pub struct CpuTime {
    /// orgd, or the peer a Cerbos workload drives.
    pub server: Duration,
    pub postgres: Duration,
    pub generator: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.server + self.postgres + self.generator
    }
}

impl Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime {
            server: self.server + other.server,
            postgres: self.postgres + other.postgres,
            generator: self.generator + other.generator,
        }
    }
}

impl Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            server: self.server.saturating_sub(earlier.server),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            generator: self.generator.saturating_sub(earlier.generator),
        }
    }
}

/// Reads the processes' CPU time from /proc.
#[derive(Clone, Copy)]
pub struct CpuMeter {
    server: u32,
    postmaster: u32,
    generator: u32,
    /// Clock ticks per second, the unit of /proc/<pid>/stat.
    ticks: f64,
}

impl CpuMeter {
    /// Meters `server` (orgd's pid, or Cerbos's), PostgreSQL and this process.
    pub fn new(server: u32, postmaster: u32) -> Self {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            ticks if ticks > 0 => ticks as f64,
            // Linux's USER_HZ everywhere it runs today.
            _ => 100.0,
        };
        CpuMeter {
            server,
            postmaster,
            generator: std::process::id(),
            ticks,
        }
    }

    /// The CPU time each group has used so far. PostgreSQL's includes the
    /// processes the postmaster forked and already reaped (an autovacuum worker
    /// that came and went), so its total never goes back. Scanning /proc takes
    /// about a millisecond: call it off the runtime that drives the callers.
    pub fn sample(&self) -> CpuTime {
        let mut postgres = 0.0;
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for entry in processes.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                match stat(pid) {
                    Some(stat) if pid == self.postmaster => {
                        postgres += stat.ticks + stat.reaped_children_ticks;
                    }
                    Some(stat) if stat.parent == self.postmaster => postgres += stat.ticks,
                    _ => {}
                }
            }
        }
        let seconds = |ticks: f64| Duration::from_secs_f64(ticks / self.ticks);
        let own = |pid| stat(pid).map_or(0.0, |stat| stat.ticks);
        CpuTime {
            server: seconds(own(self.server)),
            postgres: seconds(postgres),
            generator: seconds(own(self.generator)),
        }
    }
}

/// What /proc/<pid>/stat says of a process's CPU time, in clock ticks.
struct Stat {
    parent: u32,
    /// User + system time of all its threads.
    ticks: f64,
    /// User + system time of its children that exited and were waited for.
    reaped_children_ticks: f64,
}

fn stat(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 of the line (state): ppid is field 4, utime and
    // stime 14 and 15, cutime and cstime 16 and 17.
    let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
    Some(Stat {
        parent: fields.get(1)?.parse().ok()?,
        ticks: field(14)? + field(15)?,
        reaped_children_ticks: field(16)? + field(17)?,
    })
}
