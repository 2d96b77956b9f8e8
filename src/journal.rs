//! The run journal: what a run has pinned and done, so the same run id resumes after a crash
//! at any point without redoing finished files or losing their counts.
//!
//! It lives beside the manifests, never inside a table: `<manifests>/<job>/<run id>/`.
//! - `snapshot.json`: the event files (path, size, etag), their digest and the start time,
//!   created once (create-only) by the first attempt; every later attempt applies exactly them.
//! - `files/<key>.json`, one per table file: the records of finished rewrites of that file and,
//!   while a rewrite is being committed, the *pending* record written before the commit. A
//!   pending record is resolved on resume by looking at the object: it holds the new bytes (the
//!   commit happened: the record is kept), or anything else (it did not: dropped, the file is
//!   planned again).
//!
//! - `shards/<N>/<I>.json`, one per shard `I/N` that ran: its start-of-run counts over the
//!   files it owns (pinned by its first attempt) and whether it finished. When every shard of
//!   some `N` finished, the final unsharded step writes the manifest from the journal and these
//!   counts, reading no table file.
//!
//! The journal is deleted once the manifest, which supersedes it, is written.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::events::EventFile;
use crate::manifest::FileRecord;
use crate::plan::Shard;
use crate::store::Location;

/// The event snapshot a run applies, pinned by its first attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub started_at: String,
    pub files: Vec<EventFile>,
    pub digest: String,
    /// Per table, the plan's counts at the start of the run (files listed, pruned, ids that
    /// could not convert): the manifest reports these, whichever attempt or shard finishes.
    #[serde(default)]
    pub tables: Vec<TableCounts>,
    /// The hold files the run applies (a job with `[holds]`), in force as of `started_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<Vec<EventFile>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableCounts {
    pub name: String,
    pub files_listed: u64,
    pub files_pruned: u64,
    pub ids_unconvertible: u64,
    /// Matched rows kept under holds or the table's exemption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<crate::holds::HeldRecord>,
}

/// A shard's side of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    /// The counts of the shard's first plan, over the files it owns.
    pub tables: Vec<TableCounts>,
    /// The shard purged all its files.
    pub done: bool,
    /// The spec the shard ran (see `Job::spec_files`): the final step refuses another.
    #[serde(default)]
    pub spec_sha256: Option<String>,
    #[serde(default)]
    pub spec_files: BTreeMap<String, String>,
    /// Per table, the files the shard's first plan listed as its own: the final step plans
    /// those no shard listed (new, moved or changed since).
    #[serde(default)]
    pub listed: BTreeMap<String, Vec<crate::plan::Listed>>,
}

/// The journal entry of one table file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub table: String,
    pub path: String,
    /// Finished rewrites of this file in this run, oldest first.
    pub done: Vec<FileRecord>,
    /// A rewrite whose commit may or may not have happened.
    pub pending: Option<FileRecord>,
    /// The file held erased rows when planned but another writer deleted it first.
    #[serde(default)]
    pub vanished: bool,
    /// A Delta table's commit (the entry of its log, see `purge::log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaCommit>,
    /// A Delta table's history still on disk that holds erased rows (see `purge::log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<DeltaHistory>,
    /// A table with a log: its own files scanned for statistics naming erased values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_log: Option<crate::manifest::OldLogRecord>,
}

/// The files of a Delta table's history (removed by earlier commits, still on disk) that hold
/// erased rows, decided once per run and journaled before they are deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DeltaHistory {
    /// History files scanned.
    pub scanned: u64,
    /// Those holding an erased row (relative to the table), in path order.
    pub files: Vec<String>,
    /// History files that could not be read as Parquet (left alone, named in the log).
    pub unreadable: u64,
    /// `old_files = "delete"`: every one of `files` is deleted.
    pub deleted: bool,
    /// On a versioned bucket, the fate of each deleted file's noncurrent versions, by path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub old_versions: BTreeMap<String, crate::manifest::OldVersionsRecord>,
    /// The older versions that read `files`, taken out of the table before they were deleted
    /// (see [`crate::table::Log::release`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<crate::table::Released>,
}

/// A purge's commit to a Delta table, journaled before it is made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DeltaCommit {
    /// The run's application transaction id in the log.
    pub app_id: String,
    /// The log version the changes were planned on.
    pub read_version: u64,
    /// The version committed, once known to be in the log.
    pub version: Option<u64>,
    /// The files the commit removes (relative to the table).
    pub removed: Vec<String>,
    /// How many of them were deleted after the commit (`old_files = "delete"`).
    pub old_files_deleted: u64,
    /// The files holding the removed files' deletion marks (Delta deletion vectors), deleted
    /// with them once no file of the table refers to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<String>,
    /// The manifest records of the commit's files.
    pub files: Vec<FileRecord>,
    /// The older versions that read the removed files, taken out of the table before they
    /// were deleted (see [`crate::table::Log::release`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<crate::table::Released>,
}

pub struct Journal {
    folder: Location,
}

impl Journal {
    /// The journal of `run_id` in the job's manifest folder.
    pub fn new(manifests: &Location, run_id: &str) -> Journal {
        Journal {
            folder: manifests.folder(run_id),
        }
    }

