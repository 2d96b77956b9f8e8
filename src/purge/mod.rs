//! The `purge` command: runs the stages for one job and run id.
//!
//! 1. The run's event snapshot is pinned in the run journal by the first attempt; every later
//!    attempt of the same run id applies exactly those event files (their digest must match).
//! 2. Rewrites a previous attempt left *pending* (written to the journal, commit unknown) are
//!    resolved by looking at the object (see [`crate::journal`]).
//! 3. Every table is planned (footers and key columns) before anything is written, so bad input
//!    fails with exit 2 with nothing written.
//! 4. Each affected file is read whole, matched again against exactly the bytes read (so the
//!    rewrite agrees with the version it replaces), rewritten, recorded as pending, replaced or
//!    deleted conditionally on that version, and recorded as done. A file that changed
//!    meanwhile is read again and redone; one deleted meanwhile is skipped, not resurrected.
//! 5. The confirmations of the run's events (see [`crate::confirm`]) are written, then the
//!    manifest, built from the journal (so it accounts for every attempt), is written last;
//!    then the journal is deleted.
//!
//! A table that fails (storage errors) is reported and the other tables complete; the run then
//! exits 1 without a manifest and the next attempt with the same run id resumes.

//!
//! The run lives here; [`file`] purges one file (read, match again, rewrite, commit, journal),
//! [`budget`] bounds the memory of the files in flight ([`Shard`] splits a run's files over
//! workers), and [`failpoint`] aborts at exact points for the crash tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::commit;
use crate::confirm;
use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::journal::{Entry, Journal, ShardRecord, Snapshot, TableCounts};
use crate::lease::Lease;
use crate::manifest::{self, DeltaRecord, Engine, EventsRecord, FileRecord, Manifest, TableRecord};
use crate::plan::{self, TablePlan};
use crate::spec::{Job, OldFiles, check_name};
use crate::store;
use crate::table::Table;

mod budget;
pub mod failpoint;
mod file;
mod log;
mod versions;

pub use crate::plan::Shard;
pub use budget::DEFAULT_MEMORY_LIMIT;
use budget::{Budget, resident_bytes};
pub use failpoint::Failpoint;

/// What `purge` did.
#[derive(Debug)]
pub enum Outcome {
    /// The run id already has a manifest: nothing was done.
    AlreadyComplete(manifest::Stored),
    /// The run completed and wrote this manifest.
    Completed(manifest::Stored),
    /// Some tables failed; the others completed. No manifest was written.
    Failed { failures: Vec<(String, Error)> },
    /// A shard finished its files; the final unsharded purge writes the manifest.
    ShardDone { shard: Shard, files_done: u64 },
}

/// Injected time, so tests and manifests agree on what "now" is.
pub trait Clock: Send + Sync {
    fn now(&self) -> String;
}

/// The wall clock, in RFC 3339 UTC.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// Options of one purge.
#[derive(Default)]
pub struct Options<'a> {
    pub signing_key: Option<&'a ed25519_dalek::SigningKey>,
    pub failpoint: Failpoint,
    /// Process only this shard's files and write no manifest.
    pub shard: Option<Shard>,
    /// Files in flight at once (default: [`default_concurrency`], at least
    /// [`OBJECT_STORE_CONCURRENCY`] when a table is on an object store).
    pub concurrency: Option<usize>,
    /// Show a progress bar on stderr (the binary sets it only when stderr is a terminal).
    pub progress: bool,
    /// The memory the run may hold (default: [`DEFAULT_MEMORY_LIMIT`]): what the process holds
    /// when the rewrites start, plus the files in flight.
    pub memory_limit: Option<u64>,
    /// Files at least this large are read by ranges and uploaded in parts (default:
    /// [`commit::multipart_threshold`]).
    pub large_file: Option<u64>,
}

/// Files worked on at once by default: one per CPU, plus one whose reads and writes overlap
/// the others' CPU work.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// Files worked on at once by default when a table is on an object store: each file's reads
/// and upload wait on the store's latency, so more overlap the rewrites (the memory budget
/// still bounds what they hold).
pub const OBJECT_STORE_CONCURRENCY: usize = 16;

/// The default files in flight for `tables`.
fn concurrency_for(tables: &[Table]) -> usize {
    let on_object_store = tables.iter().any(|t| t.location.url.scheme() != "file");
    if on_object_store {
        default_concurrency().max(OBJECT_STORE_CONCURRENCY)
    } else {
        default_concurrency()
    }
}

/// Who a run is: what a Delta commit records of it.
struct RunId {
    job: String,
    run_id: String,
    /// Where the run's manifest will be.
    manifest: String,
}

