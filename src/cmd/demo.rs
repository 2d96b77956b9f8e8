//! The `demo` command: writes a small sample warehouse and erasure-event dataset into a scratch
//! folder, then runs validate, plan, purge and verify on it, printing what happened.
//!
//! The warehouse has three tables covering the match kinds: `users` (an integer key and a
//! normalised email; one of its files holds only erased users and is deleted), `messages` (a
//! struct path `sender.id` and a list column `recipients`) and `sessions` (a composite key).
//! One request is under a legal hold for the users table: its user row is kept, its other
//! rows erased, and it is confirmed `held`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Int64Type};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::validate;
use crate::error::{Error, Result};
use crate::purge::{Outcome, SystemClock};
use crate::spec::Job;
use crate::table::Table;
use crate::{events, plan, purge, verify};

/// Runs the demo in `dir` (or a new scratch folder). Returns the exit code.
pub async fn run(dir: Option<PathBuf>) -> Result<u8> {
    let dir = match dir {
        Some(d) => d,
        None => {
            std::env::temp_dir().join(format!("lakepurge-demo-{}", uuid::Uuid::new_v4().simple()))
        }
    };
    let job_file = write_sample(&dir)?;
    println!("== sample warehouse written to {}", dir.display());
    let job = Job::load(&job_file)?;

    show_plan(&job, &job_file).await?;
    if !show_purge(&job, &job_file, &dir).await? {
        return Ok(1);
    }
    let pass = show_verify(&dir).await?;
    println!("\n== lakepurge status --job {}", job_file.display());
    let s = super::status::status(&job, chrono::Utc::now(), None).await?;
    print!("{}", super::status::render(&s));
    println!(
        "\nnext: lakepurge report --job {} --out {}",
        job_file.display(),
        dir.join("report.html").display()
    );
    Ok(if pass { 0 } else { 3 })
}

/// validate and plan, as the commands print them.
async fn show_plan(job: &Job, job_file: &Path) -> Result<()> {
    println!("\n== lakepurge validate --job {}", job_file.display());
    let v = validate::validate(job).await?;
    for t in &v.tables {
        println!("table {}: {} files, match columns ok", t.name, t.files);
    }

    println!("\n== lakepurge plan --job {}", job_file.display());
    let mut ev = events::load(job).await?;
    crate::holds::attach(job, &mut ev, None, chrono::Utc::now()).await?;
    println!(
        "events: {} rows, {} skipped (no subject id), {} distinct events",
        ev.rows,
        ev.skipped,
        ev.count()
    );
    let tables = Table::open_all(job).await?;
    for p in plan::plan_tables(&tables, &ev).await? {
        println!(
            "table {}: {} files listed, {} pruned, {} affected ({} emptied), {} rows would go, \
             {} kept under holds",
            p.name,
            p.files_listed,
            p.files_pruned,
            p.files_affected,
            p.files_emptied,
            p.rows_matched,
            p.rows_held
        );
    }
    Ok(())
}

/// The purge (run `demo-1`); `false` when a table failed.
async fn show_purge(job: &Job, job_file: &Path, dir: &Path) -> Result<bool> {
    println!(
        "\n== lakepurge purge --job {} --run-id demo-1",
        job_file.display()
    );
    let stored = match purge::purge(job, "demo-1", &SystemClock, &purge::Options::default()).await?
    {
        Outcome::Completed(s) | Outcome::AlreadyComplete(s) => s,
        Outcome::Failed { failures } => {
            for (t, e) in failures {
                eprintln!("table {t} failed: {e}");
            }
            return Ok(false);
        }
        Outcome::ShardDone { .. } => {
            return Err(Error::Internal("the demo's purge ran as a shard".into()));
        }
    };
    for t in &stored.manifest.tables {
        println!(
            "table {}: {} rows removed, {} files rewritten, {} deleted{}",
            t.name,
            t.rows_removed,
            t.files_rewritten,
            t.files_deleted,
            t.held
                .as_ref()
                .map(|h| format!(
                    ", {} rows kept under holds {}",
                    h.rows,
                    h.hold_ids.join(", ")
                ))
                .unwrap_or_default()
        );
    }
    let manifest_path = dir.join("manifests").join("demo").join("demo-1.json");
    println!("manifest: {}", manifest_path.display());
    Ok(true)
}

