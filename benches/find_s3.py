#!/usr/bin/env python3
"""The find phase on an object store with latency (issue #18): `lakepurge plan` against
`pyarrow.dataset` reading the same key column through the same endpoint, in the same run.

    python3 benches/find_s3.py [--scenarios small,many,large] [--delay-ms 25] [--no-build] [--purge]

Scenarios (generated once under --data, default ~/.cache/lakepurge-bench-s3):
  small  3,000 files x 2,000 rows (one row group each)
  many   30,000 files x 2,000 rows (pyarrow.dataset is skipped past --pyarrow-max-files)
  large  300 files x 200,000 rows (5 row groups each)
Every file holds user ids spread over its own key range, and the erased ids (odd numbers,
absent from the even ids the files hold, plus a few present in 1 file in 100) fall inside
every file's range, so statistics prune nothing and every file's key column must be read.

The endpoint is benches/slow_s3.py: every request answered after --delay-ms, many at once.
Per scenario: wall time, requests made (from the endpoint), bytes read against the table's
bytes, peak RSS (wait4), and the latency floor = requests x delay / requests in flight.
With --purge, also `lakepurge purge` of a copy of the small table through the endpoint, with
the default files in flight on an object store and with --concurrency 3 (the local default).
Writes the table to stdout and appends it to benches/RESULTS.md with --record.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "lakepurge")

SCENARIOS = {
    "small": dict(files=3000, rows=2000, row_group=2000),
    "many": dict(files=30000, rows=2000, row_group=2000),
    "large": dict(files=300, rows=200000, row_group=40000),
}


def generate(folder, files, rows, row_group):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if os.path.exists(os.path.join(folder, "_done")):
        return
    os.makedirs(folder, exist_ok=True)
    for i in range(files):
        base = i * rows * 2
        ids = pa.array(range(base, base + rows * 2, 2), pa.int64())
        if i % 100 == 7:  # a few files hold an erased (odd) id
            ids = pa.array([base + 1] + list(range(base + 2, base + rows * 2, 2)), pa.int64())
        t = pa.table({"user_id": ids, "amount": pa.array(range(rows), pa.int64()),
                      "kind": pa.array(["a", "b"] * (rows // 2))})
        pq.write_table(t, os.path.join(folder, f"part-{i:06d}.parquet"), row_group_size=row_group)
    open(os.path.join(folder, "_done"), "w").close()


def events(folder, files, rows):
    """Erased ids: one odd id inside each of 1,000 files' ranges (absent but unprunable) and the
    odd ids the generator planted."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "events.json"), "w") as f:
        step = max(files // 1000, 1)
        for n, i in enumerate(range(0, files, step)):
            base = i * rows * 2
            f.write(json.dumps({"event_id": f"e{n}", "subject_type": "user_id",
                                "subject_id": str(base + 1 + 2 * (rows // 2)),
                                "requested_at": "2026-11-20T00:00:00Z"}) + "\n")
        for i in range(7, files, 100):
            f.write(json.dumps({"event_id": f"p{i}", "subject_type": "user_id",
                                "subject_id": str(i * rows * 2 + 1),
                                "requested_at": "2026-11-20T00:00:00Z"}) + "\n")


def run_measured(cmd, env):
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss * 1024, stdout


def stats(port, reset=False):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{'__reset' if reset else '__stats'}",
                                 method="POST" if reset else "GET")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def write_job(work, job_name, table):
    """A job over the NDJSON events in `work` and the table `s3://bucket/<table>/`."""
    job = os.path.join(work, "job.toml")
    with open(job, "w") as f:
        f.write(f"""[job]
name = "{job_name}"
manifests = "{work}/manifests"
[events]
location = "{work}/events"
format = "ndjson"
[[table]]
name = "{table}"
location = "s3://bucket/{table}/"
[[table.match]]
column = "user_id"
subject_type = "user_id"
""")
    return job


def s3_env(port):
    return dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                AWS_ALLOW_HTTP="true", LAKEPURGE_LOG="warn")


PYARROW = """
import sys, pyarrow.dataset as ds, pyarrow.fs as fs
s3 = fs.S3FileSystem(access_key="test", secret_key="test", region="us-east-1",
                     endpoint_override="127.0.0.1:" + sys.argv[1], scheme="http")
t = ds.dataset(sys.argv[2], filesystem=s3, format="parquet").to_table(columns=["user_id"])
print(t.num_rows)
"""


def scenario(name, spec, data, port, delay, pyarrow_max):
    folder = os.path.join(data, "bucket", name)
    generate(folder, **spec)
    table_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".parquet"))
    work = tempfile.mkdtemp(prefix=f"find-{name}-")
    events(os.path.join(work, "events"), spec["files"], spec["rows"])
    job = write_job(work, "find", name)
    env = s3_env(port)
    rows = []
    stats(port, reset=True)
    wall, rss, out = run_measured([BIN, "plan", "--job", job, "--json"], env)
    s = stats(port)
    plan = json.loads(out)["tables"][0]
    in_flight = min(64, spec["files"])
    rows.append(dict(scenario=name, tool="lakepurge plan", files=spec["files"], wall=wall,
                     requests=s["requests"], bytes=s["bytes"], table=table_bytes, rss=rss,
                     floor=s["requests"] * delay / in_flight, affected=plan["files_affected"]))
    if spec["files"] <= pyarrow_max:
        stats(port, reset=True)
        wall, rss, out = run_measured([sys.executable, "-c", PYARROW, str(port), f"bucket/{name}"], env)
        s = stats(port)
        rows.append(dict(scenario=name, tool="pyarrow.dataset", files=spec["files"], wall=wall,
                         requests=s["requests"], bytes=s["bytes"], table=table_bytes, rss=rss,
                         floor=None, affected=None))
    return rows


