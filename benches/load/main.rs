//! The load benchmark: `cargo bench --bench load`.
//!
//! Starts a private PostgreSQL cluster, seeds a realistic dataset, starts the
//! release `orgd` binary against it as its own process, and drives it with many
//! concurrent callers over several HTTP/2 connections. For each read RPC it then
//! runs the same SQL (the same store calls, checked with pg_stat_statements)
//! straight against PostgreSQL, and prints throughput, latency quantiles, the
//! ratio orgd / direct SQL and the server's peak RSS as a Markdown table, then
//! the CPU time per call of orgd, PostgreSQL and itself as a second one.
//!
//! With several `--scale`s, each dataset is seeded into a database of its own
//! in the one cluster and served by an orgd of its own; each round measures
//! every dataset in turn, and a last table sets the costs per call side by
//! side. `--explain` prints the plans of the hot statements instead of
//! measuring (`explain.rs`).
//!
//! Cerbos, a stateless policy decision point, runs next to orgd as a peer
//! (`cerbos.rs`); its CheckResources workload is measured like orgd's checks,
//! and a last table per dataset sets orgd's checks against it.

mod cerbos;
mod cpu;
mod dataset;
mod drive;
mod explain;
mod feed;
mod scale;
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
use dataset::{Seeding, Shape};
use drive::{Pace, Path, Run};
use scale::Scale;
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
    #[arg(long, default_value_t = 10_000, conflicts_with = "scale")]
    orgs: u32,
    /// Users to seed, each with a personal organization.
    #[arg(long, default_value_t = 30_000, conflicts_with = "scale")]
    users: u32,
    /// Datasets by their number of organizations, instead of --orgs and
    /// --users: `400k` is 100,000 teams and 300,000 users (a quarter teams, as
    /// by default). Several (`4k,400k`) are each measured in every round and
    /// compared in a last table.
    #[arg(long, alias = "scales", value_delimiter = ',')]
    scale: Vec<Scale>,
    /// Database connections of orgd's pool, and of the direct-SQL pool.
    #[arg(long, default_value_t = 16)]
    pool_size: u32,
    /// Organizations whose API token the CheckPermission callers use.
    #[arg(long, default_value_t = 100)]
    service_tokens: usize,
    /// Run only these workloads (default: all). `cerbos-check` is the peer,
    /// Cerbos, installed with npm on first use (where it cannot be, it is
    /// skipped, saying so).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Instead of measuring, print EXPLAIN (ANALYZE, BUFFERS) of every
    /// statement the read workloads (and a few more hot paths) run, as they
    /// run it, at each scale.
    #[arg(long)]
    explain: bool,
    /// After the runs, keep PostgreSQL and orgd up (printing their addresses)
    /// until Ctrl-C, for EXPLAIN, perf and friends.
    #[arg(long)]
    hold: bool,
    /// Set by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    /// The datasets to measure, smallest first as given.
    fn scales(&self) -> anyhow::Result<Vec<Scale>> {
        if self.scale.is_empty() {
            return Ok(vec![Scale::of(Shape {
                orgs: self.orgs,
                users: self.users,
            })]);
        }
        for (i, scale) in self.scale.iter().enumerate() {
            if self.scale[..i].contains(scale) {
                bail!("--scale {scale} is given twice");
            }
        }
        Ok(self.scale.clone())
    }

    fn selected(&self, workload: Workload) -> bool {
        self.only.is_empty() || self.only.contains(&workload)
    }
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
    /// The mixed load's writes: from commit to arrival on a WatchEvents stream,
    /// during the half-rate run.
    feed: Option<feed::FeedLatency>,
    /// The median over the rounds of orgd's throughput over direct SQL's.
    ratio: Option<f64>,
    statements: Option<(f64, f64)>,
    /// PostgreSQL's shared buffers per call through orgd: found in them, and
    /// read into them (from the kernel's page cache or the disk).
    buffers: Buffers,
    /// The median over the rounds of this dataset's CPU time per call (orgd
    /// and PostgreSQL, saturated through orgd) over the first dataset's.
    cpu_vs_first: Option<f64>,
}

