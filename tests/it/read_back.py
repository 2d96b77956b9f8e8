"""Reads purged files back with every common reader and compares each with the original.

Usage: python read_back.py CASES.json, where CASES.json is a list of
{"original": path, "purged": path, "kept": [row positions of the original that must remain]}.

For each reader, the purged file read by that reader must equal the original read by the same
reader, taken at the kept rows: a reader's own conversions (pandas dtypes, DuckDB types, polars
types) cancel out, and a wrong value, a lost or extra row, or a read that fails shows. Readers:
pyarrow (plain, and with read_dictionary on every top-level string/binary column), pandas,
DuckDB and polars. Dictionary columns are compared by their values, not their dictionaries
(purge may drop dictionary entries that only erased rows used). Prints one JSON line: the
number of (file, reader) reads compared and the reads a reader could not do on the original
either (skipped, with the reason); exits 1 naming the first mismatch.
"""

import json
import sys

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def plain(table):
    """The table with dictionary columns (also nested in a chunked column) decoded."""
    cols = []
    for col in table.columns:
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def string_columns(path):
    schema = pq.read_schema(path)
    return [
        f.name
        for f in schema
        if pa.types.is_string(f.type)
        or pa.types.is_large_string(f.type)
        or pa.types.is_binary(f.type)
        or pa.types.is_large_binary(f.type)
        or (pa.types.is_dictionary(f.type) and not pa.types.is_integer(f.type.value_type))
    ]


def pyarrow_plain(path):
    return plain(pq.read_table(path))


def pyarrow_dictionary(path):
    return plain(pq.read_table(path, read_dictionary=string_columns(path)))


def duckdb_read(path):
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    rel = con.sql("SELECT * FROM read_parquet('{}')".format(path.replace("'", "''")))
    # DuckDB 2 names it to_arrow_table; 1.x, arrow.
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    return plain(table)


def polars_read(path):
    return pl.read_parquet(path)


def pandas_read(path):
    return pd.read_parquet(path)


def take(reader, data, kept):
    if reader == "pandas":
        return data.iloc[kept].reset_index(drop=True)
    if reader == "polars":
        return data[kept] if kept else data.clear()
    return data.take(pa.array(kept, type=pa.int64()))


def same(reader, got, expected):
    if reader == "pandas":
        try:
            pd.testing.assert_frame_equal(
                got.reset_index(drop=True), expected, check_categorical=False
            )
            return None
        except AssertionError as e:
            return str(e)[:2000]
    if reader == "polars":
        if got.equals(expected):
            return None
        return f"polars: got {got}\nexpected {expected}"
    if got.equals(expected):
        return None
    for name in expected.column_names:
        if not got.column(name).equals(expected.column(name)):
            g, e = got.column(name).to_pylist(), expected.column(name).to_pylist()
            diff = [i for i in range(min(len(g), len(e))) if g[i] != e[i]][:5]
            return f"column {name}: {len(g)} rows vs {len(e)} expected; first differing rows {diff}: " + \
                "; ".join(f"{g[i]!r} != {e[i]!r}" for i in diff)
    return f"schemas differ: {got.schema} vs {expected.schema}"


READERS = {
    "pyarrow": pyarrow_plain,
    "pyarrow read_dictionary": pyarrow_dictionary,
    "pandas": pandas_read,
    "duckdb": duckdb_read,
    "polars": polars_read,
}


def main():
    cases = json.load(open(sys.argv[1]))
    compared, skipped = 0, []
    for case in cases:
        for reader, read in READERS.items():
            try:
                original = read(case["original"])
            except Exception as e:  # the reader cannot read this kind of file at all
                skipped.append(f"{reader}: {case['original']}: {type(e).__name__}: {str(e)[:200]}")
                continue
            expected = take(reader, original, case["kept"])
            try:
                got = read(case["purged"])
            except Exception as e:
                print(f"{reader} cannot read {case['purged']}: {type(e).__name__}: {e}", file=sys.stderr)
                sys.exit(1)
            problem = same(reader, got, expected)
            if problem:
                print(f"{reader} reads {case['purged']} wrong: {problem}", file=sys.stderr)
                sys.exit(1)
            compared += 1
    print(json.dumps({"compared": compared, "skipped": skipped}))


main()