/// State shared by the files of one attempt.
struct Attempt<'a> {
    run: RunId,
    /// The tables on versioned buckets (see [`versions`]).
    versioned: BTreeMap<String, versions::Versioned>,
    version_deletions: AtomicUsize,
    journal: Journal,
    events: &'a Events,
    failpoint: Failpoint,
    intents: AtomicUsize,
    commits: AtomicUsize,
    shard: Option<Shard>,
    concurrency: usize,
    budget: Budget,
    /// See [`Options::large_file`].
    large_file: u64,
    progress: indicatif::ProgressBar,
}

impl<'a> Attempt<'a> {
    /// The state of an attempt with `opts`, over `events` and the tables' `plans`.
    fn new(
        run: RunId,
        versioned: BTreeMap<String, versions::Versioned>,
        journal: Journal,
        events: &'a Events,
        opts: &Options<'_>,
        plans: &[TablePlan],
        default: usize,
    ) -> Attempt<'a> {
        Attempt {
            run,
            versioned,
            version_deletions: AtomicUsize::new(0),
            journal,
            events,
            failpoint: opts.failpoint,
            intents: AtomicUsize::new(0),
            commits: AtomicUsize::new(0),
            shard: opts.shard,
            concurrency: opts.concurrency.unwrap_or(default),
            budget: Budget::new(
                opts.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT),
                resident_bytes().unwrap_or(0),
            ),
            large_file: opts.large_file.unwrap_or_else(commit::multipart_threshold),
            progress: progress_bar(opts.progress, plans, opts.shard),
        }
    }

    fn crash_if(&self, counter: &AtomicUsize, at: Option<usize>, what: &str) {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if at == Some(n) {
            eprintln!("lakepurge: failpoint {what}={n}: aborting");
            std::process::abort();
        }
    }
}

/// Runs `purge` for `job` and `run_id`; every log line carries the run's span.
pub async fn purge(
    job: &Job,
    run_id: &str,
    clock: &dyn Clock,
    opts: &Options<'_>,
) -> Result<Outcome> {
    use tracing::Instrument;
    check_name("run id", run_id).map_err(Error::Usage)?;
    if job.confirmations.is_none() && run_id == confirm::DEFAULT_FOLDER {
        return Err(Error::Usage(format!(
            "run id {run_id:?} is the name of the job's confirmations folder: choose another"
        )));
    }
    let span = tracing::info_span!("run", run_id, job = %job.name);
    run(job, run_id, clock, opts).instrument(span).await
}

async fn run(job: &Job, run_id: &str, clock: &dyn Clock, opts: &Options<'_>) -> Result<Outcome> {
    if opts.failpoint.broken_matcher {
        plan::break_matcher_for_tests();
    }
    let folder = manifest::folder(job)?;
    // Resolved now, though written last: a location that cannot be used is bad input found
    // before anything is written.
    confirm::location(job)?;
    let tables = Table::open_all(job).await?;
    let journal = Journal::new(&folder, run_id);
    if let Some(done) = manifest::read(&folder, &manifest::path(&folder, run_id)).await? {
        tracing::info!(run_id, "run already complete: nothing to do");
        // The manifest supersedes the journal: one a crash left after it is deleted.
        if opts.shard.is_none() {
            journal.clear().await?;
        }
        return Ok(Outcome::AlreadyComplete(done));
    }
    // A first attempt reads its events and plans every table before it takes the lease or
    // writes anything: bad input exits 2 with nothing written.
    let prepared = match journal.snapshot().await? {
        Some(_) => None,
        None => Some(prepare(job, &tables, opts.shard, clock.now()).await?),
    };
    // One run of the job at a time (the manifests form one hash chain); shards of one run
    // share it. Whether the run is complete is asked again once it is held.
    let lease = Lease::acquire(&folder, &job.name, run_id, opts.shard).await?;
    let held = Held {
        folder: &folder,
        tables: &tables,
        lease: &lease,
    };
    let outcome = run_leased(job, run_id, clock, opts, held, prepared).await;
    lease.release().await;
    outcome
}

/// A first attempt's events and plans (read-only): the events, the plan of every table (the
/// files of `shard`), and, unsharded, the refusal of a location that lists no data file.
async fn prepare(
    job: &Job,
    tables: &[Table],
    shard: Option<Shard>,
    started_at: String,
) -> Result<Prepared> {
    let mut events = events::load(job).await?;
    crate::holds::attach(job, &mut events, None, run_start(&started_at)?).await?;
    let plans = plan::plan_shard(tables, &events, shard).await?;
    if shard.is_none() {
        let listed: Vec<(&Table, u64)> = tables
            .iter()
            .zip(&plans)
            .map(|(t, p)| (t, p.files_listed))
            .collect();
        plan::refuse_empty(job, &listed).await?;
    }
    Ok(Prepared {
        events,
        plans,
        started_at,
    })
}