/// Shared buffers per call.
#[derive(Clone, Copy, Default)]
struct Buffers {
    hit: f64,
    read: f64,
}

/// One dataset, seeded into a database of its own, with the orgd serving it.
struct Site {
    scale: Scale,
    /// " at 4k" in progress lines when there are several datasets.
    tag: String,
    url: String,
    /// A session on its database, for pg_stat_statements.
    db: tokio_postgres::Client,
    counts: Vec<(String, i64)>,
    seeding: Seeding,
    server: Server,
    channels: Vec<Channel>,
    fixture: Arc<Fixture>,
    meter: CpuMeter,
    /// Cerbos, when its workload is selected and it could be installed.
    cerbos: Option<Peer>,
}

/// The Cerbos process (one for every dataset), with this site's connections
/// to it and a meter of its CPU time.
struct Peer {
    server: Arc<cerbos::Cerbos>,
    channels: Vec<Channel>,
    meter: CpuMeter,
}

impl Site {
    /// The connections, CPU meter and address `workload` drives: orgd's, or
    /// Cerbos's.
    fn target(&self, workload: Workload) -> (&[Channel], CpuMeter, &str) {
        match &self.cerbos {
            Some(peer) if workload.is_cerbos() => (&peer.channels, peer.meter, &peer.server.addr),
            _ => {
                assert!(!workload.is_cerbos(), "Cerbos workloads run with Cerbos");
                (&self.channels, self.meter, &self.server.addr)
            }
        }
    }
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
    let scales = args.scales()?;
    eprintln!("bench: starting PostgreSQL");
    let pg_dir = work.join("postgres");
    // The embedded cluster's tuning (for 200 connections: orgd's pool and the
    // direct-SQL callers), with query statistics.
    let mut settings = Tuning::new(None, 200).settings();
    settings.push(("shared_preload_libraries", "pg_stat_statements".to_owned()));
    // The change feed's latency is measured from each event's commit (feed.rs).
    settings.push(("track_commit_timestamp", "on".to_owned()));
    eprintln!("bench: PostgreSQL settings {settings:?}");
    let pg = tokio::task::spawn_blocking(move || {
        let settings: Vec<(&str, &str)> = settings
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        EmbeddedPostgres::start(&pg_dir, &settings)
    })
    .await??;
    let result = bench_on(args, work, &pg, scales).await;
    tokio::task::spawn_blocking(move || pg.stop()).await?;
    result
}

