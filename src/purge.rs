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
//! 5. The manifest, built from the journal (so it accounts for every attempt), is written last;
//!    then the journal is deleted.
//!
//! A table that fails (storage errors) is reported and the other tables complete; the run then
//! exits 1 without a manifest and the next attempt with the same run id resumes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::ObjectStoreExt;

use crate::commit::{self, ReadVersion};
use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::journal::{Entry, Journal, Snapshot, TableCounts};
use crate::manifest::{self, Engine, EventsRecord, FileRecord, FileVersion, Manifest, TableRecord};
use crate::plan::{self, BytesReader, FilePlan, Matcher, Table, TablePlan};
use crate::rewrite;
use crate::spec::{Action, Job, check_name};
use crate::store;
use crate::store::RangedObject;
use std::sync::Arc;

/// How many times a file that a concurrent writer changed is read again and redone.
const CONFLICT_RETRIES: usize = 3;
/// How many times a file is retried after a transient storage error, and the first backoff
/// (multiplied by 4 each time).
const STORE_RETRIES: u32 = 3;
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

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

/// `--shard I/N`: a stable subset of the run's files. A file belongs to shard
/// `hash(table name, path) mod N`, the same on every attempt and every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let parsed = s.split_once('/').and_then(|(i, n)| {
            Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/3"
            )),
        }
    }

    /// Whether the file `path` of `table` belongs to this shard.
    pub fn owns(&self, table: &str, path: &str) -> bool {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(table.as_bytes());
        h.update([0]);
        h.update(path.as_bytes());
        let d = h.finalize();
        let v = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        v % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
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

/// Crash injection for tests: abort the process (as SIGKILL would) right after the Nth
/// pending record is journaled, or right after the Nth commit, before it is journaled as done.
#[derive(Debug, Default, Clone, Copy)]
pub struct Failpoint {
    pub after_intent: Option<usize>,
    pub after_commit: Option<usize>,
}

impl Failpoint {
    /// Parses `after_intent=N` or `after_commit=N`.
    pub fn parse(s: &str) -> std::result::Result<Failpoint, String> {
        let (what, n) = s
            .split_once('=')
            .ok_or_else(|| format!("failpoint {s:?}: expected after_intent=N or after_commit=N"))?;
        let n: usize = n
            .parse()
            .map_err(|_| format!("failpoint {s:?}: N must be a number"))?;
        match what {
            "after_intent" => Ok(Failpoint {
                after_intent: Some(n),
                ..Failpoint::default()
            }),
            "after_commit" => Ok(Failpoint {
                after_commit: Some(n),
                ..Failpoint::default()
            }),
            _ => Err(format!("failpoint {s:?}: unknown point {what:?}")),
        }
    }
}

/// Options of one purge.
#[derive(Default)]
pub struct Options<'a> {
    pub signing_key: Option<&'a ed25519_dalek::SigningKey>,
    pub failpoint: Failpoint,
    /// Process only this shard's files and write no manifest.
    pub shard: Option<Shard>,
    /// Files in flight at once (default: `default_concurrency`).
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

/// The default memory limit: half of a 4 GB worker.
pub const DEFAULT_MEMORY_LIMIT: u64 = 2 << 30;

/// The memory the files in flight may hold: `--memory-limit` less what the process holds when
/// the rewrites start (resident memory: the program, the plan, memory the allocator kept).
/// Each file reserves what purging it will hold before it is read, and waits while the budget
/// is spent; a file needing more than the whole budget waits for all of it and runs alone.
/// The event dataset (spilled to disk) and the plan's key tables (freed before the rewrites)
/// come before it.
struct Budget {
    limit: u64,
    /// Resident memory when the budget was set.
    held: u64,
    /// Permits are KiB.
    permits: tokio::sync::Semaphore,
    reserved: std::sync::atomic::AtomicU64,
    peak: std::sync::atomic::AtomicU64,
}

/// A file's share of the budget, given back on drop.
struct Reservation<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget
            .reserved
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Budget {
    /// A budget of `limit` less `held`, the process's resident memory.
    fn new(limit: u64, held: u64) -> Budget {
        let kib = (limit.saturating_sub(held) / 1024).clamp(1, u64::from(u32::MAX)) as usize;
        Budget {
            limit: kib as u64 * 1024,
            held,
            permits: tokio::sync::Semaphore::new(kib),
            reserved: Default::default(),
            peak: Default::default(),
        }
    }

    /// What purging a file holds: the original and its rewritten copy, plus decompressed
    /// pages. A large file is read by ranges, a row group at a time (that row group and its
    /// decompressed pages), and goes up in parts (a few parts).
    fn need(fp: &FilePlan, large_file: u64) -> u64 {
        if fp.size >= large_file {
            2 * fp.largest_row_group.min(fp.size) + 4 * commit::PART_SIZE as u64
        } else {
            3 * fp.size
        }
    }

    async fn reserve(&self, bytes: u64, file: &str) -> Result<Reservation<'_>> {
        use std::sync::atomic::Ordering::SeqCst;
        if bytes > self.limit {
            tracing::warn!(
                file,
                need = bytes,
                limit = self.limit,
                "file needs more than the memory limit: purged alone"
            );
        }
        let bytes = bytes.min(self.limit);
        let kib = bytes.div_ceil(1024).max(1) as u32;
        let permit = self
            .permits
            .acquire_many(kib)
            .await
            .map_err(|e| Error::Internal(format!("memory budget: {e}")))?;
        let now = self.reserved.fetch_add(bytes, SeqCst) + bytes;
        self.peak.fetch_max(now, SeqCst);
        Ok(Reservation {
            _permit: permit,
            budget: self,
            bytes,
        })
    }
}

