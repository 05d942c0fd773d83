//! Running callers for a fixed time and summarizing their latencies.

use std::time::{Duration, Instant};

use crate::workload::{Caller, Workload};

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
    /// All callers together send `rate` requests per second on a fixed schedule;
    /// latency counts from the scheduled time, so a stalled server is not hidden
    /// by callers that wait for it (coordinated omission).
    Open { rate: f64 },
}

/// What one run measured.
pub struct Run {
    /// Every answered request, warm-up included (for statements per request).
    pub requests: u64,
    /// Latencies of the requests answered after the warm-up, in microseconds.
    latencies_us: Vec<u32>,
    measured: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.measured.as_secs_f64()
    }

    /// The `q` quantile of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies_us.len() as f64 * q).ceil() as usize).max(1) - 1;
        f64::from(self.latencies_us[rank.min(self.latencies_us.len() - 1)]) / 1000.0
    }
}

struct CallerResult {
    requests: u64,
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `callers` on `workload` for `warmup + duration`, measuring the last `duration`.
pub async fn run(
    callers: Vec<Caller>,
    workload: Workload,
    path: Path,
    pace: Pace,
    warmup: Duration,
    duration: Duration,
) -> Run {
    let count = callers.len();
    let start = tokio::time::Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(index, mut caller)| {
            tokio::spawn(async move {
                let mut result = CallerResult {
                    requests: 0,
                    latencies_us: Vec::new(),
                    errors: 0,
                    first_error: None,
                };
                let mut schedule = match pace {
                    Pace::Closed => None,
                    Pace::Open { rate } => {
                        let period = Duration::from_secs_f64(count as f64 / rate);
                        // Callers start spread over one period, not in a burst.
                        let offset = period.mul_f64(index as f64 / count as f64);
                        let mut interval = tokio::time::interval_at(start + offset, period);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                        Some(interval)
                    }
                };
                loop {
                    let sent = match &mut schedule {
                        Some(interval) => interval.tick().await,
                        None => tokio::time::Instant::now(),
                    };
                    if sent >= end {
                        break;
                    }
                    let outcome = match path {
                        Path::Rpc => caller.rpc(workload).await.map_err(|s| format!("{s:?}")),
                        Path::Direct => caller.direct(workload).await.map_err(|e| e.to_string()),
                    };
                    result.requests += 1;
                    if let Err(error) = outcome {
                        result.errors += 1;
                        result.first_error.get_or_insert(error);
                    } else if sent >= measure_from {
                        let elapsed = Instant::now() - sent.into_std();
                        result
                            .latencies_us
                            .push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
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
    run.measured = tokio::time::Instant::now().saturating_duration_since(measure_from);
    run.latencies_us.sort_unstable();
    run
}