/// A first attempt's events (with the holds in force at its start) and plans.
struct Prepared {
    events: Events,
    plans: Vec<TablePlan>,
    started_at: String,
}

/// A run's start time, as its snapshot records it.
fn run_start(started_at: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(started_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| Error::Internal(format!("run start {started_at:?}: {e}")))
}

/// The run journal and the entries it held when the attempt started.
#[derive(Clone, Copy)]
struct Journaled<'a> {
    journal: &'a Journal,
    entries: &'a BTreeMap<(String, String), Entry>,
}

/// What a run holds once it has the job's lease: its manifest folder, its tables, the lease.
struct Held<'a> {
    folder: &'a store::Location,
    tables: &'a [Table],
    lease: &'a Lease,
}

/// The run, once it holds the job's lease.
async fn run_leased(
    job: &Job,
    run_id: &str,
    clock: &dyn Clock,
    opts: &Options<'_>,
    held: Held<'_>,
    prepared: Option<Prepared>,
) -> Result<Outcome> {
    let Held {
        folder,
        tables,
        lease,
    } = held;
    let journal = Journal::new(folder, run_id);
    if let Some(done) = manifest::read(folder, &manifest::path(folder, run_id)).await? {
        tracing::info!(run_id, "run already complete: nothing to do");
        if opts.shard.is_none() {
            journal.clear().await?;
        }
        return Ok(Outcome::AlreadyComplete(done));
    }

    // Plan everything before writing anything (the journal included): bad input writes nothing.
    // Local tables are locked against other lakepurge processes until the run ends.
    let named: Vec<(&str, &store::Location)> = tables
        .iter()
        .map(|t| (t.spec.name.as_str(), &t.location))
        .collect();
    let _locks = store::TableLocks::acquire(&named).await?;
    // Read once: the final step of a sharded run plans from them too.
    let mut entries = journal.entries().await?;
    let journaled = Journaled {
        journal: &journal,
        entries: &entries,
    };
    let Planned {
        events,
        plans,
        snapshot,
        shard: shard_record,
    } = plan_pinned(job, run_id, clock, tables, journaled, opts.shard, prepared).await?;

    resolve_all_pending(tables, &mut entries, &journal, opts.shard).await?;

    let run = RunId {
        job: job.name.clone(),
        run_id: run_id.to_string(),
        manifest: folder.object_url(&manifest::path(folder, run_id)),
    };
    let versioned = versions::versioned_tables(tables, &plans);
    let default = concurrency_for(tables);
    let attempt = Attempt::new(run, versioned, journal, &events, opts, &plans, default);
    versions::resume(tables, &attempt, &mut entries, opts.shard).await?;
    let failures = purge_tables(tables, &plans, &attempt, &mut entries).await;
    attempt.progress.finish_and_clear();
    if !failures.is_empty() {
        return Ok(Outcome::Failed { failures });
    }
    if let Some(shard) = opts.shard {
        return shard_done(run_id, shard, shard_record, &entries, &attempt).await;
    }

    let run = RunRecord {
        job,
        run_id,
        snapshot: &snapshot,
        events: &events,
        tables,
        plans: &plans,
        entries: &entries,
    };
    let stored = run.write(folder, clock, opts, lease).await?;
    finished(run_id, &stored, opts, &attempt).await;
    Ok(Outcome::Completed(stored))
}

/// Resolves the rewrites an earlier attempt left pending. A shard touches only its own
/// entries: another shard may be committing its own.
async fn resolve_all_pending(
    tables: &[Table],
    entries: &mut BTreeMap<(String, String), Entry>,
    journal: &Journal,
    shard: Option<Shard>,
) -> Result<()> {
    let mine = |e: &Entry| shard.is_none_or(|s| s.owns(&e.table, &e.path));
    for ((table_name, _), entry) in entries.iter_mut().filter(|(_, e)| mine(e)) {
        if let Some(table) = tables.iter().find(|t| &t.spec.name == table_name) {
            resolve_pending(table, entry, journal).await?;
        }
    }
    Ok(())
}

