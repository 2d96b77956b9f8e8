//! Apache Iceberg tables (`format = "iceberg"`), through their catalog: the files of the
//! current snapshot's manifests (what `plan` scans, never a listing), a purge's changes as one
//! copy-on-write snapshot (`overwrite`) swapped in with the catalog's compare-and-swap
//! ([`commit`]), statistics of a new file from its own footer ([`stats`]), and the expiry of
//! the older snapshots that still read files holding erased rows ([`expire`]).
//!
//! The format's metadata (the table metadata JSON, manifests and manifest lists in Avro,
//! snapshots) is read and written by the Apache `iceberg` crate; every byte goes through the
//! table's own `object_store` ([`io`]). What lakepurge cannot purge faithfully is refused with
//! exit 2 before anything is written: delete files (position or equality deletes, deletion
//! vectors), format v3, data files other than Parquet or outside the table's location, and a
//! match or redact column renamed in the table's history (its older files name it otherwise).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use iceberg::spec::{
    DataContentType, DataFileFormat, FormatVersion, Manifest, ManifestContentType, ManifestFile,
    TableMetadata,
};
use object_store::ObjectMeta;

use super::{Changes, Committed, DataFile, Files, Format, Log, LogFile, Released, Snapshot, Table};
use crate::error::{Error, Result};
use crate::spec::TableSpec;
use crate::store::Location;

pub mod catalog;
pub mod commit;
pub mod expire;
pub mod io;
pub mod stats;

use catalog::SqlCatalog;

/// The summary property of a purge snapshot that names the run's idempotency key.
pub const KEY_PROPERTY: &str = "lakepurge.key";

/// The Iceberg format.
#[derive(Debug)]
pub struct Iceberg;

