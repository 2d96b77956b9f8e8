//! A purge's changes to an Iceberg table as one copy-on-write snapshot (`overwrite`): the
//! manifests of the current snapshot that list a replaced file are written again without it
//! (their other files as `existing`), the rewritten files are added in new manifests with
//! statistics from their footers, and a manifest list, a snapshot and new table metadata are
//! written; the catalog's compare-and-swap then makes that metadata current.
//!
//! No `deleted` entry is written, and manifests carrying older ones are written again
//! without them: a deleted entry keeps the removed file's partition tuple and column bounds,
//! which may be an erased subject's id. The snapshot summary names lakepurge, the job, the run
//! and its idempotency key, never a subject id.

use std::collections::{BTreeMap, HashMap, HashSet};

use iceberg::io::FileIO;
use iceberg::spec::{
    FormatVersion, MAIN_BRANCH, ManifestFile, ManifestListWriter, ManifestStatus, ManifestWriter,
    ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadata,
};

use object_store::ObjectStoreExt;

use super::catalog::Swap;
use super::io::{self, Staged};
use super::{KEY_PROPERTY, State, absolute, relative, stats, version_of};
use crate::error::{Error, Result};
use crate::table::{Changes, Committed, Table};

/// Commits `changes` on top of the snapshot whose Iceberg state is `state`.
pub async fn commit(table: &Table, state: &State, changes: Changes) -> Result<Committed> {
    let metadata = &state.current.metadata;
    let Some(parent) = metadata.current_snapshot() else {
        return Err(Error::Internal(format!(
            "table {}: a commit on a table without a snapshot",
            table.spec.name
        )));
    };
    let location = metadata.location().to_string();
    let snapshot_id = fresh_snapshot_id(metadata);
    let sequence = metadata.next_sequence_number();
    let staged = Staged::default();
    let tag = uuid::Uuid::new_v4();
    let mut written: Vec<String> = Vec::new();
    let result = async {
        let mut out = Out {
            table,
            metadata,
            staged: &staged,
            snapshot_id,
            tag,
            written: &mut written,
        };
        let (manifests, totals) = manifests(&mut out, state, &changes).await?;
        let list = format!("metadata/snap-{snapshot_id}-1-{tag}.avro");
        let list_uri = absolute(&location, &list);
        write_list(
            table,
            metadata,
            &staged,
            &list_uri,
            snapshot_id,
            parent.snapshot_id(),
            sequence,
            manifests,
        )
        .await?;
        io::put_new(table, &list, staged.bytes(table, &list_uri).await?).await?;
        written.push(list);
        let summary = summary(parent.summary(), &totals, &changes);
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(Some(parent.snapshot_id()))
            .with_sequence_number(sequence)
            .with_timestamp_ms(
                chrono::Utc::now()
                    .timestamp_millis()
                    .max(metadata.last_updated_ms()),
            )
            .with_manifest_list(list_uri)
            .with_summary(summary)
            .with_schema_id(metadata.current_schema_id())
            .build();
        let next = metadata
            .clone()
            .into_builder(Some(state.current.metadata_location.clone()))
            .set_branch_snapshot(snapshot, MAIN_BRANCH)
            .and_then(|b| b.build())
            .map_err(|e| super::error(table, "building the new table metadata", e))?
            .metadata;
        let name = next_metadata_name(&state.current.metadata_location, metadata);
        swap_in(table, &state.current, &next, &name, &mut written).await
    }
    .await;
    match result {
        Ok(true) => Ok(Committed::Version(version_of(Some(snapshot_id)))),
        Ok(false) => {
            // Nothing of this attempt is referenced: its metadata files go.
            discard(table, &written).await;
            Ok(Committed::Conflict(format!(
                "the catalog's metadata location is no longer {} (another writer committed)",
                state.current.metadata_location
            )))
        }
        Err(e) => Err(e),
    }
}

