#!/usr/bin/env python3
"""lakepurge benchmark: the same erasure, on the same copies of the same data, by
  - lakepurge (release build),
  - a DuckDB script that finds the affected files and rewrites each without the erased rows,
  - a plain copy of the affected files (the floor for any whole-object store).

Run from the repository root:   python3 benches/bench.py [--rows-per-file 400000] [--files 16]
Needs: cargo, and the duckdb Python package (pip install duckdb). Builds `cargo build --release`.
Writes the results table to benches/RESULTS.md (and prints it).

Data, as in issue #6: DuckDB-written Parquet, 16 files x 400k rows, columns user_id BIGINT,
ts TIMESTAMP, url VARCHAR, kind INTEGER, amount DOUBLE, payload VARCHAR.
- scattered: user ids random over all files; clustered: sorted by user_id across files.
- sparse: 100 erased subjects; dense: 100k erased subjects (scattered only); clustered: 10
  subjects spread over the key range (10 files affected, one row group each).
- zstd, and snappy for the sparse scattered case.

Measured per run: wall time, bytes read and written (lakepurge: its own object-store counters;
DuckDB and the copy: the process's read/write syscall bytes, /proc/self/io), peak RSS (wait4).
"""
import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "lakepurge")


def peak_rss_of(cmd, env=None):
    """Runs cmd with fork/exec + wait4 to get its peak RSS in bytes, and its wall time."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        err = os.open(os.path.join(tempfile.gettempdir(), "lakepurge-bench-stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(err, 2)
        os.execvpe(cmd[0], cmd, env or os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        with open(os.path.join(tempfile.gettempdir(), "lakepurge-bench-stderr.log")) as f:
            sys.exit(f"{' '.join(cmd)} failed ({status}):\n{f.read()[-3000:]}")
    with open(os.path.join(tempfile.gettempdir(), "lakepurge-bench-stderr.log")) as f:
        stderr = f.read()
    return wall, usage.ru_maxrss * 1024, stderr


def generate(dir, files, rows, clustered, codec, even=False):
    import duckdb

    os.makedirs(dir)
    con = duckdb.connect()
    con.execute("PRAGMA threads=2")
    con.execute("SET enable_progress_bar = false")
    total = files * rows
    for i in range(files):
        if clustered:
            ids = f"({i} * {rows} + r)"  # file i holds ids [i*rows, (i+1)*rows)
            if even:
                ids = f"(2 * {ids})"  # even ids only: odd ones fall inside every file's range
        else:
            ids = f"(hash(r + {i} * {rows}) % {total // 6})"  # ~6 rows per user, everywhere
        con.execute(
            f"""COPY (SELECT {ids}::BIGINT AS user_id,
                       TIMESTAMP '2026-01-01' + to_seconds(r) AS ts,
                       'https://example.com/p/' || (r % 5000) AS url,
                       (r % 7)::INTEGER AS kind,
                       (r % 1000) / 10.0 AS amount,
                       md5(r::VARCHAR) || md5((r * 7)::VARCHAR) AS payload
                FROM range({rows}) t(r) ORDER BY r)
               TO '{dir}/part-{i:05d}.parquet' (FORMAT parquet, COMPRESSION {codec})"""
        )
    return total


def pick_subjects(dir, n, clustered, files, rows):
    import duckdb

    con = duckdb.connect()
    rng = random.Random(42)
    if clustered:
        # n subjects spread over the key range: one per file for the first n files.
        step = files // n if n <= files else 1
        return [i * step * rows + rng.randrange(rows) for i in range(n)]
    ids = [r[0] for r in con.execute(f"SELECT DISTINCT user_id FROM read_parquet('{dir}/*.parquet') ORDER BY 1").fetchall()]
    return rng.sample(ids, n)


def write_job(ws, table_dir, subjects):
    events = os.path.join(ws, "events")
    os.makedirs(events)
    with open(os.path.join(events, "events.json"), "w") as f:
        for i, s in enumerate(subjects):
            f.write(json.dumps({"event_id": f"ev-{i}", "subject_type": "user_id", "subject_id": str(s),
                                "requested_at": "2026-11-24T00:00:00Z"}) + "\n")
    job = os.path.join(ws, "job.toml")
    with open(job, "w") as f:
        f.write(f"""[job]