/// verify on the run's manifest; whether it passed.
async fn show_verify(dir: &Path) -> Result<bool> {
    let manifest_path = dir.join("manifests").join("demo").join("demo-1.json");
    println!("\n== lakepurge verify {}", manifest_path.display());
    let report = verify::verify(
        &manifest_path.display().to_string(),
        &verify::Options::default(),
    )
    .await?;
    for c in &report.checks {
        println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
    }
    println!("{}", if report.pass { "PASS" } else { "FAIL" });
    Ok(report.pass)
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("demo: cannot write {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| io_err(path, e))
}

fn write_parquet(path: &Path, batch: &RecordBatch, row_group_rows: usize) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let perr = |e| Error::parquet(path.display(), e);
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(perr)?;
    w.write(batch).map_err(perr)?;
    w.close().map_err(perr)?;
    Ok(())
}

/// A batch whose id columns (`*_id`) are required and every other column optional, as a
/// warehouse table would declare them.
fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    RecordBatch::try_from_iter_with_nullable(
        columns
            .into_iter()
            .map(|(name, array)| (name, array, !name.ends_with("_id"))),
    )
    .map_err(|e| Error::arrow("demo data", e))
}

/// The users table: 1000 users with emails in mixed case, and a file of only erased users.
fn write_users(wh: &Path) -> Result<()> {
    let ids: Vec<i64> = (1..=1000).collect();
    let users = batch(vec![
        (
            "user_id",
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
        ),
        (
            "email",
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("User{i}@Example.com")),
            )),
        ),
        (
            "country",
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| ["DE", "FR", "US"][*i as usize % 3]),
            )),
        ),
    ])?;
    write_parquet(&wh.join("users/part-00000.parquet"), &users, 250)?;
    let erased_only = batch(vec![
        (
            "user_id",
            Arc::new(Int64Array::from(vec![5001, 5002])) as ArrayRef,
        ),
        (
            "email",
            Arc::new(StringArray::from(vec!["a@x.org", "b@x.org"])),
        ),
        ("country", Arc::new(StringArray::from(vec!["DE", "DE"]))),
    ])?;
    write_parquet(&wh.join("users/part-00001.parquet"), &erased_only, 250)?;
    Ok(())
}

/// The messages table, partitioned by day: a struct (`sender.id`) and a list (`recipients`).
fn write_messages(wh: &Path) -> Result<()> {
    let n = 400i64;
    let sender_fields = Fields::from(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]);
    let sender = StructArray::new(
        sender_fields,
        vec![
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 100))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("sender {}", i % 100)),
            )),
        ],
        None,
    );
    let recipients = ListArray::from_iter_primitive::<Int64Type, _, _>(
        (0..n).map(|i| Some(vec![Some(100 + i % 50), Some(200 + i % 7)])),
    );
    let messages = batch(vec![
        (
            "msg_id",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        ("sender", Arc::new(sender)),
        ("recipients", Arc::new(recipients)),
        (
            "body",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("message {i}")),
            )),
        ),
    ])?;
    write_parquet(
        &wh.join("messages/dt=2026-11-20/part-00000.parquet"),
        &messages,
        100,
    )?;
    Ok(())
}

