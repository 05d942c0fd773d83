//! The load benchmark: `cargo bench --bench load`.
//!
//! Starts a private PostgreSQL cluster, seeds a realistic dataset, starts the
//! release `orgd` binary against it as its own process, and drives it with many
//! concurrent callers over several HTTP/2 connections. For each read RPC it then
//! runs the same SQL (the same store calls, checked with pg_stat_statements)
//! straight against PostgreSQL, and prints throughput, latency quantiles, the
//! ratio orgd / direct SQL and the server's peak RSS as a Markdown table, then
//! the CPU time per call of orgd, PostgreSQL and itself as a second one.

mod cpu;
mod dataset;
mod drive;
mod workload;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use orgd::pb;
use orgd::pb::token_service_client::TokenServiceClient;
use orgd::postgres::{EmbeddedPostgres, Tuning};
use orgd::store::{DbConfig, Store};
use tonic::transport::Channel;

use cpu::CpuMeter;
use dataset::Shape;
use drive::{Pace, Path, Run};
use workload::{Caller, Fixture, Rpc, ServiceToken, Workload};

#[derive(Parser)]
#[command(about = "Load benchmark of orgd against the direct-SQL ceiling")]
struct Args {
    /// Measured time of each run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Saturation runs per workload. For a read, each is followed by its
    /// direct-SQL run, so that both meet the same moments of a shared machine;
    /// the ratio is the median of the rounds'. The half-rate run lasts as long
    /// as all rounds together.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrent callers of the saturation runs.
    #[arg(long, default_value_t = 256)]
    callers: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Team organizations to seed (a tenth of them large).
    #[arg(long, default_value_t = 10_000)]
    orgs: u32,
    /// Users to seed, each with a personal organization.
    #[arg(long, default_value_t = 30_000)]
    users: u32,
    /// Database connections of orgd's pool, and of the direct-SQL pool.
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
    /// Organizations whose API token the CheckPermission callers use.
    #[arg(long, default_value_t = 100)]
    service_tokens: usize,
    /// Run only these workloads (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// After the runs, keep PostgreSQL and orgd up (printing their addresses)
    /// until Ctrl-C, for EXPLAIN, perf and friends.
    #[arg(long)]
    hold: bool,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One row of the report.
struct Row {
    workload: Workload,
    saturated: Run,
    half_rate: Run,
    direct: Option<Run>,
    /// The same callers on one HTTP/2 connection, as one client channel holds
    /// (GetOrganization and the checks).
    one_connection: Option<Run>,
    /// The median over the rounds of orgd's throughput over direct SQL's.
    ratio: Option<f64>,
    statements: Option<(f64, f64)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = std::env::temp_dir().join(format!("orgd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = bench(&args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn bench(args: &Args, work: &std::path::Path) -> anyhow::Result<()> {
    eprintln!("bench: starting PostgreSQL");
    let pg_dir = work.join("postgres");
    // The embedded cluster's tuning (for 200 connections: orgd's pool and the
    // direct-SQL callers), with query statistics.
    let mut settings = Tuning::new(None, 200).settings();
    settings.push(("shared_preload_libraries", "pg_stat_statements".to_owned()));
    eprintln!("bench: PostgreSQL settings {settings:?}");
    let pg = tokio::task::spawn_blocking(move || {
        let settings: Vec<(&str, &str)> = settings
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        EmbeddedPostgres::start(&pg_dir, &settings)
    })
    .await??;
    let result = bench_on(args, work, &pg).await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    result
}

async fn bench_on(
    args: &Args,
    work: &std::path::Path,
    pg: &EmbeddedPostgres,
) -> anyhow::Result<()> {
    pg.ensure_database("orgd").await?;
    let url = pg.url("orgd");
    orgd::store::run_migrations(&url).await?;
    let db = sql_client(&url).await?;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .context("pg_stat_statements (PostgreSQL's contrib) is needed to compare the SQL")?;

    eprintln!(
        "bench: seeding {} team organizations and {} users",
        args.orgs, args.users
    );
    let started = std::time::Instant::now();
    let data = dataset::seed(
        &db,
        &Shape {
            orgs: args.orgs,
            users: args.users,
        },
    )
    .await?;
    eprintln!("bench: seeded in {:.1}s", started.elapsed().as_secs_f64());
    let counts = data.counts.clone();

    let mut server = Server::start(&url, work, args.pool_size)?;
    let result = async {
        let channels = connect(&server.addr, args.connections).await?;
        let store = Store::connect(
            &DbConfig::unlimited(&url, "orgd-bench"),
            args.pool_size,
            Duration::from_secs(5),
        )
        .await?;
        let mut fixture = Fixture::new(data, store)?;
        fixture.tokens = service_tokens(&channels[0], &fixture, args.service_tokens).await?;
        let fixture = Arc::new(fixture);
        let meter = CpuMeter::new(server.child.id(), u32::try_from(pg.pid())?);

        let mut rows = Vec::new();
        for workload in Workload::ALL {
            if args.only.is_empty() || args.only.contains(&workload) {
                rows.push(
                    measure(
                        args,
                        &db,
                        &server.addr,
                        &channels,
                        &fixture,
                        meter,
                        workload,
                    )
                    .await?,
                );
            }
        }
        let peak_rss = server.peak_rss_kib()?;
        print_report(args, &counts, &rows, peak_rss);
        if args.hold {
            eprintln!(
                "bench: holding; database {url}, orgd at {} (pid {}); Ctrl-C ends",
                server.addr,
                server.child.id()
            );
            tokio::signal::ctrl_c().await?;
        }
        Ok(())
    }
    .await;
    server.stop();
    result
}

/// Saturation through orgd, the same rate halved, and (for reads) direct SQL.
async fn measure(
    args: &Args,
    db: &tokio_postgres::Client,
    server_addr: &str,
    channels: &[Channel],
    fixture: &Arc<Fixture>,
    meter: CpuMeter,
    workload: Workload,
) -> anyhow::Result<Row> {
    // Saturated: as many requests as `channels` carry.
    let run = |channels: &[Channel], path, salt| {
        drive::run(
            callers(channels, fixture, args.callers, salt),
            workload,
            path,
            Pace::Closed,
            args.warmup,
            args.duration,
            meter,
        )
    };
    // One saturated run, with the statements it ran per request.
    let saturate = async |path: Path, salt: u64| -> anyhow::Result<(Run, BTreeMap<String, f64>)> {
        let (label, name) = match path {
            Path::Rpc => ("through orgd", "orgd"),
            Path::Direct => ("as direct SQL", "direct SQL"),
        };
        eprintln!("bench: {} {label}", workload.label());
        reset_statements(db).await?;
        let measured = run(channels, path, salt).await;
        let ran = statements(db, measured.requests).await?;
        progress(&measured, &ran);
        check_errors(workload, name, &measured)?;
        Ok((measured, ran))
    };
    let per_request = |profile: &BTreeMap<String, f64>| profile.values().sum::<f64>();
    let mut saturated = Vec::new();
    let mut direct = Vec::new();
    let mut ratios = Vec::new();
    let mut statement_sums = (0.0, 0.0);
    for round in 1..=args.rounds {
        eprintln!(
            "bench: {}, round {round} of {}",
            workload.label(),
            args.rounds
        );
        // Both paths of a round send the same sequence of requests (same salt).
        let salt = u64::from(round);
        if workload == Workload::Mixed {
            saturated.push(saturate(Path::Rpc, salt).await?.0);
            continue;
        }
        // Every other round measures direct SQL first, so that a drift of the
        // machine during the rounds does not always favour the same path.
        let ((rpc, rpc_statements), (sql, sql_statements)) = if round % 2 == 1 {
            let rpc = saturate(Path::Rpc, salt).await?;
            (rpc, saturate(Path::Direct, salt).await?)
        } else {
            let sql = saturate(Path::Direct, salt).await?;
            (saturate(Path::Rpc, salt).await?, sql)
        };
        check_same_sql(workload, &rpc_statements, &sql_statements)?;
        let ratio = rpc.rps() / sql.rps();
        eprintln!("bench:   orgd / direct SQL: {:.0}%", 100.0 * ratio);
        ratios.push(ratio);
        statement_sums.0 += per_request(&rpc_statements);
        statement_sums.1 += per_request(&sql_statements);
        saturated.push(rpc);
        direct.push(sql);
    }
    let rounds = f64::from(args.rounds);
    let statements_per_call =
        (!direct.is_empty()).then_some((statement_sums.0 / rounds, statement_sums.1 / rounds));
    let saturated = Run::pooled(saturated);
    let direct = (!direct.is_empty()).then(|| Run::pooled(direct));

    let one_connection = if matches!(
        workload,
        Workload::GetOrganization
            | Workload::CheckPermission
            | Workload::ServiceCheck
            | Workload::ServiceBatch10
            | Workload::ServiceBatch100
    ) {
        eprintln!("bench: {} through orgd on one connection", workload.label());
        let measured = run(&channels[..1], Path::Rpc, 1).await;
        check_errors(workload, "orgd on one connection", &measured)?;
        eprintln!(
            "bench:   one connection / {}: {:.0}%",
            args.connections,
            100.0 * measured.rps() / saturated.rps()
        );
        Some(measured)
    } else {
        None
    };

    let rate = saturated.rps() / 2.0;
    eprintln!("bench: {} at {rate:.0} requests/s", workload.label());
    let half_rate = open_loop(args, server_addr, fixture, meter, workload, rate).await?;
    check_errors(workload, "orgd at half rate", &half_rate)?;
    Ok(Row {
        workload,
        saturated,
        half_rate,
        direct,
        one_connection,
        ratio: median(ratios),
        statements: statements_per_call,
    })
}

/// The half-rate run, driven from a single-threaded runtime of its own, on
/// connections of its own: at this rate the two workers of the saturated runs
/// mostly woke each other, on the cores orgd and PostgreSQL share (BENCHMARKS.md,
/// item 21). Latency still counts from each request's scheduled instant, so the
/// runtime's own lateness is not hidden.
async fn open_loop(
    args: &Args,
    server_addr: &str,
    fixture: &Arc<Fixture>,
    meter: CpuMeter,
    workload: Workload,
    rate: f64,
) -> anyhow::Result<Run> {
    let (addr, fixture) = (server_addr.to_owned(), fixture.clone());
    let (connections, count) = (args.connections, args.callers);
    let (warmup, duration) = (args.warmup, args.duration * args.rounds);
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("half-rate".into())
        .spawn(move || {
            let run = async {
                let channels = connect(&addr, connections).await?;
                // Salt 0: a request sequence of its own, not one of the rounds'.
                let callers = callers(&channels, &fixture, count, 0);
                let pace = Pace::Open { rate };
                let run = drive::run(callers, workload, Path::Rpc, pace, warmup, duration, meter);
                Ok(run.await)
            };
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(run));
            let _ = done.send(outcome);
        })?;
    result
        .await
        .context("the half-rate thread ended without a result: it panicked, see above")?
}

/// `count` callers on `channels` in turn; `salt` picks their request sequence.
fn callers(channels: &[Channel], fixture: &Arc<Fixture>, count: usize, salt: u64) -> Vec<Caller> {
    (0..count)
        .map(|i| {
            Caller::new(
                channels[i % channels.len()].clone(),
                fixture.clone(),
                salt * 1_000_003 + i as u64,
            )
        })
        .collect()
}

/// Fails unless orgd and the direct path ran the same statements, each as often
/// per request (within noise: the server's background workers run a few of
/// their own).
fn check_same_sql(
    workload: Workload,
    rpc: &BTreeMap<String, f64>,
    direct: &BTreeMap<String, f64>,
) -> anyhow::Result<()> {
    let same = rpc.len() == direct.len()
        && rpc
            .iter()
            .zip(direct)
            .all(|((a, a_calls), (b, b_calls))| a == b && (a_calls - b_calls).abs() < 0.05);
    if !same {
        bail!(
            "{}: orgd and the direct path ran different SQL:\norgd: {rpc:#?}\ndirect: {direct:#?}",
            workload.label()
        );
    }
    Ok(())
}

/// The middle value (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// One run's numbers and SQL, on stderr while the benchmark goes on.
fn progress(run: &Run, statements: &BTreeMap<String, f64>) {
    eprintln!(
        "bench:   {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        run.rps(),
        run.quantile_ms(0.5),
        run.quantile_ms(0.99),
        run.errors
    );
    for (query, per_request) in statements {
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!(
            "bench:     {per_request:5.2} × {}",
            &query[..query.len().min(110)]
        );
    }
}

fn check_errors(workload: Workload, path: &str, run: &Run) -> anyhow::Result<()> {
    if run.errors > 0 {
        bail!(
            "{} via {path}: {} of {} requests failed, first: {}",
            workload.label(),
            run.errors,
            run.requests,
            run.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

async fn reset_statements(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    db.batch_execute("SELECT pg_stat_statements_reset()")
        .await?;
    Ok(())
}

/// The statements that ran about once per request or more, with their calls per
/// request; rarer ones are the server's background workers.
async fn statements(
    db: &tokio_postgres::Client,
    requests: u64,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let rows = db
        .query(
            "SELECT query, calls FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let query: String = row.get(0);
            let calls: i64 = row.get(1);
            (query, calls as f64 / requests.max(1) as f64)
        })
        .filter(|(query, per_request)| *per_request >= 0.2 && !query.contains("pg_stat_statements"))
        .collect())
}

/// Owners of the first large teams mint tokens that may ask `permissions.check`.
async fn service_tokens(
    channel: &Channel,
    fixture: &Fixture,
    count: usize,
) -> anyhow::Result<Vec<ServiceToken>> {
    let mut client = TokenServiceClient::new(channel.clone());
    let mut tokens = Vec::new();
    for &team in fixture.large_teams.iter().take(count) {
        let owner = fixture.data.teams[team].members[0];
        let mut request = tonic::Request::new(pb::CreateApiTokenRequest {
            parent: format!("organizations/{}", fixture.data.teams[team].slug),
            api_token: Some(pb::ApiToken {
                display_name: "permission checks".into(),
                extra_permissions: vec!["permissions.check".into()],
                ..Default::default()
            }),
        });
        request
            .metadata_mut()
            .insert("authorization", fixture.bearers[owner].clone());
        let secret = client.create_api_token(request).await?.into_inner().secret;
        tokens.push(ServiceToken {
            team,
            bearer: format!("Bearer {secret}").parse()?,
            secret,
        });
    }
    Ok(tokens)
}

/// `count` HTTP/2 connections to orgd at `addr`, once it answers.
async fn connect(addr: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Channel::from_shared(format!("http://{addr}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => bail!("orgd did not start listening on {addr}: {err}"),
        }
    };
    let mut channels = vec![first];
    for _ in 1..count {
        channels.push(endpoint.connect().await?);
    }
    Ok(channels)
}

async fn sql_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The orgd release binary, run as its own process so its memory is its own.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(database_url: &str, work: &std::path::Path, pool_size: u32) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = std::fs::File::create(work.join("orgd.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_orgd"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("ORGD_LISTEN", addr.to_string())
            .env("ORGD_JWT_SECRET", workload::JWT_SECRET)
            .env("ORGD_SERVICE_SUBJECTS", workload::SERVICE_SUBJECT)
            .env("ORGD_POOL_SIZE", pool_size.to_string())
            .env("ORGD_DATA_DIR", work.join("orgd-data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the orgd binary")?;
        Ok(Server {
            child,
            addr: addr.to_string(),
        })
    }

    /// The server's peak resident set (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/<pid>/status")
    }

    /// SIGTERM, as in production: orgd shuts down gracefully.
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn print_report(args: &Args, counts: &[(String, i64)], rows: &[Row], peak_rss_kib: u64) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!("Machine: {cores} cores ({cpu}); orgd, PostgreSQL and the load generator share them.");
    let dataset: Vec<String> = counts
        .iter()
        .map(|(table, count)| format!("{count} {table}"))
        .collect();
    println!("Dataset: {}.", dataset.join(", "));
    println!(
        "Load: {} callers on {} HTTP/2 connections; pool of {} connections. Saturated: {} rounds of {}s (each after {}s of warm-up) through orgd, each paired with one as direct SQL for the reads; the rps columns pool the rounds, \"orgd / direct\" is the median of the rounds' ratios. Half rate: {}s.",
        args.callers,
        args.connections,
        args.pool_size,
        args.rounds,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        (args.duration * args.rounds).as_secs_f64(),
    );
    println!();
    println!(
        "| RPC | saturated rps | p50 ms | p95 ms | p99 ms | direct SQL rps | orgd / direct | one connection rps | one / {} connections | SQL statements per call | at half rate: rps | p50 ms | p95 ms | p99 ms |",
        args.connections
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let direct = row
            .direct
            .as_ref()
            .map_or("—".into(), |direct| format!("{:.0}", direct.rps()));
        let ratio = row
            .ratio
            .map_or("—".into(), |ratio| format!("{:.0}%", 100.0 * ratio));
        let statements = row.statements.map_or("—".into(), |(rpc, direct)| {
            format!("{rpc:.2} / {direct:.2}")
        });
        let s = &row.saturated;
        let (one, one_ratio) =
            row.one_connection
                .as_ref()
                .map_or(("—".into(), "—".into()), |one| {
                    (
                        format!("{:.0}", one.rps()),
                        format!("{:.0}%", 100.0 * one.rps() / s.rps()),
                    )
                });
        let h = &row.half_rate;
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {direct} | {ratio} | {one} | {one_ratio} | {statements} | {:.0} | {:.2} | {:.2} | {:.2} |",
            row.workload.label(),
            s.rps(),
            s.quantile_ms(0.50),
            s.quantile_ms(0.95),
            s.quantile_ms(0.99),
            h.rps(),
            h.quantile_ms(0.50),
            h.quantile_ms(0.95),
            h.quantile_ms(0.99),
        );
    }
    println!();
    println!(
        "CPU time per call in µs, orgd + PostgreSQL + load generator = total, and the cores the three kept busy (of {cores}):"
    );
    println!();
    println!("| RPC | saturated through orgd | direct SQL | at half rate |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        let direct = row.direct.as_ref().map_or("—".into(), cpu_use);
        println!(
            "| {} | {} | {direct} | {} |",
            row.workload.label(),
            cpu_use(&row.saturated),
            cpu_use(&row.half_rate),
        );
    }
    if let Some(mixed) = rows.iter().find(|row| row.workload == Workload::Mixed) {
        print_by_rpc(mixed);
    }
    println!();
    println!(
        "orgd peak RSS (VmHWM): {:.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
}

/// The mixed load's latencies by RPC: which of them make its tail.
fn print_by_rpc(mixed: &Row) {
    const QUANTILES: [f64; 3] = [0.50, 0.95, 0.99];
    println!();
    println!("The mixed load by RPC (share of the calls; p50 / p95 / p99 in ms):");
    println!();
    println!("| RPC | share | saturated | at half rate |");
    println!("|---|---:|---:|---:|");
    for rpc in Rpc::MIXED {
        let (share, saturated) = mixed.saturated.of_rpc(rpc, QUANTILES);
        let (_, half_rate) = mixed.half_rate.of_rpc(rpc, QUANTILES);
        let ms = |[p50, p95, p99]: [f64; 3]| format!("{p50:.2} / {p95:.2} / {p99:.2}");
        println!(
            "| {rpc:?} | {:.0}% | {} | {} |",
            100.0 * share,
            ms(saturated),
            ms(half_rate)
        );
    }
}

/// "84 + 116 + 40 = 240 µs, 1.98 cores": where a run's calls spent CPU time.
fn cpu_use(run: &Run) -> String {
    let [orgd, postgres, generator] = run.cpu_per_call_us();
    format!(
        "{orgd:.0} + {postgres:.0} + {generator:.0} = {:.0} µs, {:.2} cores",
        orgd + postgres + generator,
        run.cores_busy()
    )
}
