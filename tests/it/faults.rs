//! Fault injection (in-process, through `FaultStore` over an in-memory store): transient
//! failures are retried, a table that keeps failing is reported while the others complete and
//! the rerun resumes, and a concurrent writer's newer data is never overwritten.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use lakepurge::purge::{self, Outcome, SystemClock};
use lakepurge::spec::Job;
use lakepurge::store::fault::{FaultStore, Op};
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::*;

struct MemSample {
    _dir: tempfile::TempDir,
    job: Job,
    faults: FaultStore,
}

/// The demo sample uploaded to `memory://<name>/` behind a FaultStore.
async fn mem_sample(name: &str) -> MemSample {
    let dir = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(dir.path()).unwrap();
    let faults = FaultStore::new(Arc::new(InMemory::new()));
    lakepurge::store::register(&format!("memory://{name}"), Arc::new(faults.clone())).unwrap();
    for (rel, _) in tree_hashes(dir.path()) {
        if rel.starts_with("warehouse/") || rel.starts_with("events/") {
            let bytes = std::fs::read(dir.path().join(&rel)).unwrap();
            faults
                .put(&ObjPath::from(rel.as_str()), bytes.into())
                .await
                .unwrap();
        }
    }
    let local = file_url(&std::path::absolute(dir.path()).unwrap());
    let remote = format!("memory://{name}/");
    for spec in [
        "jobs/demo.toml",
        "jobs/tables/users.toml",
        "jobs/tables/messages.toml",
        "jobs/tables/sessions.toml",
    ] {
        let p = dir.path().join(spec);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(&local, &remote);
        std::fs::write(&p, text).unwrap();
    }
    let job = Job::load(&dir.path().join("jobs/demo.toml")).unwrap();
    MemSample {
        _dir: dir,
        job,
        faults,
    }
}