/// A shard that finished its files: records it in the journal (the final step reads it).
async fn shard_done(
    run_id: &str,
    shard: Shard,
    record: Option<crate::journal::ShardRecord>,
    entries: &BTreeMap<(String, String), Entry>,
    attempt: &Attempt<'_>,
) -> Result<Outcome> {
    let files_done = entries
        .values()
        .filter(|e| shard.owns(&e.table, &e.path))
        .map(|e| e.done.len() as u64)
        .sum();
    if let Some(record) = record {
        attempt.journal.shard_done(shard, record).await?;
    }
    tracing::info!(run_id, %shard, files_done, "shard complete");
    Ok(Outcome::ShardDone { shard, files_done })
}

/// After the manifest: logs the run's totals and deletes its journal (a journal left is
/// deleted by the next run of the id).
async fn finished(
    run_id: &str,
    stored: &manifest::Stored,
    opts: &Options<'_>,
    attempt: &Attempt<'_>,
) {
    tracing::info!(run_id, manifest = %stored.url, "run complete");
    log_io_totals();
    tracing::info!(
        limit = opts.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT),
        held = attempt.budget.held,
        for_files = attempt.budget.limit,
        peak_reserved = attempt.budget.peak.load(Ordering::SeqCst),
        "memory budget"
    );
    if let Err(e) = attempt.journal.clear().await {
        tracing::warn!(run_id, error = %e, "could not delete the run journal; the next run of this id deletes it");
    }
}

/// Purges every table (a table with a log through it); a table that fails is named with its
/// error and the others go on.
async fn purge_tables(
    tables: &[Table],
    plans: &[TablePlan],
    attempt: &Attempt<'_>,
    entries: &mut BTreeMap<(String, String), Entry>,
) -> Vec<(String, Error)> {
    let mut failures = Vec::new();
    for (table, tplan) in tables.iter().zip(plans) {
        if let Some(h) = attempt
            .events
            .holds
            .as_ref()
            .filter(|h| h.retains(&table.spec))
        {
            tracing::info!(
                table = %table.spec.name,
                rows_held = tplan.rows_held,
                at = %h.now,
                "table exempt (retain): searched and counted, never changed"
            );
            continue;
        }
        let purged = match table.format.log() {
            Some(l) => log::purge_table(table, l, tplan, attempt, entries).await,
            None => file::purge_table(table, tplan, attempt, entries).await,
        };
        if let Err(e) = purged {
            tracing::error!(table = %table.spec.name, error = %e, "table failed");
            failures.push((table.spec.name.clone(), e));
        }
    }
    failures
}

/// What an attempt starts from: the events, the plans and the pinned snapshot (and, for a
/// shard, its record).
struct Planned {
    events: Events,
    plans: Vec<TablePlan>,
    snapshot: Snapshot,
    shard: Option<ShardRecord>,
}

/// Pins what shard `s` planned (its counts, the spec it ran with, the files it listed) in the
/// journal, or the record an earlier attempt of the shard pinned.
async fn pin_shard(
    job: &Job,
    journal: &Journal,
    s: Shard,
    plans: &[TablePlan],
) -> Result<ShardRecord> {
    let fresh = ShardRecord {
        tables: counts(plans),
        done: false,
        spec_sha256: Some(job.spec_sha256.clone()),
        spec_files: job.spec_files.clone(),
        listed: plans
            .iter()
            .map(|p| (p.name.clone(), p.listed.clone()))
            .collect(),
    };
    journal.pin_shard(s, fresh).await
}

