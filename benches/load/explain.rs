//! `--explain`: the plans of the hot statements, as orgd runs them.
//!
//! Each read workload's direct path (the same store calls, hence the same
//! prepared statements with the same typed parameters, as the RPC makes) and a
//! few more hot reads run in a session of their own that loads PostgreSQL's
//! `auto_explain`, which logs every statement's executed plan with `ANALYZE`
//! and `BUFFERS`. The plans are read back from the server's log. So the SQL is
//! the store's own, with real parameter values, and the plan is the one the
//! session's plan cache settled on (PostgreSQL plans a prepared statement for
//! its parameters five times, then may keep a generic plan): the buffer counts
//! are averaged over the executions after the fifth of each statement.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use orgd::domain::{OrgRef, PageRequest};
use orgd::store::audit::ActivityFilter;
use orgd::store::{DbConfig, Store};
use serde_json::Value;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::workload::{Caller, Fixture, Workload};

/// Calls of each probe: five planned for their parameters, then the rest
/// with whatever plan the plan cache keeps.
const EXECUTIONS: usize = 12;
/// Executions of a prepared statement PostgreSQL plans for their parameters
/// before it may switch to a generic plan.
const CUSTOM_PLANS: usize = 5;
/// The page size of the listings, as the benchmark's ListMembers asks.
const PAGE: i32 = 50;

/// The settings of the explaining session: every statement's plan, executed
/// with timing and buffer counts, to the server log as JSON.
const AUTO_EXPLAIN: [&str; 7] = [
    "session_preload_libraries=auto_explain",
    "auto_explain.log_min_duration=0",
    "auto_explain.log_analyze=on",
    "auto_explain.log_buffers=on",
    "auto_explain.log_timing=on",
    "auto_explain.log_format=json",
    "auto_explain.log_level=log",
];

/// One hot call and the statements it ran.
pub struct Probe {
    pub name: String,
    pub statements: Vec<Explained>,
}

/// A statement with its plan.
pub struct Explained {
    pub query: String,
    /// Times it ran in this probe.
    pub executions: usize,
    /// Mean shared buffers per execution, after the custom plans.
    pub hit: f64,
    pub read: f64,
    /// The last execution's plan, as text.
    pub plan: Vec<String>,
    /// Sequential scans and sorts in that plan.
    pub warnings: Vec<String>,
}

/// Runs the probes at one dataset and reads their plans from `log`.
pub async fn explain(
    url: &str,
    log: &Path,
    fixture: &Arc<Fixture>,
    channel: &Channel,
    workloads: &[Workload],
) -> anyhow::Result<Vec<Probe>> {
    let options: Vec<String> = AUTO_EXPLAIN
        .iter()
        .map(|setting| format!("-c {setting}"))
        .collect();
    let options = options.join(" ").replace(' ', "%20").replace('=', "%3D");
    let separator = if url.contains('?') { '&' } else { '?' };
    let explaining = Store::connect(
        &DbConfig::unlimited(
            &format!("{url}{separator}options={options}"),
            "orgd-explain",
        ),
        1,
        Duration::from_secs(5),
    )
    .await
    .context("a session with auto_explain (PostgreSQL's contrib)")?;
    let mut probes = Probes {
        log,
        seen: HashMap::new(),
        done: Vec::new(),
    };

    for &workload in workloads {
        let mut caller = Caller::new(channel.clone(), fixture.clone(), 7).using(explaining.clone());
        probes
            .run(workload.label(), async || {
                for _ in 0..EXECUTIONS {
                    caller.direct(workload).await?;
                }
                Ok(())
            })
            .await?;
    }

    // Later pages start where a first page (read outside the explaining
    // session) ended, in the large teams.
    let store = &fixture.store;
    let mut teams = Vec::new();
    for &team in fixture.large_teams.iter().take(EXECUTIONS) {
        let slug = &fixture.data.teams[team].slug;
        let org = store
            .find_org(&OrgRef::parse("name", &format!("organizations/{slug}"))?)
            .await?
            .context("a seeded team")?;
        let (_, members_after) = store.list_members(org.id, page("")?).await?;
        let (_, activities_after) = store
            .list_activities(org.id, ActivityFilter::default(), page("")?)
            .await?;
        teams.push((org.id, members_after, activities_after));
    }
    if teams.is_empty() {
        bail!("no large team to list");
    }
    let teams: &[(Uuid, String, String)] = &teams;
    let explaining = &explaining;
    probes
        .run("ListMembers, second page", async || {
            for i in 0..EXECUTIONS {
                let (org, after, _) = &teams[i % teams.len()];
                explaining.list_members(*org, page(after)?).await?;
            }
            Ok(())
        })
        .await?;
    probes
        .run("ListActivities, first page", async || {
            for i in 0..EXECUTIONS {
                let (org, _, _) = &teams[i % teams.len()];
                explaining
                    .list_activities(*org, ActivityFilter::default(), page("")?)
                    .await?;
            }
            Ok(())
        })
        .await?;
    probes
        .run("ListActivities, second page", async || {
            for i in 0..EXECUTIONS {
                let (org, _, after) = &teams[i % teams.len()];
                explaining
                    .list_activities(*org, ActivityFilter::default(), page(after)?)
                    .await?;
            }
            Ok(())
        })
        .await?;
    Ok(probes.done)
}

