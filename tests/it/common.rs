//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use sha2::{Digest, Sha256};

/// The output of one `lakepurge` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the built binary with `args`.
pub fn lakepurge(args: &[&str]) -> Run {
    lakepurge_env(args, &[])
}

/// Runs the built binary with `args` and extra environment variables.
pub fn lakepurge_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let copies = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lakepurge"))
        .args(args)
        .env_remove("LAKEPURGE_LOG")
        .env("LAKEPURGE_MANIFEST_COPY", copies.path())
        .envs(env.iter().copied())
        .output()
        .expect("run lakepurge");
    check_manifests(copies.path());
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ lakepurge {}\nexit {}\n{}",
        args.join(" "),
        run.code,
        run.all_output()
    );
    run
}

/// Validates every manifest in `dir` (the copies a run kept, see `LAKEPURGE_MANIFEST_COPY`)
/// against `docs/manifest.schema.json`, with Python's `jsonschema` (one validator process for
/// the whole test binary); panics naming the manifest and the error.
pub fn check_manifests(dir: &Path) {
    use std::io::{BufRead, Write as _};
    static CHECKER: std::sync::Mutex<Option<SchemaChecker>> = std::sync::Mutex::new(None);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    if files.is_empty() {
        return;
    }
    files.sort();
    let mut checker = CHECKER.lock().unwrap_or_else(|p| p.into_inner());
    let c = checker.get_or_insert_with(SchemaChecker::start);
    for f in files {
        writeln!(c.stdin, "{}", f.display()).unwrap();
        c.stdin.flush().unwrap();
        let mut line = String::new();
        c.stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ok",
            "the manifest {} does not validate against docs/manifest.schema.json:\n{}",
            f.display(),
            std::fs::read_to_string(&f).unwrap_or_default()
        );
    }
}

/// A Python process validating manifests against the schema, a path per line in, `ok` or the
/// error per line out.
pub struct SchemaChecker {
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    _child: std::process::Child,
}