#[async_trait::async_trait]
impl Format for Iceberg {
    async fn open(&self, table: Table) -> Result<Table> {
        let current = Current::read(&table).await?;
        check_columns(&table, &current.metadata)?;
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
impl Log for Iceberg {
    fn entry(&self) -> &'static str {
        "metadata"
    }

    async fn snapshot(&self, table: &Table) -> Result<Snapshot> {
        load(table).await
    }

    fn key(&self, job: &str, run_id: &str) -> String {
        format!("lakepurge:{job}:{run_id}")
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
        commit::commit(table, state(table, snapshot)?, changes).await
    }

    async fn find(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        key: &str,
        _since: u64,
    ) -> Result<Option<u64>> {
        let state = state(table, snapshot)?;
        Ok(find_key(&state.current.metadata, key))
    }

    async fn history(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<ObjectMeta>> {
        expire::history_files(table, state(table, snapshot)?, exclude).await
    }

    async fn plan_release(&self, table: &Table, paths: &[String]) -> Result<Released> {
        expire::plan(table, paths).await
    }

    async fn release(&self, table: &Table, plan: &mut Released) -> Result<()> {
        expire::release(table, plan).await
    }

    fn keeps_statistics(&self) -> bool {
        // Manifests naming erased values go with the snapshots expired by `release`; the
        // metadata JSON files hold no column values.
        false
    }

    async fn log_files(&self, _table: &Table) -> Result<Vec<LogFile>> {
        Ok(Vec::new())
    }

    async fn statistics(&self, _table: &Table, _file: &LogFile) -> Result<Vec<serde_json::Value>> {
        Ok(Vec::new())
    }

    async fn expire(&self, table: &Table) -> Result<u64> {
        Err(Error::Internal(format!(
            "table {}: old_log is a Delta policy; an Iceberg table's old snapshots are expired \
             by release",
            table.spec.name
        )))
    }
}

/// The version number of a snapshot (its id; 0 for a table without one).
pub fn version_of(snapshot_id: Option<i64>) -> u64 {
    // Ids are compared for equality only: the bits are kept.
    snapshot_id.map_or(0, |id| u64::from_ne_bytes(id.to_ne_bytes()))
}

/// The snapshot id a version number stands for (see [`version_of`]).
pub fn snapshot_id(version: u64) -> i64 {
    i64::from_ne_bytes(version.to_ne_bytes())
}

/// The snapshot whose summary holds the idempotency `key`, if the table still has it.
pub fn find_key(metadata: &TableMetadata, key: &str) -> Option<u64> {
    metadata
        .snapshots()
        .find(|s| {
            s.summary()
                .additional_properties
                .get(KEY_PROPERTY)
                .is_some_and(|k| k == key)
        })
        .map(|s| version_of(Some(s.snapshot_id())))
}

/// The table's catalog, its name in it, and its current metadata.
pub struct Current {
    pub catalog: SqlCatalog,
    pub namespace: String,
    pub name: String,
    /// As the catalog names it.
    pub metadata_location: String,
    pub metadata: TableMetadata,
    /// Its branches and tags, as the metadata file has them.
    pub refs: io::Refs,
}

impl Current {
    /// Reads the catalog's current metadata of `table`.
    pub async fn read(table: &Table) -> Result<Current> {
        let (catalog, namespace, name) = connect(&table.spec).await?;
        let metadata_location = current_location(&table.spec, &catalog, &namespace, &name).await?;
        let (metadata, refs) = io::read_metadata(table, &metadata_location).await?;
        Ok(Current {
            catalog,
            namespace,
            name,
            metadata_location,
            metadata,
            refs,
        })
    }
}

/// The metadata location the catalog names for the table (exit 2 when it has no such table).
async fn current_location(
    spec: &TableSpec,
    catalog: &SqlCatalog,
    namespace: &str,
    name: &str,
) -> Result<String> {
    catalog
        .metadata_location(&spec.name, namespace, name)
        .await?
        .ok_or_else(|| {
            Error::table(
                &spec.name,
                catalog.shown(),
                format!(
                    "identifier: the catalog has no table {namespace}.{name} (with a metadata \
                     location)"
                ),
            )
        })
}

/// Connects to the table's catalog; returns it with the table's namespace and name.
async fn connect(spec: &TableSpec) -> Result<(SqlCatalog, String, String)> {
    let (Some(identifier), Some(catalog)) = (&spec.identifier, &spec.catalog) else {
        return Err(Error::spec(
            spec.source.display(),
            format!(
                "table {:?}: format = \"iceberg\" needs identifier and catalog",
                spec.name
            ),
        ));
    };
    let (namespace, name) = identifier.rsplit_once('.').ok_or_else(|| {
        Error::spec(
            spec.source.display(),
            format!(
                "table {:?}: identifier {identifier:?} is not namespace.table",
                spec.name
            ),
        )
    })?;
    let base = spec.source.parent().unwrap_or(Path::new("."));
    let catalog = SqlCatalog::connect(catalog, base, &spec.name).await?;
    Ok((catalog, namespace.to_string(), name.to_string()))
}

/// The location of the Iceberg table `spec` names, from its current metadata; a location the
/// spec gives must be that one (a mistyped one is exit 2).
pub async fn locate(spec: &TableSpec, base: &Path) -> Result<Location> {
    let (catalog, namespace, name) = connect(spec).await?;
    let metadata_location = current_location(spec, &catalog, &namespace, &name).await?;
    let metadata = io::read_metadata_at(spec, base, &metadata_location).await?;
    let bad = |m: String| Error::table(&spec.name, &metadata_location, m);
    let location =
        Location::parse(metadata.location(), base, &spec.storage_options).map_err(|m| {
            bad(format!(
                "the table's location {:?}: {m}",
                metadata.location()
            ))
        })?;
    if !spec.location.trim().is_empty() {
        let given = Location::parse(&spec.location, base, &spec.storage_options)
            .map_err(|m| bad(format!("location: {m}")))?;
        if given.url != location.url {
            return Err(Error::spec(
                spec.source.display(),
                format!(
                    "table {:?}: location {} is not the Iceberg table's location {} (from its \
                     metadata {metadata_location}); give that one, or leave location out",
                    spec.name, given.url, location.url
                ),
            ));
        }
    }
    Ok(location)
}

/// The metadata location the table's catalog names now, and that metadata (for checks).
pub async fn current_metadata(spec: &TableSpec, base: &Path) -> Result<(String, TableMetadata)> {
    let (catalog, namespace, name) = connect(spec).await?;
    let uri = current_location(spec, &catalog, &namespace, &name).await?;
    let metadata = io::read_metadata_at(spec, base, &uri).await?;
    Ok((uri, metadata))
}

/// What a snapshot of an Iceberg table keeps: what a commit on top of it needs.
pub struct State {
    pub current: Current,
    /// The current snapshot's manifests, each with its entries (sequence numbers and snapshot
    /// ids inherited from the manifest list).
    pub manifests: Vec<(ManifestFile, Manifest)>,
}

/// The Iceberg state of a snapshot [`load`] made.
pub fn state<'a>(table: &Table, snapshot: &'a Snapshot) -> Result<&'a State> {
    snapshot.state.downcast_ref::<State>().ok_or_else(|| {
        Error::Internal(format!(
            "table {}: a snapshot not read from Iceberg metadata",
            table.spec.name
        ))
    })
}