/// Writes `next` as new table metadata at `metadata/<name>` (create-only) and swaps it in.
/// `Ok(false)`: the catalog had moved on (nothing changed). An error of the swap itself is an
/// outcome not known: the catalog is read again and tells.
pub async fn swap_in(
    table: &Table,
    current: &super::Current,
    next: &TableMetadata,
    name: &str,
    written: &mut Vec<String>,
) -> Result<bool> {
    let rel = format!("metadata/{name}");
    let uri = absolute(next.location(), &rel);
    let json = serde_json::to_vec(next)
        .map_err(|e| super::error(table, "writing the new table metadata", e))?;
    io::put_new(table, &rel, json.into()).await?;
    written.push(rel);
    let swapped = current
        .catalog
        .swap(
            &table.spec.name,
            &current.namespace,
            &current.name,
            &current.metadata_location,
            &uri,
        )
        .await;
    match swapped {
        Ok(Swap::Swapped) => Ok(true),
        Ok(Swap::Lost) => Ok(false),
        Err(e) => {
            let now = current
                .catalog
                .metadata_location(&table.spec.name, &current.namespace, &current.name)
                .await?;
            tracing::warn!(table = %table.spec.name, error = %e, swapped = now.as_deref() == Some(uri.as_str()), "the catalog's answer to the swap was lost: read it again");
            if now.as_deref() == Some(uri.as_str()) {
                Ok(true)
            } else {
                Err(e)
            }
        }
    }
}

/// Deletes metadata files an attempt wrote that no snapshot references (best effort).
pub async fn discard(table: &Table, written: &[String]) {
    for rel in written {
        if let Err(e) = table
            .location
            .store
            .delete(&table.location.child(rel))
            .await
        {
            tracing::warn!(table = %table.spec.name, file = %rel, error = %e, "could not delete a metadata file no commit references");
        }
    }
}

/// What the new snapshot's summary counts.
#[derive(Default)]
struct Totals {
    added_files: u64,
    deleted_files: u64,
    added_records: u64,
    deleted_records: u64,
    added_size: u64,
    removed_size: u64,
}

/// Where a commit's new manifests go: written in `staged` memory, stored under the attempt's
/// `tag`, each stored file recorded in `written` (discarded if the commit does not happen).
struct Out<'a> {
    table: &'a Table,
    metadata: &'a TableMetadata,
    staged: &'a Staged,
    snapshot_id: i64,
    tag: uuid::Uuid,
    written: &'a mut Vec<String>,
}

impl Out<'_> {
    /// A new manifest named `name` (under `metadata/`) for `schema` and partition `spec`.
    fn open(
        &self,
        name: String,
        schema_and_spec: (iceberg::spec::SchemaRef, iceberg::spec::PartitionSpec),
    ) -> Result<NewManifest> {
        NewManifest::open(
            self.table,
            self.metadata,
            &self.staged.memory,
            format!("metadata/{}-{name}.avro", self.tag),
            self.snapshot_id,
            schema_and_spec,
        )
    }

    /// Writes `new` out and stores it.
    async fn finish(&mut self, new: NewManifest) -> Result<ManifestFile> {
        new.finish(self.table, self.staged, self.written).await
    }
}

/// A replaced file's entry (the new file takes its partition) and its partition spec id.
type Old = (iceberg::spec::DataFile, i32);

/// The new snapshot's manifests: the current ones that list no replaced file and carry no
/// deleted entry as they are, the others written again, and one manifest per partition spec
/// of added files.
async fn manifests(
    out: &mut Out<'_>,
    state: &State,
    changes: &Changes,
) -> Result<(Vec<ManifestFile>, Totals)> {
    let mut totals = Totals::default();
    let (mut manifests, olds) = current_manifests(out, state, changes, &mut totals).await?;
    for r in &changes.replaced {
        if !olds.contains_key(&r.old) {
            return Err(Error::Internal(format!(
                "table {}: {} is not in the snapshot the commit is made on",
                out.table.spec.name, r.old
            )));
        }
    }
    manifests.extend(added_manifests(out, changes, &olds, &mut totals).await?);
    Ok((manifests, totals))
}