/// Reads the events and plans the tables: on the first attempt, pins the event snapshot (and
/// the start-of-run counts, unless a shard plans only its files) in the journal; on a later one
/// (or when a concurrent attempt pinned first), applies exactly the pinned event files. A
/// shard plans only its files and pins its own counts; the final unsharded step, once every
/// shard of the run finished, takes the counts from their records and reads no table file.
async fn plan_pinned(
    job: &Job,
    run_id: &str,
    clock: &dyn Clock,
    tables: &[Table],
    journaled: Journaled<'_>,
    shard: Option<Shard>,
    prepared: Option<Prepared>,
) -> Result<Planned> {
    let journal = journaled.journal;
    let pinned = journal.snapshot().await?;
    let (events, snapshot, fresh_plans) = match pinned {
        Some(snap) => {
            tracing::info!(
                run_id,
                "resuming: applying the event snapshot pinned by the first attempt"
            );
            (pinned_events(job, run_id, &snap).await?, snap, None)
        }
        None => {
            let Prepared {
                events,
                plans,
                started_at,
            } = match prepared {
                Some(done) => done,
                None => prepare(job, tables, shard, clock.now()).await?,
            };
            let fresh = Snapshot {
                started_at,
                files: events.files.clone(),
                digest: events.digest.clone(),
                tables: if shard.is_some() {
                    Vec::new()
                } else {
                    counts(&plans)
                },
                holds: events
                    .holds
                    .as_ref()
                    .and_then(|h| h.dataset.as_ref())
                    .map(|d| d.files.clone()),
            };
            let snap = journal.pin(fresh.clone()).await?;
            if snap == fresh {
                (events, snap, Some(plans))
            } else {
                // A concurrent attempt pinned first: apply its snapshot.
                (pinned_events(job, run_id, &snap).await?, snap, None)
            }
        }
    };
    let plans = match (fresh_plans, shard) {
        (Some(plans), _) => plans,
        (None, Some(_)) => plan::plan_shard(tables, &events, shard).await?,
        (None, None) => match journal.finished_shards().await? {
            Some(records) => {
                plans_of_shards(job, tables, &events, &records, journaled.entries).await?
            }
            None => plan::plan_tables(tables, &events).await?,
        },
    };

    let shard = match shard {
        Some(s) => Some(pin_shard(job, journal, s, &plans).await?),
        None => None,
    };
    Ok(Planned {
        events,
        plans,
        snapshot,
        shard,
    })
}

/// The start-of-run counts of `plans`.
fn counts(plans: &[TablePlan]) -> Vec<TableCounts> {
    plans
        .iter()
        .map(|p| TableCounts {
            name: p.name.clone(),
            files_listed: p.files_listed,
            files_pruned: p.files_pruned,
            ids_unconvertible: p.ids_unconvertible,
            held: p.held.clone(),
        })
        .collect()
}

/// The plans of the final step after every shard finished. The spec must be the one the
/// shards ran (else exit 2, naming the files that changed). Every Parquet table is listed
/// again (a listing, no read): a file that no shard listed as it is now (new, moved from one
/// shard's name to another's, or changed since), and that no shard rewrote to what it is now,
/// is planned here and purged by this step; the counts of the rest are summed from the shards'
/// records. A Delta table, which shards leave to this step, is planned.
async fn plans_of_shards(
    job: &Job,
    tables: &[Table],
    events: &Events,
    records: &[ShardRecord],
    entries: &BTreeMap<(String, String), Entry>,
) -> Result<Vec<TablePlan>> {
    refuse_changed_spec(job, records)?;
    // The versions the shards left: what they listed, and what their rewrites made.
    let mut known: std::collections::BTreeSet<(String, String, Option<String>)> = records
        .iter()
        .flat_map(|r| &r.listed)
        .flat_map(|(t, files)| {
            files
                .iter()
                .map(move |f| (t.clone(), f.path.clone(), f.etag.clone()))
        })
        .collect();
    for e in entries.values() {
        for f in e.done.iter().filter_map(|d| d.after.as_ref()) {
            known.insert((e.table.clone(), e.path.clone(), f.etag.clone()));
        }
    }
    let mut plans = Vec::with_capacity(tables.len());
    let mut handled = 0;
    for table in tables {
        if table.format.log().is_some() {
            plans.push(plan::plan_table(table, events, None).await?);
            continue;
        }
        let mut plan = TablePlan::unscanned(table, table.versioning().await?);
        for c in records
            .iter()
            .flat_map(|r| &r.tables)
            .filter(|c| c.name == table.spec.name)
        {
            plan.files_listed += c.files_listed;
            plan.files_pruned += c.files_pruned;
            // The same ids fail to convert in every shard that saw the column's type.
            plan.ids_unconvertible = plan.ids_unconvertible.max(c.ids_unconvertible);
            if let Some(h) = &c.held {
                plan.rows_held += h.rows;
                plan.held.get_or_insert_default().merge(h);
            }
        }
        let name = &table.spec.name;
        let unseen: Vec<object_store::ObjectMeta> = table
            .list()
            .await?
            .into_iter()
            .filter(|m| {
                let key = (
                    name.clone(),
                    table.location.relative(&m.location),
                    m.e_tag.clone(),
                );
                m.e_tag.is_none() || !known.contains(&key)
            })
            .collect();
        handled += unseen.len();
        plan::plan_files(table, events, unseen, &mut plan).await?;
        plan.files_final_step = Some(plan.listed.len() as u64);
        plans.push(plan);
    }
    tracing::info!(
        shards = records.len(),
        files_handled_here = handled,
        "every shard finished: the final step listed every table again and planned the files no shard listed"
    );
    Ok(plans)
}