async fn read_rows(store: &dyn ObjectStore, path: &str) -> Option<RecordBatch> {
    let bytes = match store.get(&ObjPath::from(path)).await {
        Ok(g) => g.bytes().await.unwrap(),
        Err(object_store::Error::NotFound { .. }) => return None,
        Err(e) => panic!("{e}"),
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    Some(arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap())
}

fn user_ids(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("user_id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

fn table<'a>(
    m: &'a lakepurge::manifest::Manifest,
    name: &str,
) -> &'a lakepurge::manifest::TableRecord {
    m.tables.iter().find(|t| t.name == name).unwrap()
}

/// Runs a purge of run "r1" that must complete; returns its manifest.
async fn purge_completed(s: &MemSample) -> lakepurge::manifest::Stored {
    let out = purge::purge(&s.job, "r1", &SystemClock, &purge::Options::default())
        .await
        .unwrap();
    match out {
        Outcome::Completed(stored) => stored,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_put_failure_is_retried() {
    let s = mem_sample("faults-retry").await;
    s.faults.fail(Op::Put, "warehouse/users/part-00000", 1);
    let stored = purge_completed(&s).await;
    assert_eq!(s.faults.injected(), 1);
    assert_eq!(table(&stored.manifest, "crm.users").rows_removed, 5);
    let users = read_rows(&s.faults, "warehouse/users/part-00000.parquet")
        .await
        .unwrap();
    let ids = user_ids(&users);
    assert_eq!(ids.len(), 997);
    assert!(!ids.contains(&42) && !ids.contains(&142) && !ids.contains(&7));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_table_is_reported_the_others_complete_and_the_rerun_resumes() {
    let s = mem_sample("faults-table").await;
    s.faults.fail(Op::Put, "warehouse/users/", 1000);
    let messages_before = read_rows(
        &s.faults,
        "warehouse/messages/dt=2026-11-20/part-00000.parquet",
    )
    .await
    .unwrap();
    let out = purge::purge(&s.job, "r1", &SystemClock, &purge::Options::default())
        .await
        .unwrap();
    let Outcome::Failed { failures } = out else {
        panic!("{out:?}")
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "crm.users");
    assert!(failures[0].1.to_string().contains("injected"));
    // The other tables completed.
    let messages = read_rows(
        &s.faults,
        "warehouse/messages/dt=2026-11-20/part-00000.parquet",
    )
    .await
    .unwrap();
    assert_eq!(messages.num_rows(), messages_before.num_rows() - 8);
    assert_eq!(
        read_rows(&s.faults, "warehouse/users/part-00000.parquet")
            .await
            .unwrap()
            .num_rows(),
        1000
    );
    assert!(
        s.faults
            .head(&ObjPath::from("manifests/demo/r1.json"))
            .await
            .is_err()
    );
    let confirmations =
        ObjPath::from("manifests/demo/confirmations/job=demo/run_id=r1/part-0.parquet");
    assert!(
        s.faults.head(&confirmations).await.is_err(),
        "a failed run confirmed events"
    );

    // The storage recovers; the same run id resumes and accounts for both attempts.
    s.faults.clear();
    let stored = purge_completed(&s).await;
    let m = &stored.manifest;
    assert_eq!(
        table(m, "chat.messages").rows_removed,
        8,
        "the first attempt's counts were lost"
    );
    assert_eq!(table(m, "chat.messages").files.len(), 1);
    assert_eq!(table(m, "web.sessions").rows_removed, 1);
    assert_eq!(table(m, "crm.users").rows_removed, 5);
    // Completed, the run confirms its 7 events in its file (the 8th row is malformed).
    let confirmed = m.confirmations.as_ref().unwrap();
    assert_eq!(confirmed.rows, 7);
    assert!(s.faults.head(&confirmations).await.is_ok());
    assert_eq!(
        m.per_event.values().sum::<u64>(),
        m.tables
            .iter()
            .flat_map(|t| &t.files)
            .flat_map(|f| f.per_event.values())
            .sum::<u64>()
    );
    assert!(
        read_rows(&s.faults, "warehouse/users/part-00001.parquet")
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_listing_fails_the_run_before_anything_is_written() {
    let s = mem_sample("faults-list").await;
    s.faults.fail(Op::List, "warehouse/sessions", 1);
    let err = purge::purge(&s.job, "r1", &SystemClock, &purge::Options::default())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert_eq!(
        read_rows(&s.faults, "warehouse/users/part-00000.parquet")
            .await
            .unwrap()
            .num_rows(),
        1000
    );
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
        s.faults.list(Some(&ObjPath::from("manifests"))),
    )
    .await
    .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    let out = purge::purge(&s.job, "r1", &SystemClock, &purge::Options::default())
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Completed(_)));
}

/// The users file another writer puts in place: users 42 (erased), 77777 and 88888.
fn newer_users_file() -> Vec<u8> {
    let newer = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(Int64Array::from(vec![42, 77777, 88888])) as ArrayRef,
        ),
        (
            "email",
            Arc::new(StringArray::from(vec!["a@b.c", "d@e.f", "g@h.i"])),
        ),
        (
            "country",
            Arc::new(StringArray::from(vec!["DE", "FR", "US"])),
        ),
    ])
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, newer.schema(), None).unwrap();
    w.write(&newer).unwrap();
    w.close().unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrent_writers_newer_file_survives() {
    let s = mem_sample("faults-concurrent").await;
    // Another writer replaces the users file between lakepurge's read and its replace.
    let buf = newer_users_file();
    s.faults.concurrent_write(
        "warehouse/users/part-00000.parquet",
        Bytes::from(buf.clone()),
    );

    let stored = purge_completed(&s).await;
    newer_file_was_purged(&s, &stored, &buf).await;
}

