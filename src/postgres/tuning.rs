//! The settings the embedded cluster starts with, sized for the memory it may
//! use instead of PostgreSQL's defaults (128 MB of shared buffers), which a
//! platform with hundreds of thousands of organizations outgrows.
//!
//! The formulas are PGTune's for an OLTP ("web application") server: a quarter
//! of the memory as shared buffers, three quarters as the planner's estimate of
//! the cache (shared buffers plus the kernel's page cache), and per-sort memory
//! from what remains divided among the connections. orgd's statements are short
//! indexed lookups, so JIT compilation (tens of milliseconds when a plan's cost
//! estimate crosses its threshold) is off, and random reads are priced as on SSDs.

use bytesize::ByteSize;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The embedded cluster's size: the memory it is tuned for and the connections
/// it must accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    pub memory: ByteSize,
    pub max_connections: u32,
}

impl Tuning {
    /// PostgreSQL's own connection default, kept while orgd needs fewer.
    const MIN_CONNECTIONS: u32 = 100;

    /// Tuned for `memory` (None: half of this machine's, see `machine_share`)
    /// and for `connections` that orgd itself opens, with room for an operator's.
    pub fn new(memory: Option<ByteSize>, connections: u32) -> Self {
        Tuning {
            memory: memory.unwrap_or_else(machine_share),
            max_connections: (connections + 10).max(Self::MIN_CONNECTIONS),
        }
    }

    /// The server settings, as `postgres -c name=value` takes them.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let memory = self.memory.as_u64().max(256 * MIB);
        let shared_buffers = memory / 4;
        let effective_cache = memory / 4 * 3;
        let maintenance_work = (memory / 16).min(2 * GIB);
        let per_sort = (memory - shared_buffers) / (u64::from(self.max_connections) * 3);
        let work = per_sort.clamp(4 * MIB, 64 * MIB);
        let mut settings = vec![
            ("max_connections", self.max_connections.to_string()),
            ("shared_buffers", megabytes(shared_buffers)),
            ("effective_cache_size", megabytes(effective_cache)),
            ("maintenance_work_mem", megabytes(maintenance_work)),
            ("work_mem", megabytes(work)),
            ("random_page_cost", "1.1".to_owned()),
            ("jit", "off".to_owned()),
            ("max_wal_size", "2GB".to_owned()),
            ("min_wal_size", "512MB".to_owned()),
        ];
        // Prefetching needs posix_fadvise, which PostgreSQL has only on Linux
        // (elsewhere any value but 0 is refused at start).
        if cfg!(target_os = "linux") {
            settings.push(("effective_io_concurrency", "200".to_owned()));
        }
        settings
    }
}

/// Half the memory this machine (or its cgroup, in a container) has: the rest
/// is orgd's own and the kernel page cache's, which PostgreSQL reads through.
pub fn machine_share() -> ByteSize {
    let total = sysinfo::System::new()
        .ok()
        .map(|mut system| {
            system.refresh_memory();
            let limit = system.cgroup_limits().map(|cgroup| cgroup.total_memory);
            limit.unwrap_or(u64::MAX).min(system.total_memory())
        })
        .filter(|total| *total > 0)
        .unwrap_or(GIB);
    ByteSize::b(total / 2)
}

/// `bytes` in whole megabytes, PostgreSQL's unit suffix included.
fn megabytes(bytes: u64) -> String {
    format!("{}MB", bytes / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(tuning: &Tuning, name: &str) -> String {
        let settings = tuning.settings();
        let (_, value) = settings.iter().find(|(key, _)| *key == name).unwrap();
        value.clone()
    }

    #[test]
    fn sixteen_gigabytes_get_pgtunes_web_profile() {
        let tuning = Tuning::new(Some(ByteSize::gib(16)), 21);
        assert_eq!(tuning.max_connections, 100);
        assert_eq!(setting(&tuning, "shared_buffers"), "4096MB");
        assert_eq!(setting(&tuning, "effective_cache_size"), "12288MB");
        assert_eq!(setting(&tuning, "maintenance_work_mem"), "1024MB");
        // (16 GiB - 4 GiB) / 300 connection-sorts = 40 MB.
        assert_eq!(setting(&tuning, "work_mem"), "40MB");
        assert_eq!(setting(&tuning, "jit"), "off");
    }

    #[test]
    fn small_machines_keep_the_floors_and_large_pools_get_their_connections() {
        let small = Tuning::new(Some(ByteSize::mib(512)), 21);
        assert_eq!(setting(&small, "shared_buffers"), "128MB");
        assert_eq!(setting(&small, "work_mem"), "4MB");
        let busy = Tuning::new(Some(ByteSize::gib(64)), 300);
        assert_eq!(busy.max_connections, 310);
        assert_eq!(setting(&busy, "maintenance_work_mem"), "2048MB");
        // (64 GiB - 16 GiB) / 930 connection-sorts.
        assert_eq!(setting(&busy, "work_mem"), "52MB");
    }

    #[test]
    fn the_default_is_half_of_this_machine() {
        let share = machine_share().as_u64();
        let mut system = sysinfo::System::new().unwrap();
        system.refresh_memory();
        assert!(share > 0 && share <= system.total_memory() / 2, "{share}");
    }
}