/// The resident memory of this process in bytes (Linux: `/proc/self/statm`).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Files worked on at once by default: one per CPU, plus one whose reads and writes overlap
/// the others' CPU work.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// State shared by the files of one attempt.
struct Attempt<'a> {
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

impl Attempt<'_> {
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
    let span = tracing::info_span!("run", run_id, job = %job.name);
    run(job, run_id, clock, opts).instrument(span).await
}

async fn run(job: &Job, run_id: &str, clock: &dyn Clock, opts: &Options<'_>) -> Result<Outcome> {
    let folder = manifest::folder(job)?;
    let journal = Journal::new(&folder, run_id);
    if let Some(done) = manifest::read(&folder, &manifest::path(&folder, run_id)).await? {
        tracing::info!(run_id, "run already complete: nothing to do");
        journal.clear().await?;
        return Ok(Outcome::AlreadyComplete(done));
    }

    // Plan everything before writing anything (the journal included): bad input writes nothing.
    let tables = plan::Table::resolve_all(job)?;
    // Local tables are locked against other lakepurge processes until the run ends.
    let named: Vec<(&str, &store::Location)> = tables
        .iter()
        .map(|t| (t.spec.name.as_str(), &t.location))
        .collect();
    let _locks = store::TableLocks::acquire(&named).await?;
    let pinned = journal.snapshot().await?;
    let mut events = match &pinned {
        Some(snap) => {
            tracing::info!(
                run_id,
                "resuming: applying the event snapshot pinned by the first attempt"
            );
            pinned_events(job, run_id, snap).await?
        }
        None => events::load(job).await?,
    };
    let mut plans = plan::plan_tables(&tables, &events).await?;
    let snapshot = match pinned {
        Some(snap) => snap,
        None => {
            let fresh = Snapshot {
                started_at: clock.now(),
                files: events.files.clone(),
                digest: events.digest.clone(),
                tables: plans
                    .iter()
                    .map(|p| TableCounts {
                        name: p.name.clone(),
                        files_listed: p.files_listed,
                        files_pruned: p.files_pruned,
                        ids_unconvertible: p.ids_unconvertible,
                    })
                    .collect(),
            };
            let snap = journal.pin(fresh.clone()).await?;
            if snap != fresh {
                // A concurrent attempt pinned first: apply its snapshot.
                events = pinned_events(job, run_id, &snap).await?;
                plans = plan::plan_tables(&tables, &events).await?;
            }
            snap
        }
    };

    let mut entries = journal.entries().await?;
    for ((table_name, _), entry) in entries.iter_mut() {
        if let Some(table) = tables.iter().find(|t| &t.spec.name == table_name) {
            resolve_pending(table, entry, &journal).await?;
        }
    }

    let attempt = Attempt {
        journal,
        events: &events,
        failpoint: opts.failpoint,
        intents: AtomicUsize::new(0),
        commits: AtomicUsize::new(0),
        shard: opts.shard,
        concurrency: opts.concurrency.unwrap_or_else(default_concurrency),
        budget: Budget::new(
            opts.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT),
            resident_bytes().unwrap_or(0),
        ),
        large_file: opts.large_file.unwrap_or_else(commit::multipart_threshold),
        progress: progress_bar(opts.progress, &plans, opts.shard),
    };
    let mut failures = Vec::new();
    for (table, tplan) in tables.iter().zip(&plans) {
        if let Err(e) = purge_table(table, tplan, &attempt, &mut entries).await {
            tracing::error!(table = %table.spec.name, error = %e, "table failed");
            failures.push((table.spec.name.clone(), e));
        }
    }
    attempt.progress.finish_and_clear();
    if !failures.is_empty() {
        return Ok(Outcome::Failed { failures });
    }
    if let Some(shard) = opts.shard {
        let files_done = entries
            .values()
            .filter(|e| shard.owns(&e.table, &e.path))
            .map(|e| e.done.len() as u64)
            .sum();
        tracing::info!(run_id, %shard, files_done, "shard complete");
        return Ok(Outcome::ShardDone { shard, files_done });
    }

    let records: Vec<TableRecord> = tables
        .iter()
        .zip(&plans)
        .map(|(t, p)| table_record(t, p, &snapshot, &entries))
        .collect();
    let mut per_event: BTreeMap<String, u64> = BTreeMap::new();
    for f in records.iter().flat_map(|t| &t.files) {
        for (e, n) in &f.per_event {
            *per_event.entry(e.clone()).or_default() += n;
        }
    }
    let history = manifest::all(&folder).await?;
    let previous = history.last();
    let mut manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        job: job.name.clone(),
        run_id: run_id.to_string(),
        status: "complete".into(),
        started_at: snapshot.started_at.clone(),
        finished_at: clock.now(),
        engine: Engine {
            name: "lakepurge".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        spec_sha256: job.spec_sha256.clone(),
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
        tables: records,
        per_event,
        signature: None,
    };
    if let Some(key) = opts.signing_key {
        manifest.sign(key);
    }
    let stored = manifest::write(&folder, &manifest).await?;
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
    Ok(Outcome::Completed(stored))
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
    let events = events::load_snapshot(job, Some(&snap.files)).await?;
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
    TableRecord {
        name: table.spec.name.clone(),
        location: table.location.url.to_string(),
        files_listed: start.map_or(tplan.files_listed, |c| c.files_listed),
        files_pruned: start.map_or(tplan.files_pruned, |c| c.files_pruned),
        files_rewritten: files.iter().filter(|f| f.after.is_some()).count() as u64,
        files_deleted: files.iter().filter(|f| f.after.is_none()).count() as u64,
        rows_removed: files.iter().map(|f| f.rows_removed).sum(),
        rows_redacted: files.iter().map(|f| f.rows_redacted).sum(),
        ids_unconvertible: start.map_or(tplan.ids_unconvertible, |c| c.ids_unconvertible),
        files_vanished: entries
            .values()
            .filter(|e| e.table == table.spec.name && e.vanished)
            .map(|e| e.path.clone())
            .collect(),
        files,
    }
}