/// Refuses (exit 2) to finish a sharded run whose spec changed since its shards ran, naming
/// the spec files that differ.
fn refuse_changed_spec(job: &Job, records: &[ShardRecord]) -> Result<()> {
    let Some(ran) = records.iter().find(|r| {
        r.spec_sha256
            .as_ref()
            .is_some_and(|s| *s != job.spec_sha256)
    }) else {
        return Ok(());
    };
    let names: std::collections::BTreeSet<&String> =
        ran.spec_files.keys().chain(job.spec_files.keys()).collect();
    let changed: Vec<String> = names
        .into_iter()
        .filter_map(|n| match (ran.spec_files.get(n), job.spec_files.get(n)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(_), Some(_)) => Some(format!("{n} changed")),
            (Some(_), None) => Some(format!("{n} removed")),
            (None, _) => Some(format!("{n} added")),
        })
        .collect();
    Err(Error::spec(
        job.file.display(),
        format!(
            "the job's specs changed since the run's shards ran ({}): finish the run with the \
             specs it started with, or start a new run id",
            if changed.is_empty() {
                "digest differs".to_string()
            } else {
                changed.join(", ")
            }
        ),
    ))
}

/// What a completed run's manifest is made of.
struct RunRecord<'a> {
    job: &'a Job,
    run_id: &'a str,
    snapshot: &'a Snapshot,
    events: &'a Events,
    tables: &'a [Table],
    plans: &'a [TablePlan],
    entries: &'a BTreeMap<(String, String), Entry>,
}

impl RunRecord<'_> {
    /// Writes the run's confirmations, then its manifest (signed with `opts.signing_key`).
    async fn write(
        &self,
        folder: &store::Location,
        clock: &dyn Clock,
        opts: &Options<'_>,
        lease: &Lease,
    ) -> Result<manifest::Stored> {
        // The job's completed runs, in order: the hash chain's previous link and the runs
        // whose confirmations count.
        let history = manifest::all(folder).await?;
        let mut manifest = self.manifest(&history, clock).await?;
        let url = folder.object_url(&manifest::path(folder, self.run_id));
        let runs = history.iter().map(|s| s.manifest.run_id.clone()).collect();
        lease.check().await?;
        let confirmed = confirm::write(self.job, &manifest, &url, &runs).await?;
        manifest.confirmations = Some(confirmed);
        if opts.failpoint.after_confirmations {
            eprintln!("lakepurge: failpoint after_confirmations: aborting");
            std::process::abort();
        }
        if let Some(key) = opts.signing_key {
            manifest.sign(key);
        }
        lease.check().await?;
        manifest::write(folder, &manifest).await
    }

    /// The run's manifest, built from the journal (so it accounts for every attempt) and
    /// chained to the job's previous manifest in `folder`.
    async fn manifest(&self, history: &[manifest::Stored], clock: &dyn Clock) -> Result<Manifest> {
        for (t, p) in self.tables.iter().zip(self.plans) {
            unsettled_versions(t, p, self.entries)?;
        }
        let records: Vec<TableRecord> = self
            .tables
            .iter()
            .zip(self.plans)
            .map(|(t, p)| table_record(t, p, self.snapshot, self.entries))
            .collect();
        let mut per_event: BTreeMap<String, u64> = BTreeMap::new();
        for f in records.iter().flat_map(|t| &t.files) {
            for (e, n) in &f.per_event {
                *per_event.entry(e.clone()).or_default() += n;
            }
        }
        let previous = history.last();
        let events = self.events;
        let holds = events.holds.as_ref().and_then(|h| {
            let applied = records
                .iter()
                .filter_map(|t| t.held.as_ref())
                .flat_map(|r| r.hold_ids.iter().cloned())
                .collect();
            h.dataset.as_ref().map(|d| d.record(h.now, &applied))
        });
        Ok(Manifest {
            format_version: manifest::FORMAT_VERSION,
            job: self.job.name.clone(),
            run_id: self.run_id.to_string(),
            status: "complete".into(),
            started_at: self.snapshot.started_at.clone(),
            finished_at: clock.now(),
            engine: Engine {
                name: "lakepurge".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            spec_sha256: self.job.spec_sha256.clone(),
            previous_sha256: previous.map(|p| p.sha256.clone()),
            sequence: previous.map_or(1, |p| p.manifest.sequence + 1),
            events: EventsRecord {
                location: events.location.clone(),
                count: events.count() as u64,
                skipped: events.skipped,
                rows: events.rows,
                max_requested_at: events.max_requested_at.clone(),
                digest: events.digest.clone(),
                files: events.files.clone(),
            },
            holds,
            tables: records,
            per_event,
            confirmations: None,
            signature: None,
        })
    }
}