def purge_scenario(name, spec, data, port, delay):
    """`lakepurge purge` of a fresh copy of the scenario's table through the endpoint (the
    affected files are read whole, rewritten and put back conditionally): the default files in
    flight on an object store against the local default (CPUs + 1)."""
    import shutil

    rows = []
    src = os.path.join(data, "bucket", name)
    for label, extra in [("purge (default: 16 files at once)", []),
                         ("purge --concurrency 3", ["--concurrency", "3"])]:
        copy = os.path.join(data, "bucket", f"purge-{name}")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(src, copy)
        table_bytes = sum(os.path.getsize(os.path.join(copy, f)) for f in os.listdir(copy) if f.endswith(".parquet"))
        work = tempfile.mkdtemp(prefix=f"purge-{name}-")
        events(os.path.join(work, "events"), spec["files"], spec["rows"])
        job = write_job(work, "purge", f"purge-{name}")
        env = s3_env(port)
        stats(port, reset=True)
        wall, rss, _ = run_measured([BIN, "purge", "--job", job, "--run-id", "bench", *extra], env)
        s = stats(port)
        with open(os.path.join(work, "manifests", "purge", "bench.json")) as f:
            m = json.load(f)
        rewritten = m["tables"][0]["files_rewritten"]
        rows.append(dict(scenario=name, tool=label, files=spec["files"], wall=wall,
                         requests=s["requests"], bytes=s["bytes"], table=table_bytes, rss=rss,
                         floor=None, affected=rewritten))
    return rows


def mb(n):
    return f"{n / 1e6:.1f} MB"


def table(rows, delay_ms):
    lines = [f"Delay {delay_ms:g} ms a request (benches/slow_s3.py); machine: {os.cpu_count()} cores, "
             f"{platform.processor() or platform.machine()}, Linux {platform.release()}.",
             "",
             "| scenario | files | tool | wall | vs pyarrow | requests | per file | bytes read / table | latency floor | peak RSS | files affected |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["scenario"]: r["wall"] for r in rows if r["tool"] == "pyarrow.dataset"}
    for r in rows:
        vs = f"{base[r['scenario']] / r['wall']:.1f}x" if r["scenario"] in base and not r["tool"].startswith("purge") else "-"
        floor = f"{r['floor']:.2f} s" if r["floor"] is not None else "-"
        lines.append(
            f"| {r['scenario']} | {r['files']:,} | {r['tool']} | {r['wall']:.2f} s | {vs} | {r['requests']:,} | "
            f"{r['requests'] / r['files']:.2f} | {mb(r['bytes'])} / {mb(r['table'])} | {floor} | "
            f"{r['rss'] / 2**20:.0f} MiB | {r['affected'] if r['affected'] is not None else '-'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", default="small,many,large")
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/lakepurge-bench-s3"))
    ap.add_argument("--pyarrow-max-files", type=int, default=3000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--record", action="store_true", help="append the table to benches/RESULTS.md")
    ap.add_argument("--purge", action="store_true", help="also purge a copy of the small table")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "lakepurge"], cwd=ROOT, check=True)
    os.makedirs(os.path.join(args.data, "bucket"), exist_ok=True)
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "benches", "slow_s3.py"),
                               "--root", args.data, "--delay-ms", str(args.delay_ms)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[-1])
        rows = []
        for name in args.scenarios.split(","):
            rows += scenario(name, SCENARIOS[name], args.data, port, args.delay_ms / 1000, args.pyarrow_max_files)
            print(table(rows, args.delay_ms), flush=True)
        if args.purge:
            rows += purge_scenario("small", SCENARIOS["small"], args.data, port, args.delay_ms / 1000)
            print(table(rows, args.delay_ms), flush=True)
    finally:
        server.terminate()
    text = table(rows, args.delay_ms)
    if args.record:
        with open(os.path.join(ROOT, "benches", "RESULTS.md"), "a") as f:
            f.write(f"\n## {time.strftime('%Y-%m-%d')}: the find phase over S3 with latency (issue #18)\n\n"
                    f"Command: `python3 benches/find_s3.py --scenarios {args.scenarios} --delay-ms {args.delay_ms:g}"
                    f"{' --purge' if args.purge else ''}`\n\n"
                    + text + "\n")


if __name__ == "__main__":
    main()