/// Settles a rewrite a previous attempt journaled but may not have committed.
async fn resolve_pending(table: &Table, entry: &mut Entry, journal: &Journal) -> Result<()> {
    let Some(pending) = entry.pending.take() else {
        return Ok(());
    };
    let path = table.location.child(&entry.path);
    let current = match table.location.store.get(&path).await {
        Ok(g) => {
            let etag = g.meta.e_tag.clone();
            let bytes = g
                .bytes()
                .await
                .map_err(|e| Error::store(format!("reading {path}"), e))?;
            Some((manifest::sha256_hex(&bytes), etag))
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(Error::store(format!("reading {path}"), e)),
    };
    let committed = match (&pending.after, current) {
        (Some(after), Some((sha, etag))) if sha == after.sha256 => {
            let mut record = pending.clone();
            if let Some(a) = record.after.as_mut() {
                a.etag = etag;
            }
            Some(record)
        }
        (None, None) => Some(pending.clone()),
        _ => None,
    };
    tracing::info!(
        table = %table.spec.name,
        file = %entry.path,
        committed = committed.is_some(),
        "resolved a rewrite left pending by an earlier attempt"
    );
    entry.done.extend(committed);
    journal.put(entry).await
}

async fn purge_table(
    table: &Table,
    tplan: &TablePlan,
    attempt: &Attempt<'_>,
    entries: &mut BTreeMap<(String, String), Entry>,
) -> Result<()> {
    use futures::StreamExt;
    let name = &table.spec.name;
    let mine = |path: &str| attempt.shard.is_none_or(|s| s.owns(name, path));
    store::clean_temporaries(&table.location, |target| mine(target)).await?;
    let matcher = Matcher::new(&table.spec, attempt.events);
    // Several files in flight at once (reads, rewrites on blocking threads, commits); each
    // task owns its journal entry and hands it back.
    let tasks = tplan
        .files
        .iter()
        .filter(|f| f.affected() && mine(&f.path))
        .map(|fp| {
            let key = (name.clone(), fp.path.clone());
            let entry = entries.remove(&key).unwrap_or_else(|| Entry {
                table: name.clone(),
                path: fp.path.clone(),
                ..Entry::default()
            });
            let matcher = &matcher;
            async move {
                let mut entry = entry;
                let need = Budget::need(fp, attempt.large_file);
                let result = match attempt.budget.reserve(need, &fp.path).await {
                    Ok(_reserved) => {
                        purge_file_with_retries(table, matcher, fp, attempt, &mut entry).await
                    }
                    Err(e) => Err(e),
                };
                (key, entry, result)
            }
        })
        .collect::<Vec<_>>();
    let mut results = futures::stream::iter(tasks).buffer_unordered(attempt.concurrency.max(1));
    let mut first_error = None;
    while let Some((key, entry, result)) = results.next().await {
        attempt.progress.inc(1);
        entries.insert(key, entry);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn purge_file_with_retries(
    table: &Table,
    matcher: &Matcher<'_>,
    planned: &FilePlan,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let mut retry = 0;
    loop {
        match purge_file(table, matcher, planned, attempt, entry).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && retry < STORE_RETRIES => {
                let wait = FIRST_BACKOFF * 4u32.pow(retry);
                tracing::warn!(table = %table.spec.name, file = %entry.path, error = %e, retry, ?wait, "transient storage error: retrying");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Rewrites a file into an upload in parts to its own path: the rewrite (on a blocking thread)
/// writes into a [`commit::PartWriter`], this task uploads each part as it comes. Returns the
/// rewrite, the new file's sha256 and size, and the upload, ready to complete; on any error the
/// upload is aborted.
async fn rewrite_in_parts<S: rewrite::Source + Send>(
    store: &dyn object_store::ObjectStore,
    location: &object_store::path::Path,
    input: S,
    erased: Vec<Vec<u32>>,
    mode: rewrite::Mode,
    shown: String,
) -> Result<(rewrite::Rewritten, (String, u64), commit::PartUpload)> {
    let mut upload = commit::PartUpload::start(store, location).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let shown_err = shown.clone();
    let rewriting = tokio::task::spawn_blocking(move || {
        let mut writer = commit::PartWriter::new(tx);
        let rewritten = rewrite::rewrite_to(input, &erased, &mode, &shown, &mut writer)?;
        let new_file = writer
            .finish()
            .map_err(|e| Error::Internal(format!("writing {shown}: {e}")))?;
        Ok::<_, Error>((rewritten, new_file))
    });
    let mut uploaded = Ok(());
    while let Some(part) = rx.recv().await {
        uploaded = upload.put(part).await;
        if uploaded.is_err() {
            break;
        }
    }
    drop(rx); // a writer still sending gets an error and stops
    let rewritten = rewriting
        .await
        .map_err(|e| Error::Internal(format!("rewriting {shown_err}: {e}")));
    match (uploaded, rewritten) {
        (Ok(()), Ok(Ok((rewritten, new_file)))) => Ok((rewritten, new_file, upload)),
        (Err(e), _) | (Ok(()), Err(e)) | (Ok(()), Ok(Err(e))) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// What rewriting a file gave: the rewrite, the new file's sha256 and size (none when every
/// row went), and the upload in parts to complete, if it went up in parts.
type Rewrite = (
    rewrite::Rewritten,
    Option<(String, u64)>,
    Option<commit::PartUpload>,
);

/// How a file's new version is produced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Into memory, put in one request.
    Whole,
    /// Into an upload in parts, as it is written.
    InParts,
    /// Nothing: every row is erased (the file is deleted).
    Nothing,
}

/// Rewrites `input` on a blocking thread into `output`.
async fn rewrite_file<S: rewrite::Source + Send>(
    input: S,
    store: &Arc<dyn object_store::ObjectStore>,
    location: &object_store::path::Path,
    erased: Vec<Vec<u32>>,
    mode: rewrite::Mode,
    shown: String,
    output: Output,
) -> Result<Rewrite> {
    if output == Output::Nothing {
        // Checked, not written: the rewrite of a file left with no rows writes nothing.
        let rewritten = tokio::task::spawn_blocking(move || {
            let rewritten = rewrite::rewrite_to(input, &erased, &mode, &shown, std::io::sink())?;
            if rewritten.rows > 0 {
                return Err(Error::Internal(format!(
                    "{shown}: planned to be emptied, but {} rows remain",
                    rewritten.rows
                )));
            }
            Ok(rewritten)
        })
        .await
        .map_err(|e| Error::Internal(format!("rewriting {location}: {e}")))??;
        return Ok((rewritten, None, None));
    }
    if output == Output::InParts {
        let (rewritten, new_file, upload) =
            rewrite_in_parts(store.as_ref(), location, input, erased, mode, shown).await?;
        return Ok((rewritten, Some(new_file), Some(upload)));
    }
    let failed = shown.clone();
    let (rewritten, new_file) = tokio::task::spawn_blocking(move || {
        let rewritten = rewrite::rewrite(input, &erased, &mode, &shown)?;
        let new_file = rewritten
            .bytes
            .as_deref()
            .map(|b| (manifest::sha256_hex(b), b.len() as u64));
        Ok::<_, Error>((rewritten, new_file))
    })
    .await
    .map_err(|e| Error::Internal(format!("rewriting {failed}: {e}")))??;
    Ok((rewritten, new_file, None))
}

/// The sha256 (hex) of the object version read, streamed: a file replaced meanwhile is a
/// conflict.
async fn sha256_of_object(object: &store::ObjectVersion) -> Result<String> {
    store::hash_object(object).await.map_err(|e| match e {
        object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. } => {
            Error::Conflict {
                path: object.location().to_string(),
            }
        }
        e => Error::store(format!("reading {}", object.location()), e),
    })
}

/// Purges one file, journaling before and after the commit.
async fn purge_file(
    table: &Table,
    matcher: &Matcher<'_>,
    planned: &FilePlan,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let name = &table.spec.name;
    let rel = entry.path.clone();
    let location = &planned.location;
    let store = &table.location.store;
    for try_no in 0..=CONFLICT_RETRIES {
        // A large file is read by ranges, one row group at a time; the rest is read whole.
        let ranged = planned.size >= attempt.large_file;
        let got = if ranged {
            store.head(location).await.map(|meta| (meta, None))
        } else {
            match store.get(location).await {
                Ok(g) => {
                    let meta = g.meta.clone();
                    g.bytes().await.map(|b| (meta, Some(b)))
                }
                Err(e) => Err(e),
            }
        };
        let (meta, whole) = match got {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(table = %name, file = %rel, "file deleted by another writer: recorded, not recreated");
                entry.vanished = true;
                return attempt.journal.put(entry).await;
            }
            Err(e) => return Err(Error::store(format!("reading {location}"), e)),
        };
        let read = ReadVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        };
        let size = meta.size;
        // The plan's rows still hold when the object is the version the plan read; otherwise
        // (changed since, or a retry after a conflict) its key columns are read again.
        let fp = if planned.etag.is_some() && planned.etag == read.e_tag {
            planned.clone()
        } else if let Some(bytes) = &whole {
            let reader = BytesReader {
                bytes: bytes.clone(),
            };
            matcher.scan(reader, name, &rel).await?
        } else {
            let reader =
                plan::StoreReader::new(store::ObjectVersion::new(Arc::clone(store), meta.clone()));
            match matcher.scan(reader, name, &rel).await {
                Err(e) if e.is_conflict() => continue,
                other => other?,
            }
        };
        if !fp.affected() {
            return Ok(());
        }
        // The ids of the events that matched, read from the spilled event ids.
        let (ids, counts) = (attempt.events.event_ids.clone(), fp.per_event.clone());
        let per_event = tokio::task::spawn_blocking(move || ids.name_counts(&counts))
            .await
            .map_err(|e| Error::Internal(format!("naming the events of {rel}: {e}")))??;
        let erased = fp.erased.clone();
        let shown = format!("{}{}", table.location.url, rel);
        let redacting = table.spec.action == Action::Redact;
        let mode = if redacting {
            rewrite::Mode::Redact(table.spec.redact.clone())
        } else {
            rewrite::Mode::Delete
        };
        // A large file goes up in parts while it is written (see `commit`); the rest is
        // written to memory and put in one conditional request.
        let output = if !redacting && fp.rows_matched == fp.rows {
            Output::Nothing
        } else if size >= attempt.large_file {
            Output::InParts
        } else {
            Output::Whole
        };
        // CPU work runs off the async runtime: the original's hash alongside the rewrite, the
        // new file's hash right after it.
        let rewriting = match whole {
            Some(bytes) => {
                let original = bytes.clone();
                let before_sha = tokio::task::spawn_blocking(move || {
                    Ok::<_, Error>(manifest::sha256_hex(&original))
                });
                let rewriting =
                    rewrite_file(bytes, store, location, erased, mode, shown, output).await;
                (before_sha, rewriting)
            }
            None => {
                let runtime = tokio::runtime::Handle::current();
                let version = store::ObjectVersion::new(Arc::clone(store), meta.clone());
                let object = RangedObject::new(version.clone(), runtime.clone());
                let before_sha = tokio::task::spawn_blocking(move || {
                    runtime.block_on(sha256_of_object(&version))
                });
                let rewriting =
                    rewrite_file(object.clone(), store, location, erased, mode, shown, output)
                        .await
                        .map_err(|e| match object.failure() {
                            Some(
                                object_store::Error::Precondition { .. }
                                | object_store::Error::NotFound { .. },
                            ) => Error::Conflict {
                                path: location.to_string(),
                            },
                            // A storage error under a read, not corrupt data.
                            Some(failure) => Error::store(format!("reading {location}"), failure),
                            None => e,
                        });
                (before_sha, rewriting)
            }
        };
        let (before_sha, (rewritten, new_file, upload)) = match rewriting {
            (before_sha, Ok(done)) => (before_sha, done),
            (before_sha, Err(e)) => {
                before_sha.abort();
                match e {
                    Error::Conflict { .. } if try_no < CONFLICT_RETRIES => {
                        tracing::warn!(table = %name, file = %rel, try_no, "file changed while purging: reading it again");
                        continue;
                    }
                    e => return Err(e),
                }
            }
        };
        let before_sha = match before_sha.await {
            Ok(Ok(sha)) => sha,
            Ok(Err(e)) => {
                if let Some(upload) = upload {
                    upload.abort().await;
                }
                match e {
                    Error::Conflict { .. } if try_no < CONFLICT_RETRIES => continue,
                    e => return Err(e),
                }
            }
            Err(e) => return Err(Error::Internal(format!("hashing {rel}: {e}"))),
        };

        let mut record = FileRecord {
            path: rel.clone(),
            rows_removed: if redacting { 0 } else { fp.rows_matched },
            rows_redacted: if redacting { fp.rows_matched } else { 0 },
            before: FileVersion {
                size,
                sha256: before_sha,
                rows: fp.rows,
                etag: read.e_tag.clone(),
            },
            after: new_file.map(|(sha256, size)| FileVersion {
                size,
                sha256,
                rows: rewritten.rows,
                etag: None,
            }),
            per_event,
        };
        entry.pending = Some(record.clone());
        if let Err(e) = attempt.journal.put(entry).await {
            if let Some(upload) = upload {
                upload.abort().await;
            }
            return Err(e);
        }
        attempt.crash_if(
            &attempt.intents,
            attempt.failpoint.after_intent,
            "after_intent",
        );

        let result = match (upload, &rewritten.bytes) {
            (Some(upload), _) => upload
                .complete_if(store.as_ref(), &read)
                .await
                .map(|w| w.e_tag),
            (None, Some(new)) => commit::replace(store.as_ref(), location, new.clone(), &read)
                .await
                .map(|w| w.e_tag),
            (None, None) => commit::delete(store.as_ref(), location, &read)
                .await
                .map(|()| None),
        };
        match result {
            Ok(etag) => {
                attempt.crash_if(
                    &attempt.commits,
                    attempt.failpoint.after_commit,
                    "after_commit",
                );
                if let Some(a) = record.after.as_mut() {
                    a.etag = etag;
                }
                tracing::info!(
                    table = %name,
                    file = %rel,
                    rows_removed = record.rows_removed,
                    deleted = record.after.is_none(),
                    row_groups_copied = rewritten.row_groups_copied,
                    row_groups_rewritten = rewritten.row_groups_rewritten,
                    chunks_spliced = rewritten.chunks_spliced,
                    pages_copied = rewritten.pages_copied,
                    pages_rewritten = rewritten.pages_rewritten,
                    read_by_ranges = ranged,
                    "file purged"
                );
                entry.pending = None;
                entry.done.push(record);
                attempt.journal.put(entry).await?;
                return Ok(());
            }
            Err(Error::Conflict { .. }) if try_no < CONFLICT_RETRIES => {
                entry.pending = None;
                attempt.journal.put(entry).await?;
                tracing::warn!(table = %name, file = %rel, try_no, "file changed while purging: reading it again");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        path: location.to_string(),
    })
}
