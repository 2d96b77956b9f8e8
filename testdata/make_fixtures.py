#!/usr/bin/env python3
"""Writes the committed test fixtures: Parquet tables written by pyarrow and by DuckDB.

Run from this folder: `python3 make_fixtures.py` (needs `pip install pyarrow duckdb`).
The files are committed; the tests never run this script. Data is deterministic.

pyarrow/users/: 3 files, 1000 + 600 + 200 rows
  - user_id int64 (some nulls), field ids on every top-level field
  - ts timestamp stored as INT96 (use_deprecated_int96_timestamps)
  - amount decimal(18,2) and big decimal(38,10): FIXED_LEN_BYTE_ARRAY
  - country: dictionary-encoded string, email: string
  - profile struct<id int64, name string>, tags list<string>, friend_ids list<int64>
  - uid fixed_size_binary(16)
  - per-column codecs (snappy / zstd / gzip; brotli / lz4 in part-1), several row groups,
    part-1 with data page v2 and no dictionary, custom key-value metadata
  - part-2 holds no erased subject (must stay byte-identical)
pyarrow/pages/: the same columns in small pages (page surgery), 3 files of 3000 rows
  - part-0: data page v1, PLAIN except `country`, mixed codecs, nulls, structs
  - part-1: data page v2 with page checksums, zstd
  - part-2: with a page index (offset and column indexes)
duckdb/orders/: 2 files written by DuckDB COPY (zstd and snappy), with a list of structs
  and a struct holding owner_id, INT32 customer ids, DECIMAL, TIMESTAMP.
"""
import datetime
import decimal
import os
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))


def fid(name, typ, i, nullable=True):
    return pa.field(name, typ, nullable=nullable, metadata={b"PARQUET:field_id": str(i).encode()})


SCHEMA = pa.schema(
    [
        fid("user_id", pa.int64(), 1),
        fid("ts", pa.timestamp("ns"), 2),
        fid("amount", pa.decimal128(18, 2), 3),
        fid("big", pa.decimal128(38, 10), 4),
        fid("country", pa.dictionary(pa.int32(), pa.string()), 5),
        fid("email", pa.string(), 6),
        fid("profile", pa.struct([pa.field("id", pa.int64()), pa.field("name", pa.string())]), 7),
        fid("tags", pa.list_(pa.string()), 8),
        fid("friend_ids", pa.list_(pa.int64()), 9),
        fid("uid", pa.binary(16), 10),
    ],
    metadata={b"fixture.writer": b"pyarrow", b"fixture.note": b"kept byte for byte"},
)


def users(start, n):
    rows = range(start, start + n)
    base = datetime.datetime(2026, 1, 1)
    return pa.table(
        {
            "user_id": [None if i % 97 == 0 else i for i in rows],
            "ts": [base + datetime.timedelta(seconds=i * 37) for i in rows],
            "amount": [decimal.Decimal(i * 3) / 100 for i in rows],
            "big": [(decimal.Decimal(i) / 7).quantize(decimal.Decimal("1e-10")) if i % 5 else None for i in rows],
            "country": pa.array([["DE", "FR", "US", "BR"][i % 4] for i in rows]).dictionary_encode(),
            "email": [f"User{i}@Example.COM" if i % 11 else None for i in rows],
            "profile": [{"id": i + 100000, "name": f"p{i}"} if i % 13 else None for i in rows],
            "tags": [[f"t{i % 5}", f"t{i % 3}"] if i % 4 else [] for i in rows],
            "friend_ids": [[(i * 7) % 1500, (i * 11) % 1500] if i % 6 else None for i in rows],
            "uid": [i.to_bytes(16, "big") for i in rows],
        },
        schema=SCHEMA,
    )


def write_pyarrow():
    out = os.path.join(HERE, "pyarrow", "users")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    pq.write_table(
        users(0, 1000),
        os.path.join(out, "part-0.parquet"),
        row_group_size=128,
        use_deprecated_int96_timestamps=True,
        compression={"user_id": "snappy", "email": "zstd", "ts": "gzip", "amount": "snappy",
                     "big": "zstd", "country": "snappy", "profile.id": "zstd",
                     "profile.name": "zstd", "tags.list.element": "gzip",
                     "friend_ids.list.element": "snappy", "uid": "none"},
        write_statistics=True,
        data_page_size=2048,
    )
    pq.write_table(
        users(1000, 600),
        os.path.join(out, "part-1.parquet"),
        row_group_size=200,
        use_deprecated_int96_timestamps=True,
        compression={"user_id": "brotli", "email": "lz4", "ts": "brotli", "amount": "lz4",
                     "big": "lz4", "country": "brotli", "profile.id": "lz4",
                     "profile.name": "lz4", "tags.list.element": "brotli",
                     "friend_ids.list.element": "brotli", "uid": "lz4"},
        use_dictionary=False,
        data_page_version="2.0",
    )
    pq.write_table(
        users(5000, 200),
        os.path.join(out, "part-2.parquet"),
        row_group_size=100,
        use_deprecated_int96_timestamps=True,
        compression="zstd",
    )


def write_pages():
    out = os.path.join(HERE, "pyarrow", "pages")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    common = dict(row_group_size=1000, use_deprecated_int96_timestamps=True, data_page_size=512,
                  use_dictionary=["country"], write_statistics=True, write_batch_size=64)
    pq.write_table(
        users(0, 3000),
        os.path.join(out, "part-0.parquet"),
        compression={"user_id": "snappy", "email": "zstd", "ts": "gzip", "amount": "none",
                     "big": "lz4", "country": "snappy", "profile.id": "brotli",
                     "profile.name": "zstd", "tags.list.element": "gzip",
                     "friend_ids.list.element": "snappy", "uid": "zstd"},
        **common,
    )
    pq.write_table(users(3000, 3000), os.path.join(out, "part-1.parquet"), compression="zstd",
                   data_page_version="2.0", write_page_checksum=True, **common)
    pq.write_table(users(6000, 3000), os.path.join(out, "part-2.parquet"), compression="snappy",
                   write_page_index=True, **common)


def write_duckdb():
    out = os.path.join(HERE, "duckdb", "orders")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    con = duckdb.connect()
    query = """
        SELECT i::BIGINT AS order_id,
               (i % 300)::INTEGER AS customer_id,
               'c' || (i % 300) || '@shop.example' AS email,
               (i * 1.25)::DECIMAL(10, 2) AS total,
               TIMESTAMP '2026-02-01 00:00:00' + INTERVAL (i) MINUTE AS created,
               [{{'sku': 'sku-' || (i % 17), 'qty': (i % 4)::INTEGER}}] AS items,
               {{'city': 'city-' || (i % 9), 'owner_id': (i % 300)::BIGINT}} AS address
        FROM range({start}, {end}) t(i)
    """
    con.execute(
        f"COPY ({query.format(start=0, end=5000)}) TO '{out}/orders-0.parquet' "
        "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2048)"
    )
    con.execute(
        f"COPY ({query.format(start=5000, end=7000)}) TO '{out}/orders-1.parquet' "
        "(FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 1024)"
    )


if __name__ == "__main__":
    write_pyarrow()
    write_pages()
    write_duckdb()
    print("fixtures written under", HERE)
