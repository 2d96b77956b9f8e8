//! The Delta log's own files as holders of erased values: every `add` (and `remove` with
//! extended metadata) keeps the file's statistics, whose `minValues`/`maxValues` may be an
//! erased subject's id, in the commit entries (`NNN.json`), in checkpoints (`NNN.checkpoint…`,
//! as a JSON string `stats` and, when the table writes them, a struct `stats_parsed`), and in
//! version checksums (`NNN.crc`, which may list every file). A purge rewrites data files; these
//! stay until the log's retention removes them, or until `old_log = "expire"` does it
//! ([`expire`]).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::Value;

use super::{error, load, state};
use crate::error::{Error, Result};
use crate::store::Location;
use crate::table::{LogFile, LogFileKind, Table};

/// The log's folder, relative to the table.
const LOG: &str = "_delta_log";

/// What kind of log file `name` (a file name in `_delta_log/`) is, and its version.
fn kind_of(name: &str) -> Option<(LogFileKind, u64)> {
    let digits = name.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version = digits.parse().ok()?;
    let rest = &name[20..];
    let kind = if rest.starts_with(".checkpoint") {
        LogFileKind::Checkpoint
    } else if rest.ends_with(".json") {
        LogFileKind::Entry
    } else if rest == ".crc" {
        LogFileKind::Checksum
    } else {
        return None;
    };
    Some((kind, version))
}

/// The log's entries, checkpoints and checksums on disk (the table at `location`), in version
/// order.
pub async fn log_files(location: &Location) -> Result<Vec<LogFile>> {
    let prefix = location.child(LOG);
    let listed: Vec<object_store::ObjectMeta> = location
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing {}{LOG}/", location.url), e))?;
    let mut files: Vec<LogFile> = listed
        .into_iter()
        .filter_map(|m| {
            let rel = location.relative(&m.location);
            let name = rel.strip_prefix("_delta_log/")?;
            let (kind, version) = match name.strip_prefix("_sidecars/") {
                Some(part) if part.ends_with(".parquet") => (LogFileKind::Sidecar, 0),
                Some(_) => return None,
                None => kind_of(name)?,
            };
            Some(LogFile {
                path: rel.clone(),
                version,
                kind,
            })
        })
        .collect();
    files.sort_by(|a, b| (a.version, &a.path).cmp(&(b.version, &b.path)));
    Ok(files)
}

/// The file statistics `file` records: one JSON object (`numRecords`, `minValues`,
/// `maxValues`, `nullCount`) per file action that has them.
pub async fn statistics(table: &Table, file: &LogFile) -> Result<Vec<Value>> {
    let shown = format!("{}{}", table.location.url, file.path);
    let bytes = match table
        .location
        .store
        .get(&table.location.child(&file.path))
        .await
    {
        Ok(got) => got
            .bytes()
            .await
            .map_err(|e| Error::store(format!("reading {shown}"), e))?,
        // Removed meanwhile (the log's own cleanup): nothing held any more.
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(Error::store(format!("reading {shown}"), e)),
    };
    if file.path.ends_with(".parquet") {
        return parquet_statistics(bytes, &shown);
    }
    let mut out = Vec::new();
    match file.kind {
        LogFileKind::Checksum => {
            // A version checksum may list every file (`allFiles`), each an `add`.
            let checksum: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            for add in checksum["allFiles"].as_array().into_iter().flatten() {
                push_stats(add, &mut out);
            }
        }
        LogFileKind::Entry | LogFileKind::Checkpoint | LogFileKind::Sidecar => {
            for line in bytes.split(|b| *b == b'\n') {
                let Ok(action) = serde_json::from_slice::<Value>(line) else {
                    continue;
                };
                for kind in ["add", "remove"] {
                    push_stats(&action[kind], &mut out);
                }
            }
        }
    }
    Ok(out)
}

/// The statistics of a file action (`stats`, a JSON string, or `stats_parsed`, an object).
fn push_stats(action: &Value, out: &mut Vec<Value>) {
    if let Some(text) = action["stats"].as_str()
        && let Ok(stats) = serde_json::from_str::<Value>(text)
    {
        out.push(stats);
    }
    if action["stats_parsed"].is_object() {
        out.push(action["stats_parsed"].clone());
    }
}

/// The statistics in a Parquet checkpoint (or sidecar): its `add` and `remove` actions'
/// statistics.
fn parquet_statistics(bytes: Bytes, shown: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for action in parquet_actions(bytes, shown, &["add", "remove"])? {
        for kind in ["add", "remove"] {
            push_stats(&action[kind], &mut out);
        }
    }
    Ok(out)
}

