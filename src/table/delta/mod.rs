//! Delta Lake tables (`format = "delta"`), through delta-rs: the files of the log's current
//! snapshot (what `plan` scans, never a listing), the statistics of a new file's `add` from its
//! own footer ([`stats`]), and a purge's changes to a table as one transaction ([`commit`]).
//!
//! Everything else (matching, the Parquet-level rewrite) is what plain Parquet tables get. A
//! Delta file is never replaced in place: its rewrite goes to a new path next to it, and the
//! commit removes the old path and adds the new one. Under column mapping (`name` or `id`) the
//! spec's columns are translated to the physical names the Parquet files use (see
//! [`Format::open`]), and a new file's statistics are keyed by them, as the protocol says.
//! What lakepurge cannot purge faithfully is refused with exit 2 before anything is written:
//! files with deletion vectors (their soft-deleted rows are still in the Parquet file), and
//! writer features delta-rs's commit path does not honour.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deltalake_core::kernel::{Add, DataType, MetadataValue, Remove, StructField, StructType};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::ObjectMeta;
use object_store::prefix::PrefixStore;

use super::{Changes, Committed, DataFile, Files, Format, Log, LogFile, Snapshot, Table};
use crate::error::{Error, Result};

pub mod commit;
pub mod old_log;
pub mod stats;

/// The Delta Lake format.
#[derive(Debug)]
pub struct Delta;

#[async_trait::async_trait]
impl Format for Delta {
    async fn open(&self, mut table: Table) -> Result<Table> {
        let snapshot = load(&table).await?;
        let delta = state(&table, &snapshot)?;
        let schema = delta
            .table
            .snapshot()
            .map_err(|e| error(&table, "reading the log", e))?
            .schema();
        table.spec = physical_spec(&table, &delta.configuration, &schema)?;
        Ok(table)
    }

    async fn files(&self, table: &Table) -> Result<Files> {
        let snapshot = load(table).await?;
        let version = snapshot.version;
        let files = snapshot.files.into_iter().map(|f| f.meta).collect();
        Ok((super::stream(files), Some(version)))
    }

    fn log(&self) -> Option<&dyn Log> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Log for Delta {
    fn entry(&self) -> &'static str {
        "_delta_log"
    }

    async fn snapshot(&self, table: &Table) -> Result<Snapshot> {
        load(table).await
    }

    fn key(&self, job: &str, run_id: &str) -> String {
        app_id(job, run_id)
    }

    fn new_path(&self, old: &str, run_id: &str) -> String {
        super::new_path(old, run_id)
    }

    async fn commit(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        changes: Changes,
    ) -> Result<Committed> {
        commit::commit(table, snapshot, state(table, snapshot)?, changes).await
    }

    async fn find(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        key: &str,
        since: u64,
    ) -> Result<Option<u64>> {
        commit::find(table, state(table, snapshot)?, key, since).await
    }

    async fn history(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<ObjectMeta>> {
        history_files(table, snapshot, exclude).await
    }

    async fn log_files(&self, table: &Table) -> Result<Vec<LogFile>> {
        old_log::log_files(&table.location).await
    }

    async fn statistics(&self, table: &Table, file: &LogFile) -> Result<Vec<serde_json::Value>> {
        old_log::statistics(table, file).await
    }

    async fn expire(&self, table: &Table) -> Result<u64> {
        old_log::expire(table).await
    }
}

/// What the snapshot of a Delta table keeps of delta-rs's state: what a commit against that
/// version needs.
pub struct State {
    pub table: DeltaTable,
    pub version: u64,
    /// The table's properties (`delta.*` keys), as its metadata holds them.
    pub configuration: HashMap<String, String>,
    /// The `remove` action that takes each file (by relative path) out of the table.
    pub removes: HashMap<String, Remove>,
}

impl State {
    /// The log store commits go through.
    pub fn log_store(&self) -> LogStoreRef {
        self.table.log_store()
    }
}

/// The Delta state of a snapshot [`load`] made.
pub fn state<'a>(table: &Table, snapshot: &'a Snapshot) -> Result<&'a State> {
    snapshot.state.downcast_ref::<State>().ok_or_else(|| {
        Error::Internal(format!(
            "table {}: a snapshot not read from a Delta log",
            table.spec.name
        ))
    })
}

