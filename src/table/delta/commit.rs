//! A purge's changes to a Delta table as one transaction: a `remove` for each rewritten or
//! emptied file, an `add` for each new file, an application transaction (`txn`) naming the run
//! (a resumed or repeated run finds it and does not commit twice), and a `commitInfo` naming
//! lakepurge, the job, the run and the manifest, with no predicate and no subject id.
//!
//! delta-rs writes the commit with a conditional put and, when another writer committed first,
//! checks for conflicts: a blind append does not conflict; a file removed by the other writer
//! that this purge read does, and the table is then planned again from the new version.

use std::collections::HashMap;

use deltalake_core::DeltaTableError;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Transaction};
use deltalake_core::protocol::DeltaOperation;
use serde_json::{Value, json};

use super::State;
use crate::error::{Error, Result};
use crate::table::{Changes, Committed, Snapshot, Table};

/// Commits `changes` on top of the snapshot whose Delta state is `delta`: a `remove` for each
/// replaced file, an `add` (statistics from its footer) for each new one.
pub async fn commit(
    table: &Table,
    snapshot: &Snapshot,
    delta: &State,
    changes: Changes,
) -> Result<Committed> {
    let state = delta
        .table
        .snapshot()
        .map_err(|e| super::error(table, "reading the log", e))?;
    let operation = DeltaOperation::Delete { predicate: None };
    let mut info = operation.get_commit_info();
    info.timestamp = Some(chrono::Utc::now().timestamp_millis());
    info.engine_info = Some(format!("lakepurge/{}", env!("CARGO_PKG_VERSION")));
    let mut actions: Vec<Action> = vec![Action::CommitInfo(info)];
    let mut adds = Vec::new();
    for r in &changes.replaced {
        let (Some(old), Some(remove)) = (snapshot.file(&r.old), delta.removes.get(&r.old)) else {
            return Err(Error::Internal(format!(
                "table {}: {} is not in version {} of the log",
                table.spec.name, r.old, snapshot.version
            )));
        };
        actions.push(Action::Remove(remove.clone()));
        if let Some(new) = &r.new {
            let stats = super::stats::stats_json(&new.footer, &delta.configuration);
            adds.push(Action::Add(super::add_for(old, &new.path, new.size, stats)));
        }
    }
    actions.extend(adds);
    let metadata: HashMap<String, Value> = HashMap::from([(
        "lakepurge".to_string(),
        json!({
            "job": changes.job,
            "runId": changes.run_id,
            "manifest": changes.manifest,
        }),
    )]);
    let properties = CommitProperties::default()
        .with_metadata(metadata)
        .with_application_transaction(Transaction::new(&changes.key, 0));
    let committed = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(state), delta.log_store(), operation)
        .await;
    match committed {
        Ok(done) => Ok(Committed::Version(done.version())),
        Err(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(conflict),
        }) => Ok(Committed::Conflict(conflict.to_string())),
        Err(e) => Err(super::error(table, "committing", e)),
    }
}

/// The version of the commit that holds the application transaction `app_id`, looked for in
/// the commits after `read_version` (a resumed run: was its commit made before the crash?).
pub async fn find(
    table: &Table,
    delta: &State,
    app_id: &str,
    read_version: u64,
) -> Result<Option<u64>> {
    let state = delta
        .table
        .snapshot()
        .map_err(|e| super::error(table, "reading the log", e))?;
    let log = delta.log_store();
    let seen = state
        .transaction_version(log.as_ref(), app_id)
        .await
        .map_err(|e| super::error(table, "reading the log", e))?;
    if seen.is_none() {
        return Ok(None);
    }
    for version in read_version + 1..=delta.version {
        let bytes = log
            .read_commit_entry(version)
            .await
            .map_err(|e| super::error(table, "reading the log", e))?;
        let Some(bytes) = bytes else {
            continue;
        };
        if holds_txn(&bytes, app_id) {
            return Ok(Some(version));
        }
    }
    Err(Error::Internal(format!(
        "table {}: the log holds transaction {app_id} but no commit after version {read_version} \
         has it",
        table.spec.name
    )))
}

/// Whether a commit file (JSON lines) holds a `txn` action with `app_id`.
pub fn holds_txn(commit: &[u8], app_id: &str) -> bool {
    summarize(commit).txn_app_ids.iter().any(|a| a == app_id)
}

/// What a commit file holds, for checks: its transactions' app ids, and the (decoded) paths of
/// its removes and adds, sorted.
#[derive(Debug, Default)]
pub struct Summary {
    pub txn_app_ids: Vec<String>,
    pub removes: Vec<String>,
    pub adds: Vec<String>,
}

/// Reads a commit file (JSON lines, one action each).
pub fn summarize(commit: &[u8]) -> Summary {
    let decode = |p: &str| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut s = Summary::default();
    for action in commit
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
    {
        if let Some(id) = action["txn"]["appId"].as_str() {
            s.txn_app_ids.push(id.to_string());
        }
        if let Some(p) = action["remove"]["path"].as_str() {
            s.removes.push(decode(p));
        }
        if let Some(p) = action["add"]["path"].as_str() {
            s.adds.push(decode(p));
        }
    }
    s.removes.sort();
    s.adds.sort();
    s
}
