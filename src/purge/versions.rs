//! The old versions of a purged object on a versioned bucket (`old_versions`).
//!
//! Once a file's replacement or deletion has committed, its key's versions are listed: the
//! version the purge read and every older data version held the erased rows. With `delete`
//! their ids are journaled (in the file's record, `pending`), then each is deleted by id, then
//! the record is journaled as settled; a resumed run finishes what a crash left pending. Newer
//! versions (another writer's, and the purge's own new version) are never touched; delete
//! markers hold no data and stay. With `keep` nothing is deleted and the record counts the
//! versions that still hold erased rows. A version the store refuses to delete because S3
//! Object Lock holds it is moved to the record's `locked` list, with the lock's mode and date.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;

use super::Attempt;
use crate::error::Result;
use crate::journal::Entry;
use crate::manifest::{FileRecord, LockedVersion, OldVersionsRecord};
use crate::plan::TablePlan;
use crate::spec::OldVersions;
use crate::store::versions::{Deletion, Version};
use crate::store::{S3Versions, Versioning};
use crate::table::Table;

/// A table on a versioned bucket, and its policy.
pub(super) struct Versioned {
    pub calls: Arc<S3Versions>,
    pub policy: OldVersions,
}

/// The tables of the run whose buckets keep versions (versioning on, or suspended with
/// versions from before), by name.
pub(super) fn versioned_tables(
    tables: &[Table],
    plans: &[TablePlan],
) -> BTreeMap<String, Versioned> {
    tables
        .iter()
        .zip(plans)
        .filter(|(_, p)| {
            matches!(
                p.versioning,
                Some(Versioning::Enabled | Versioning::Suspended)
            )
        })
        .filter_map(|(t, _)| {
            Some((
                t.spec.name.clone(),
                Versioned {
                    calls: t.location.versions.clone()?,
                    policy: t.spec.old_versions.unwrap_or_default(),
                },
            ))
        })
        .collect()
}

/// The data versions that held the erased rows: the one read (`read`) and every older one,
/// from a listing of the key (newest first), never the purge's own new version (`current`).
/// None if the version read is not listed. With versioning suspended a put replaces the
/// `null` version in place: the version read is then the new one, and only older ones held the
/// erased rows.
fn held_erased(listed: &[Version], read: &str, current: Option<&str>) -> Vec<String> {
    match listed.iter().position(|v| v.id == read) {
        Some(at) => listed[at..]
            .iter()
            .filter(|v| !v.delete_marker && Some(v.id.as_str()) != current)
            .map(|v| v.id.clone())
            .collect(),
        None => Vec::new(),
    }
}

/// The fate of a committed record's old versions, if not decided yet: the versions that held
/// erased rows are listed, to delete (`pending`) or to count. `false` if nothing changed.
async fn decide(v: &Versioned, path: &Path, record: &mut FileRecord) -> Result<bool> {
    if record.old_versions.is_some() {
        return Ok(false);
    }
    let Some(read) = record.before.version.clone() else {
        return Ok(false);
    };
    let current = record.after.as_ref().and_then(|a| a.version.as_deref());
    let held = held_erased(&v.calls.list(path).await?, &read, current);
    let keep = v.policy == OldVersions::Keep;
    record.old_versions = Some(OldVersionsRecord {
        policy: v.policy,
        remaining: if keep { held.len() as u64 } else { 0 },
        pending: !keep,
        deleted: if keep { Vec::new() } else { held },
        locked: Vec::new(),
    });
    Ok(true)
}

/// Deletes the versions a record has pending. `false` if it had none.
async fn delete_pending(
    v: &Versioned,
    path: &Path,
    record: &mut FileRecord,
    skip_oldest: bool,
) -> Result<bool> {
    let Some(old) = record.old_versions.as_mut().filter(|o| o.pending) else {
        return Ok(false);
    };
    let skipped = usize::from(skip_oldest && !old.deleted.is_empty());
    let upto = old.deleted.len() - skipped;
    delete_each(v, path, old, upto).await?;
    tracing::info!(file = %path, versions = old.deleted.len(), locked = old.locked.len(), "deleted the old versions that held erased rows");
    old.pending = false;
    Ok(true)
}

/// Deletes the first `upto` versions `old` lists as to delete; those S3 Object Lock holds
/// move to `old.locked` (recorded, never silent: the store keeps them until it releases them).
async fn delete_each(
    v: &Versioned,
    path: &Path,
    old: &mut OldVersionsRecord,
    upto: usize,
) -> Result<()> {
    let mut kept = Vec::with_capacity(old.deleted.len());
    for (i, id) in old.deleted.iter().enumerate() {
        if i >= upto {
            kept.push(id.clone());
            continue;
        }
        match v.calls.delete(path, id).await? {
            Deletion::Deleted => kept.push(id.clone()),
            Deletion::Locked(lock) => {
                if !old.locked.iter().any(|l| &l.version_id == id) {
                    old.locked.push(LockedVersion::new(id, lock));
                }
            }
        }
    }
    old.deleted = kept;
    Ok(())
}

