#!/usr/bin/env python3
"""A local S3-compatible endpoint with latency, for the find-phase benchmark (issue #18).

Serves a folder as one bucket per top-level subfolder: ListObjectsV2 (prefix, delimiter,
max-keys, continuation-token, start-after), HEAD and GET of an object (with Range), PUT (with
If-Match / If-None-Match: * conditions, as object_store's conditional writes send them) and
DELETE; a bucket's versioning status is "never enabled".
Every request is answered after --delay-ms (default 25), and any number are served at once
(asyncio), as an object store does; moto answers ~400 requests a second, too few to show
requests in flight. Authentication is not checked. Counts requests and bytes sent:
GET /__stats returns them as JSON, POST /__reset zeroes them (neither is delayed).

    python3 benches/slow_s3.py --root DIR --port 0 --delay-ms 25
prints "listening on PORT" when ready. Only 127.0.0.1.
"""
import argparse
import asyncio
import bisect
import itertools
import email.utils
import hashlib
import json
import os
import sys
import urllib.parse
from xml.sax.saxutils import escape

STATS = {"requests": 0, "list": 0, "head": 0, "get": 0, "bytes": 0, "put": 0, "delete": 0,
         "bytes_in": 0}


def etag_of(path, st):
    return '"' + hashlib.md5(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest() + '"'


KEYS = {}


def keys_of(root, bucket):
    """The bucket's keys, sorted: listed once, again when a folder appears at its top (PUT and
    DELETE keep the list up to date themselves)."""
    base = os.path.join(root, bucket)
    stamp = os.stat(base).st_mtime_ns if os.path.isdir(base) else 0
    if KEYS.get(bucket, (None,))[0] != stamp:
        keys = []
        for dirpath, _, files in os.walk(base):
            for f in files:
                keys.append(os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/"))
        KEYS[bucket] = (stamp, sorted(keys))
    return KEYS[bucket][1]


def listing(root, bucket, query):
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = int(query.get("max-keys", "1000"))
    after = query.get("continuation-token") or query.get("start-after", "")
    base = os.path.join(root, bucket)
    all_keys = keys_of(root, bucket)
    start = max(bisect.bisect_left(all_keys, prefix), bisect.bisect_right(all_keys, after) if after else 0)
    keys = itertools.takewhile(lambda k: k.startswith(prefix), all_keys[start:])
    contents, prefixes = [], []
    for key in keys:
        if delimiter:
            rest = key[len(prefix):]
            if delimiter in rest:
                p = prefix + rest.split(delimiter, 1)[0] + delimiter
                if p not in prefixes and p > after:
                    prefixes.append(p)
                continue
        contents.append(key)
        if len(contents) + len(prefixes) >= max_keys:
            break
    truncated = len(contents) + len(prefixes) >= max_keys and (contents or prefixes)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
           f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
           f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
           f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
    if truncated:
        last = max(contents[-1:] + prefixes[-1:])
        out.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
    for key in contents:
        path = os.path.join(base, key)
        st = os.stat(path)
        out.append(f"<Contents><Key>{escape(key)}</Key>"
                   f"<LastModified>2026-11-30T00:00:00.000Z</LastModified>"
                   f"<ETag>{escape(etag_of(path, st))}</ETag><Size>{st.st_size}</Size>"
                   f"<StorageClass>STANDARD</StorageClass></Contents>")
    for p in prefixes:
        out.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
    out.append("</ListBucketResult>")
    return "".join(out).encode()


def respond(status, reason, headers, body, head=False):
    lines = [f"HTTP/1.1 {status} {reason}"]
    headers = dict(headers)
    headers.setdefault("Content-Length", str(len(body)))
    headers.setdefault("x-amz-request-id", "slow-s3")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return data if head else data + body


def put(root, bucket, key, headers, body):
    path = os.path.join(root, bucket, key)
    keys = keys_of(root, bucket)
    exists = os.path.isfile(path)
    want = headers.get("if-match")
    if (want and (not exists or etag_of(path, os.stat(path)) != want)) or \
            (headers.get("if-none-match") == "*" and exists):
        STATS["put"] += 1
        body = b"<Error><Code>PreconditionFailed</Code><Message>condition</Message></Error>"
        return respond(412, "Precondition Failed", {"Content-Type": "application/xml"}, body)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".slow-s3-tmp"
    with open(tmp, "wb") as f:
        f.write(body)
    os.replace(tmp, path)
    if not exists:
        bisect.insort(keys, key)
    STATS["put"] += 1
    STATS["bytes_in"] += len(body)
    return respond(200, "OK", {"ETag": etag_of(path, os.stat(path))}, b"")


def delete(root, bucket, key):
    path = os.path.join(root, bucket, key)
    keys = keys_of(root, bucket)
    if os.path.isfile(path):
        os.remove(path)
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            keys.pop(i)
    STATS["delete"] += 1
    return respond(204, "No Content", {}, b"")


def handle(root, method, target, headers, body=b""):
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    parts = urllib.parse.unquote(url.path).lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    if not key and "versioning" in query:
        body = b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>'
        return respond(200, "OK", {"Content-Type": "application/xml"}, body)
    if method == "PUT":
        return put(root, bucket, key, headers, body)
    if method == "DELETE":
        return delete(root, bucket, key)
    if not key:
        body = listing(root, bucket, query)
        STATS["list"] += 1
        return respond(200, "OK", {"Content-Type": "application/xml"}, body)
    path = os.path.join(root, bucket, key)
    if not os.path.isfile(path):
        body = b"<Error><Code>NoSuchKey</Code><Message>not found</Message></Error>"
        return respond(404, "Not Found", {"Content-Type": "application/xml"}, body, method == "HEAD")
    st = os.stat(path)
    common = {"ETag": etag_of(path, st), "Accept-Ranges": "bytes",
              "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
    if method == "HEAD":
        STATS["head"] += 1
        return respond(200, "OK", {**common, "Content-Length": str(st.st_size)}, b"", True)
    STATS["get"] += 1
    rng = headers.get("range")
    with open(path, "rb") as f:
        if rng and rng.startswith("bytes="):
            start_s, end_s = rng[6:].split("-", 1)
            if start_s == "":
                start = max(st.st_size - int(end_s), 0)
                end = st.st_size - 1
            else:
                start = int(start_s)
                end = min(int(end_s), st.st_size - 1) if end_s else st.st_size - 1
            f.seek(start)
            body = f.read(end - start + 1)
            STATS["bytes"] += len(body)
            return respond(206, "Partial Content",
                           {**common, "Content-Range": f"bytes {start}-{end}/{st.st_size}"}, body)
        body = f.read()
    STATS["bytes"] += len(body)
    return respond(200, "OK", common, body)


async def serve_connection(reader, writer, root, delay):
    try:
        while True:
            request = await reader.readline()
            if not request:
                break
            method, target, _ = request.decode().split(" ", 2)
            headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                k, v = line.decode().split(":", 1)
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            if target.startswith("/__stats"):
                writer.write(respond(200, "OK", {"Content-Type": "application/json"}, json.dumps(STATS).encode()))
            elif target.startswith("/__reset"):
                for k in STATS:
                    STATS[k] = 0
                writer.write(respond(200, "OK", {}, b""))
            else:
                STATS["requests"] += 1
                await asyncio.sleep(delay)
                writer.write(handle(root, method, target, headers, body))
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    args = ap.parse_args()
    delay = args.delay_ms / 1000
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, args.root, delay), "127.0.0.1", args.port, backlog=1024)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