/// The actions of kinds `kinds` in a Parquet checkpoint (or sidecar), each as a JSON object
/// (`{"add": {...}}`), read with only their columns (for `add`/`remove`, only statistics).
fn parquet_actions(bytes: Bytes, shown: &str, kinds: &[&str]) -> Result<Vec<Value>> {
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::parquet(shown.to_string(), e))?;
    let descr = builder.parquet_schema();
    let leaves: Vec<usize> = (0..descr.num_columns())
        .filter(|&i| {
            let parts = descr.column(i).path().parts().to_vec();
            parts.len() >= 2
                && kinds.contains(&parts[0].as_str())
                && match parts[0].as_str() {
                    "add" | "remove" => parts[1] == "stats" || parts[1] == "stats_parsed",
                    _ => true,
                }
        })
        .collect();
    if leaves.is_empty() {
        return Ok(Vec::new());
    }
    let mask = ProjectionMask::leaves(descr, leaves);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::parquet(shown.to_string(), e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::arrow(format!("reading {shown}"), e))?;
        let mut lines = arrow::json::LineDelimitedWriter::new(Vec::new());
        lines
            .write(&batch)
            .map_err(|e| Error::arrow(format!("reading {shown}"), e))?;
        lines
            .finish()
            .map_err(|e| Error::arrow(format!("reading {shown}"), e))?;
        out.extend(
            lines
                .into_inner()
                .split(|b| *b == b'\n')
                .filter_map(|line| serde_json::from_slice::<Value>(line).ok()),
        );
    }
    Ok(out)
}

/// Writes a checkpoint at the log's latest version, then removes every log entry, checkpoint
/// and checksum before it (delta-rs's log cleanup, then what its file pattern does not cover:
/// multi-part and v2 checkpoints, checksums). Time travel to the versions before ends. Returns
/// the checkpoint's version.
pub async fn expire(table: &Table) -> Result<u64> {
    use deltalake_core::protocol::checkpoints;
    let snapshot = load(table).await?;
    let delta = state(table, &snapshot)?;
    checkpoints::create_checkpoint(&delta.table, None)
        .await
        .map_err(|e| error(table, "writing a checkpoint", e))?;
    let log_store = delta.log_store();
    let removed = checkpoints::cleanup_expired_logs_for(
        snapshot.version,
        log_store.as_ref(),
        chrono::Utc::now().timestamp_millis(),
        None,
    )
    .await
    .map_err(|e| error(table, "removing the log before the checkpoint", e))?;
    let mut leftover = 0;
    let files = log_files(&table.location).await?;
    let kept = sidecars_of(table, &files, snapshot.version).await?;
    for file in files {
        let old = match file.kind {
            LogFileKind::Sidecar => !kept.contains(&file.path),
            _ => file.version < snapshot.version,
        };
        if !old {
            continue;
        }
        match table
            .location
            .store
            .delete(&table.location.child(&file.path))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => leftover += 1,
            Err(e) => {
                return Err(Error::store(
                    format!("deleting {}{}", table.location.url, file.path),
                    e,
                ));
            }
        }
    }
    tracing::info!(table = %table.spec.name, version = snapshot.version, removed = removed + leftover, "checkpoint written; the log before it removed (time travel before it ends)");
    Ok(snapshot.version)
}

/// The sidecar files (relative to the table) the checkpoint at `version` names.
async fn sidecars_of(
    table: &Table,
    files: &[LogFile],
    version: u64,
) -> Result<std::collections::BTreeSet<String>> {
    let mut named = std::collections::BTreeSet::new();
    for file in files
        .iter()
        .filter(|f| f.kind == LogFileKind::Checkpoint && f.version == version)
    {
        let shown = format!("{}{}", table.location.url, file.path);
        let bytes = table
            .location
            .store
            .get(&table.location.child(&file.path))
            .await
            .map_err(|e| Error::store(format!("reading {shown}"), e))?
            .bytes()
            .await
            .map_err(|e| Error::store(format!("reading {shown}"), e))?;
        let actions = if file.path.ends_with(".parquet") {
            parquet_actions(bytes, &shown, &["sidecar"])?
        } else {
            bytes
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
                .collect()
        };
        for action in actions {
            if let Some(path) = action["sidecar"]["path"].as_str() {
                // Relative to `_delta_log/_sidecars/` (the usual case) or a full URL.
                let name = path.rsplit('/').next().unwrap_or(path);
                named.insert(format!("_delta_log/_sidecars/{name}"));
            }
        }
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_names() {
        let v = "00000000000000000007";
        assert_eq!(kind_of(&format!("{v}.json")), Some((LogFileKind::Entry, 7)));
        assert_eq!(
            kind_of(&format!("{v}.checkpoint.parquet")),
            Some((LogFileKind::Checkpoint, 7))
        );
        assert_eq!(
            kind_of(&format!("{v}.checkpoint.0000000001.0000000002.parquet")),
            Some((LogFileKind::Checkpoint, 7))
        );
        assert_eq!(
            kind_of(&format!("{v}.crc")),
            Some((LogFileKind::Checksum, 7))
        );
        assert_eq!(kind_of(&format!("{v}.json.tmp")), None);
        assert_eq!(kind_of("_last_checkpoint"), None);
        assert_eq!(kind_of("_commit_x.json.tmp"), None);
    }
}
