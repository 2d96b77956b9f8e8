//! An Iceberg table's history: the data files older snapshots still read, and their expiry.
//!
//! After the purge's commit, the table's files that the current snapshot does not read are
//! its history (time travel to an older snapshot reads them). Those holding an erased row are
//! released before they are deleted: every snapshot that reads one is expired (removed from
//! the table's metadata with one compare-and-swap, the refs naming only it going with it), and
//! the manifest lists of those snapshots, and their manifests no remaining snapshot uses, are
//! deleted: they list the files and their bounds, which may name erased values. Other
//! snapshots are kept. What a release takes is planned first ([`plan`], journaled by the
//! purge), so that a crash between the swap and the deletions is finished by the next attempt.

use std::collections::{BTreeSet, HashMap, HashSet};

use iceberg::spec::{Manifest, ManifestFile};
use object_store::ObjectMeta;

use super::commit::{discard, next_metadata_name, swap_in};
use super::{Current, State, io, relative};
use crate::error::{Error, Result};
use crate::table::{Released, Table};

/// How many times the expiry is tried again after another writer's commit.
const RETRIES: usize = 3;

/// How old a Parquet file no snapshot names must be before it is taken for history rather
/// than a writer's file not committed yet (Iceberg's own orphan removal waits as long).
pub const ORPHAN_MIN_AGE: chrono::TimeDelta = chrono::TimeDelta::days(3);

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

/// What releasing `paths` (relative to the table) takes: every snapshot of the table that
/// reads one of them, the branches and tags naming only such snapshots, and what only they
/// use of the metadata (their manifest lists and manifests). The current snapshot reading one
/// is an error (the files are not history). Nothing is changed yet.
pub async fn plan(table: &Table, paths: &[String]) -> Result<Released> {
    let done = Released {
        done: true,
        ..Released::default()
    };
    if paths.is_empty() {
        return Ok(done);
    }
    let wanted: HashSet<&str> = paths.iter().map(String::as_str).collect();
    let current = Current::read(table).await?;
    let metadata = &current.metadata;
    let location = metadata.location().to_string();
    let current_id = metadata.current_snapshot_id();
    let mut manifests = Manifests::default();
    let mut lists: HashMap<i64, Vec<ManifestFile>> = HashMap::new();
    let mut expire = Vec::new();
    for snapshot in metadata.snapshots() {
        let list = io::manifest_list(table, metadata, snapshot).await?;
        let (mut reads, mut names) = (None, false);
        for file in &list {
            let manifest = manifests.get(table, &current, file).await?;
            for e in manifest.entries() {
                let Some(p) =
                    relative(&location, e.file_path()).filter(|p| wanted.contains(p.as_str()))
                else {
                    continue;
                };
                names = true;
                if e.is_alive() {
                    reads = reads.or(Some(p));
                }
            }
        }
        let is_current = Some(snapshot.snapshot_id()) == current_id;
        if let (Some(file), true) = (&reads, is_current) {
            return Err(Error::Internal(format!(
                "table {}: the current snapshot reads {file}, which the purge took out of the \
                 table",
                table.spec.name
            )));
        }
        // A snapshot that reads such a file, or whose manifests still name it (a deleted
        // entry keeps the file's partition tuple and bounds), is expired; the current one
        // names none after the purge's commit.
        if names && !is_current {
            expire.push(snapshot.snapshot_id());
        }
        lists.insert(snapshot.snapshot_id(), list);
    }
    if expire.is_empty() {
        return Ok(done);
    }
    expire.sort_unstable();
    let kept: HashSet<&str> = lists
        .iter()
        .filter(|(id, _)| !expire.contains(id))
        .flat_map(|(_, l)| l.iter().map(|f| f.manifest_path.as_str()))
        .collect();
    let mut delete: BTreeSet<String> = BTreeSet::new();
    for id in &expire {
        if let Some(s) = metadata.snapshot_by_id(*id) {
            delete.extend(relative(&location, s.manifest_list()));
        }
        for f in lists.get(id).into_iter().flatten() {
            if !kept.contains(f.manifest_path.as_str()) {
                delete.extend(relative(&location, &f.manifest_path));
            }
        }
    }
    let (branches, tags) = refs_of(&current.refs, &expire);
    if let Some(branch) = branches.first() {
        return Err(Error::table(
            &table.spec.name,
            &table.location,
            format!(
                "branch {branch:?} reads files holding erased rows: lakepurge purges the main \
                 branch only and will not drop a branch (its other rows would go with it). \
                 Purge or drop the branch, then run again"
            ),
        ));
    }
    Ok(Released {
        refs_removed: tags,
        expire,
        delete: delete.into_iter().collect(),
        done: false,
    })
}