/// A bar over the affected files of this attempt (hidden unless `show`).
fn progress_bar(show: bool, plans: &[TablePlan], shard: Option<Shard>) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let files = plans
        .iter()
        .flat_map(|p| p.files.iter().map(move |f| (p, f)))
        .filter(|(p, f)| f.affected() && shard.is_none_or(|s| s.owns(&p.name, &f.path)))
        .count();
    let bar = indicatif::ProgressBar::new(files as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files purged ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Logs the bytes this process read and wrote through object stores (`io totals`).
fn log_io_totals() {
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        bytes_read = store::BYTES_READ.load(Relaxed),
        bytes_written = store::BYTES_WRITTEN.load(Relaxed),
        "io totals"
    );
}

/// The events of a pinned snapshot; they must still have the pinned digest.
async fn pinned_events(job: &Job, run_id: &str, snap: &Snapshot) -> Result<Events> {
    let mut events = events::load_snapshot(job, Some(&snap.files)).await?;
    let now = run_start(&snap.started_at)?;
    crate::holds::attach(job, &mut events, snap.holds.as_deref(), now).await?;
    if events.digest != snap.digest {
        return Err(Error::events(
            &events.location,
            format!(
                "the event files pinned by run {run_id}'s first attempt changed (digest {} != {}); \
                 restore them or start a new run id",
                events.digest, snap.digest
            ),
        ));
    }
    Ok(events)
}

/// A manifest records what the store confirmed: a file of a table on a versioned bucket whose
/// old versions were not listed, or whose deletions were not all confirmed, stops the run
/// before its manifest (exit 1; the next attempt settles them).
fn unsettled_versions(
    table: &Table,
    tplan: &TablePlan,
    entries: &BTreeMap<(String, String), Entry>,
) -> Result<()> {
    use crate::store::Versioning;
    if !matches!(
        tplan.versioning,
        Some(Versioning::Enabled | Versioning::Suspended)
    ) || table.location.versions.is_none()
    {
        return Ok(());
    }
    let unsettled = entries
        .values()
        .filter(|e| e.table == table.spec.name)
        .flat_map(|e| &e.done)
        .find(|f| f.before.version.is_some() && f.old_versions.as_ref().is_none_or(|o| o.pending))
        .map(|f| f.path.clone());
    // A deleted history file of a Delta table, too.
    let history = || {
        entries
            .values()
            .filter(|e| e.table == table.spec.name)
            .filter_map(|e| e.history.as_ref().filter(|h| h.deleted))
            .flat_map(|h| {
                h.files
                    .iter()
                    .filter(|f| h.old_versions.get(*f).is_none_or(|o| o.pending))
            })
            .next()
            .cloned()
    };
    match unsettled.or_else(history) {
        Some(path) => Err(Error::Internal(format!(
            "table {}: {path}: the old versions of the file were not settled (listed and, under \
             old_versions = \"delete\", deleted); rerun with the same run id",
            table.spec.name
        ))),
        None => Ok(()),
    }
}