name = "bench"
manifests = "{os.path.join(ws, 'manifests')}"
[events]
location = "{events}"
format = "ndjson"
[[table]]
name = "bench.events"
location = "{table_dir}"
[[table.match]]
column = "user_id"
subject_type = "user_id"
""")
    return job


DUCKDB_SCRIPT = r"""
import os, sys, duckdb
def io():
    d = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines())
    return int(d['rchar']), int(d['wchar'])
r0, w0 = io()
table, ids_file = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("PRAGMA threads=2")
con.execute(f"CREATE TABLE erased AS SELECT * FROM read_csv('{ids_file}', columns={{'id': 'BIGINT'}}, header=false)")
files = [r[0] for r in con.execute(
    f"SELECT DISTINCT filename FROM read_parquet('{table}/*.parquet', filename=true) "
    "WHERE user_id IN (SELECT id FROM erased)").fetchall()]
codec = sys.argv[3]
for f in files:
    tmp = f + '.tmp'
    con.execute(f"COPY (SELECT * FROM read_parquet('{f}') WHERE user_id NOT IN (SELECT id FROM erased)) "
                f"TO '{tmp}' (FORMAT parquet, COMPRESSION {codec})")
    os.replace(tmp, f)
r1, w1 = io()
print(len(files), r1 - r0, w1 - w0)
"""

COPY_SCRIPT = r"""
import shutil, sys
def io():
    d = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines())
    return int(d['rchar']), int(d['wchar'])
r0, w0 = io()
for f in sys.argv[1:]:
    shutil.copyfile(f, f + '.copy')