fn page(token: &str) -> anyhow::Result<PageRequest> {
    Ok(PageRequest::parse(PAGE, token)?)
}

/// The shared buffers of one execution of a statement, and whether the plan
/// cache had settled by then.
struct Execution {
    hit: f64,
    read: f64,
    settled: bool,
}

/// The probes run so far, and how often each statement has run in the
/// explaining session.
struct Probes<'a> {
    log: &'a Path,
    seen: HashMap<String, usize>,
    done: Vec<Probe>,
}

impl Probes<'_> {
    /// Runs `calls` and keeps the plans they logged.
    async fn run(
        &mut self,
        name: &str,
        calls: impl AsyncFnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let from = std::fs::metadata(self.log)?.len();
        calls()
            .await
            .with_context(|| format!("explaining {name}"))?;
        let logged = std::fs::read(self.log)?;
        let logged = String::from_utf8_lossy(&logged[from as usize..]);
        let mut statements: Vec<(Explained, Vec<Execution>)> = Vec::new();
        for plan in plans(&logged)? {
            let query = plan["Query Text"].as_str().unwrap_or_default().to_owned();
            let root = &plan["Plan"];
            let runs = self.seen.entry(query.clone()).or_default();
            *runs += 1;
            let settled = *runs > CUSTOM_PLANS;
            let execution = Execution {
                hit: blocks(root, "Shared Hit Blocks"),
                read: blocks(root, "Shared Read Blocks"),
                settled,
            };
            let mut lines = Vec::new();
            let mut warnings = Vec::new();
            render(root, 0, &mut lines, &mut warnings);
            let index = match statements.iter().position(|(s, _)| s.query == query) {
                Some(index) => index,
                None => {
                    statements.push((
                        Explained {
                            query,
                            executions: 0,
                            hit: 0.0,
                            read: 0.0,
                            plan: Vec::new(),
                            warnings: Vec::new(),
                        },
                        Vec::new(),
                    ));
                    statements.len() - 1
                }
            };
            let (statement, counted) = &mut statements[index];
            statement.executions += 1;
            statement.plan = lines;
            statement.warnings = warnings;
            counted.push(execution);
        }
        self.done.push(Probe {
            name: name.to_owned(),
            statements: statements
                .into_iter()
                .map(|(mut statement, counted)| {
                    // The settled executions, or all if none had settled.
                    let any_settled = counted.iter().any(|run| run.settled);
                    let counted: Vec<Execution> = counted
                        .into_iter()
                        .filter(|run| run.settled || !any_settled)
                        .collect();
                    let n = counted.len().max(1) as f64;
                    statement.hit = counted.iter().map(|run| run.hit).sum::<f64>() / n;
                    statement.read = counted.iter().map(|run| run.read).sum::<f64>() / n;
                    statement
                })
                .collect(),
        });
        Ok(())
    }
}

/// The JSON plans auto_explain wrote in `log`: a message `duration: … ms
/// plan:` whose continuation lines the server starts with a tab.
fn plans(log: &str) -> anyhow::Result<Vec<Value>> {
    let mut plans = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        if !(line.contains("LOG:  duration: ") && line.ends_with("plan:")) {
            continue;
        }
        let mut json = String::new();
        while let Some(next) = lines.next_if(|next| next.starts_with('\t')) {
            json.push_str(&next[1..]);
            json.push('\n');
        }
        plans.push(serde_json::from_str(&json).context("a plan auto_explain logged")?);
    }
    Ok(plans)
}

fn blocks(node: &Value, key: &str) -> f64 {
    node[key].as_f64().unwrap_or(0.0)
}