const SCHEMA_CHECKER: &str = r#"
import sys, json, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for line in sys.stdin:
    errors = sorted(v.iter_errors(json.load(open(line.strip()))), key=lambda e: list(e.path))
    print("ok" if not errors else "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5]).replace(chr(10), " "), flush=True)
"#;

impl SchemaChecker {
    fn start() -> SchemaChecker {
        let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifest.schema.json");
        let mut child = Command::new(python())
            .args(["-c", SCHEMA_CHECKER])
            .arg(schema)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the manifest schema checker (python with jsonschema)");
        SchemaChecker {
            stdin: child.stdin.take().unwrap(),
            stdout: std::io::BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        }
    }
}

/// The repository's testdata folder.
/// Runs `purge` of `job` as `run_id` with JSON logs, the `extra` flags and `env`.
pub fn purge_json(job: &str, run_id: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec![
        "--log-format",
        "json",
        "purge",
        "--job",
        job,
        "--run-id",
        run_id,
    ];
    args.extend_from_slice(extra);
    lakepurge_env(&args, env)
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// sha256 of every file under `dir`, by relative path.
pub fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, sha256_file(&p));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// All rows of a Parquet file as one batch, read with the parquet crate's Arrow reader.
pub fn read_all(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

pub fn metadata(path: &Path) -> ParquetMetaData {
    SerializedFileReader::new(File::open(path).unwrap())
        .unwrap()
        .metadata()
        .clone()
}

/// Codecs used by each leaf column over all row groups.
pub fn codecs(meta: &ParquetMetaData) -> Vec<Vec<String>> {
    let n = meta.file_metadata().schema_descr().num_columns();
    (0..n)
        .map(|c| {
            let mut v: Vec<String> = meta
                .row_groups()
                .iter()
                .map(|rg| format!("{:?}", rg.column(c).compression()))
                .collect();
            v.sort();
            v.dedup();
            v
        })
        .collect()
}

/// Asserts that `after` keeps the exact Parquet schema, key-value metadata and codecs of
/// `before`.
pub fn assert_same_format(before: &Path, after: &Path) {
    let (b, a) = (metadata(before), metadata(after));
    assert_eq!(
        b.file_metadata().schema_descr().root_schema(),
        a.file_metadata().schema_descr().root_schema(),
        "Parquet schema changed for {}",
        after.display()
    );
    assert_eq!(
        b.file_metadata().key_value_metadata(),
        a.file_metadata().key_value_metadata(),
        "key-value metadata changed for {}",
        after.display()
    );
    assert_eq!(
        codecs(&b),
        codecs(&a),
        "codecs changed for {}",
        after.display()
    );
}

/// Asserts that none of `values` occurs in any page of the Parquet file at `path`, every page
/// decompressed (dictionary and data pages alike): erased values must be gone from the bytes,
/// not only from what readers return. Returns the number of pages searched.
pub fn assert_values_gone(path: &Path, values: &[Vec<u8>]) -> usize {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let mut pages = 0;
    for i in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(i).unwrap();
        for j in 0..rg.num_columns() {
            for page in rg.get_column_page_reader(j).unwrap() {
                let page = page.unwrap();
                let buf = page.buffer();
                for v in values {
                    assert!(
                        !buf.windows(v.len()).any(|w| w == &v[..]),
                        "{}: erased value {:?} still in a page of row group {i}, column {j}",
                        path.display(),
                        String::from_utf8_lossy(v)
                    );
                }
                pages += 1;
            }
        }
    }
    pages
}

/// A job spec named `name`: NDJSON events at `events`, manifests at `manifests`, and one table
/// (also `name`) at `table` matched on its `user_id` column.
pub fn user_id_job(name: &str, manifests: &str, events: &str, table: &str) -> String {
    format!(
        r#"[job]
name = "{name}"
manifests = "{manifests}"
[events]
location = "{events}"
format = "ndjson"
[[table]]
name = "{name}"
location = "{table}"
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#
    )
}

/// Writes NDJSON events: (event id, subject type, subject id as a JSON value).
pub fn write_events(path: &Path, events: &[(&str, &str, serde_json::Value)]) {
    let mut text = String::new();
    for (i, (id, ty, subject)) in events.iter().enumerate() {
        let row = serde_json::json!({
            "event_id": id, "subject_type": ty, "subject_id": subject,
            "requested_at": format!("2026-11-24T{:02}:00:00Z", i % 24),
        });
        text.push_str(&row.to_string());
        text.push('\n');
    }
    write(path, &text);
}

pub fn file_url(path: &Path) -> String {
    url::Url::from_directory_path(path).unwrap().to_string()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The Python with pyarrow and moto the tests use: `LAKEPURGE_PYTHON`, else the virtual
/// environment `.ci/run` makes (`~/.cache/lakepurge-venv`), else `python3`.
pub fn python() -> String {
    tool(
        "LAKEPURGE_PYTHON",
        ".cache/lakepurge-venv/bin/python",
        "python3",
    )
}

/// Apache Airflow for the DAG test: `LAKEPURGE_AIRFLOW`, else `.ci/run`'s virtual environment
/// (`~/.cache/lakepurge-airflow`), else `airflow`.
pub fn airflow_bin() -> String {
    tool(
        "LAKEPURGE_AIRFLOW",
        ".cache/lakepurge-airflow/bin/airflow",
        "airflow",
    )
}

fn tool(var: &str, under_home: &str, fallback: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    std::env::var("HOME")
        .ok()
        .map(|h| Path::new(&h).join(under_home))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| fallback.to_string())
}

/// Runs a Python script (`python -c`) with `args`; returns its stdout, asserting it succeeded.
/// A script that ends normally leaves through `os._exit(0)` after flushing its output: the
/// interpreter's teardown with pyarrow's threads alive can abort ("terminate called without an
/// active exception"), which failed tests now and then.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(what: &str, script: &str, args: &[S]) -> String {
    let script = format!(
        "{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n\
         _os._exit(0)\n"
    );
    let out = Command::new(python())
        .arg("-c")
        .arg(&script)
        .args(args)
        .output()
        .expect("python (set LAKEPURGE_PYTHON; .ci/run installs one with what the tests use)");
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads `files` with pyarrow; returns, per file, its row count and Parquet schema text.
pub fn pyarrow_describe(files: &[PathBuf]) -> Vec<(u64, String)> {
    let script = "import sys, json, pyarrow.parquet as pq\n\
        out = []\n\
        for p in sys.argv[1:]:\n\
        \x20   t = pq.read_table(p)\n\
        \x20   out.append([t.num_rows, '\\n'.join(str(pq.ParquetFile(p).schema).splitlines()[1:])])\n\
        print(json.dumps(out))\n";
    let out = run_python("pyarrow could not read the files", script, files);
    serde_json::from_str(&out).unwrap()
}

/// One purged file for [`assert_read_back`]: the original, the purged file, and the rows of the
/// original (positions, in order) that must remain.
pub struct ReadBack {
    pub original: PathBuf,
    pub purged: PathBuf,
    pub kept: Vec<usize>,
}

/// Asserts that every common reader reads each purged file as it reads the original at the
/// kept rows: pyarrow (plain, and with `read_dictionary` on every string/binary column),
/// pandas, DuckDB and polars (`read_back.py`); and that no dictionary page of a purged file
/// holds a value twice (readers that map it onto an Arrow dictionary misread it otherwise).
/// Returns how many (file, reader) reads were compared.
pub fn assert_read_back(cases: &[ReadBack]) -> usize {
    for c in cases {
        assert_dictionaries_distinct(&c.purged);
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("cases.json");
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "original": c.original,
                "purged": c.purged,
                "kept": c.kept,
            })
        })
        .collect();
    std::fs::write(&list, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = run_python(
        "a reader reads a purged file differently from the original",
        include_str!("read_back.py"),
        &[&list],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // pyarrow reads everything lakepurge is given; the others may not know a type.
    assert!(
        skipped.iter().all(|s| !s.starts_with("pyarrow")),
        "pyarrow could not read an original: {skipped:?}"
    );
    let compared = report["compared"].as_u64().unwrap() as usize;
    assert_eq!(compared + skipped.len(), cases.len() * 5, "{report}");
    compared
}

/// The positions of the rows of `batch` that `erase` does not erase.
pub fn kept_rows(batch: &RecordBatch, erase: impl Fn(&RecordBatch, usize) -> bool) -> Vec<usize> {
    (0..batch.num_rows())
        .filter(|i| !erase(batch, *i))
        .collect()
}

/// Asserts that no dictionary page in `path` holds a value twice.
pub fn assert_dictionaries_distinct(path: &Path) {
    use parquet::basic::Type;
    use parquet::column::page::Page;
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    for i in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(i).unwrap();
        for j in 0..rg.num_columns() {
            let descr = rg.metadata().column(j).column_descr_ptr();
            let width = match descr.physical_type() {
                Type::INT32 | Type::FLOAT => Some(4),
                Type::INT64 | Type::DOUBLE => Some(8),
                Type::INT96 => Some(12),
                Type::FIXED_LEN_BYTE_ARRAY => Some(descr.type_length() as usize),
                Type::BYTE_ARRAY => None,
                Type::BOOLEAN => continue,
            };
            let mut pages = rg.get_column_page_reader(j).unwrap();
            while let Some(page) = pages.get_next_page().unwrap() {
                let Page::DictionaryPage {
                    buf, num_values, ..
                } = page
                else {
                    continue;
                };
                let mut values = std::collections::HashSet::new();
                let mut at = 0usize;
                for k in 0..num_values {
                    let len = match width {
                        Some(w) => w,
                        None => {
                            let n = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
                            at += 4;
                            n as usize
                        }
                    };
                    let value = &buf[at..at + len];
                    at += len;
                    assert!(
                        values.insert(value.to_vec()),
                        "{}: row group {i}, column {}: dictionary entry {k} repeats an earlier one",
                        path.display(),
                        descr.path()
                    );
                }
            }
        }
    }
}

/// Writes `batch` as a Parquet file at `path` (parquet-rs, default properties), making its
/// folder.
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}
