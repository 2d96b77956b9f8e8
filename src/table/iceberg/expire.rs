//! An Iceberg table's history: the data files older snapshots still read, and their expiry.
//!
//! After the purge's commit, the table's files that the current snapshot does not read are
//! its history (time travel to an older snapshot reads them). Those holding an erased row are
//! released before they are deleted: every snapshot that reads one is expired (removed from
//! the table's metadata with one compare-and-swap, the refs naming only it going with it), and
//! the manifest lists of those snapshots, and their manifests no remaining snapshot uses, are
//! deleted: they list the files and their bounds, which may name erased values. Other
//! snapshots are kept.

use std::collections::{BTreeSet, HashMap, HashSet};

use iceberg::spec::{Manifest, ManifestFile};
use object_store::{ObjectMeta, ObjectStoreExt};

use super::commit::{discard, next_metadata_name, swap_in};
use super::{Current, State, io, relative};
use crate::error::{Error, Result};
use crate::table::delta::ORPHAN_MIN_AGE;
use crate::table::{Released, Table};

/// How many times the expiry is tried again after another writer's commit.
const RETRIES: usize = 3;

/// The table's history on disk: Parquet files under the table that the current snapshot does
/// not read, and that an older snapshot's manifests name or that no snapshot names and are
/// older than [`ORPHAN_MIN_AGE`] (never a writer's file not committed yet), less `exclude`.
pub async fn history_files(
    table: &Table,
    state: &State,
    exclude: &BTreeSet<String>,
) -> Result<Vec<ObjectMeta>> {
    let metadata = &state.current.metadata;
    let location = metadata.location();
    let current: HashSet<String> = state
        .manifests
        .iter()
        .flat_map(|(_, m)| m.entries().iter().filter(|e| e.is_alive()))
        .filter_map(|e| relative(location, e.file_path()))
        .collect();
    let mut named = HashSet::new();
    let mut manifests = Manifests::default();
    for snapshot in metadata.snapshots() {
        for file in io::manifest_list(table, metadata, snapshot).await? {
            let manifest = manifests.get(table, &state.current, &file).await?;
            named.extend(
                manifest
                    .entries()
                    .iter()
                    .filter_map(|e| relative(location, e.file_path())),
            );
        }
    }
    let now = chrono::Utc::now();
    let listed = table.location.list_files().await?;
    Ok(listed
        .into_iter()
        .filter(|m| {
            let rel = table.location.relative(&m.location);
            rel.ends_with(".parquet")
                && !rel.starts_with("metadata/")
                && !current.contains(&rel)
                && !exclude.contains(&rel)
                && (named.contains(&rel) || now - m.last_modified > ORPHAN_MIN_AGE)
        })
        .collect())
}

/// Manifests read once each, by path.
#[derive(Default)]
struct Manifests(HashMap<String, Manifest>);

impl Manifests {
    async fn get(
        &mut self,
        table: &Table,
        current: &Current,
        file: &ManifestFile,
    ) -> Result<&Manifest> {
        if !self.0.contains_key(&file.manifest_path) {
            let manifest = io::load_manifest(table, &current.metadata, file).await?;
            self.0.insert(file.manifest_path.clone(), manifest);
        }
        self.0
            .get(&file.manifest_path)
            .ok_or_else(|| Error::Internal(format!("manifest {} not kept", file.manifest_path)))
    }
}