async fn bench_on(
    args: &Args,
    work: &std::path::Path,
    pg: &EmbeddedPostgres,
    scales: Vec<Scale>,
) -> anyhow::Result<()> {
    let sites = prepare(args, work, pg, scales).await?;
    if args.explain {
        explain_at(args, pg, &sites).await?;
    } else {
        measure_at(args, &sites).await?;
    }
    if args.hold {
        for site in &sites {
            eprintln!(
                "bench: holding {}: database {}, orgd at {} (pid {})",
                site.scale,
                site.url,
                site.server.addr,
                site.server.child.id()
            );
        }
        eprintln!("bench: Ctrl-C ends");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// `--explain`: the hot statements' plans at every dataset.
async fn explain_at(args: &Args, pg: &EmbeddedPostgres, sites: &[Site]) -> anyhow::Result<()> {
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|workload| args.selected(*workload) && workload.has_direct_path())
        .collect();
    let mut explained = Vec::new();
    for site in sites {
        eprintln!("bench: explaining the hot statements at {}", site.scale);
        explained.push(
            explain::explain(
                &site.url,
                &pg.log_path(),
                &site.fixture,
                &site.channels[0],
                &workloads,
            )
            .await?,
        );
    }
    let labels: Vec<String> = sites.iter().map(|site| site.scale.to_string()).collect();
    explain::print(&labels, &explained);
    Ok(())
}

/// Every selected workload at every dataset, then the report.
async fn measure_at(args: &Args, sites: &[Site]) -> anyhow::Result<()> {
    let mut rows: Vec<Vec<Row>> = sites.iter().map(|_| Vec::new()).collect();
    for workload in Workload::ALL {
        if workload.is_cerbos() && sites.iter().any(|site| site.cerbos.is_none()) {
            continue;
        }
        if args.selected(workload) {
            for (i, row) in measure(args, sites, workload)
                .await?
                .into_iter()
                .enumerate()
            {
                rows[i].push(row);
            }
        }
    }
    print_header(args);
    for (site, rows) in sites.iter().zip(&rows) {
        print_report(args, site, rows, sites.len() > 1)?;
    }
    if sites.len() > 1 {
        print_by_scale(sites, &rows);
    }
    Ok(())
}

/// Seeds every dataset (each into a database of its own when there are
/// several), warms the cache with them, then starts an orgd for each.
async fn prepare(
    args: &Args,
    work: &std::path::Path,
    pg: &EmbeddedPostgres,
    scales: Vec<Scale>,
) -> anyhow::Result<Vec<Site>> {
    let several = scales.len() > 1;
    let mut seeded = Vec::new();
    for scale in scales {
        let database = if several {
            scale.database()
        } else {
            "orgd".to_owned()
        };
        pg.ensure_database(&database).await?;
        let url = pg.url(&database);
        orgd::store::run_migrations(&url).await?;
        let db = sql_client(&url).await?;
        db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .context("pg_stat_statements (PostgreSQL's contrib) is needed to compare the SQL")?;
        eprintln!(
            "bench: seeding {scale}: {} team organizations and {} users",
            scale.shape.orgs, scale.shape.users
        );
        let (data, seeding) = dataset::seed(&db, &scale.shape).await?;
        eprintln!(
            "bench: seeded {scale} in {:.1}s (rows and indexes {:.1}s, VACUUM (ANALYZE) and CHECKPOINT {:.1}s)",
            seeding.total().as_secs_f64(),
            seeding.load.as_secs_f64(),
            seeding.settle.as_secs_f64(),
        );
        seeded.push((scale, database, url, db, data, seeding));
    }
    // After every seed, so that a later one does not push an earlier one out.
    let mut warmed = 0;
    for (scale, _, _, db, _, _) in &seeded {
        let started = std::time::Instant::now();
        let (bytes, shared_buffers) = dataset::prewarm(db).await?;
        warmed += bytes;
        eprintln!(
            "bench: read {scale}'s {} MiB of tables and indexes into shared buffers in {:.1}s",
            bytes >> 20,
            started.elapsed().as_secs_f64()
        );
        if warmed > shared_buffers {
            eprintln!(
                "bench: warning: the datasets ({} MiB) do not fit in shared buffers ({} MiB); runs will read pages from outside them",
                warmed >> 20,
                shared_buffers >> 20
            );
        }
    }
    // One Cerbos for every dataset: its policy is the catalogue, which the
    // migrations make the same in each.
    let cerbos = if args.selected(Workload::CerbosCheck) && !args.explain {
        start_cerbos(work, &seeded[0].3).await?
    } else {
        None
    };
    let mut sites = Vec::new();
    for (scale, database, url, db, data, seeding) in seeded {
        let counts = data.counts.clone();
        let server = Server::start(&url, &work.join(&database), args.pool_size)?;
        let channels = connect(&server.addr, args.connections).await?;
        let store = Store::connect(
            &DbConfig::unlimited(&url, "orgd-bench"),
            args.pool_size,
            Duration::from_secs(5),
        )
        .await?;
        let roles = match &cerbos {
            Some((_, catalogue)) => Some(cerbos::Roles::read(&db, &data, catalogue).await?),
            None => None,
        };
        let mut fixture = Fixture::new(data, store)?;
        fixture.tokens = service_tokens(&channels[0], &fixture, args.service_tokens).await?;
        fixture.cerbos_roles = roles;
        let meter = CpuMeter::new(server.child.id(), u32::try_from(pg.pid())?);
        let peer = match &cerbos {
            Some((server, _)) => Some(Peer {
                server: server.clone(),
                channels: connect(&server.addr, args.connections).await?,
                meter: CpuMeter::new(server.pid(), u32::try_from(pg.pid())?),
            }),
            None => None,
        };
        sites.push(Site {
            tag: if several {
                format!(" at {scale}")
            } else {
                String::new()
            },
            scale,
            url,
            db,
            counts,
            seeding,
            server,
            channels,
            fixture: Arc::new(fixture),
            meter,
            cerbos: peer,
        });
    }
    Ok(sites)
}

/// Installs (once) and starts Cerbos with the policy of `db`'s catalogue, and
/// checks that it decides as orgd would; `None` where it cannot be installed.
async fn start_cerbos(
    work: &std::path::Path,
    db: &tokio_postgres::Client,
) -> anyhow::Result<Option<(Arc<cerbos::Cerbos>, cerbos::Catalogue)>> {
    let Some(binary) = tokio::task::spawn_blocking(cerbos::install).await? else {
        return Ok(None);
    };
    let catalogue = cerbos::Catalogue::read(db).await?;
    eprintln!("bench: starting Cerbos {}", cerbos::VERSION);
    let server = cerbos::Cerbos::start(&binary, &catalogue, &work.join("cerbos"))?;
    let probe = connect(&server.addr, 1)
        .await
        .with_context(|| format!("Cerbos's log: {}", work.join("cerbos/cerbos.log").display()))?;
    cerbos::Cerbos::check_decisions(&probe[0], &catalogue).await?;
    Ok(Some((Arc::new(server), catalogue)))
}

/// What one dataset's rounds of a workload add up to.
#[derive(Default)]
struct Tally {
    saturated: Vec<Run>,
    direct: Vec<Run>,
    ratios: Vec<f64>,
    statements: (f64, f64),
    buffers: Buffers,
    cpu_vs_first: Vec<f64>,
}

/// Saturation through orgd, the same rate halved, and (for reads) direct SQL,
/// at every dataset; each round measures every dataset in turn (in the other
/// order every other round), so that they meet the same moments of a shared
/// machine.
async fn measure(args: &Args, sites: &[Site], workload: Workload) -> anyhow::Result<Vec<Row>> {
    let mut tallies: Vec<Tally> = sites.iter().map(|_| Tally::default()).collect();
    for round in 1..=args.rounds {
        let mut order: Vec<usize> = (0..sites.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let site = &sites[i];
            eprintln!(
                "bench: {}{}, round {round} of {}",
                workload.label(),
                site.tag,
                args.rounds
            );
            measure_round(args, site, workload, round, &mut tallies[i]).await?;
        }
        let cpu: Vec<f64> = tallies
            .iter()
            .map(|tally| orgd_and_postgres_us(tally.saturated.last().expect("measured")))
            .collect();
        for (tally, own) in tallies.iter_mut().zip(&cpu).skip(1) {
            tally.cpu_vs_first.push(own / cpu[0]);
        }
    }
    let mut rows = Vec::new();
    for (site, tally) in sites.iter().zip(tallies) {
        rows.push(finish(args, site, workload, tally).await?);
    }
    Ok(rows)
}

/// A saturated run's CPU time per call in orgd and PostgreSQL, in µs.
fn orgd_and_postgres_us(run: &Run) -> f64 {
    let [orgd, postgres, _] = run.cpu_per_call_us();
    orgd + postgres
}

/// One round at one dataset: through orgd, and for a read as direct SQL too.
async fn measure_round(
    args: &Args,
    site: &Site,
    workload: Workload,
    round: u32,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    // Both paths of a round send the same sequence of requests (same salt).
    let salt = u64::from(round);
    let rounds = f64::from(args.rounds);
    if !workload.has_direct_path() {
        let (rpc, profile) = saturate(args, site, workload, Path::Rpc, salt).await?;
        tally.buffers = add_buffers(tally.buffers, &profile, rounds);
        tally.saturated.push(rpc);
        return Ok(());
    }
    // Every other round measures direct SQL first, so that a drift of the
    // machine during the rounds does not always favour the same path.
    let ((rpc, rpc_statements), (sql, sql_statements)) = if round % 2 == 1 {
        let rpc = saturate(args, site, workload, Path::Rpc, salt).await?;
        (
            rpc,
            saturate(args, site, workload, Path::Direct, salt).await?,
        )
    } else {
        let sql = saturate(args, site, workload, Path::Direct, salt).await?;
        (saturate(args, site, workload, Path::Rpc, salt).await?, sql)
    };
    check_same_sql(workload, &rpc_statements, &sql_statements)?;
    let ratio = rpc.rps() / sql.rps();
    eprintln!("bench:   orgd / direct SQL: {:.0}%", 100.0 * ratio);
    tally.ratios.push(ratio);
    tally.statements.0 += calls_per_request(&rpc_statements) / rounds;
    tally.statements.1 += calls_per_request(&sql_statements) / rounds;
    tally.buffers = add_buffers(tally.buffers, &rpc_statements, rounds);
    tally.saturated.push(rpc);
    tally.direct.push(sql);
    Ok(())
}

/// `sum` plus a round's buffers per call, over `rounds`.
fn add_buffers(sum: Buffers, profile: &Profile, rounds: f64) -> Buffers {
    Buffers {
        hit: sum.hit + profile.values().map(|used| used.hit).sum::<f64>() / rounds,
        read: sum.read + profile.values().map(|used| used.read).sum::<f64>() / rounds,
    }
}

/// The statements a request ran, as counted in a run.
fn calls_per_request(profile: &Profile) -> f64 {
    frequent(profile).values().map(|used| used.calls).sum()
}

/// One saturated run, with the statements it ran per request.
async fn saturate(
    args: &Args,
    site: &Site,
    workload: Workload,
    path: Path,
    salt: u64,
) -> anyhow::Result<(Run, Profile)> {
    let (label, name) = match path {
        Path::Rpc if workload.is_cerbos() => ("through Cerbos", "Cerbos"),
        Path::Rpc => ("through orgd", "orgd"),
        Path::Direct => ("as direct SQL", "direct SQL"),
    };
    eprintln!("bench: {} {label}", workload.label());
    reset_statements(&site.db).await?;
    let (channels, meter, _) = site.target(workload);
    let measured = drive::run(
        callers(channels, &site.fixture, args.callers, salt),
        workload,
        path,
        Pace::Closed,
        args.warmup,
        args.duration,
        meter,
    )
    .await;
    let ran = statements(&site.db, measured.requests).await?;
    progress(&measured, &ran);
    check_errors(workload, name, &measured)?;
    Ok((measured, ran))
}

/// After the rounds: one connection, then half the saturation rate.
async fn finish(args: &Args, site: &Site, workload: Workload, tally: Tally) -> anyhow::Result<Row> {
    let saturated = Run::pooled(tally.saturated);
    let direct = (!tally.direct.is_empty()).then(|| Run::pooled(tally.direct));
    let (channels, meter, addr) = site.target(workload);
    let server = if workload.is_cerbos() {
        "Cerbos"
    } else {
        "orgd"
    };
    let one_connection = if matches!(
        workload,
        Workload::GetOrganization
            | Workload::CheckPermission
            | Workload::ServiceCheck
            | Workload::ServiceBatch10
            | Workload::ServiceBatch100
            | Workload::CerbosCheck
    ) {
        eprintln!(
            "bench: {}{} through {server} on one connection",
            workload.label(),
            site.tag
        );
        let measured = drive::run(
            callers(&channels[..1], &site.fixture, args.callers, 1),
            workload,
            Path::Rpc,
            Pace::Closed,
            args.warmup,
            args.duration,
            meter,
        )
        .await;
        check_errors(workload, &format!("{server} on one connection"), &measured)?;
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
    eprintln!(
        "bench: {}{} at {rate:.0} requests/s",
        workload.label(),
        site.tag
    );
    let watch = if workload == Workload::Mixed {
        let channel = connect(addr, 1).await?.remove(0);
        Some(feed::FeedWatch::start(channel, site.fixture.service_bearer.clone()).await?)
    } else {
        None
    };
    let half_rate = open_loop(args, addr, &site.fixture, meter, workload, rate).await?;
    check_errors(workload, &format!("{server} at half rate"), &half_rate)?;
    let feed = match watch {
        Some(watch) => {
            tokio::time::sleep(feed::SETTLE).await;
            let latency = watch.finish(&site.fixture.store).await?;
            eprintln!(
                "bench:   change feed: {} events, commit to WatchEvents p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                latency.events, latency.p50_ms, latency.p99_ms, latency.max_ms
            );
            Some(latency)
        }
        None => None,
    };
    Ok(Row {
        workload,
        saturated,
        half_rate,
        statements: direct.as_ref().map(|_| tally.statements),
        direct,
        one_connection,
        feed,
        ratio: median(tally.ratios),
        buffers: tally.buffers,
        cpu_vs_first: median(tally.cpu_vs_first),
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
fn check_same_sql(workload: Workload, rpc: &Profile, direct: &Profile) -> anyhow::Result<()> {
    let (rpc, direct) = (frequent(rpc), frequent(direct));
    let same = rpc.len() == direct.len()
        && rpc
            .iter()
            .zip(&direct)
            .all(|((a, a_used), (b, b_used))| a == b && (a_used.calls - b_used.calls).abs() < 0.05);
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
fn progress(run: &Run, statements: &Profile) {
    eprintln!(
        "bench:   {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        run.rps(),
        run.quantile_ms(0.5),
        run.quantile_ms(0.99),
        run.errors
    );
    for (query, used) in frequent(statements) {
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let shown: String = query.chars().take(100).collect();
        eprintln!(
            "bench:     {:5.2} × {shown} ({:.1} buffers hit, {:.1} read)",
            used.calls, used.hit, used.read
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

/// What a statement did per request of a run.
#[derive(Clone, Copy, Debug)]
struct Used {
    calls: f64,
    /// Shared buffers found in PostgreSQL's cache.
    hit: f64,
    /// Shared buffers read into it.
    read: f64,
}

/// The statements a run ran on its database, by text.
type Profile = BTreeMap<String, Used>;

/// Every statement that ran on the database since the last reset, with its
/// calls and shared buffers per request.
async fn statements(db: &tokio_postgres::Client, requests: u64) -> anyhow::Result<Profile> {
    let rows = db
        .query(
            "SELECT query, calls, shared_blks_hit, shared_blks_read FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await?;
    let per_request = |n: i64| n as f64 / requests.max(1) as f64;
    Ok(rows
        .iter()
        .map(|row| {
            let query: String = row.get(0);
            let used = Used {
                calls: per_request(row.get(1)),
                hit: per_request(row.get(2)),
                read: per_request(row.get(3)),
            };
            (query, used)
        })
        .filter(|(query, _)| !query.contains("pg_stat_statements"))
        .collect())
}

/// The statements that ran about once per request or more; rarer ones are the
/// server's background workers (or, in the mixed load, its writes).
fn frequent(profile: &Profile) -> Profile {
    profile
        .iter()
        .filter(|(_, used)| used.calls >= 0.2)
        .map(|(query, used)| (query.clone(), *used))
        .collect()
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

/// `count` HTTP/2 connections to orgd (or Cerbos) at `addr`, once it answers.
async fn connect(addr: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Channel::from_shared(format!("http://{addr}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => bail!("nothing started listening on {addr}: {err}"),
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
    /// Serves `database_url`, with its log and data directory in `work`.
    fn start(database_url: &str, work: &std::path::Path, pool_size: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work)?;
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
}

/// A process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

impl Drop for Server {
    /// SIGTERM, as in production: orgd shuts down gracefully.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The machine and the load, once for every dataset.
fn print_header(args: &Args) {
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
}

/// One dataset's tables: throughput and latency, CPU per call, the mixed load
/// by RPC, orgd's peak RSS. `headed` names the dataset in a heading first.
fn print_report(args: &Args, site: &Site, rows: &[Row], headed: bool) -> anyhow::Result<()> {
    println!();
    if headed {
        println!("### {} organizations", site.scale);
        println!();
    }
    let dataset: Vec<String> = site
        .counts
        .iter()
        .map(|(table, count)| format!("{count} {table}"))
        .collect();
    println!(
        "Dataset: {}; seeded in {:.1}s.",
        dataset.join(", "),
        site.seeding.total().as_secs_f64()
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
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "CPU time per call in µs, orgd + PostgreSQL + load generator = total, and the cores the three kept busy (of {cores}); in Cerbos's row, Cerbos's own in orgd's place:"
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
    if let Some(cerbos) = rows.iter().find(|row| row.workload.is_cerbos()) {
        print_vs_cerbos(args, rows, cerbos);
    }
    println!();
    println!(
        "orgd peak RSS (VmHWM): {:.1} MiB",
        peak_rss_kib(site.server.child.id())? as f64 / 1024.0
    );
    if let Some(peer) = &site.cerbos {
        println!(
            "Cerbos peak RSS (VmHWM): {:.1} MiB",
            peak_rss_kib(peer.server.pid())? as f64 / 1024.0
        );
    }
    Ok(())
}

/// orgd's checks against Cerbos's (issue 19): checks answered per second (a
/// batch call's items counted), saturated on all connections and on one, over
/// Cerbos's single checks; the p99 at half the saturation rate; CPU time per
/// check. Cerbos is told the roles; orgd reads them from PostgreSQL.
fn print_vs_cerbos(args: &Args, rows: &[Row], cerbos: &Row) {
    const P99_TARGET_MS: f64 = 5.0;
    let checks = |row: &Row| row.workload.batch_size().unwrap_or(1) as f64;
    let one = |row: &Row| row.one_connection.as_ref().map(Run::rps);
    let ratio = |ours: f64, theirs: f64| format!("{:.2}×", ours / theirs);
    println!();
    println!(
        "orgd's checks against Cerbos's CheckResources (one check per call, roles passed in; same callers, {} connections and one), checks/s counting each item of a batch; targets (issue 19): a service's single check ≥ 1.3× Cerbos's checks/s, items of 100-check batches ≥ 20× Cerbos's single checks/s, p99 < {P99_TARGET_MS} ms at half the saturation rate:",
        args.connections
    );
    println!();
    println!(
        "| RPC | checks/s | ÷ Cerbos | target | one connection: checks/s | ÷ Cerbos's | half-rate p99 ms | CPU µs per check (server + PostgreSQL) |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|");
    let theirs = cerbos.saturated.rps();
    let theirs_one = one(cerbos);
    for row in rows.iter().filter(|row| {
        matches!(
            row.workload,
            Workload::CheckPermission
                | Workload::ServiceCheck
                | Workload::ServiceBatch10
                | Workload::ServiceBatch100
                | Workload::CerbosCheck
        )
    }) {
        let ours = row.saturated.rps() * checks(row);
        let p99 = row.half_rate.quantile_ms(0.99);
        let target = match row.workload {
            Workload::ServiceCheck => Some(1.3),
            Workload::ServiceBatch100 => Some(20.0),
            _ => None,
        };
        let target = match target {
            Some(target) => format!(
                "≥ {target}×: {}; p99: {}",
                if ours / theirs >= target {
                    "met"
                } else {
                    "not met"
                },
                if p99 < P99_TARGET_MS {
                    "met"
                } else {
                    "not met"
                }
            ),
            None => "—".into(),
        };
        let (one_checks, one_ratio) = match (one(row), theirs_one) {
            (Some(ours), Some(theirs)) => (
                format!("{:.0}", ours * checks(row)),
                ratio(ours * checks(row), theirs),
            ),
            _ => ("—".into(), "—".into()),
        };
        let [server, postgres, _] = row.saturated.cpu_per_call_us();
        println!(
            "| {} | {ours:.0} | {} | {target} | {one_checks} | {one_ratio} | {p99:.2} | {:.1} + {:.1} = {:.1} |",
            row.workload.label(),
            ratio(ours, theirs),
            server / checks(row),
            postgres / checks(row),
            (server + postgres) / checks(row),
        );
    }
}

/// Every dataset's cost per call side by side (issue 20): CPU time through
/// orgd at saturation, with each dataset's ratio to the first as the median of
/// the rounds' (each round measured them all within seconds); PostgreSQL's
/// shared buffers per call; and the p99 at half the saturation rate.
fn print_by_scale(sites: &[Site], rows: &[Vec<Row>]) {
    let first = &sites[0].scale;
    let largest = &sites[sites.len() - 1].scale;
    let columns = |what: &str| -> Vec<String> {
        sites
            .iter()
            .map(|site| format!("{}: {what}", site.scale))
            .collect()
    };
    let mut header = vec!["RPC".to_owned()];
    header.extend(columns("CPU µs"));
    header.extend(
        sites[1..]
            .iter()
            .map(|site| format!("{} / {first}", site.scale)),
    );
    header.extend(columns("buffers"));
    header.extend(columns("half-rate p99 ms"));
    println!();
    println!(
        "Per call through orgd, by dataset: CPU time of orgd + PostgreSQL at saturation (the ratio is the median of the rounds' ratios); PostgreSQL's shared buffers (hit, and read if any; pg_stat_statements); p99 at half the saturation rate. Targets at {largest}: at most 1.2× the CPU time per call at {first}, and a half-rate p99 under 5 ms."
    );
    println!();
    println!("| {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(header.len() - 1));
    for (j, row) in rows[0].iter().enumerate() {
        let at = |i: usize| &rows[i][j];
        let mut cells = vec![row.workload.label().to_owned()];
        cells.extend((0..sites.len()).map(|i| {
            let [orgd, postgres, _] = at(i).saturated.cpu_per_call_us();
            format!("{orgd:.0} + {postgres:.0} = {:.0}", orgd + postgres)
        }));
        cells.extend((1..sites.len()).map(|i| {
            at(i)
                .cpu_vs_first
                .map_or("—".into(), |ratio| format!("{ratio:.2}×"))
        }));
        cells.extend((0..sites.len()).map(|i| {
            let buffers = at(i).buffers;
            if buffers.read >= 0.05 {
                format!("{:.1} + {:.1} read", buffers.hit, buffers.read)
            } else {
                format!("{:.1}", buffers.hit)
            }
        }));
        cells.extend((0..sites.len()).map(|i| format!("{:.2}", at(i).half_rate.quantile_ms(0.99))));
        println!("| {} |", cells.join(" | "));
    }
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
    if let Some(feed) = &mixed.feed {
        println!();
        println!(
            "The writes' events, from commit to arrival on a backend service's WatchEvents stream at half rate (target p99 < 50 ms): {} events, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
            feed.events, feed.p50_ms, feed.p99_ms, feed.max_ms
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