    fn entry_path(&self, table: &str, path: &str) -> Path {
        let mut h = Sha256::new();
        h.update(table.as_bytes());
        h.update([0]);
        h.update(path.as_bytes());
        let key = hex::encode(&h.finalize()[..16]);
        self.folder.child(&format!("files/{key}.json"))
    }

    async fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        let store = self.folder.store.as_ref();
        let Some(bytes) = crate::store::read_if_exists(store, path, "journal").await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Manifest {
                path: self.folder.object_url(path),
                message: format!("unreadable run journal entry: {e}"),
            })
    }

    /// The snapshot an earlier attempt pinned, if any.
    pub async fn snapshot(&self) -> Result<Option<Snapshot>> {
        self.read_json(&self.folder.child("snapshot.json")).await
    }

    /// Pins `fresh` as the run's snapshot, unless an attempt pinned one: then that one (a
    /// concurrent attempt, a shard, may pin first).
    pub async fn pin(&self, fresh: Snapshot) -> Result<Snapshot> {
        self.pin_json(&self.folder.child("snapshot.json"), fresh, "the snapshot")
            .await
    }

    /// Writes `fresh` at `path` unless an object is there: then what is there.
    async fn pin_json<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        fresh: T,
        what: &str,
    ) -> Result<T> {
        let bytes = serde_json::to_vec_pretty(&fresh)
            .map_err(|e| Error::Internal(format!("serialising {what}: {e}")))?;
        if crate::store::put_if_absent(self.folder.store.as_ref(), path, bytes, what).await? {
            return Ok(fresh);
        }
        self.read_json::<T>(path)
            .await?
            .ok_or_else(|| Error::Internal(format!("{what} {path} vanished")))
    }

    fn shard_path(&self, shard: Shard) -> Path {
        self.folder
            .child(&format!("shards/{}/{}.json", shard.count, shard.index))
    }

    /// Pins `fresh` as the record of `shard`, unless an earlier attempt of it pinned one: then
    /// that one.
    pub async fn pin_shard(&self, shard: Shard, fresh: ShardRecord) -> Result<ShardRecord> {
        self.pin_json(&self.shard_path(shard), fresh, "a shard record")
            .await
    }

    /// Records that `shard` purged all its files.
    pub async fn shard_done(&self, shard: Shard, mut record: ShardRecord) -> Result<()> {
        record.done = true;
        let path = self.shard_path(shard);
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::Internal(format!("serialising a shard record: {e}")))?;
        self.folder
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| Error::store(format!("writing shard record {path}"), e))?;
        Ok(())
    }

    /// The records of every shard `0..N` of some `N` when all of them finished (the largest
    /// such `N`), else `None`.
    pub async fn finished_shards(&self) -> Result<Option<Vec<ShardRecord>>> {
        let metas = self.list(&self.folder.child("shards")).await?;
        let mut by_count: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for m in &metas {
            let rel = self.folder.relative(&m.location);
            let parsed = rel
                .strip_prefix("shards/")
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(|r| r.split_once('/'))
                .and_then(|(n, i)| Some((n.parse::<u32>().ok()?, i.parse::<u32>().ok()?)));
            if let Some((count, index)) = parsed.filter(|(n, i)| i < n) {
                by_count.entry(count).or_default().push(index);
            }
        }
        for (count, indices) in by_count.into_iter().rev() {
            if indices.len() != count as usize {
                continue;
            }
            let mut records = Vec::new();
            for index in 0..count {
                match self
                    .read_json::<ShardRecord>(&self.shard_path(Shard { index, count }))
                    .await?
                {
                    Some(r) if r.done => records.push(r),
                    _ => break,
                }
            }
            if records.len() == count as usize {
                return Ok(Some(records));
            }
        }
        Ok(None)
    }

    /// The journal's objects under `prefix`.
    async fn list(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        self.folder
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing the run journal at {}", self.folder.url), e))
    }

    /// Every file entry, keyed by (table, path).
    pub async fn entries(&self) -> Result<BTreeMap<(String, String), Entry>> {
        let metas = self.list(&self.folder.child("files")).await?;
        let mut out = BTreeMap::new();
        // Skip temporary files a write killed mid-way left behind (`.lakepurge-*.tmp`).
        let entries = metas.into_iter().filter(|m| {
            m.location
                .filename()
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        });
        for m in entries {
            if let Some(e) = self.read_json::<Entry>(&m.location).await? {
                out.insert((e.table.clone(), e.path.clone()), e);
            }
        }
        Ok(out)
    }

    /// Writes (replaces) the entry of one file.
    pub async fn put(&self, entry: &Entry) -> Result<()> {
        let path = self.entry_path(&entry.table, &entry.path);
        let bytes = serde_json::to_vec_pretty(entry)
            .map_err(|e| Error::Internal(format!("serialising a journal entry: {e}")))?;
        self.folder
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| Error::store(format!("writing journal {path}"), e))?;
        Ok(())
    }

    /// Deletes the journal (after the manifest is written).
    pub async fn clear(&self) -> Result<()> {
        let metas = self.list(&self.folder.prefix).await?;
        for m in metas {
            match self.folder.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(format!("deleting journal {}", m.location), e)),
            }
        }
        Ok(())
    }
}