/// The manifest record of one table: counts from the plan, files from the journal.
fn table_record(
    table: &Table,
    tplan: &TablePlan,
    snapshot: &Snapshot,
    entries: &BTreeMap<(String, String), Entry>,
) -> TableRecord {
    let start = snapshot.tables.iter().find(|c| c.name == table.spec.name);
    let files: Vec<FileRecord> = entries
        .values()
        .filter(|e| e.table == table.spec.name)
        .flat_map(|e| e.done.iter().cloned())
        .collect();
    let log_record = tplan
        .delta_version
        .map(|planned| delta_record(table, planned, entries));
    let history_versions = log_record
        .iter()
        .flat_map(|d| d.history_old_versions.values());
    let old_versions = || {
        files
            .iter()
            .filter_map(|f| f.old_versions.as_ref())
            .chain(history_versions.clone())
    };
    TableRecord {
        name: table.spec.name.clone(),
        location: table.location.url.to_string(),
        files_listed: start.map_or(tplan.files_listed, |c| c.files_listed),
        files_pruned: start.map_or(tplan.files_pruned, |c| c.files_pruned),
        files_rewritten: files.iter().filter(|f| f.after.is_some()).count() as u64,
        files_deleted: files.iter().filter(|f| f.after.is_none()).count() as u64,
        rows_removed: files.iter().map(|f| f.rows_removed).sum(),
        rows_redacted: files.iter().map(|f| f.rows_redacted).sum(),
        subject_types: Some(
            table
                .spec
                .matches
                .iter()
                .map(|r| r.subject_type.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
        ids_unconvertible: start.map_or(tplan.ids_unconvertible, |c| c.ids_unconvertible),
        held: start.map_or_else(|| tplan.held.clone(), |c| c.held.clone()),
        files_final_step: tplan.files_final_step,
        files_vanished: entries
            .values()
            .filter(|e| e.table == table.spec.name && e.vanished)
            .map(|e| e.path.clone())
            .collect(),
        versions_deleted: tplan
            .versioning
            .map(|_| old_versions().map(|o| o.deleted.len() as u64).sum()),
        versions_remaining: tplan.versioning.map(|_| {
            old_versions()
                .map(|o| o.remaining + o.locked.len() as u64)
                .sum()
        }),
        versions_locked: tplan
            .versioning
            .map(|_| old_versions().map(|o| o.locked.len() as u64).sum())
            .filter(|n| *n > 0),
        delta: log_record
            .clone()
            .filter(|_| table.spec.format != crate::spec::TableFormat::Iceberg),
        iceberg: log_record.filter(|_| table.spec.format == crate::spec::TableFormat::Iceberg),
        versioning: tplan.versioning,
        files,
    }
}

/// The manifest record of a Delta table's commit: from the journal, or the version planned
/// when no file needed a commit.
fn delta_record(
    table: &Table,
    planned: u64,
    entries: &BTreeMap<(String, String), Entry>,
) -> DeltaRecord {
    let entry = table
        .format
        .log()
        .and_then(|l| entries.get(&(table.spec.name.clone(), l.entry().to_string())));
    let history = entry.and_then(|e| e.history.as_ref());
    let commit = entry
        .and_then(|e| e.delta.as_ref())
        .filter(|c| c.version.is_some());
    let released = || {
        commit
            .and_then(|c| c.released.as_ref())
            .into_iter()
            .chain(history.and_then(|h| h.released.as_ref()))
    };
    let policy = table.spec.old_files.unwrap_or_default();
    let removed = commit.map_or(0, |c| c.removed.len() as u64);
    let deleted = commit.map_or(0, |c| c.old_files_deleted);
    DeltaRecord {
        read_version: commit.map_or(planned, |c| c.read_version),
        version: commit.and_then(|c| c.version),
        app_id: commit.map_or_else(String::new, |c| c.app_id.clone()),
        old_files: policy,
        old_files_deleted: deleted,
        old_files_remaining: removed.saturating_sub(deleted),
        retention: (policy == OldFiles::Keep && removed > 0).then(|| {
            if table.spec.format == crate::spec::TableFormat::Iceberg {
                "until the snapshots that read them are expired (expire_snapshots) and the files \
                 deleted"
                    .to_string()
            } else {
                "until VACUUM, after the table's delta.deletedFileRetentionDuration (default 7 \
                 days)"
                    .to_string()
            }
        }),
        history_files_scanned: history.map_or(0, |h| h.scanned),
        history_files: history.map(|h| h.files.clone()).unwrap_or_default(),
        history_files_deleted: history
            .filter(|h| h.deleted)
            .map_or(0, |h| h.files.len() as u64),
        history_files_remaining: history
            .filter(|h| !h.deleted)
            .map_or(0, |h| h.files.len() as u64),
        history_old_versions: history.map(|h| h.old_versions.clone()).unwrap_or_default(),
        old_log: entry.and_then(|e| e.old_log.clone()),
        snapshots_expired: released()
            .filter(|r| r.done)
            .map(|r| r.expire.len() as u64)
            .sum(),
        metadata_files_deleted: released()
            .filter(|r| r.done)
            .map(|r| r.delete.len() as u64)
            .sum(),
        snapshots_remaining: released()
            .filter(|r| !r.done)
            .flat_map(|r| r.expire.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64,
        refs_removed: released()
            .filter(|r| r.done)
            .flat_map(|r| r.refs_removed.iter().cloned())
            .collect(),
    }
}

/// Settles a rewrite a previous attempt journaled but may not have committed.
async fn resolve_pending(table: &Table, entry: &mut Entry, journal: &Journal) -> Result<()> {
    let Some(pending) = entry.pending.take() else {
        return Ok(());
    };
    let path = table.location.child(&entry.path);
    let committed = file::committed(table, &path, &pending).await?;
    tracing::info!(
        table = %table.spec.name,
        file = %entry.path,
        committed = committed.is_some(),
        "resolved a rewrite left pending by an earlier attempt"
    );
    entry.done.extend(committed);
    journal.put(entry).await
}