r1, w1 = io()
print(r1 - r0, w1 - w0)
"""


def mb(n):
    return f"{n / 1e6:,.0f} MB"


def scenario(base, name, clustered, n_subjects, codec, files, rows, results, repeat):
    data = os.path.join(base, f"data-{'clustered' if clustered else 'scattered'}-{codec}")
    if not os.path.exists(data):
        print(f"generating {data} ...", flush=True)
        generate(data, files, rows, clustered, codec)
    subjects = pick_subjects(data, n_subjects, clustered, files, rows)
    table_bytes = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
    row = {"scenario": name, "table": mb(table_bytes)}

    def run_lakepurge():
        ws = tempfile.mkdtemp(dir=base)
        table = os.path.join(ws, "table")
        shutil.copytree(data, table)
        os.sync()  # the copy's writeback must not land in the measured run
        job = write_job(ws, table, subjects)
        wall, rss, err = peak_rss_of([BIN, "--log-format", "json", "purge", "--job", job, "--run-id", "bench"])
        io = [json.loads(l) for l in err.splitlines() if '"io totals"' in l]
        manifest = json.load(open(os.path.join(ws, "manifests", "bench", "bench.json")))
        t = manifest["tables"][0]
        row["files affected"] = len(t["files"])
        row["rows removed"] = t["rows_removed"]
        row["affected"] = [os.path.join(data, f["path"]) for f in t["files"]]
        shutil.rmtree(ws)
        return (wall, io[0]["bytes_read"] if io else 0, io[0]["bytes_written"] if io else 0, rss)

    def run_duckdb():
        ws = tempfile.mkdtemp(dir=base)
        table = os.path.join(ws, "table")
        shutil.copytree(data, table)
        os.sync()  # the copy's writeback must not land in the measured run
        ids_file = os.path.join(ws, "ids.csv")
        with open(ids_file, "w") as f:
            f.write("\n".join(str(s) for s in subjects) + "\n")
        out_file = os.path.join(ws, "out.txt")
        wall, rss, _ = peak_rss_of(["sh", "-c", f'"{sys.executable}" -c "$0" "$@" > {out_file}', DUCKDB_SCRIPT, table, ids_file, codec])
        n_files, rd, wr = (int(x) for x in open(out_file).read().split())
        assert n_files == len(row["affected"]), (n_files, len(row["affected"]))
        shutil.rmtree(ws)
        return (wall, rd, wr, rss)

    def run_copy():
        ws = tempfile.mkdtemp(dir=base)
        copies = []
        for f in row["affected"]:
            dst = os.path.join(ws, os.path.basename(f))
            shutil.copyfile(f, dst)
            copies.append(dst)
        os.sync()
        out_file = os.path.join(ws, "out.txt")
        wall, rss, _ = peak_rss_of(["sh", "-c", f'"{sys.executable}" -c "$0" "$@" > {out_file}', COPY_SCRIPT, *copies])
        rd, wr = (int(x) for x in open(out_file).read().split())
        shutil.rmtree(ws)
        return (wall, rd, wr, rss)

    # The tools take turns, `repeat` times, each on a fresh copy; each one's median run is kept
    # (runs on this kind of machine vary by 10-20%, for every tool alike).
    runs = {"lakepurge": [], "duckdb": [], "copy": []}
    for _ in range(repeat):
        runs["lakepurge"].append(run_lakepurge())
        runs["duckdb"].append(run_duckdb())
        runs["copy"].append(run_copy())
    for tool, measured in runs.items():
        row[tool] = sorted(measured)[len(measured) // 2]
        row[tool + " walls"] = [m[0] for m in measured]
    del row["affected"]
    results.append(row)
    lp, dd, cp = row["lakepurge"][0], row["duckdb"][0], row["copy"][0]
    walls = lambda tool: ", ".join(f"{w:.2f}" for w in row[tool + " walls"])
    print(f"{name}: lakepurge {lp:.2f}s [{walls('lakepurge')}], duckdb {dd:.2f}s [{walls('duckdb')}] "
          f"({dd / lp:.2f}x), copy {cp:.2f}s [{walls('copy')}]", flush=True)


def memory_scenario(base, files, rows, n_subjects, limit):
    """10M erased subjects against a multi-GB table: peak RSS of a purge under --memory-limit.

    The event log holds every request ever made, so most subjects are no longer in the table:
    here 400 are (100 in each of 4 files), the rest are odd ids, spread over the whole key
    range (even ids only in the table), so no file or row group is ruled out by statistics and
    every key column is read and looked up."""
    data = os.path.join(base, f"data-even-zstd-{files}x{rows}")
    if not os.path.exists(data):
        print(f"generating {data} ...", flush=True)
        generate(data, files, rows, True, "zstd", even=True)
    total = files * rows
    rng = random.Random(7)
    present = []
    for f in sorted({0, files // 4, files // 2, 3 * files // 4}):
        present += [2 * (f * rows + r) for r in rng.sample(range(rows), 100)]
    absent = n_subjects - len(present)
    subjects = present + [2 * ((j * total) // absent) + 1 for j in range(absent)]
    table_bytes = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
    ws = tempfile.mkdtemp(dir=base)
    table = os.path.join(ws, "table")
    shutil.copytree(data, table)
    job = write_job(ws, table, subjects)
    events_bytes = os.path.getsize(os.path.join(ws, "events", "events.json"))
    os.sync()
    wall, rss, err = peak_rss_of([BIN, "--log-format", "json", "purge", "--job", job, "--run-id", "bench",
                                  "--memory-limit", limit])
    budget = [json.loads(l) for l in err.splitlines() if '"memory budget"' in l]
    manifest = json.load(open(os.path.join(ws, "manifests", "bench", "bench.json")))
    t = manifest["tables"][0]
    shutil.rmtree(ws)
    row = {
        "subjects": n_subjects, "events": mb(events_bytes), "table": mb(table_bytes), "files": files,
        "file size": mb(table_bytes / files),
        "files affected": len(t["files"]), "rows removed": t["rows_removed"], "limit": limit,
        "wall": wall, "rss": rss, "held": budget[0]["held"] if budget else 0,
    }
    print(f"memory: {n_subjects:,} subjects, {mb(table_bytes)} table: {wall:.1f}s, peak RSS {rss / 2**20:,.0f} MiB", flush=True)
    return row


def memory_md(rows):
    lines = [
        "",
        f"Erased subjects against multi-GB tables (`lakepurge purge --memory-limit {rows[0]['limit']}`;"
        " DuckDB-written, zstd, clustered even ids; all but 100 subjects a sampled file are odd ids,"
        " absent but inside every file's key range; files of 64 MiB and more are read by ranges and"
        " written in parts):",
        "",
        "| erased subjects | events (NDJSON) | table | files | file size | files affected | rows removed | memory limit | wall | peak RSS | held when rewrites start |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['subjects']:,} | {row['events']} | {row['table']} | {row['files']} | {row['file size']} "
            f"| {row['files affected']} | {row['rows removed']:,} | {row['limit']} | {row['wall']:.1f} s "
            f"| {row['rss'] / 2**20:,.0f} MiB | {row['held'] / 2**20:,.0f} MiB |")
    return "\n".join(lines) + "\n"


def table_md(results, args):
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        "# lakepurge benchmark results",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}.",
        f"Command: `python3 benches/bench.py --files {args.files} --rows-per-file {args.rows_per_file}`"
        " (builds `cargo build --release`; needs `pip install duckdb`).",
        f"Data: {args.files} DuckDB-written files x {args.rows_per_file:,} rows (user_id, ts, url, kind, amount, payload).",
        f"Each tool works on its own fresh copy of the same data, {args.repeat} times, taking turns; each row is"
        " the tool's median run by wall clock (the walls of every run in the last column).",
        "",
        "| scenario | table | files affected | rows removed | tool | wall | vs DuckDB | bytes read | bytes written | peak RSS | every run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        dd = r["duckdb"][0]
        for tool in ["lakepurge", "duckdb", "copy"]:
            wall, rd, wr, rss = r[tool]
            every = ", ".join(f"{w:.2f}" for w in r[tool + " walls"])
            lines.append(
                f"| {r['scenario']} | {r['table']} | {r['files affected']} | {r['rows removed']:,} | {tool} "
                f"| {wall:.2f} s | {dd / wall:.2f}x | {mb(rd)} | {mb(wr)} | {rss / 2**20:,.0f} MiB | {every} s |"
            )
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rows-per-file", type=int, default=400_000)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "lakepurge-bench"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool per scenario (the median is kept)")
    ap.add_argument("--memory-files", type=int, default=60, help="files of the multi-GB table (0: skip)")
    ap.add_argument("--memory-rows-per-file", type=int, default=1_000_000)
    ap.add_argument("--large-files", type=int, default=4, help="files of the large-file table (0: skip)")
    ap.add_argument("--large-rows-per-file", type=int, default=15_000_000)
    ap.add_argument("--memory-subjects", type=int, default=10_000_000)
    ap.add_argument("--memory-limit", default="512MiB")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    os.makedirs(args.work, exist_ok=True)
    results = []
    f, r = args.files, args.rows_per_file
    scenario(args.work, "scattered, 100 subjects, zstd", False, 100, "zstd", f, r, results, args.repeat)
    scenario(args.work, "scattered, 100 subjects, snappy", False, 100, "snappy", f, r, results, args.repeat)
    scenario(args.work, "scattered, 100k subjects, zstd", False, 100_000, "zstd", f, r, results, args.repeat)
    scenario(args.work, "clustered, 10 subjects, zstd", True, 10, "zstd", f, r, results, args.repeat)
    md = table_md(results, args)
    memory = []
    for files, rows in [(args.memory_files, args.memory_rows_per_file), (args.large_files, args.large_rows_per_file)]:
        if files:
            memory.append(memory_scenario(args.work, files, rows, args.memory_subjects, args.memory_limit))
    if memory:
        md += memory_md(memory)
    print(md)
    notes = os.path.join(ROOT, "benches", "NOTES.md")
    with open(os.path.join(ROOT, "benches", "RESULTS.md"), "w") as out:
        out.write(md)
        if os.path.exists(notes):
            out.write("\n" + open(notes).read())


if __name__ == "__main__":
    main()