/// The fate of the data versions of a file the run deleted from a Delta table (Delta never
/// rewrites a path: every data version of it held what the current one did): listed, to
/// delete (`pending`) or to count. Delete markers hold no data and are left.
pub(super) async fn decide_all(v: &Versioned, path: &Path) -> Result<OldVersionsRecord> {
    let held: Vec<String> = v
        .calls
        .list(path)
        .await?
        .into_iter()
        .filter(|version| !version.delete_marker)
        .map(|version| version.id)
        .collect();
    let keep = v.policy == OldVersions::Keep;
    Ok(OldVersionsRecord {
        policy: v.policy,
        remaining: if keep { held.len() as u64 } else { 0 },
        pending: !keep,
        deleted: if keep { Vec::new() } else { held },
        locked: Vec::new(),
    })
}

/// Deletes the versions `old` has pending (gone already is fine), then marks it settled.
pub(super) async fn delete_all_pending(
    v: &Versioned,
    path: &Path,
    old: &mut OldVersionsRecord,
) -> Result<()> {
    if old.pending {
        let all = old.deleted.len();
        delete_each(v, path, old, all).await?;
        old.pending = false;
    }
    Ok(())
}

/// Settles the old versions of every committed record of `entry` (a file of `table`): decides
/// their fate, journals it, deletes what is to go, journals that. Called after each commit,
/// and for every entry when a run resumes (a crash may have come between any two steps).
pub(super) async fn settle(table: &Table, attempt: &Attempt<'_>, entry: &mut Entry) -> Result<()> {
    let Some(v) = attempt.versioned.get(&table.spec.name) else {
        return Ok(());
    };
    let path = table.location.child(&entry.path);
    let mut decided = false;
    for record in entry.done.iter_mut() {
        decided |= decide(v, &path, record).await?;
    }
    if decided {
        attempt.journal.put(entry).await?;
        attempt.crash_if(
            &attempt.version_deletions,
            attempt.failpoint.before_version_delete,
            "before_version_delete",
        );
    }
    let mut deleted = false;
    for record in entry.done.iter_mut() {
        let skip = attempt.failpoint.skip_version_delete;
        deleted |= delete_pending(v, &path, record, skip).await?;
    }
    if deleted {
        attempt.journal.put(entry).await?;
    }
    Ok(())
}

/// Whether a rewrite left pending by a crash committed although the object is no longer its
/// result, because another writer replaced (or re-created) the key since. On a versioned
/// bucket the version right after the one read tells: the purge's commit was conditional on
/// the version read being current, so its result is the next version, a delete marker for a
/// deletion or a version holding the new bytes. Returns the new version's id (none for a
/// deletion) when it committed; `None` when it did not or the bucket keeps no versions.
pub(super) async fn committed_before_a_newer_write(
    table: &Table,
    path: &Path,
    pending: &FileRecord,
) -> Result<Option<Option<String>>> {
    let (Some(calls), Some(read)) = (&table.location.versions, &pending.before.version) else {
        return Ok(None);
    };
    let listed = calls.list(path).await?;
    let Some(next) = listed
        .iter()
        .position(|v| &v.id == read)
        .and_then(|at| at.checked_sub(1))
        .map(|i| &listed[i])
    else {
        return Ok(None);
    };
    match (&pending.after, next.delete_marker) {
        (None, true) => Ok(Some(None)),
        (Some(after), false) => {
            let opts = object_store::GetOptions {
                version: Some(next.id.clone()),
                ..Default::default()
            };
            let bytes = match table.location.store.get_opts(path, opts).await {
                Ok(g) => g.bytes().await.map_err(|e| {
                    crate::error::Error::store(format!("reading {path} version {}", next.id), e)
                })?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => {
                    return Err(crate::error::Error::store(
                        format!("reading {path} version {}", next.id),
                        e,
                    ));
                }
            };
            let ours = crate::manifest::sha256_hex(&bytes) == after.sha256;
            Ok(ours.then(|| Some(next.id.clone())))
        }
        _ => Ok(None),
    }
}

/// On resuming a run: settles the old versions of every file an earlier attempt committed.
pub(super) async fn resume(
    tables: &[Table],
    attempt: &Attempt<'_>,
    entries: &mut BTreeMap<(String, String), Entry>,
    shard: Option<super::Shard>,
) -> Result<()> {
    let mine = |e: &Entry| shard.is_none_or(|s| s.owns(&e.table, &e.path));
    for ((table_name, _), entry) in entries.iter_mut().filter(|(_, e)| mine(e)) {
        if let Some(table) = tables.iter().find(|t| &t.spec.name == table_name) {
            settle(table, attempt, entry).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, delete_marker: bool) -> Version {
        Version {
            id: id.into(),
            delete_marker,
        }
    }

    #[test]
    fn the_version_read_and_older_data_versions_held_the_rows() {
        // Another writer's v5 and the purge's own v4 are newer than the version read (v3).
        let listed = [
            v("v5", false),
            v("v4", false),
            v("v3", false),
            v("m", true),
            v("v1", false),
        ];
        assert_eq!(held_erased(&listed, "v3", Some("v4")), vec!["v3", "v1"]);
        assert!(held_erased(&listed, "gone", Some("v4")).is_empty());
        // Versioning suspended: the rewrite replaced the `null` version in place.
        let listed = [v("null", false), v("v1", false)];
        assert_eq!(held_erased(&listed, "null", Some("null")), vec!["v1"]);
    }
}