/// Expires every snapshot of the table that reads one of `paths` (relative to the table), and
/// deletes what only they used of the metadata: their manifest lists and manifests. The
/// current snapshot reading one is an error (the files are not history). Done again from the
/// new metadata when another writer commits first.
pub async fn release(table: &Table, paths: &[String]) -> Result<Released> {
    if paths.is_empty() {
        return Ok(Released::default());
    }
    let wanted: HashSet<&str> = paths.iter().map(String::as_str).collect();
    for try_no in 0..=RETRIES {
        let current = Current::read(table).await?;
        let metadata = &current.metadata;
        let location = metadata.location().to_string();
        let current_id = metadata.current_snapshot_id();
        let mut manifests = Manifests::default();
        let mut lists: HashMap<i64, Vec<ManifestFile>> = HashMap::new();
        let mut expired = Vec::new();
        for snapshot in metadata.snapshots() {
            let list = io::manifest_list(table, metadata, snapshot).await?;
            let mut reads = None;
            for file in &list {
                let manifest = manifests.get(table, &current, file).await?;
                reads = reads.or_else(|| {
                    manifest
                        .entries()
                        .iter()
                        .filter(|e| e.is_alive())
                        .filter_map(|e| relative(&location, e.file_path()))
                        .find(|p| wanted.contains(p.as_str()))
                });
            }
            if let Some(file) = reads {
                if Some(snapshot.snapshot_id()) == current_id {
                    return Err(Error::Internal(format!(
                        "table {}: the current snapshot reads {file}, which the purge took out \
                         of the table",
                        table.spec.name
                    )));
                }
                expired.push(snapshot.snapshot_id());
            }
            lists.insert(snapshot.snapshot_id(), list);
        }
        if expired.is_empty() {
            return Ok(Released::default());
        }
        let refs = refs_of(metadata, &expired);
        let next = metadata
            .clone()
            .into_builder(Some(current.metadata_location.clone()))
            .remove_snapshots(&expired)
            .build()
            .map_err(|e| {
                super::error(
                    table,
                    "building the table metadata without the expired snapshots",
                    e,
                )
            })?
            .metadata;
        let name = next_metadata_name(&current.metadata_location, metadata);
        let mut written = Vec::new();
        if !swap_in(table, &current, &next, &name, &mut written).await? {
            discard(table, &written).await;
            tracing::warn!(table = %table.spec.name, try_no, "another writer committed before the expiry: trying again");
            continue;
        }
        if !refs.is_empty() {
            tracing::warn!(table = %table.spec.name, refs = %refs.join(", "), "branches or tags that named only expired snapshots were removed with them");
        }
        let kept: HashSet<&str> = lists
            .iter()
            .filter(|(id, _)| !expired.contains(id))
            .flat_map(|(_, l)| l.iter().map(|f| f.manifest_path.as_str()))
            .collect();
        let mut gone: BTreeSet<String> = BTreeSet::new();
        for id in &expired {
            if let Some(s) = metadata.snapshot_by_id(*id) {
                gone.extend(relative(&location, s.manifest_list()));
            }
            for f in lists.get(id).into_iter().flatten() {
                if !kept.contains(f.manifest_path.as_str()) {
                    gone.extend(relative(&location, &f.manifest_path));
                }
            }
        }
        for rel in &gone {
            match table
                .location
                .store
                .delete(&table.location.child(rel))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(Error::store(
                        format!(
                            "deleting {}{rel} (metadata of an expired snapshot)",
                            table.location.url
                        ),
                        e,
                    ));
                }
            }
        }
        tracing::info!(table = %table.spec.name, snapshots = expired.len(), metadata_files = gone.len(), "expired the snapshots that read files holding erased rows");
        return Ok(Released {
            snapshots_expired: expired.len() as u64,
            metadata_files_deleted: gone.len() as u64,
            refs_removed: refs,
        });
    }
    Err(Error::Conflict {
        path: format!("{}metadata/", table.location.url),
    })
}

/// The names of the branches and tags of `metadata` that name one of `snapshots`.
fn refs_of(metadata: &iceberg::spec::TableMetadata, snapshots: &[i64]) -> Vec<String> {
    let json = serde_json::to_value(metadata).unwrap_or_default();
    let mut names: Vec<String> = json["refs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, r)| {
            r["snapshot-id"]
                .as_i64()
                .is_some_and(|id| snapshots.contains(&id))
        })
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names
}
