//! Stage 2a, holds: the lawful exceptions to erasure (GDPR Art. 17(3)) a run honours.
//!
//! The hold dataset (`[holds]`, Parquet or NDJSON, append-only like the events) lists holds:
//! each row of a hold id places it on a subject (`subject_type`, `subject_id`), in one table
//! (`table`) or every table (no `table`), with a `basis` and a `reference`, from `placed_at`;
//! a row of the same hold id carrying `released_at` releases the whole hold from that time. A
//! run reads the dataset with DataFusion (each file on its own, so that an error names its file
//! and row), pins the files it read, and applies the holds in force at its start: a held
//! subject's rows are kept in the tables the hold covers and erased everywhere else. The plan's
//! matcher matches each table's rows against the subjects held there ([`Held::subjects_in`]):
//! a hold keeps the subject it names, not every subject of that subject's event. Its id is
//! matched as the table's rules match an event's: converted to the key column's type,
//! normalised as the rule says, a composite id by its parts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::{self, EventFile, Events};
use crate::spec::{Basis, EventFormat, HoldsSpec, Job, Retain, parse_time};
use crate::store::Location;

/// One hold: the subjects it keeps, where, on what ground, and since and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub hold_id: String,
    pub basis: Basis,
    pub reference: String,
    pub placed_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    /// (subject type, subject id, table: `None` for every table).
    pub subjects: Vec<(String, String, Option<String>)>,
}

impl Hold {
    /// Whether the hold is in force at `now`.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.placed_at <= now && self.released_at.is_none_or(|r| r > now)
    }
}

/// The hold dataset as a run read it.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    pub location: String,
    pub files: Vec<EventFile>,
    pub rows: u64,
    /// Every hold of the dataset, by hold id.
    pub holds: Vec<Hold>,
}

/// What the manifest records of the hold dataset a run applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HoldsRecord {
    pub location: String,
    pub files: Vec<EventFile>,
    pub rows: u64,
    /// Holds in force at the run's start, and holds released by then.
    pub in_force: u64,
    pub released: u64,
    /// The holds in force that kept rows in this run, by hold id (never a subject id).
    pub applied: BTreeMap<String, AppliedHold>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppliedHold {
    pub basis: Basis,
    pub reference: String,
    pub placed_at: String,
}

/// The location of `job`'s hold dataset.
pub fn location(job: &Job, spec: &HoldsSpec) -> Result<Location> {
    Location::parse(&spec.location, &job.dir, &spec.storage_options)
        .map_err(|m| Error::spec(job.file.display(), format!("holds.location: {m}")))
}

/// Reads `job`'s hold dataset (restricted to the files of `snapshot` when given: those a run
/// pinned); `None` when the job has no `[holds]`.
pub async fn load(job: &Job, snapshot: Option<&[EventFile]>) -> Result<Option<Holds>> {
    let Some(spec) = &job.holds else {
        return Ok(None);
    };
    let loc = location(job, spec)?;
    let shown = loc.url.to_string();
    let mut listed = events::list_format(spec.format, &loc).await?;
    if let Err(why) = events::pin_exact(&mut listed, snapshot) {
        return Err(Error::holds(
            &shown,
            format!(
                "hold file {why}: the run applies the hold files as it first read them; hold \
                 files are append-only (add rows in new files)"
            ),
        ));
    }
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    ctx.register_object_store(&loc.store_url(), Arc::clone(&loc.store));
    let mut rows = Vec::new();
    for (meta, file) in &listed {
        let url = loc.object_url(&meta.location);
        read_file(&ctx, spec, &url, &file.path, &shown, &mut rows).await?;
    }
    let count = rows.len() as u64;
    let holds = merge(rows, &shown)?;
    Ok(Some(Holds {
        location: shown,
        files: listed.into_iter().map(|(_, f)| f).collect(),
        rows: count,
        holds,
    }))
}