/// The sessions table, keyed by a composite (`tenant_id`, `user_id`).
fn write_sessions(wh: &Path) -> Result<()> {
    let sessions = batch(vec![
        (
            "tenant_id",
            Arc::new(StringArray::from(vec!["acme", "acme", "globex", "acme"])) as ArrayRef,
        ),
        (
            "user_id",
            Arc::new(StringArray::from(vec!["42", "43", "42", "44"])),
        ),
        ("started", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
    ])?;
    write_parquet(&wh.join("sessions/part-00000.parquet"), &sessions, 100)?;
    Ok(())
}

/// Writes the sample warehouse, events and specs under `dir`; returns the job file.
pub fn write_sample(dir: &Path) -> Result<PathBuf> {
    let wh = dir.join("warehouse");
    write_users(&wh)?;
    write_messages(&wh)?;
    write_sessions(&wh)?;
    write_file(
        &dir.join("events/dt=2026-11-24/events.json"),
        concat!(
            "{\"event_id\":\"ev-1\",\"subject_type\":\"user_id\",\"subject_id\":\"42\",\"requested_at\":\"2026-11-24T08:00:00Z\"}\n",
            "{\"event_id\":\"ev-1\",\"subject_type\":\"user_id\",\"subject_id\":\"42\",\"requested_at\":\"2026-11-24T08:00:00Z\"}\n",
            "{\"event_id\":\"ev-2\",\"subject_type\":\"user_id\",\"subject_id\":\"5001\",\"requested_at\":\"2026-11-24T09:00:00Z\"}\n",
            "{\"event_id\":\"ev-3\",\"subject_type\":\"user_id\",\"subject_id\":\"5002\",\"requested_at\":\"2026-11-24T09:30:00Z\"}\n",
            "{\"event_id\":\"ev-4\",\"subject_type\":\"email\",\"subject_id\":\" USER7@example.com \",\"requested_at\":\"2026-11-24T10:00:00Z\"}\n",
            "{\"event_id\":\"ev-5\",\"subject_type\":\"tenant_user\",\"subject_id\":\"[\\\"acme\\\",\\\"43\\\"]\",\"requested_at\":\"2026-11-24T11:00:00Z\"}\n",
            "{\"event_id\":\"ev-6\",\"subject_type\":\"user_id\",\"subject_id\":\"142\",\"requested_at\":\"2026-11-24T12:00:00Z\"}\n",
            "{\"event_id\":\"ev-7\",\"subject_type\":\"user_id\",\"subject_id\":null,\"requested_at\":\"2026-11-24T13:00:00Z\"}\n",
            "{\"event_id\":\"ev-8\",\"subject_type\":\"user_id\",\"subject_id\":\"not-a-number\",\"requested_at\":\"2026-11-24T14:00:00Z\"}\n",
        ),
    )?;

    let url = |p: &Path| -> Result<String> {
        url::Url::from_directory_path(p)
            .map(|u| u.to_string())
            .map_err(|()| io_err(p, "not an absolute path"))
    };
    let abs = std::path::absolute(dir).map_err(|e| io_err(dir, e))?;
    write_file(
        &dir.join("holds/holds.json"),
        "{\"hold_id\":\"LH-2026-117\",\"subject_type\":\"user_id\",\"subject_id\":\"142\",\
         \"table\":\"crm.users\",\"basis\":\"legal_claims\",\
         \"reference\":\"case 2026-117\",\"placed_at\":\"2026-11-20T00:00:00Z\"}\n",
    )?;
    let job_file = dir.join("jobs/demo.toml");
    write_file(
        &job_file,
        &format!(
            "[job]\nname = \"demo\"\nmanifests = \"{}\"\ntables = \"tables\"\n\n\
             [holds]\nlocation = \"{}\"\nformat = \"ndjson\"\n\n\
             [events]\nlocation = \"{}\"\nformat = \"ndjson\"\n",
            url(&abs.join("manifests"))?,
            url(&abs.join("holds"))?,
            url(&abs.join("events"))?
        ),
    )?;
    write_file(
        &dir.join("jobs/tables/users.toml"),
        &format!(
            "name = \"crm.users\"\nlocation = \"{}\"\naction = \"delete\"\n\n\
             [[match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n\n\
             [[match]]\ncolumn = \"email\"\nsubject_type = \"email\"\nnormalize = \"lowercase_trim\"\n",
            url(&abs.join("warehouse/users"))?
        ),
    )?;
    write_file(
        &dir.join("jobs/tables/messages.toml"),
        &format!(
            "name = \"chat.messages\"\nlocation = \"{}\"\npartitioning = [\"dt\"]\n\n\
             [[match]]\ncolumn = \"sender.id\"\nsubject_type = \"user_id\"\n\n\
             [[match]]\ncolumn = \"recipients\"\nsubject_type = \"user_id\"\n",
            url(&abs.join("warehouse/messages"))?
        ),
    )?;
    write_file(
        &dir.join("jobs/tables/sessions.toml"),
        &format!(
            "name = \"web.sessions\"\nlocation = \"{}\"\n\n\
             [[match]]\ncolumns = [\"tenant_id\", \"user_id\"]\nsubject_type = \"tenant_user\"\n",
            url(&abs.join("warehouse/sessions"))?
        ),
    )?;
    Ok(job_file)
}