/// The current snapshot's manifests for the new one: as they are, or written again without
/// the replaced files (the others `existing`) and without deleted entries; and the replaced
/// files' entries, by relative path.
async fn current_manifests(
    out: &mut Out<'_>,
    state: &State,
    changes: &Changes,
    totals: &mut Totals,
) -> Result<(Vec<ManifestFile>, HashMap<String, Old>)> {
    let location = out.metadata.location();
    let replaced: HashSet<&str> = changes.replaced.iter().map(|r| r.old.as_str()).collect();
    let replaced_rel =
        |path: &str| relative(location, path).filter(|p| replaced.contains(p.as_str()));
    let mut manifests = Vec::new();
    let mut olds = HashMap::new();
    for (n, (file, manifest)) in state.manifests.iter().enumerate() {
        let entries = manifest.entries();
        let touches = entries.iter().any(|e| {
            e.status() == ManifestStatus::Deleted
                || (e.is_alive() && replaced_rel(e.file_path()).is_some())
        });
        if !touches {
            manifests.push(file.clone());
            continue;
        }
        let spec = manifest.metadata().partition_spec();
        let mut new = out.open(
            format!("m{n}"),
            (manifest.metadata().schema().clone(), spec.clone()),
        )?;
        let mut kept = 0;
        for entry in entries.iter().filter(|e| e.is_alive()) {
            let data = entry.data_file();
            if let Some(p) = replaced_rel(data.file_path()) {
                if !olds.contains_key(&p) {
                    totals.deleted_files += 1;
                    totals.deleted_records += data.record_count();
                    totals.removed_size += data.file_size_in_bytes();
                }
                olds.insert(p, (data.clone(), spec.spec_id()));
                continue;
            }
            let (Some(snapshot), Some(sequence)) = (entry.snapshot_id(), entry.sequence_number())
            else {
                return Err(Error::table(
                    &out.table.spec.name,
                    &file.manifest_path,
                    "a live manifest entry without a snapshot id or sequence number",
                ));
            };
            new.writer
                .add_existing_file(
                    data.clone(),
                    snapshot,
                    sequence,
                    entry.file_sequence_number.or(Some(sequence)),
                )
                .map_err(|e| super::error(out.table, "writing a manifest", e))?;
            kept += 1;
        }
        if kept > 0 {
            manifests.push(out.finish(new).await?);
        }
    }
    Ok((manifests, olds))
}

/// The manifests of the rewritten files, one per partition spec, with statistics from their
/// footers; the data sequence number is inherited from the manifest list (the snapshot's).
async fn added_manifests(
    out: &mut Out<'_>,
    changes: &Changes,
    olds: &HashMap<String, Old>,
    totals: &mut Totals,
) -> Result<Vec<ManifestFile>> {
    let metadata = out.metadata;
    let location = metadata.location();
    let mut by_spec: BTreeMap<i32, Vec<iceberg::spec::DataFile>> = BTreeMap::new();
    for r in &changes.replaced {
        let (Some(new), Some((old, spec_id))) = (&r.new, olds.get(&r.old)) else {
            continue;
        };
        let file = stats::data_file(
            old,
            *spec_id,
            absolute(location, &new.path),
            new.size,
            &new.footer,
            metadata.current_schema(),
        )
        .map_err(|e| super::error(out.table, &format!("the statistics of {}", new.path), e))?;
        totals.added_files += 1;
        totals.added_records += file.record_count();
        totals.added_size += new.size;
        by_spec.entry(*spec_id).or_default().push(file);
    }
    let mut manifests = Vec::new();
    for (spec_id, files) in by_spec {
        let spec = metadata.partition_spec_by_id(spec_id).ok_or_else(|| {
            Error::table(
                &out.table.spec.name,
                location,
                format!("no partition spec {spec_id} in the table's metadata"),
            )
        })?;
        let mut new = out.open(
            format!("a{spec_id}"),
            (metadata.current_schema().clone(), spec.as_ref().clone()),
        )?;
        for file in files {
            new.writer
                .add_file(file, -1)
                .map_err(|e| super::error(out.table, "writing a manifest", e))?;
        }
        manifests.push(out.finish(new).await?);
    }
    Ok(manifests)
}

/// A manifest being written: staged in memory at `uri`, stored create-only at `rel` (relative
/// to the table) when finished.
struct NewManifest {
    rel: String,
    uri: String,
    writer: ManifestWriter,
}