impl Holds {
    /// The record of the holds applied at `now`, those of `applied` having kept rows.
    pub fn record(&self, now: DateTime<Utc>, applied: &BTreeSet<String>) -> HoldsRecord {
        HoldsRecord {
            location: self.location.clone(),
            files: self.files.clone(),
            rows: self.rows,
            in_force: self.holds.iter().filter(|h| h.in_force(now)).count() as u64,
            released: self
                .holds
                .iter()
                .filter(|h| h.released_at.is_some_and(|r| r <= now))
                .count() as u64,
            applied: self
                .holds
                .iter()
                .filter(|h| applied.contains(&h.hold_id))
                .map(|h| {
                    (
                        h.hold_id.clone(),
                        AppliedHold {
                            basis: h.basis,
                            reference: h.reference.clone(),
                            placed_at: h.placed_at.to_rfc3339(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Reads `job`'s hold dataset (the files of `snapshot` when given) and attaches the holds in
/// force at `now` to `events`, for the plan's matcher.
pub async fn attach(
    job: &Job,
    events: &mut Events,
    snapshot: Option<&[EventFile]>,
    now: DateTime<Utc>,
) -> Result<()> {
    let holds = load(job, snapshot).await?;
    if holds.is_none() && job.tables.iter().all(|t| t.retain.is_none()) {
        return Ok(());
    }
    let held = Held::new(job, holds, now)?;
    if let Some(d) = &held.dataset {
        tracing::info!(
            location = %d.location,
            files = d.files.len(),
            rows = d.rows,
            in_force = held.holds.len(),
            tables_holding = held.subjects.len(),
            "read holds"
        );
    }
    events.holds = Some(Arc::new(held));
    Ok(())
}

/// One row of the dataset, its columns as text.
struct Row {
    file: String,
    line: usize,
    hold_id: String,
    subject_type: Option<String>,
    subject_id: Option<String>,
    table: Option<String>,
    basis: Option<String>,
    reference: Option<String>,
    placed_at: Option<String>,
    released_at: Option<String>,
}

/// Reads one hold file's rows (its columns renamed, cast to text) into `rows`.
async fn read_file(
    ctx: &SessionContext,
    spec: &HoldsSpec,
    url: &str,
    rel: &str,
    shown: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let err = |m: String| Error::holds(shown, format!("{rel}: {m}"));
    // A reader's error may quote a value it could not decode: never shown (a subject id).
    let derr =
        |e: datafusion::error::DataFusionError| err(crate::error::without_values(&e.to_string()));
    let df = open_file(ctx, spec.format, url, rel).await.map_err(derr)?;
    let c = &spec.columns;
    // (standard name, the file's name, needed by a row that places a hold)
    let wanted: [(&str, &String, bool); 8] = [
        ("hold_id", &c.hold_id, true),
        ("subject_type", &c.subject_type, true),
        ("subject_id", &c.subject_id, true),
        ("table", &c.table, false),
        ("basis", &c.basis, true),
        ("reference", &c.reference, false),
        ("placed_at", &c.placed_at, true),
        ("released_at", &c.released_at, false),
    ];
    let schema = df.schema().as_arrow().clone();
    let present: Vec<Option<usize>> = wanted
        .iter()
        .map(|(_, name, _)| schema.index_of(name).ok())
        .collect();
    // The first column a row placing a hold needs that the file lacks.
    let missing = wanted
        .iter()
        .zip(&present)
        .find(|((_, _, needed), at)| *needed && at.is_none())
        .map(|(w, _)| w);
    let absent = |(standard, name, _): &(&str, &String, bool)| {
        err(format!(
            "missing column {name:?} (holds.columns.{standard}); the file has: {}",
            crate::error::column_names(&schema)
        ))
    };
    // Every row needs a hold id; a file of releases only needs no other column.
    if present[0].is_none() {
        return Err(absent(&wanted[0]));
    }
    let batches = df.collect().await.map_err(derr)?;
    let first = rows.len();
    let mut line = 0;
    for batch in batches {
        add_rows(&batch, &present, rel, &mut line, rows).map_err(err)?;
    }
    if let Some(w) = missing.filter(|_| rows[first..].iter().any(|r| r.released_at.is_none())) {
        return Err(absent(w));
    }
    Ok(())
}

/// The frame of one hold file, read as its format says (NDJSON gzipped by its `.gz` name).
async fn open_file(
    ctx: &SessionContext,
    format: EventFormat,
    url: &str,
    rel: &str,
) -> datafusion::error::Result<datafusion::prelude::DataFrame> {
    match format {
        EventFormat::Parquet => {
            ctx.read_parquet(url, ParquetReadOptions::default().file_extension(""))
                .await
        }
        EventFormat::Ndjson => {
            let compression = if rel.ends_with(".gz") {
                FileCompressionType::GZIP
            } else {
                FileCompressionType::UNCOMPRESSED
            };
            let opts = JsonReadOptions::default()
                .file_extension("")
                .file_compression_type(compression);
            ctx.read_json(url, opts).await
        }
    }
}

/// The rows of one batch of hold file `rel` (the standard columns at `present`, as text,
/// trimmed, empty as none), numbered on from `line`. A row without a hold id is an error.
fn add_rows(
    batch: &arrow::array::RecordBatch,
    present: &[Option<usize>],
    rel: &str,
    line: &mut usize,
    rows: &mut Vec<Row>,
) -> std::result::Result<(), String> {
    // A nested column (a list, a struct) would be cast to text no rule can read: refused,
    // never a hold that silently holds nothing.
    if let Some(c) = present
        .iter()
        .flatten()
        .find(|&&i| batch.column(i).data_type().is_nested())
    {
        return Err(format!(
            "column {:?} is {}: expected text, a number or a time (a composite id is a JSON \
             array written as text, e.g. [\"t1\", 9])",
            batch.schema().field(*c).name(),
            batch.column(*c).data_type()
        ));
    }
    let text: Vec<Option<arrow::array::StringArray>> = present
        .iter()
        .map(|at| {
            at.map(|i| {
                arrow::compute::cast(batch.column(i), &DataType::Utf8)
                    .map(|a| a.as_string::<i32>().clone())
            })
            .transpose()
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("a column is not text, a number or a time: {e}"))?;
    for r in 0..batch.num_rows() {
        *line += 1;
        let get = |k: usize| {
            text[k]
                .as_ref()
                .filter(|a| a.is_valid(r))
                .map(|a| a.value(r).trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(hold_id) = get(0) else {
            return Err(format!("row {line}: hold_id is empty"));
        };
        rows.push(Row {
            file: rel.to_string(),
            line: *line,
            hold_id,
            subject_type: get(1),
            subject_id: get(2),
            table: get(3),
            basis: get(4),
            reference: get(5),
            placed_at: get(6),
            released_at: get(7),
        });
    }
    Ok(())
}

/// The holds of `rows`: a row without `released_at` places its hold on its subject (every
/// field but `table` and `reference` required); a row with it releases the hold.
fn merge(rows: Vec<Row>, shown: &str) -> Result<Vec<Hold>> {
    let mut holds: BTreeMap<String, Hold> = BTreeMap::new();
    let mut releases: Vec<(String, DateTime<Utc>)> = Vec::new();
    for row in rows {
        let at = |m: String| {
            Error::holds(
                shown,
                format!("{}, row {} (hold {}): {m}", row.file, row.line, row.hold_id),
            )
        };
        let time = |field: &str, v: &str| {
            parse_time(v).ok_or_else(|| {
                at(format!(
                    "{field} {v:?} is not a time: expected RFC 3339 or YYYY-MM-DD"
                ))
            })
        };
        if let Some(r) = &row.released_at {
            releases.push((row.hold_id.clone(), time("released_at", r)?));
            continue;
        }
        let (Some(subject_type), Some(subject_id)) = (&row.subject_type, &row.subject_id) else {
            return Err(at(
                "subject_type and subject_id are required where released_at is empty".into(),
            ));
        };
        let Some(basis_text) = &row.basis else {
            return Err(at("basis is empty".into()));
        };
        let basis = crate::spec::Basis::parse(basis_text).ok_or_else(|| {
            at(format!(
                "basis {basis_text:?} is not one of {}",
                Basis::ALL.map(Basis::name).join(", ")
            ))
        })?;
        let Some(placed) = &row.placed_at else {
            return Err(at("placed_at is empty".into()));
        };
        let placed_at = time("placed_at", placed)?;
        let subject = (subject_type.clone(), subject_id.clone(), row.table.clone());
        match holds.get_mut(&row.hold_id) {
            Some(h) => {
                if h.basis != basis {
                    return Err(at(format!(
                        "basis {} differs from the hold's earlier rows ({})",
                        basis.name(),
                        h.basis.name()
                    )));
                }
                h.placed_at = h.placed_at.min(placed_at);
                h.subjects.push(subject);
            }
            None => {
                holds.insert(
                    row.hold_id.clone(),
                    Hold {
                        hold_id: row.hold_id.clone(),
                        basis,
                        reference: row.reference.clone().unwrap_or_default(),
                        placed_at,
                        released_at: None,
                        subjects: vec![subject],
                    },
                );
            }
        }
    }
    for (id, at) in releases {
        if let Some(h) = holds.get_mut(&id) {
            h.released_at = Some(h.released_at.map_or(at, |r| r.min(at)));
        }
    }
    Ok(holds.into_values().collect())
}

/// The holds on one subject: (index into the holds in force, its table or `None` for every
/// table).
type HoldsOn = Vec<(u32, Option<String>)>;

/// Which events' subjects are held, and by which holds: the holds in force at a run's start
/// matched against the run's events.
#[derive(Debug)]
pub struct Held {
    /// Per table name: the held subjects themselves. A hold keeps the rows of the subject it
    /// names, not those of another subject the same event names.
    subjects: HashMap<String, HeldSubjects>,
    /// The holds in force, in hold id order.
    pub holds: Vec<Hold>,
    /// The run's start: the time holds and exemptions are in force at.
    pub now: DateTime<Utc>,
    /// The dataset they were read from (none: the job has no `[holds]`, only exemptions).
    pub dataset: Option<Holds>,
}

/// The subjects held in one table, as events of their own: pseudo event `n` is one subject a
/// hold in force names, kept by the holds `holds[n]`. The plan matches rows against
/// them with the table's rules, as it matches the run's events: a row is kept when it holds a
/// held subject's key.
#[derive(Debug)]
pub struct HeldSubjects {
    pub events: Events,
    /// Per pseudo event: the holds (indices into [`Held::holds`]) keeping it here.
    pub holds: Vec<Vec<u32>>,
    /// (subject type, subject id as the hold wrote it), for `verify --deep`.
    pub ids: std::collections::HashSet<(String, String)>,
}

/// What the plan's matcher consults for one table: whether a hold names a subject there,
/// and the table's own exemption.
#[derive(Debug, Default)]
pub struct TableHolds {
    /// The basis of each hold, by index.
    pub basis: Vec<Basis>,
    /// The table's exemption (`retain`) in force: every matched row is kept.
    pub retain: Option<Basis>,
    pub retain_record: Option<Retain>,
    /// Whether a hold in force names a subject in the table (see [`Held::subjects_in`]).
    pub subjects: bool,
}

impl TableHolds {
    /// Whether nothing is held in the table.
    pub fn is_empty(&self) -> bool {
        self.retain.is_none() && !self.subjects
    }
}

/// The hold index a table's exemption is counted under.
pub const RETAIN: u32 = u32::MAX;

/// Matched rows kept under holds: how many, per event (with the holds that kept them) and per
/// basis (a row kept on two bases counts under each).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldTally {
    pub rows: u64,
    /// Per event index: rows, and the holds (indices, or [`RETAIN`]).
    pub per_event: BTreeMap<u32, (u64, BTreeSet<u32>)>,
    pub by_basis: BTreeMap<Basis, u64>,
}

impl HeldTally {
    /// One kept row, matched by `events`, kept by `holds` on `bases`.
    pub fn add_row(
        &mut self,
        events: &BTreeSet<u32>,
        holds: &BTreeSet<u32>,
        bases: &BTreeSet<Basis>,
    ) {
        self.rows += 1;
        for e in events {
            let (n, hs) = self.per_event.entry(*e).or_default();
            *n += 1;
            hs.extend(holds);
        }
        for b in bases {
            *self.by_basis.entry(*b).or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &HeldTally) {
        self.rows += other.rows;
        for (e, (n, hs)) in &other.per_event {
            let (m, mine) = self.per_event.entry(*e).or_default();
            *m += n;
            mine.extend(hs);
        }
        for (b, n) in &other.by_basis {
            *self.by_basis.entry(*b).or_default() += n;
        }
    }
}

/// What a table's record says of the rows kept in it: counts per basis and per event, the
/// holds (by id, never a subject id) and the exemption that kept them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeldRecord {
    pub rows: u64,
    /// Rows per basis (a row kept on two bases counts under each).
    pub by_basis: BTreeMap<Basis, u64>,
    /// The table's exemption, when it kept the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<Retain>,
    /// The holds that kept rows here.
    pub hold_ids: Vec<String>,
    /// Per event id: the rows of its subject kept here, and by what.
    pub per_event: BTreeMap<String, HeldEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeldEvent {
    pub rows: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hold_ids: Vec<String>,
    /// Kept by the table's exemption.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retained: bool,
}

impl HeldRecord {
    /// Adds `other` (another shard's, or the files a final step planned) to this record.
    pub fn merge(&mut self, other: &HeldRecord) {
        self.rows += other.rows;
        for (b, n) in &other.by_basis {
            *self.by_basis.entry(*b).or_default() += n;
        }
        if self.retain.is_none() {
            self.retain.clone_from(&other.retain);
        }
        let ids: BTreeSet<String> = self
            .hold_ids
            .drain(..)
            .chain(other.hold_ids.iter().cloned())
            .collect();
        self.hold_ids = ids.into_iter().collect();
        for (e, h) in &other.per_event {
            let mine = self.per_event.entry(e.clone()).or_default();
            mine.rows += h.rows;
            mine.retained |= h.retained;
            let ids: BTreeSet<String> = mine
                .hold_ids
                .drain(..)
                .chain(h.hold_ids.iter().cloned())
                .collect();
            mine.hold_ids = ids.into_iter().collect();
        }
    }
}

impl HeldSubjects {
    /// The subjects the holds in force name (`holds`, by index) that they keep in table
    /// `name`, as the holds wrote them, as pseudo events. They are matched with the table's
    /// rules like any subject (ids converted to the key column's type, normalised as the rule
    /// says), so a hold keeps the rows an event naming the same subject in another spelling
    /// (`07` for `7`) would erase.
    fn in_table(name: &str, holds: &[Hold]) -> Result<Option<HeldSubjects>> {
        let found: Vec<(&str, &str, HoldsOn)> = holds
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                h.subjects
                    .iter()
                    .map(move |(ty, id, t)| (ty.as_str(), id.as_str(), vec![(i as u32, t.clone())]))
            })
            .collect();
        let mut by_type: BTreeMap<&str, Vec<(String, Vec<u32>)>> = BTreeMap::new();
        for (ty, id, hs) in &found {
            let here: Vec<u32> = hs
                .iter()
                .filter(|(_, t)| t.as_deref().is_none_or(|t| t == name))
                .map(|(h, _)| *h)
                .collect();
            if !here.is_empty() {
                by_type.entry(ty).or_default().push((id.to_string(), here));
            }
        }
        if by_type.is_empty() {
            return Ok(None);
        }
        // Pseudo events are numbered over the types in this order (see `Events::from_subjects`).
        let mut holds = Vec::new();
        let mut ids = std::collections::HashSet::new();
        let mut lists: Vec<(&str, Vec<String>)> = Vec::new();
        for (ty, subjects) in by_type {
            let mut list = Vec::with_capacity(subjects.len());
            for (id, hs) in subjects {
                ids.insert((ty.to_string(), id.clone()));
                holds.push(hs);
                list.push(id);
            }
            lists.push((ty, list));
        }
        let events = Events::from_subjects(
            "the held subjects",
            lists.iter().map(|(ty, l)| (*ty, l.as_slice())),
        )?;
        Ok(Some(HeldSubjects { events, holds, ids }))
    }
}

impl Held {
    /// The record of `tally` (a table's kept rows, see [`crate::plan::Matcher`]), event indices
    /// named from `events`; `None` when nothing was kept.
    pub fn record(
        &self,
        tally: &HeldTally,
        events: &Events,
        here: &TableHolds,
    ) -> Result<Option<HeldRecord>> {
        if tally.rows == 0 {
            return Ok(None);
        }
        let indices: Vec<u32> = tally.per_event.keys().copied().collect();
        let names = events.event_ids.names(&indices)?;
        let hold_id = |h: &u32| self.holds.get(*h as usize).map(|h| h.hold_id.clone());
        let mut all = BTreeSet::new();
        let per_event = names
            .into_iter()
            .zip(tally.per_event.values())
            .map(|(name, (rows, holds))| {
                let ids: Vec<String> = holds.iter().filter_map(hold_id).collect();
                all.extend(ids.iter().cloned());
                let event = HeldEvent {
                    rows: *rows,
                    hold_ids: ids,
                    retained: holds.contains(&RETAIN),
                };
                (name, event)
            })
            .collect();
        Ok(Some(HeldRecord {
            rows: tally.rows,
            by_basis: tally.by_basis.clone(),
            retain: here.retain_record.clone(),
            hold_ids: all.into_iter().collect(),
            per_event,
        }))
    }

    /// The holds of `holds` in force at `now`, and the subjects they hold in each table of
    /// `job` (a hold naming a table the job does not have is refused: a typo would erase what
    /// it holds).
    pub fn new(job: &Job, holds: Option<Holds>, now: DateTime<Utc>) -> Result<Held> {
        let Some(holds) = holds else {
            return Ok(Held {
                subjects: HashMap::new(),
                holds: Vec::new(),
                now,
                dataset: None,
            });
        };
        let in_force: Vec<Hold> = holds
            .holds
            .iter()
            .filter(|h| h.in_force(now))
            .cloned()
            .collect();
        check_tables(job, &in_force, &holds.location)?;
        let mut held = Held {
            subjects: HashMap::new(),
            holds: in_force,
            now,
            dataset: Some(holds),
        };
        for table in &job.tables {
            if let Some(subjects) = HeldSubjects::in_table(&table.name, &held.holds)? {
                held.subjects.insert(table.name.clone(), subjects);
            }
        }
        Ok(held)
    }

    /// The subjects held in table `name`, none when there is none.
    pub fn subjects_in(&self, name: &str) -> Option<&HeldSubjects> {
        self.subjects.get(name)
    }

    /// Whether `spec`'s exemption is in force: the table is searched and counted, never
    /// changed.
    pub fn retains(&self, spec: &crate::spec::TableSpec) -> bool {
        spec.retain.as_ref().is_some_and(|r| r.in_force(self.now))
    }

    /// What is held in `table` (its spec's exemption in force included).
    pub fn for_table(&self, spec: &crate::spec::TableSpec) -> TableHolds {
        let now = self.now;
        let retain = spec.retain.clone().filter(|r| r.in_force(now));
        TableHolds {
            basis: self.holds.iter().map(|h| h.basis).collect(),
            retain: retain.as_ref().map(|r| r.basis),
            retain_record: retain,
            subjects: self.subjects.contains_key(&spec.name),
        }
    }
}

/// Refuses a hold of `in_force` naming a table `job` does not have (a typo would erase what
/// it holds).
fn check_tables(job: &Job, in_force: &[Hold], location: &str) -> Result<()> {
    let tables: BTreeSet<&str> = job.tables.iter().map(|t| t.name.as_str()).collect();
    for h in in_force {
        for (_, _, table) in &h.subjects {
            if let Some(t) = table.as_deref().filter(|t| !tables.contains(t)) {
                return Err(Error::holds(
                    location,
                    format!(
                        "hold {} names table {t:?}, which job {} does not have (the \
                         tables are: {}); fix the hold's table, or leave it empty to hold \
                         the subject in every table",
                        h.hold_id,
                        job.name,
                        tables.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}
