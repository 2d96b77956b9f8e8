//! The `lakepurge` binary: parses arguments, sets up logging, dispatches to one function per
//! command and maps the result to the documented exit code (0 ok, 1 partial failure, 2 bad
//! input, 3 verification failed).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lakepurge::cmd::{demo, discover, report, status, trace, validate};
use lakepurge::purge::{Outcome, SystemClock};
use lakepurge::spec::Job;
use lakepurge::{Error, events, plan, purge, verify};

#[derive(Parser)]
#[command(
    name = "lakepurge",
    version,
    about = "Batch erasure engine for Parquet warehouses"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Only warnings and errors in the log.
    #[arg(long, global = true)]
    quiet: bool,
    /// Files read at once per table when finding rows (plan, purge, verify --deep, discover):
    /// default 64 on object stores, twice the CPUs on local disk.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    io_concurrency: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check the specs, reach every location, check every match column.
    Validate {
        #[arg(long)]
        job: PathBuf,
    },
    /// Dry run: what purge would do, per table.
    Plan {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Erase the events' subjects from every table and write the run manifest.
    Purge(PurgeArgs),
    /// Check a manifest against the objects it names (give MANIFEST, or --job and --run-id).
    Verify {
        #[arg(required_unless_present = "run_id")]
        manifest: Option<String>,
        /// With --job: verify the manifest of this run id.
        #[arg(long, requires = "job")]
        run_id: Option<String>,
        #[arg(long)]
        json: bool,
        /// Check the manifest's signature with this ed25519 public key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Also re-read the event snapshot and scan every table of the job for erased subjects.
        #[arg(long, requires = "job")]
        deep: bool,
        /// The job spec, for --deep.
        #[arg(long)]
        job: Option<PathBuf>,
    },
    /// Where one erasure request took effect: runs, tables, files, rows (from the manifests).
    Trace {
        #[arg(long)]
        job: PathBuf,
        event_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Requests confirmed and pending, by age; exit 3 when one is older than --sla.
    Status {
        #[arg(long)]
        job: PathBuf,
        /// Fail (exit 3) when a pending request is older than this, e.g. 25d or 36h.
        #[arg(long, value_parser = parse_sla)]
        sla: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
    },
    /// One HTML page for the privacy office and auditors: requests confirmed per day, time to
    /// confirmation against the SLA, pending and held requests, every run and whether its
    /// manifest verifies. Exit 3 when a manifest fails or a request is late.
    Report {
        #[arg(long)]
        job: PathBuf,
        /// The page to write: a local path or an object store URL.
        #[arg(long)]
        out: String,
        /// The SLA drawn and checked, e.g. 25d or 36h.
        #[arg(long, value_parser = parse_sla)]
        sla: Option<std::time::Duration>,
        /// Check each manifest's signature with this ed25519 public key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Also print the report's numbers as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Where erased subjects still live outside the job's rules: unregistered tables and
    /// uncovered columns, with evidence (counts) and proposed specs.
    Discover {
        #[arg(long)]
        job: PathBuf,
        /// A folder or bucket prefix to walk (repeatable).
        #[arg(long = "root", required = true)]
        roots: Vec<String>,
        /// Files read per table, spread over its folders; 0 reads them all.
        #[arg(long, default_value_t = discover::DEFAULT_FILES_PER_TABLE)]
        files_per_table: usize,
        /// Write each proposed table spec to DIR/<table>.toml.
        #[arg(long)]
        write: Option<PathBuf>,
        /// A finding's column must hold erased ids this many times more often than ids of the
        /// same shape that were not erased (its decoys).
        #[arg(long, default_value_t = discover::DEFAULT_MIN_LIFT, value_parser = min_lift)]
        min_lift: f64,
        /// A finding's column must hold at least this many distinct erased subjects.
        #[arg(long, default_value_t = discover::DEFAULT_MIN_SUBJECTS, value_parser = clap::value_parser!(u64).range(1..))]
        min_subjects: u64,
        /// Exit 3 when an unregistered table or an uncovered column holds erased subjects, or
        /// when a root or a table could not be examined.
        #[arg(long)]
        fail_on_findings: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make an ed25519 key pair for signing manifests: <out>/lakepurge.key and lakepurge.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a sample warehouse in a scratch folder and run validate, plan, purge, verify.
    Demo {
        /// Scratch folder (default: a new folder under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The arguments of `purge`.
#[derive(clap::Args)]
struct PurgeArgs {
    #[arg(long)]
    job: PathBuf,
    #[arg(long)]
    run_id: String,
    /// Sign the manifest with this ed25519 key (made by `lakepurge keygen`).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Process only shard I of N (`I/N`, 0-based) and write no manifest; a final purge
    /// without --shard finishes the run and writes the manifest.
    #[arg(long)]
    shard: Option<String>,
    /// Files rewritten at once (default: one more than the CPUs, so that one file's I/O
    /// overlaps the others' CPU work; at least 16 when a table is on an object store).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: Option<u16>,
    /// Memory the run may hold, e.g. 512MiB or 2GiB (default 2GiB): the files being
    /// rewritten get what the process does not already hold when the rewrites start.
    /// Files wait for room; one larger than the room is purged alone.
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    if let Some(n) = cli.io_concurrency {
        plan::set_io_concurrency(usize::from(n));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lakepurge: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command, cli.log_format, cli.quiet)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lakepurge: error: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(format: LogFormat, quiet: bool) {
    let level = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAKEPURGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lakepurge={level},warn")));
    // Colour only on a terminal (Airflow task logs and `2> file` get plain text), and never
    // when NO_COLOR is set (no-color.org: any non-empty value).
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

async fn run(command: Command, log_format: LogFormat, quiet: bool) -> Result<u8, Error> {
    match command {
        Command::Validate { job } => cmd_validate(&Job::load(&job)?).await,
        Command::Plan { job, json } => cmd_plan(&Job::load(&job)?, json).await,
        Command::Purge(args) => cmd_purge_args(args, log_format, quiet).await,
        Command::Verify {
            manifest,
            run_id,
            json,
            public_key,
            deep,
            job,
        } => cmd_verify_args(manifest, run_id, json, public_key, deep, job).await,
        Command::Trace {
            job,
            event_id,
            json,
        } => cmd_trace(&Job::load(&job)?, &event_id, json).await,
        Command::Status { job, sla, json } => cmd_status(&Job::load(&job)?, sla, json).await,
        Command::Report {
            job,
            out,
            sla,
            public_key,
            json,
        } => cmd_report(&Job::load(&job)?, &out, sla, public_key, json).await,
        Command::Discover {
            job,
            roots,
            files_per_table,
            write,
            min_lift,
            min_subjects,
            fail_on_findings,
            json,
        } => {
            let opts = discover::Options {
                roots,
                files_per_table,
                write,
                min_lift,
                min_subjects,
            };
            cmd_discover(&Job::load(&job)?, &opts, fail_on_findings, json).await
        }
        Command::Keygen { out } => {
            let (secret, public) = lakepurge::manifest::keygen(&out)?;
            println!(
                "secret key: {}\npublic key: {}",
                secret.display(),
                public.display()
            );
            Ok(0)
        }
        Command::Demo { dir } => demo::run(dir).await,
    }
}

/// `purge` as given on the command line.
async fn cmd_purge_args(args: PurgeArgs, log_format: LogFormat, quiet: bool) -> Result<u8, Error> {
    let PurgeArgs {
        job,
        run_id,
        signing_key,
        shard,
        concurrency,
        memory_limit,
    } = args;
    let progress = matches!(log_format, LogFormat::Text)
        && !quiet
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let key = signing_key
        .map(|p| lakepurge::manifest::read_signing_key(&p))
        .transpose()?;
    let shard = shard
        .map(|s| purge::Shard::parse(&s))
        .transpose()
        .map_err(Error::Usage)?;
    let opts = purge::Options {
        signing_key: key.as_ref(),
        failpoint: Default::default(),
        shard,
        concurrency: concurrency.map(usize::from),
        progress,
        memory_limit,
        large_file: None,
    };
    cmd_purge(&Job::load(&job)?, &run_id, opts).await
}

async fn cmd_validate(job: &Job) -> Result<u8, Error> {
    let s = validate::validate(job).await?;
    println!("events: {} files, {} rows", s.event_files, s.event_rows);
    if let Some((files, rows, in_force)) = s.holds {
        println!("holds: {files} files, {rows} rows, {in_force} holds in force");
    }
    for t in &s.tables {
        let versions = match t.versioning {
            Some(v) => format!(", object versioning {v}"),
            None => String::new(),
        };
        println!(
            "table {}: {} files at {}: match columns ok{versions}",
            t.name, t.files, t.location
        );
    }
    for (subject_type, events) in &s.unruled_subject_types {
        println!(
            "WARN subject type {subject_type:?}: {events} events, and no table has a rule for it: \
             they are confirmed no_rule (a new kind of identifier, or a typo in the pipeline?)"
        );
    }
    println!("VALID: job {}", s.job);
    Ok(0)
}

async fn cmd_plan(job: &Job, json: bool) -> Result<u8, Error> {
    let mut events = events::load(job).await?;
    lakepurge::holds::attach(job, &mut events, None, chrono::Utc::now()).await?;
    let tables = lakepurge::table::Table::open_all(job).await?;
    let plans = plan::plan_tables(&tables, &events).await?;
    let listed: Vec<(&lakepurge::table::Table, u64)> = tables
        .iter()
        .zip(&plans)
        .map(|(t, p)| (t, p.files_listed))
        .collect();
    plan::refuse_empty(job, &listed).await?;
    if json {
        let doc = serde_json::json!({
            "job": job.name,
            "events": {"files": events.files.len(), "rows": events.rows, "skipped": events.skipped,
                       "count": events.count(), "digest": events.digest},
            "tables": plans,
        });
        print_json(&doc)?;
        return Ok(0);
    }
    println!(
        "events: {} distinct, {} rows read, {} skipped",
        events.count(),
        events.rows,
        events.skipped
    );
    println!(
        "{:<24} {:>8} {:>8} {:>9} {:>8} {:>12} {:>22}",
        "table", "listed", "pruned", "affected", "emptied", "rows_to_go", "read / table bytes"
    );
    for p in &plans {
        println!(
            "{:<24} {:>8} {:>8} {:>9} {:>8} {:>12} {:>22}",
            p.name,
            p.files_listed,
            p.files_pruned,
            p.files_affected,
            p.files_emptied,
            p.rows_matched,
            format!("{} / {}", p.bytes_read, p.table_bytes)
        );
    }
    for p in plans.iter().filter(|p| p.versioning.is_some()) {
        if let Some(v) = p.versioning {
            println!("table {}: object versioning {v}", p.name);
        }
    }
    Ok(0)
}

async fn cmd_purge(job: &Job, run_id: &str, mut opts: purge::Options<'_>) -> Result<u8, Error> {
    if let Ok(spec) = std::env::var("LAKEPURGE_FAILPOINT") {
        opts.failpoint = purge::Failpoint::parse(&spec).map_err(Error::Usage)?;
    }
    match purge::purge(job, run_id, &SystemClock, &opts).await? {
        Outcome::AlreadyComplete(s) => {
            println!("run {run_id} is already complete: {}", s.url);
            Ok(0)
        }
        Outcome::Completed(s) => {
            for t in &s.manifest.tables {
                println!(
                    "table {}: {} rows removed, {} files rewritten, {} deleted",
                    t.name, t.rows_removed, t.files_rewritten, t.files_deleted
                );
            }
            println!("manifest: {}", s.url);
            Ok(0)
        }
        Outcome::ShardDone { shard, files_done } => {
            println!(
                "shard {shard} of run {run_id} done: {files_done} files purged; the final purge without --shard writes the manifest"
            );
            Ok(0)
        }
        Outcome::Failed { failures } => {
            for (table, e) in &failures {
                eprintln!("lakepurge: table {table} failed: {e:#}");
            }
            // Bad data found mid-run (a corrupt page): the file is left untouched and a rerun
            // would meet it again, so it is bad input, not a failure a rerun resolves.
            if failures.iter().any(|(_, e)| e.exit_code() == 2) {
                eprintln!(
                    "lakepurge: run {run_id} incomplete: bad input (named above) was left \
                     untouched; the other files are done. Repair or remove it, then rerun with \
                     the same run id"
                );
                return Ok(2);
            }
            eprintln!("lakepurge: run {run_id} incomplete: rerun with the same run id to finish");
            Ok(1)
        }
    }
}

async fn cmd_trace(job: &Job, event_id: &str, json: bool) -> Result<u8, Error> {
    let t = trace::trace(job, event_id).await?;
    if json {
        print_json(&t)?;
        return Ok(0);
    }
    for h in &t.hits {
        println!(
            "run {} (finished {}): table {}: {}: {} rows",
            h.run_id, h.finished_at, h.table, h.file, h.rows
        );
    }
    println!(
        "event {}: {} rows removed in {} files over {} of {} runs",
        t.event_id,
        t.rows,
        t.hits.len(),
        t.runs_with_rows,
        t.runs_checked
    );
    for h in &t.held {
        let by = match &h.retained {
            Some(r) => format!(
                "the table's exemption ({}, {})",
                r.basis.name(),
                r.reference
            ),
            None => format!("holds {}", h.hold_ids.join(", ")),
        };
        println!(
            "run {} (finished {}): table {}: {} rows kept under {by}",
            h.run_id, h.finished_at, h.table, h.rows
        );
    }
    match t.confirmations.as_slice() {
        [] => println!("event {}: not confirmed (pending)", t.event_id),
        confirmed => {
            for (run, status) in confirmed {
                println!("event {}: confirmed {status} by run {run}", t.event_id);
            }
        }
    }
    Ok(0)
}

async fn cmd_discover(
    job: &Job,
    opts: &discover::Options,
    fail_on_findings: bool,
    json: bool,
) -> Result<u8, Error> {
    let report = discover::discover(job, opts).await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", discover::render(&report));
    }
    Ok(
        if fail_on_findings && (report.findings() > 0 || report.not_examined() > 0) {
            3
        } else {
            0
        },
    )
}

/// `--min-lift`: a finite number of at least 1.
fn min_lift(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!("{s:?}: expected a number of at least 1")),
    }
}

/// The time `status` and `report` measure ages at: now, or `LAKEPURGE_NOW` (RFC 3339), which
/// fixes the clock for tests.
fn now() -> Result<chrono::DateTime<chrono::Utc>, Error> {
    match std::env::var("LAKEPURGE_NOW") {
        Ok(v) => Ok(chrono::DateTime::parse_from_rfc3339(&v)
            .map_err(|e| Error::Usage(format!("LAKEPURGE_NOW {v:?}: expected RFC 3339: {e}")))?
            .with_timezone(&chrono::Utc)),
        Err(_) => Ok(chrono::Utc::now()),
    }
}

async fn cmd_report(
    job: &Job,
    out: &str,
    sla: Option<std::time::Duration>,
    public_key: Option<PathBuf>,
    json: bool,
) -> Result<u8, Error> {
    let opts = report::Options {
        now: now()?,
        sla,
        public_key: public_key
            .map(|p| lakepurge::manifest::read_public_key(&p))
            .transpose()?,
    };
    let r = report::report(job, &opts).await?;
    let by = format!("lakepurge {}", env!("CARGO_PKG_VERSION"));
    report::write(out, report::render(&r, &by)).await?;
    let late = r.status.late.as_ref().map_or(0, |l| l.count);
    if json {
        print_json(&r)?;
    } else {
        println!(
            "report written to {out}: {} requests, {} confirmed, {} pending, {} held, {} late; \
             {} of {} run manifests fail verification",
            r.status.events,
            r.status.confirmed,
            r.status.pending,
            r.status.held.requests,
            late,
            r.runs_failing(),
            r.runs.len()
        );
    }
    Ok(if r.runs_failing() > 0 || late > 0 {
        3
    } else {
        0
    })
}

async fn cmd_status(job: &Job, sla: Option<std::time::Duration>, json: bool) -> Result<u8, Error> {
    let s = status::status(job, now()?, sla).await?;
    if json {
        print_json(&s)?;
    } else {
        print!("{}", status::render(&s));
    }
    Ok(if s.late.as_ref().is_some_and(|l| l.count > 0) {
        3
    } else {
        0
    })
}

/// `verify` as given on the command line: MANIFEST, or --job and --run-id.
async fn cmd_verify_args(
    manifest: Option<String>,
    run_id: Option<String>,
    json: bool,
    public_key: Option<PathBuf>,
    deep: bool,
    job: Option<PathBuf>,
) -> Result<u8, Error> {
    let job = job.map(|j| Job::load(&j)).transpose()?;
    let manifest = match (manifest, &run_id, &job) {
        (Some(m), _, _) => m,
        (None, Some(run_id), Some(job)) => {
            let folder = lakepurge::manifest::folder(job)?;
            folder.object_url(&lakepurge::manifest::path(&folder, run_id))
        }
        _ => {
            return Err(Error::Usage(
                "verify: give MANIFEST, or --job and --run-id".into(),
            ));
        }
    };
    let opts = verify::Options {
        public_key: public_key
            .map(|p| lakepurge::manifest::read_public_key(&p))
            .transpose()?,
        deep: if deep { job.as_ref() } else { None },
        job: job.as_ref(),
    };
    cmd_verify(&manifest, json, &opts).await
}

async fn cmd_verify(manifest: &str, json: bool, opts: &verify::Options<'_>) -> Result<u8, Error> {
    let report = verify::verify(manifest, opts).await?;
    if json {
        print_json(&report)?;
    } else {
        for c in &report.checks {
            println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
        }
        println!("{}", if report.pass { "PASS" } else { "FAIL" });
    }
    Ok(if report.pass { 0 } else { 3 })
}

/// Prints `value` as pretty JSON on stdout (`--json`).
fn print_json(value: &impl serde::Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// glibc maps every allocation above its mmap threshold afresh and returns it on free, so the
/// page and file buffers of each file purged are faulted in and zeroed again: measured as half
/// the page faults and ~10% of the wall time of a purge (benches/NOTES.md). Raising the
/// thresholds keeps those buffers in the heap for the next file. One arena: each rewrite runs
/// on whichever blocking thread is free, and with an arena per thread (glibc's default) a
/// buffer freed on one thread is not reused by the next file on another; one arena halved the
/// page faults again and the peak memory by a third (its lock is taken a few times per page).
/// Called before any thread.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no allocation is in flight on another
    // thread because none has been started yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// An SLA: a duration such as 25d, 36h or 2w (above zero).
/// The longest `--sla` taken (ages are counted in microseconds: far below their limit).
const MAX_SLA: std::time::Duration = std::time::Duration::from_secs(100 * 366 * 86_400);

fn parse_sla(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?}: expected a duration such as 25d or 36h: {e}"))
        .and_then(|d| {
            if d.is_zero() {
                Err(format!("{s:?}: expected a duration above zero"))
            } else if d > MAX_SLA {
                Err(format!("{s:?}: expected a duration of at most 100 years"))
            } else {
                Ok(d)
            }
        })
}

/// A size in bytes: a number with an optional unit (B, K/KB/KiB, M/MB/MiB, G/GB/GiB; all
/// powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512MiB or 2GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?}: expected a size above zero"))
}