impl NewManifest {
    /// A manifest of the table's format version for `schema` and partition `spec`.
    fn open(
        table: &Table,
        metadata: &TableMetadata,
        memory: &FileIO,
        rel: String,
        snapshot_id: i64,
        (schema, spec): (iceberg::spec::SchemaRef, iceberg::spec::PartitionSpec),
    ) -> Result<NewManifest> {
        let uri = absolute(metadata.location(), &rel);
        let output = memory
            .new_output(&uri)
            .map_err(|e| super::error(table, "writing a manifest", e))?;
        let builder = ManifestWriterBuilder::new(output, Some(snapshot_id), schema, spec);
        let writer = match metadata.format_version() {
            FormatVersion::V1 => builder.build_v1(),
            _ => builder.build_v2_data(),
        };
        Ok(NewManifest { rel, uri, writer })
    }

    /// Writes the manifest out and stores it; returns its manifest list entry.
    async fn finish(
        self,
        table: &Table,
        staged: &Staged,
        written: &mut Vec<String>,
    ) -> Result<ManifestFile> {
        let file = self
            .writer
            .write_manifest_file()
            .await
            .map_err(|e| super::error(table, "writing a manifest", e))?;
        io::put_new(table, &self.rel, staged.bytes(table, &self.uri).await?).await?;
        written.push(self.rel);
        Ok(file)
    }
}

/// Writes the manifest list of the new snapshot, staged in memory at `uri`.
#[allow(clippy::too_many_arguments)]
async fn write_list(
    table: &Table,
    metadata: &TableMetadata,
    staged: &Staged,
    uri: &str,
    snapshot_id: i64,
    parent: i64,
    sequence: i64,
    manifests: Vec<ManifestFile>,
) -> Result<()> {
    let fail = |e: iceberg::Error| super::error(table, "writing the manifest list", e);
    let out = staged.memory.new_output(uri).map_err(fail)?;
    let file = out.writer().await.map_err(fail)?;
    let mut list = match metadata.format_version() {
        FormatVersion::V1 => ManifestListWriter::v1(file, snapshot_id, Some(parent)),
        _ => ManifestListWriter::v2(file, snapshot_id, Some(parent), sequence),
    };
    list.add_manifests(manifests.into_iter()).map_err(fail)?;
    list.close().await.map_err(fail)
}

/// The summary of the purge snapshot: Iceberg's counts (totals carried from the parent's
/// where it has them) and lakepurge's own properties.
fn summary(parent: &Summary, t: &Totals, changes: &Changes) -> Summary {
    let mut p: HashMap<String, String> = HashMap::new();
    let mut put = |k: &str, v: u64| {
        p.insert(k.to_string(), v.to_string());
    };
    put("added-data-files", t.added_files);
    put("deleted-data-files", t.deleted_files);
    put("added-records", t.added_records);
    put("deleted-records", t.deleted_records);
    put("added-files-size", t.added_size);
    put("removed-files-size", t.removed_size);
    let total = |k: &str| {
        parent
            .additional_properties
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(n) = total("total-data-files") {
        put(
            "total-data-files",
            (n + t.added_files).saturating_sub(t.deleted_files),
        );
    }
    if let Some(n) = total("total-records") {
        put(
            "total-records",
            (n + t.added_records).saturating_sub(t.deleted_records),
        );
    }
    if let Some(n) = total("total-files-size") {
        put(
            "total-files-size",
            (n + t.added_size).saturating_sub(t.removed_size),
        );
    }
    for k in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        if let Some(n) = total(k) {
            put(k, n);
        }
    }
    p.insert("engine-name".into(), "lakepurge".into());
    p.insert("engine-version".into(), env!("CARGO_PKG_VERSION").into());
    p.insert("lakepurge.job".into(), changes.job.clone());
    p.insert("lakepurge.run-id".into(), changes.run_id.clone());
    p.insert("lakepurge.manifest".into(), changes.manifest.clone());
    p.insert(KEY_PROPERTY.into(), changes.key.clone());
    Summary {
        operation: Operation::Overwrite,
        additional_properties: p,
    }
}

/// A snapshot id the table does not have (positive, as Iceberg's writers make them).
pub fn fresh_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// The name of the metadata file after the one at `current`: the next version number (as the
/// writers number them: `00004-<uuid>.metadata.json`) and a new uuid.
pub fn next_metadata_name(current: &str, metadata: &TableMetadata) -> String {
    let file = current.rsplit('/').next().unwrap_or(current);
    let version = file
        .split('-')
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(metadata.metadata_log().len() as u64);
    format!("{:05}-{}.metadata.json", version + 1, uuid::Uuid::new_v4())
}