/// An error of delta-rs about `table`: a storage failure underneath stays a storage error (exit
/// 1, retried); a log that cannot be read as a Delta table is bad input (exit 2).
pub fn error(table: &Table, what: &str, e: DeltaTableError) -> Error {
    match e {
        DeltaTableError::ObjectStore { source } => {
            Error::store(format!("{what} of Delta table {}", table.location), source)
        }
        DeltaTableError::NotATable(_) => Error::table(
            &table.spec.name,
            &table.location,
            "format = \"delta\" but there is no Delta log (_delta_log/) here: give the table's \
             root folder, or format = \"parquet\" for a plain Parquet table",
        ),
        e => Error::Delta {
            table: table.spec.name.clone(),
            context: format!("{what} at {}", table.location),
            source: Box::new(e),
        },
    }
}

/// A log store over the table's own store (so `file://` gets lakepurge's conditional writes
/// and every store the same code), rooted at the table's location.
fn log_store(table: &Table) -> LogStoreRef {
    log_store_at(&table.location)
}

/// [`log_store`] for the table at `location`.
fn log_store_at(location: &crate::store::Location) -> LogStoreRef {
    let root = Arc::clone(&location.store);
    let prefixed: Arc<dyn object_store::ObjectStore> =
        Arc::new(PrefixStore::new(Arc::clone(&root), location.prefix.clone()));
    default_logstore(prefixed, root, &location.url, &StorageConfig::default())
}

/// For checks of a table whose log no longer holds a commit (cleaned up to a later
/// checkpoint): the version the table's state records for the application transaction
/// `app_id` (a checkpoint keeps every transaction), if any.
pub async fn transaction_version(
    location: &crate::store::Location,
    app_id: &str,
) -> std::result::Result<Option<i64>, DeltaTableError> {
    let mut delta = DeltaTable::new(log_store_at(location));
    delta.load().await?;
    let state = delta.snapshot()?;
    state
        .transaction_version(delta.log_store().as_ref(), app_id)
        .await
}