/// Reads the table's current snapshot. Refuses (exit 2) what lakepurge cannot purge
/// faithfully.
pub async fn load(table: &Table) -> Result<Snapshot> {
    let current = Current::read(table).await?;
    let metadata = &current.metadata;
    refuse_unsupported(table, metadata, &current.refs)?;
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Snapshot {
            version: 0,
            files: Vec::new(),
            state: Box::new(State {
                current,
                manifests: Vec::new(),
            }),
        });
    };
    let version = version_of(Some(snapshot.snapshot_id()));
    let manifests = io::snapshot_manifests(table, metadata, snapshot).await?;
    let mut files = Vec::new();
    for (list_entry, manifest) in &manifests {
        if list_entry.content != ManifestContentType::Data {
            if list_entry.has_added_files() || list_entry.has_existing_files() {
                return Err(refused(
                    table,
                    &list_entry.manifest_path,
                    "the table has delete files (position or equality deletes, or deletion \
                     vectors): the rows they hide are still in the data files, which lakepurge \
                     does not apply yet",
                ));
            }
            continue;
        }
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            let data = entry.data_file();
            if data.content_type() != DataContentType::Data {
                return Err(refused(
                    table,
                    data.file_path(),
                    "a delete file in a data manifest",
                ));
            }
            if data.file_format() != DataFileFormat::Parquet {
                return Err(refused(
                    table,
                    data.file_path(),
                    &format!(
                        "a {:?} data file: lakepurge rewrites Parquet files only",
                        data.file_format()
                    ),
                ));
            }
            let path = relative(metadata.location(), data.file_path()).ok_or_else(|| {
                refused(
                    table,
                    data.file_path(),
                    &format!(
                        "a data file outside the table's location {}",
                        metadata.location()
                    ),
                )
            })?;
            files.push(DataFile {
                meta: ObjectMeta {
                    location: table.location.child(&path),
                    last_modified: chrono::DateTime::<chrono::Utc>::default(),
                    size: data.file_size_in_bytes(),
                    e_tag: None,
                    version: None,
                },
                partition_values: HashMap::new(),
                hidden_rows: None,
                hidden_by: None,
                path,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(Snapshot {
        version,
        files,
        state: Box::new(State { current, manifests }),
    })
}

/// What the commit path cannot honour, before anything is written.
fn refuse_unsupported(table: &Table, metadata: &TableMetadata, refs: &io::Refs) -> Result<()> {
    if metadata.format_version() == FormatVersion::V1
        && let Some((name, _, _)) = refs
            .iter()
            .find(|(name, _, _)| name != iceberg::spec::MAIN_BRANCH)
    {
        return Err(refused(
            table,
            metadata.location(),
            &format!(
                "a format v1 table with branches or tags ({name:?}): the metadata lakepurge \
                 writes for v1 tables cannot keep them. Upgrade the table to format v2 \
                 (format-version = 2) or drop them first"
            ),
        ));
    }
    if let Some((name, _, _)) = refs
        .iter()
        .find(|(name, kind, _)| kind == "branch" && name != iceberg::spec::MAIN_BRANCH)
    {
        return Err(refused(
            table,
            metadata.location(),
            &format!(
                "the table has a branch other than main ({name:?}): lakepurge purges the main \
                 branch only, and expiring a snapshot another branch stands on would drop the \
                 branch's rows. Merge or drop the branch first"
            ),
        ));
    }
    if metadata.format_version() > FormatVersion::V2 {
        return Err(refused(
            table,
            metadata.location(),
            &format!(
                "format version {} (row lineage, deletion vectors): lakepurge commits to v1 and \
                 v2 tables",
                metadata.format_version()
            ),
        ));
    }
    Ok(())
}

/// The match and redact columns must be in the current schema, under the same field as in
/// every earlier schema: a file written before a rename names the column otherwise, and the
/// rows it holds would not be found.
fn check_columns(table: &Table, metadata: &TableMetadata) -> Result<()> {
    let schema = metadata.current_schema();
    let mut names: Vec<String> = table
        .spec
        .matches
        .iter()
        .flat_map(|r| r.key_paths())
        .map(|p| p.join("."))
        .collect();
    names.extend(table.spec.redact.iter().cloned());
    for name in names {
        let Some(field) = schema.field_by_name(&name) else {
            return Err(Error::table(
                &table.spec.name,
                &table.location,
                format!(
                    "column {name:?}: the Iceberg table's current schema has no such column \
                     (columns: {})",
                    schema
                        .as_struct()
                        .fields()
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        for older in metadata.schemas_iter() {
            if let Some(other) = older.field_by_name(&name).filter(|f| f.id != field.id) {
                return Err(Error::table(
                    &table.spec.name,
                    &table.location,
                    format!(
                        "column {name:?} was another column (field id {}) in schema {} of the \
                         Iceberg table: files written then hold that column under this name, \
                         and lakepurge matches by name. Nothing was written. Rewrite the \
                         table's files (rewrite_data_files) before purging it",
                        other.id,
                        older.schema_id()
                    ),
                ));
            }
            let Some(was) = older.name_by_field_id(field.id) else {
                continue;
            };
            if was != name {
                return Err(Error::table(
                    &table.spec.name,
                    &table.location,
                    format!(
                        "column {name:?} was named {was:?} in schema {} of the Iceberg table: \
                         files written then name it so, and lakepurge matches by name. Nothing \
                         was written. Rewrite the table's files (rewrite_data_files) before \
                         purging it",
                        older.schema_id()
                    ),
                ));
            }
        }
        let redacted =
            table.spec.action == crate::spec::Action::Redact && table.spec.redact.contains(&name);
        if redacted
            && metadata
                .partition_specs_iter()
                .flat_map(|spec| spec.fields().iter())
                .any(|p| p.source_id == field.id)
        {
            return Err(Error::table(
                &table.spec.name,
                &table.location,
                format!(
                    "redact: column {name:?} is a partition source of the Iceberg table: its \
                     value is also in each file's partition tuple, which a rewrite keeps. \
                     Nothing was written. Use action = \"delete\""
                ),
            ));
        }
        if redacted && field.required {
            return Err(Error::table(
                &table.spec.name,
                &table.location,
                format!(
                    "redact: column {name:?} of the Iceberg table is required (NOT NULL): it \
                     cannot be set to null. Nothing was written"
                ),
            ));
        }
    }
    Ok(())
}

/// A refusal (exit 2) naming the file it is about.
fn refused(table: &Table, file: &str, why: &str) -> Error {
    Error::table(
        &table.spec.name,
        file,
        format!("{why}. Nothing was written"),
    )
}

/// `path` relative to the table `location` (both as Iceberg metadata writes them: URIs, or
/// local paths), or `None` when it is not under it.
pub fn relative(location: &str, path: &str) -> Option<String> {
    let location = normalize(location);
    let path = normalize(path);
    let rest = path.strip_prefix(location.trim_end_matches('/'))?;
    let rest = rest.strip_prefix('/')?;
    (!rest.is_empty()).then(|| rest.to_string())
}

/// The absolute path of `relative` under the table `location`, as the table's metadata writes
/// its own location.
pub fn absolute(location: &str, relative: &str) -> String {
    format!("{}/{relative}", location.trim_end_matches('/'))
}

/// One spelling of a URI or local path: `file:/x`, `file:///x` and `/x` are the same file;
/// `s3a://` and `s3n://` are `s3://`.
fn normalize(uri: &str) -> String {
    if let Some(rest) = uri.strip_prefix("file:") {
        let rest = rest.trim_start_matches('/');
        return format!("/{rest}");
    }
    for alias in ["s3a://", "s3n://"] {
        if let Some(rest) = uri.strip_prefix(alias) {
            return format!("s3://{rest}");
        }
    }
    uri.to_string()
}

/// An error of the `iceberg` crate about `table`.
pub fn error(table: &Table, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Iceberg {
        table: table.spec.name.clone(),
        context: format!("{what} at {}", table.location),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_location_whatever_the_spelling() {
        assert_eq!(
            relative("file:///wh/t", "file:/wh/t/data/a=1/x.parquet").as_deref(),
            Some("data/a=1/x.parquet")
        );
        assert_eq!(
            relative("/wh/t/", "file:///wh/t/data/x.parquet").as_deref(),
            Some("data/x.parquet")
        );
        assert_eq!(
            relative("s3://b/wh/t", "s3a://b/wh/t/data/x.parquet").as_deref(),
            Some("data/x.parquet")
        );
        assert_eq!(relative("s3://b/wh/t", "s3://b/wh/t2/x.parquet"), None);
        assert_eq!(relative("s3://b/wh/t", "s3://b/wh/t"), None);
        assert_eq!(absolute("s3://b/t/", "data/x"), "s3://b/t/data/x");
    }
}