/// Does what [`plan`] planned: the planned snapshots the table still has are removed from its
/// metadata with one compare-and-swap (done again from the new metadata when another writer
/// commits first), then the planned metadata files are deleted (gone already is fine). Done
/// again after a crash, it finishes.
pub async fn release(table: &Table, plan: &mut Released) -> Result<()> {
    // The metadata file current once the expired snapshots are out of the table.
    let mut swapped = None;
    for try_no in 0..=RETRIES {
        let current = Current::read(table).await?;
        let metadata = &current.metadata;
        let present: Vec<i64> = plan
            .expire
            .iter()
            .copied()
            .filter(|id| metadata.snapshot_by_id(*id).is_some())
            .collect();
        if present.is_empty() {
            swapped = Some(current.metadata_location.clone());
            break;
        }
        if let Some(id) = metadata
            .current_snapshot_id()
            .filter(|id| present.contains(id))
        {
            return Err(Error::table(
                &table.spec.name,
                &table.location,
                format!(
                    "the table's current snapshot {id} is one this purge expires (the table was \
                     rolled back to it since the plan): nothing more was changed. Purge it again \
                     with a new run id"
                ),
            ));
        }
        let next = metadata
            .clone()
            .into_builder(Some(current.metadata_location.clone()))
            .remove_snapshots(&present)
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
        if swap_in(table, &current, &next, &name, &mut written).await? {
            swapped = Some(super::absolute(
                metadata.location(),
                &format!("metadata/{name}"),
            ));
            break;
        }
        discard(table, &written).await;
        tracing::warn!(table = %table.spec.name, try_no, "another writer committed before the expiry: trying again");
    }
    let Some(now) = swapped else {
        return Err(Error::Conflict {
            path: format!("{}metadata/", table.location.url),
        });
    };
    if !plan.refs_removed.is_empty() {
        tracing::warn!(table = %table.spec.name, refs = %plan.refs_removed.join(", "), "branches or tags that named only expired snapshots were removed with them");
    }
    for rel in &plan.delete {
        table
            .delete_file(rel, "metadata of an expired snapshot")
            .await?;
    }
    // Then every other metadata file of the table that lists an expired snapshot (it names
    // the snapshot's manifest list, and its summaries may hold partition values): listed, not
    // taken from the metadata log, which a writer's newer file or a short
    // previous-versions-max may not reach.
    let json = older_metadata_listing(table, &now, &plan.expire).await?;
    for rel in &json {
        table
            .delete_file(rel, "metadata listing an expired snapshot")
            .await?;
    }
    plan.delete.extend(json);
    plan.delete.sort();
    plan.delete.dedup();
    tracing::info!(table = %table.spec.name, snapshots = plan.expire.len(), metadata_files = plan.delete.len(), "expired the snapshots that read files holding erased rows");
    Ok(())
}

/// The table's metadata JSON files (relative), other than the current one `now`, that list
/// one of `snapshots`.
async fn older_metadata_listing(
    table: &Table,
    now: &str,
    snapshots: &[i64],
) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    let folder = table.location.child("metadata");
    let listed: Vec<ObjectMeta> = table
        .location
        .store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing {}metadata/", table.location.url), e))?;
    let mut out = Vec::new();
    for m in listed {
        let rel = table.location.relative(&m.location);
        if !rel.ends_with(".metadata.json") || now.ends_with(&format!("/{rel}")) {
            continue;
        }
        if lists_any(table, &rel, snapshots).await? {
            out.push(rel);
        }
    }
    Ok(out)
}

/// The branches and the tags among `refs` that name one of `snapshots`, by name.
fn refs_of(refs: &io::Refs, snapshots: &[i64]) -> (Vec<String>, Vec<String>) {
    let (mut branches, mut tags) = (Vec::new(), Vec::new());
    for (name, kind, id) in refs {
        if snapshots.contains(id) {
            if kind == "tag" {
                tags.push(name.clone());
            } else {
                branches.push(name.clone());
            }
        }
    }
    branches.sort();
    tags.sort();
    (branches, tags)
}

/// Whether the metadata file at `rel` (relative to the table) lists one of `snapshots`; a file
/// gone or not readable as JSON lists none.
async fn lists_any(table: &Table, rel: &str, snapshots: &[i64]) -> Result<bool> {
    let path = table.location.child(rel);
    let what = format!("metadata of table {}", table.spec.name);
    let Some(bytes) = crate::store::read_if_exists(&*table.location.store, &path, &what).await?
    else {
        return Ok(false);
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(false);
    };
    Ok(json["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["snapshot-id"].as_i64())
        .any(|id| snapshots.contains(&id)))
}