/// `node` and its children as EXPLAIN's text format shows them, roughly;
/// sequential scans and sorts also go to `warnings`.
fn render(node: &Value, depth: usize, lines: &mut Vec<String>, warnings: &mut Vec<String>) {
    let text = |key: &str| node[key].as_str();
    let indent = "  ".repeat(depth);
    if let Some(name) = text("Subplan Name") {
        lines.push(format!("{indent}{name}"));
    }
    let mut kind = match (text("Node Type"), text("Strategy")) {
        (Some("Aggregate"), Some("Hashed")) => "HashAggregate".to_owned(),
        (Some("Aggregate"), Some("Sorted")) => "GroupAggregate".to_owned(),
        (Some(kind), _) => kind.to_owned(),
        (None, _) => "?".to_owned(),
    };
    if text("Scan Direction") == Some("Backward") {
        kind.push_str(" Backward");
    }
    if let Some(index) = text("Index Name") {
        kind.push_str(&format!(" using {index}"));
    }
    if let Some(relation) = text("Relation Name") {
        kind.push_str(&format!(" on {relation}"));
        if let Some(alias) = text("Alias").filter(|alias| *alias != relation) {
            kind.push_str(&format!(" {alias}"));
        }
    } else if let Some(cte) = text("CTE Name") {
        kind.push_str(&format!(" on {cte}"));
    }
    let rows = node["Actual Rows"].as_f64().unwrap_or(0.0);
    let loops = node["Actual Loops"].as_f64().unwrap_or(0.0);
    let (hit, read) = (
        blocks(node, "Shared Hit Blocks"),
        blocks(node, "Shared Read Blocks"),
    );
    let mut line = format!("{indent}-> {kind} (rows={rows} loops={loops})");
    if hit + read > 0.0 {
        line.push_str(&format!(" shared hit={hit}"));
        if read > 0.0 {
            line.push_str(&format!(" read={read}"));
        }
    }
    lines.push(line);
    for key in [
        "Index Cond",
        "Recheck Cond",
        "Hash Cond",
        "Join Filter",
        "Filter",
        "Rows Removed by Filter",
        "Heap Fetches",
        "Sort Key",
        "Group Key",
        "Sort Method",
    ] {
        let value = match &node[key] {
            Value::Null => continue,
            Value::String(value) => value.clone(),
            Value::Array(values) => values
                .iter()
                .map(|value| value.as_str().map_or(value.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            value => value.to_string(),
        };
        lines.push(format!("{indent}     {key}: {value}"));
    }
    match text("Node Type") {
        Some("Seq Scan") if !small_table(node) => warnings.push(format!(
            "sequential scan of {} ({rows} rows × {loops})",
            text("Relation Name").unwrap_or("?")
        )),
        Some(sort @ ("Sort" | "Incremental Sort"))
            if !node["Plans"][0]
                .as_object()
                .is_some_and(|_| small_table(&node["Plans"][0])) =>
        {
            warnings.push(format!("{sort} ({rows} rows × {loops})"))
        }
        _ => {}
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            render(child, depth + 1, lines, warnings);
        }
    }
}

/// Whether `node` reads a catalogue-sized table whole (the roles, the
/// permissions): a sequential scan of fewer than a thousand rows, which is
/// what an index would cost too. Scans and sorts of anything else are flagged.
fn small_table(node: &Value) -> bool {
    let examined = node["Actual Rows"].as_f64().unwrap_or(0.0)
        + node["Rows Removed by Filter"].as_f64().unwrap_or(0.0);
    node["Node Type"].as_str() == Some("Seq Scan") && examined < 1000.0
}

/// The probes of every dataset (`labels` in the same order): each plan, then
/// one table of the buffers per statement side by side.
pub fn print(labels: &[String], explained: &[Vec<Probe>]) {
    for (label, probes) in labels.iter().zip(explained) {
        for probe in probes {
            println!();
            println!("## {} at {label}", probe.name);
            for statement in &probe.statements {
                println!();
                println!(
                    "{} ({} executions; shared buffers per execution after the first {CUSTOM_PLANS}: {:.1} hit, {:.1} read)",
                    one_line(&statement.query),
                    statement.executions,
                    statement.hit,
                    statement.read
                );
                for warning in &statement.warnings {
                    println!("  ! {warning}");
                }
                println!("```");
                for line in &statement.plan {
                    println!("{line}");
                }
                println!("```");
            }
        }
    }
    println!();
    println!(
        "Shared buffers per execution (hit + read), by statement and dataset; ! marks a plan with a sequential scan or a sort (of more than a catalogue table):"
    );
    println!();
    println!("| call | statement | {} |", labels.join(" | "));
    println!("|---|---|{}", "---:|".repeat(labels.len()));
    for (index, probe) in explained[0].iter().enumerate() {
        for statement in &probe.statements {
            let cells: Vec<String> = explained
                .iter()
                .map(|probes| {
                    probes
                        .get(index)
                        .and_then(|probe| {
                            probe
                                .statements
                                .iter()
                                .find(|other| other.query == statement.query)
                        })
                        .map_or("—".to_owned(), |found| {
                            let mark = if found.warnings.is_empty() { "" } else { " !" };
                            format!("{:.1}{mark}", found.hit + found.read)
                        })
                })
                .collect();
            println!(
                "| {} | `{}` | {} |",
                probe.name,
                abbreviated(&statement.query),
                cells.join(" | ")
            );
        }
    }
}

/// `query` on one line, whitespace collapsed.
fn one_line(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start and the end of `query` (where its conditions are), on one line.
fn abbreviated(query: &str) -> String {
    let query: Vec<char> = one_line(query).chars().collect();
    if query.len() <= 90 {
        return query.iter().collect();
    }
    let head: String = query[..40].iter().collect();
    let tail: String = query[query.len() - 45..].iter().collect();
    format!("{head} … {tail}")
}
