//! Running callers for a fixed time and summarizing their latencies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use crate::cpu::{CpuMeter, CpuTime};
use crate::workload::{Caller, Rpc, Workload};

/// Through orgd over gRPC, or the same SQL straight against PostgreSQL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Rpc,
    Direct,
}

/// How the callers send.
#[derive(Clone, Copy)]
pub enum Pace {
    /// Each caller sends its next request as soon as the last one is answered:
    /// the saturation throughput.
    Closed,
    /// Requests are scheduled `rate` per second, and the next free caller sends
    /// each; latency counts from the scheduled time, so a stalled server is not
    /// hidden by callers that wait for it (coordinated omission).
    Open { rate: f64 },
}

/// What one run measured.
pub struct Run {
    /// Every answered request, warm-up included (for statements per request).
    pub requests: u64,
    /// Latencies of the requests answered after the warm-up, in microseconds,
    /// each with its RPC; sorted by latency.
    latencies_us: Vec<(u32, Rpc)>,
    measured: Duration,
    /// CPU time the processes used while the latencies were measured.
    cpu: CpuTime,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.measured.as_secs_f64()
    }

    /// CPU time per answered request, in microseconds: the server (orgd, or
    /// Cerbos for its workloads), PostgreSQL and the load generator.
    pub fn cpu_per_call_us(&self) -> [f64; 3] {
        let calls = self.latencies_us.len().max(1) as f64;
        let us = |time: Duration| time.as_secs_f64() * 1e6 / calls;
        [
            us(self.cpu.server),
            us(self.cpu.postgres),
            us(self.cpu.generator),
        ]
    }

    /// How many cores the three processes kept busy, on average.
    pub fn cores_busy(&self) -> f64 {
        self.cpu.total().as_secs_f64() / self.measured.as_secs_f64()
    }

    /// Several runs of the same kind as one: their requests, measured times and
    /// CPU times added up.
    pub fn pooled(runs: Vec<Run>) -> Run {
        let mut pooled = Run {
            requests: 0,
            latencies_us: Vec::new(),
            measured: Duration::ZERO,
            cpu: CpuTime::default(),
            errors: 0,
            first_error: None,
        };
        for run in runs {
            pooled.requests += run.requests;
            pooled.latencies_us.extend(run.latencies_us);
            pooled.measured += run.measured;
            pooled.cpu = pooled.cpu + run.cpu;
            pooled.errors += run.errors;
            pooled.first_error = pooled.first_error.or(run.first_error);
        }
        pooled.latencies_us.sort_unstable_by_key(|&(us, _)| us);
        pooled
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }

    /// The share of the answered requests that were `rpc`'s, and the `qs`
    /// quantiles of their latencies in milliseconds.
    pub fn of_rpc(&self, rpc: Rpc, qs: [f64; 3]) -> (f64, [f64; 3]) {
        // Filtering keeps the order: these are sorted too.
        let own: Vec<(u32, Rpc)> = self
            .latencies_us
            .iter()
            .copied()
            .filter(|&(_, of)| of == rpc)
            .collect();
        let share = own.len() as f64 / self.latencies_us.len().max(1) as f64;
        (share, qs.map(|q| quantile_ms(&own, q)))
    }
}

/// The `q` quantile of latencies sorted in microseconds, in milliseconds.
fn quantile_ms(sorted: &[(u32, Rpc)], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).max(1) - 1;
    f64::from(sorted[rank.min(sorted.len() - 1)].0) / 1000.0
}

struct CallerResult {
    requests: u64,
    latencies_us: Vec<(u32, Rpc)>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `callers` on `workload` for `warmup + duration`, measuring the last
/// `duration`: latencies, and with `meter` the CPU time used.
pub async fn run(
    callers: Vec<Caller>,
    workload: Workload,
    path: Path,
    pace: Pace,
    warmup: Duration,
    duration: Duration,
    meter: CpuMeter,
) -> Run {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let sends = Sends::new(pace, start, end);
    let cpu_before = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        sample(meter).await
    });
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            let sends = sends.clone();
            tokio::spawn(async move {
                let mut result = CallerResult {
                    requests: 0,
                    latencies_us: Vec::new(),
                    errors: 0,
                    first_error: None,
                };
                while let Some(sent) = sends.next(end).await {
                    let outcome = match path {
                        Path::Rpc => caller.rpc(workload).await.map_err(|s| format!("{s:?}")),
                        Path::Direct => caller.direct(workload).await.map_err(|e| e.to_string()),
                    };
                    result.requests += 1;
                    match outcome {
                        Err(error) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(error);
                        }
                        Ok(rpc) if sent >= measure_from => {
                            let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                            result.latencies_us.push((us, rpc));
                        }
                        Ok(_) => {}
                    }
                }
                result
            })
        })
        .collect();
    let mut run = Run {
        requests: 0,
        latencies_us: Vec::new(),
        measured: duration,
        cpu: CpuTime::default(),
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        let result = task.await.expect("a caller panicked");
        run.requests += result.requests;
        run.latencies_us.extend(result.latencies_us);
        run.errors += result.errors;
        if run.first_error.is_none() {
            run.first_error = result.first_error;
        }
    }
    // Requests in flight at the end are counted, so is the time they took.
    run.measured = Instant::now().saturating_duration_since(measure_from);
    run.cpu = sample(meter).await - cpu_before.await.expect("sampling CPU time does not panic");
    run.latencies_us.sort_unstable_by_key(|&(us, _)| us);
    run
}

/// `meter.sample()` on a blocking thread: the callers' runtime must not stall
/// while /proc is scanned.
async fn sample(meter: CpuMeter) -> CpuTime {
    tokio::task::spawn_blocking(move || meter.sample())
        .await
        .expect("sampling CPU time does not panic")
}

/// When the callers send, and the instant each request's latency counts from.
#[derive(Clone)]
enum Sends {
    /// Each caller sends again as soon as it has its answer.
    Closed,
    /// The scheduled instants of the open loop, taken by whichever caller is free.
    Open(Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>),
}

impl Sends {
    /// For an open loop, starts the pacer: a thread of its own that sleeps until
    /// each scheduled instant. tokio's timers tick in whole milliseconds, which
    /// would add up to a millisecond of the load generator's own lateness to
    /// every latency; a thread's sleep is late by tens of microseconds. Its
    /// lateness, or callers all being busy, still counts: latency runs from the
    /// scheduled instant.
    fn new(pace: Pace, start: Instant, end: Instant) -> Self {
        let Pace::Open { rate } = pace else {
            return Sends::Closed;
        };
        let (schedule, scheduled) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64);
            }
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut next = start;
            while next < end {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                if schedule.send(next).is_err() {
                    break;
                }
                next += period;
            }
        });
        Sends::Open(Arc::new(Mutex::new(scheduled)))
    }

    /// The instant the next request counts from, or `None` once the run is over.
    async fn next(&self, end: Instant) -> Option<Instant> {
        match self {
            Sends::Closed => Some(Instant::now()).filter(|now| *now < end),
            Sends::Open(scheduled) => scheduled.lock().await.recv().await,
        }
    }
}