/// The users file is the newer one (`buf`), purged of user 42, and the manifest says so.
async fn newer_file_was_purged(s: &MemSample, stored: &lakepurge::manifest::Stored, buf: &[u8]) {
    let users = read_rows(&s.faults, "warehouse/users/part-00000.parquet")
        .await
        .unwrap();
    assert_eq!(
        user_ids(&users),
        vec![77777, 88888],
        "the newer data was lost or not purged"
    );
    let rec = table(&stored.manifest, "crm.users")
        .files
        .iter()
        .find(|f| f.path == "part-00000.parquet")
        .unwrap();
    assert_eq!(rec.before.rows, 3);
    assert_eq!(rec.rows_removed, 1);
    assert_eq!(rec.before.sha256, lakepurge::manifest::sha256_hex(buf));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_replaced_while_read_by_ranges_is_read_again() {
    // Every file counts as large (read by ranges, each read naming the version): another
    // writer replaces the users file just after its version is taken, so the ranged reads are
    // refused, and the purge reads the newer file again and purges it.
    let s = mem_sample("faults-ranged").await;
    let buf = newer_users_file();
    s.faults.write_after_head(
        "warehouse/users/part-00000.parquet",
        Bytes::from(buf.clone()),
    );
    let opts = purge::Options {
        large_file: Some(1),
        ..Default::default()
    };
    let out = purge::purge(&s.job, "r1", &SystemClock, &opts)
        .await
        .unwrap();
    let Outcome::Completed(stored) = out else {
        panic!("the run did not complete: {out:?}");
    };
    newer_file_was_purged(&s, &stored, &buf).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_deleted_by_another_writer_is_recorded_not_resurrected() {
    let s = mem_sample("faults-vanished").await;
    s.faults
        .concurrent_delete("warehouse/users/part-00000.parquet");
    let stored = purge_completed(&s).await;
    let users = table(&stored.manifest, "crm.users");
    assert_eq!(users.files_vanished, vec!["part-00000.parquet".to_string()]);
    assert_eq!(
        users.rows_removed, 2,
        "only the other file's rows were removed"
    );
    assert!(
        read_rows(&s.faults, "warehouse/users/part-00000.parquet")
            .await
            .is_none(),
        "the deleted file was recreated"
    );
}

/// What a manifest says of the tables, without what differs between two stores or runs
/// (etags, versions, times).
fn tables_of(m: &lakepurge::manifest::Manifest) -> Vec<serde_json::Value> {
    m.tables
        .iter()
        .map(|t| {
            let files: Vec<_> = t
                .files
                .iter()
                .map(|f| {
                    let v =
                        |x: &lakepurge::manifest::FileVersion| (x.size, x.sha256.clone(), x.rows);
                    serde_json::json!([
                        f.path,
                        f.rows_removed,
                        v(&f.before),
                        f.after.as_ref().map(v),
                        f.per_event
                    ])
                })
                .collect();
            serde_json::json!([
                t.name,
                t.files_listed,
                t.files_pruned,
                t.files_rewritten,
                t.files_deleted,
                t.rows_removed,
                t.ids_unconvertible,
                files
            ])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_read_only_their_own_files_and_the_final_step_reads_none() {
    use lakepurge::purge::Shard;
    let reference = purge_completed(&mem_sample("shards-whole").await)
        .await
        .manifest;

    let s = mem_sample("shards-split").await;
    let tables = lakepurge::table::Table::resolve_all(&s.job).await.unwrap();
    // (table, path relative to it) of a read of a table file; None for other objects.
    let table_file = |path: &str| {
        tables.iter().find_map(|t| {
            let p = ObjPath::from(path);
            p.prefix_match(&t.location.prefix)
                .map(|_| (t.spec.name.clone(), t.location.relative(&p)))
        })
    };
    s.faults.take_reads();
    let mut seen = std::collections::BTreeSet::new();
    for index in 0..3 {
        let shard = Shard { index, count: 3 };
        let opts = purge::Options {
            shard: Some(shard),
            ..Default::default()
        };
        let out = purge::purge(&s.job, "r1", &SystemClock, &opts)
            .await
            .unwrap();
        assert!(matches!(out, Outcome::ShardDone { .. }), "{out:?}");
        let read: std::collections::BTreeSet<_> = s
            .faults
            .take_reads()
            .iter()
            .filter_map(|p| table_file(p))
            .collect();
        for (table, path) in &read {
            assert!(
                shard.owns(table, path),
                "shard {shard} read {table} {path}, not its own"
            );
            assert!(
                seen.insert((table.clone(), path.clone())),
                "{path} read by two shards"
            );
        }
    }
    let out = purge::purge(&s.job, "r1", &SystemClock, &purge::Options::default())
        .await
        .unwrap();
    let Outcome::Completed(stored) = out else {
        panic!("{out:?}")
    };
    let after: Vec<_> = s
        .faults
        .take_reads()
        .iter()
        .filter_map(|p| table_file(p))
        .collect();
    assert_eq!(after, Vec::new(), "the final step read table files");
    assert_eq!(tables_of(&stored.manifest), tables_of(&reference));
    assert_eq!(stored.manifest.per_event, reference.per_event);
    assert_eq!(stored.manifest.events.digest, reference.events.digest);
    // Every file of the sample was read by exactly one shard.
    let listed: usize = reference
        .tables
        .iter()
        .map(|t| t.files_listed as usize)
        .sum();
    assert_eq!(seen.len(), listed);
}