/// Reads the table's log at its latest version. Refuses (exit 2) what lakepurge cannot purge
/// faithfully.
pub async fn load(table: &Table) -> Result<Snapshot> {
    let mut delta = DeltaTable::new(log_store(table));
    delta
        .load()
        .await
        .map_err(|e| error(table, "reading the log", e))?;
    let state = delta
        .snapshot()
        .map_err(|e| error(table, "reading the log", e))?;
    let metadata = state.metadata();
    let mut configuration = metadata.configuration().clone();
    physical_stats_columns(&mut configuration, &state.schema());
    refuse_unsupported_features(table, state)?;
    refuse_unhonoured(table, &configuration, &state.schema())?;
    let mut files = Vec::new();
    let mut removes = HashMap::new();
    let engine = delta.log_store().engine(None);
    for view in state.log_data().iter() {
        let path = view.path().to_string();
        let (hidden_rows, hidden_by) = match view.deletion_vector_descriptor() {
            Some(_) if table.spec.action == crate::spec::Action::Redact => {
                return Err(Error::table(
                    &table.spec.name,
                    format!("{}{path}", table.location.url),
                    "action = \"redact\" on a file with a deletion vector: a rewrite must drop \
                     the rows the vector hides and set the erased rows' columns to null, which \
                     lakepurge does not do in one rewrite. Nothing was written. Use action = \
                     \"delete\", or materialize the vectors first (REORG TABLE ... APPLY \
                     (PURGE))",
                ));
            }
            Some(dv) => {
                let (rows, by) = deletion_vector(table, &path, dv, &engine).await?;
                (Some(Arc::new(rows)), by)
            }
            None => (None, None),
        };
        let location = table.location.child(&path);
        removes.insert(path.clone(), view.remove_action(true));
        files.push(DataFile {
            meta: ObjectMeta {
                location,
                last_modified: view.modification_datetime().unwrap_or_default(),
                size: u64::try_from(view.size()).unwrap_or(0),
                e_tag: None,
                version: None,
            },
            partition_values: view.partition_values_map(),
            hidden_rows,
            hidden_by,
            path,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let version = state.version();
    Ok(Snapshot {
        version,
        files,
        state: Box::new(State {
            table: delta,
            version,
            configuration,
            removes,
        }),
    })
}

/// The rows a file's deletion vector (`dv`) marks deleted, decoded by delta-rs's kernel (from
/// the log inline, or from its own file), and that file relative to the table when it is one
/// under it.
async fn deletion_vector(
    table: &Table,
    file: &str,
    dv: deltalake_core::kernel::DeletionVectorDescriptor,
    engine: &Arc<dyn delta_kernel::Engine>,
) -> Result<(Vec<u64>, Option<String>)> {
    use delta_kernel::actions::deletion_vector::DeletionVectorDescriptor;
    let shown = format!("{}{file}", table.location.url);
    let bad = |e: delta_kernel::Error| {
        Error::table(
            &table.spec.name,
            &shown,
            format!("its deletion vector cannot be read: {e}"),
        )
    };
    let dv = DeletionVectorDescriptor::try_from(dv).map_err(bad)?;
    let root = table.location.url.clone();
    let by = dv
        .absolute_path(&root)
        .map_err(bad)?
        .and_then(|url| root.make_relative(&url))
        .filter(|rel| !rel.starts_with("../"))
        .map(|rel| {
            percent_encoding::percent_decode_str(&rel)
                .decode_utf8_lossy()
                .into_owned()
        });
    let storage = engine.storage_handler();
    // The kernel reads synchronously, through the engine's own executor.
    let rows = tokio::task::spawn_blocking(move || dv.row_indexes(storage, &root))
        .await
        .map_err(|e| Error::Internal(format!("reading the deletion vector of {shown}: {e}")))?
        .map_err(bad)?;
    Ok((rows, by))
}

/// How old a file no version of the log references (and no tombstone names) must be before it
/// is taken for history rather than a concurrent writer's file not committed yet.
pub const ORPHAN_MIN_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The table's history still on disk: Parquet files under the table that its current version
/// (`snapshot`) does not reference — files earlier commits removed (tombstones the log still
/// lists) and files no version references any more (older than [`ORPHAN_MIN_AGE`], so never a
/// writer's uncommitted file) — less `exclude` (the run's own removed files). Time travel to
/// the versions that still name them reads their rows back until VACUUM deletes them.
async fn history_files(
    table: &Table,
    snapshot: &Snapshot,
    exclude: &BTreeSet<String>,
) -> Result<Vec<ObjectMeta>> {
    use futures::StreamExt;
    let delta = state(table, snapshot)?;
    let log_store = delta.log_store();
    let state = delta
        .table
        .snapshot()
        .map_err(|e| error(table, "reading the log", e))?;
    let mut tombstones = std::collections::BTreeSet::new();
    {
        let mut stream = state.all_tombstones(log_store.as_ref());
        while let Some(t) = stream.next().await {
            let t = t.map_err(|e| error(table, "reading the log's removed files", e))?;
            tombstones.insert(t.path().into_owned());
        }
    }
    let now = chrono::Utc::now();
    let listed = table.location.list_files().await?;
    let mut history: Vec<ObjectMeta> = listed
        .into_iter()
        .filter(|m| {
            let rel = table.location.relative(&m.location);
            rel.ends_with(".parquet")
                && snapshot.file(&rel).is_none()
                && !exclude.contains(&rel)
                && (tombstones.contains(&rel) || now - m.last_modified > ORPHAN_MIN_AGE)
        })
        .collect();
    // Change data files (`_change_data/`, left by change data feed, on now or earlier): the
    // pre- and post-images of every changed row, read by `table_changes` until VACUUM.
    // Change data feed on is refused (see `refuse_unhonoured`), so none is being written.
    let changes: Vec<ObjectMeta> = table
        .location
        .store
        .list(Some(&table.location.child("_change_data")))
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing {}_change_data/", table.location.url), e))?;
    history.extend(
        changes
            .into_iter()
            .filter(|m| m.location.as_ref().ends_with(".parquet")),
    );
    Ok(history)
}

/// Column mapping (`delta.columnMapping.mode` = `name` or `id`): the table's columns (what a
/// spec names) are stored in Parquet under physical names (`col-<uuid>`, kept across renames),
/// given in the schema's field metadata. Returns the spec with every match and redact column
/// translated, segment by segment through structs and lists; unchanged without mapping.
fn physical_spec(
    table: &Table,
    configuration: &HashMap<String, String>,
    schema: &StructType,
) -> Result<crate::spec::TableSpec> {
    use crate::spec::ColumnPath;
    let mut spec = table.spec.clone();
    // Every column the spec names must be in the table's schema (a file may predate it, and
    // then holds nulls there; a name the schema lacks is a typo: exit 2).
    for path in spec.matches.iter().flat_map(|r| r.key_paths()) {
        physical_path(schema, &path)
            .map_err(|m| Error::table(&table.spec.name, &table.location, m))?;
    }
    for c in &spec.redact {
        physical_path(schema, std::slice::from_ref(c))
            .map_err(|m| Error::table(&table.spec.name, &table.location, m))?;
    }
    match configuration
        .get("delta.columnMapping.mode")
        .map(String::as_str)
    {
        None | Some("none") => return Ok(spec),
        Some("name" | "id") => {}
        Some(mode) => {
            return Err(Error::table(
                &table.spec.name,
                &table.location,
                format!("unknown column mapping mode delta.columnMapping.mode = {mode:?}"),
            ));
        }
    }
    let translate = |path: &ColumnPath| -> Result<ColumnPath> {
        physical_path(schema, &path.segments())
            .map(ColumnPath::Segments)
            .map_err(|m| Error::table(&table.spec.name, &table.location, m))
    };
    for rule in &mut spec.matches {
        if let Some(c) = rule.column.as_mut() {
            *c = translate(c)?;
        }
        for c in rule.columns.iter_mut().flatten() {
            *c = translate(c)?;
        }
    }
    for c in &mut spec.redact {
        if let Some(p) = physical_path(schema, std::slice::from_ref(c))
            .map_err(|m| Error::table(&table.spec.name, &table.location, m))?
            .pop()
        {
            *c = p;
        }
    }
    Ok(spec)
}

/// The physical names of the column at `path` (the table's names, from the top-level column
/// down through structs; lists are passed through, as match paths do).
fn physical_path(schema: &StructType, path: &[String]) -> std::result::Result<Vec<String>, String> {
    let shown = path.join(".");
    let mut fields = schema;
    let mut out = Vec::with_capacity(path.len());
    for (i, name) in path.iter().enumerate() {
        let field = fields.field(name).ok_or_else(|| {
            format!(
                "column {shown:?}: the Delta table's schema has no column {name:?} there \
                 (columns: {})",
                fields
                    .fields()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        out.push(physical_name(field).to_string());
        if i + 1 == path.len() {
            break;
        }
        let mut ty = field.data_type();
        while let DataType::Array(a) = ty {
            ty = &a.element_type;
        }
        fields = match ty {
            DataType::Struct(s) => s,
            other => {
                return Err(format!(
                    "column {shown:?}: {name:?} is not a struct ({other:?})"
                ));
            }
        };
    }
    Ok(out)
}

/// Under column mapping, `delta.dataSkippingStatsColumns` names the table's columns while a
/// new file's footer (what its statistics come from) has the physical names: translated, so
/// the statistics cover the columns the table asks for. A name not in the schema is kept.
fn physical_stats_columns(configuration: &mut HashMap<String, String>, schema: &StructType) {
    let mapped = matches!(
        configuration
            .get("delta.columnMapping.mode")
            .map(String::as_str),
        Some("name" | "id")
    );
    let Some(named) = configuration
        .get("delta.dataSkippingStatsColumns")
        .filter(|_| mapped)
    else {
        return;
    };
    let physical: Vec<String> = named
        .split(',')
        .map(|c| {
            let path: Vec<String> = c
                .trim()
                .split('.')
                .map(|s| s.trim_matches('`').to_string())
                .collect();
            physical_path(schema, &path).map_or_else(|_| c.trim().to_string(), |p| p.join("."))
        })
        .collect();
    configuration.insert("delta.dataSkippingStatsColumns".into(), physical.join(","));
}

/// A field's physical name: its `delta.columnMapping.physicalName`, else its name.
fn physical_name(field: &StructField) -> &str {
    match field.metadata.get("delta.columnMapping.physicalName") {
        Some(MetadataValue::String(p)) => p,
        _ => field.name(),
    }
}

/// The table's protocol (reader and writer versions, table features, append-only) checked by
/// delta-rs's own checker against the commit a purge makes (a DELETE removing files), before
/// anything is written: a feature the commit path cannot honour (change data feed, CHECK
/// constraints, generated columns, identity columns, ...) is refused with exit 2 by
/// `validate`, `plan` and `purge`, rather than failing at the commit after the new files were
/// written, on every rerun.
fn refuse_unsupported_features(
    table: &Table,
    state: &deltalake_core::table::state::DeltaTableState,
) -> Result<()> {
    use deltalake_core::kernel::Action;
    use deltalake_core::kernel::transaction::PROTOCOL;
    use deltalake_core::protocol::DeltaOperation;
    let probe = [Action::Remove(Remove {
        path: "probe.parquet".into(),
        data_change: true,
        ..Default::default()
    })];
    let operation = DeltaOperation::Delete { predicate: None };
    PROTOCOL.can_commit(state, &probe, &operation).map_err(|e| {
        let protocol = state.protocol();
        Error::table(
            &table.spec.name,
            &table.location,
            format!(
                "the Delta table's protocol (reader {}, writer {}) needs what lakepurge's commit \
                 path (delta-rs) cannot honour: {e}. Nothing was written. Purge it with an engine \
                 that supports those features, or drop them from the table",
                protocol.min_reader_version(),
                protocol.min_writer_version()
            ),
        )
    })
}

/// What delta-rs's commit path accepts but a purge could not keep true, refused with exit 2
/// before anything is written:
/// - change data feed (`delta.enableChangeDataFeed`): its `_change_data/` files keep the rows
///   a purge erases, and the purge's own commit would show erased rows as deleted changes;
/// - with `action = "redact"`, a column set to null that the table says cannot be (declared
///   NOT NULL, or an invariant), a CHECK constraint, or a generated column: nulling a value
///   could break them. Deleting rows breaks none of these, so `delete` is allowed.
fn refuse_unhonoured(
    table: &Table,
    configuration: &HashMap<String, String>,
    schema: &StructType,
) -> Result<()> {
    let refuse = |why: String| Err(Error::table(&table.spec.name, &table.location, why));
    if configuration
        .get("delta.enableChangeDataFeed")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return refuse(
            "the Delta table has change data feed on (delta.enableChangeDataFeed = true): its \
             _change_data/ files keep every row a purge erases, which lakepurge does not purge. \
             Nothing was written. Turn change data feed off (ALTER TABLE ... SET TBLPROPERTIES \
             ('delta.enableChangeDataFeed' = 'false')) and remove _change_data/ with VACUUM \
             first"
                .into(),
        );
    }
    if table.spec.action != crate::spec::Action::Redact {
        return Ok(());
    }
    if let Some(check) = configuration
        .keys()
        .find(|k| k.starts_with("delta.constraints."))
    {
        return refuse(format!(
            "action = \"redact\" on a Delta table with a CHECK constraint ({check}): setting \
             columns to null could break it. Nothing was written. Use action = \"delete\""
        ));
    }
    for field in schema.fields() {
        if field.metadata.contains_key("delta.generationExpression") {
            return refuse(format!(
                "action = \"redact\" on a Delta table with a generated column ({}): setting its \
                 source to null would leave it inconsistent. Nothing was written. Use action = \
                 \"delete\"",
                field.name()
            ));
        }
    }
    for name in &table.spec.redact {
        // The spec's name, or the physical one once opened (see `physical_spec`).
        let Some(field) = schema
            .fields()
            .find(|f| f.name() == name || physical_name(f) == name)
        else {
            continue;
        };
        if !field.is_nullable() || field.metadata.contains_key("delta.invariants") {
            return refuse(format!(
                "redact: column {name:?} of the Delta table cannot be set to null (NOT NULL or \
                 an invariant). Nothing was written"
            ));
        }
    }
    Ok(())
}

/// The `add` of a new file written in place of `old` at `path` (relative to the table,
/// decoded), `size` bytes, with `stats` (JSON) from its own footer.
fn add_for(old: &DataFile, path: &str, size: u64, stats: String) -> Add {
    Add {
        // Decoded, as delta-rs holds paths: it percent-encodes them when writing the log.
        path: path.to_string(),
        partition_values: old.partition_values.clone(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// The application id of a run's transaction in the table's log.
fn app_id(job: &str, run_id: &str) -> String {
    format!("lakepurge:{job}:{run_id}")
}
