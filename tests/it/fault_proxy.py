#!/usr/bin/env python3
"""A fault-injecting HTTP reverse proxy for the integration tests (test-only, 127.0.0.1 only).

Sits between lakepurge (object_store over reqwest) and a real S3 server (moto) or Azurite,
forwards every request unchanged (method, path and query, headers with Host as sent, body)
and relays the answer, except where a rule injects a fault into a kind of request. The tests
use it to show that the program's claims hold when the store misbehaves.

    python3 tests/it/fault_proxy.py --upstream http://127.0.0.1:5000 --port 0
prints "listening on PORT" when ready. Standard library only.

Request kinds (first match wins; path-style S3 `/bucket/key`): versioning, version_list,
version_delete (DELETE ?versionId, or DeleteObjects naming version ids), list, multipart_complete,
multipart, delta_log (PUT under `/_delta_log/`), cond_put (PUT with If-Match / If-None-Match),
put, head, get, delete (DELETE, or DeleteObjects without version ids), other. Requests on a bucket itself other than GET/HEAD (create bucket,
put versioning...) are `other`. Azure (requests with x-ms-version) map the same way by method
and `comp`.

Control (never forwarded):
  POST /__fault  {"kind": "cond_put", "fault": "lost", "count": 1, "skip": 0, "match": "sub",
                  "delay_ms": 0, "status": 503, "code": "SlowDown"}   adds a rule
  POST /__clear  removes all rules and clears the log
  GET  /__log    every proxied request: method, path, query, kind, ranged, fault, status
                 (returned to the client, null if none), upstream (upstream's status or null)
  GET  /__health 200 "ok"
Each rule counts the requests of its kind ("*": any) whose raw or decoded path contains
`match`; it covers matching requests skip+1 .. skip+count (count -1: all from skip+1 on).
When several rules cover a request, the earliest added applies. Faults:
  lost    forward, let the upstream apply it and read its whole answer, then close the client
          connection without a byte of response (the client sees EOF)
  reset   do not forward; reset the connection (SO_LINGER 0: the client sees RST)
  status  do not forward; answer `status` with an S3-style XML error
  delay   wait `delay_ms`, then forward (delay_ms also delays the other faults)
"""
import argparse
import http.client
import http.server
import json
import socket
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from xml.sax.saxutils import escape

KINDS = {"versioning", "version_list", "version_delete", "list", "multipart_complete",
         "multipart", "delta_log", "cond_put", "put", "head", "get", "delete", "other", "*"}
FAULTS = {"lost", "reset", "status", "delay"}
ERROR_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 409: "Conflict",
               412: "PreconditionFailed", 429: "SlowDown", 500: "InternalError",
               503: "SlowDown"}
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
       "upgrade", "expect"}

LOCK = threading.Lock()
RULES = []  # dicts: the rule as posted, plus "seen"
LOG = []
UPSTREAM = None  # (host, port)
VERBOSE = False


def classify(method, path, query, headers, body=None):
    """The kind of a request, from its method, raw path, raw query and headers."""
    params = {k for k, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    decoded = urllib.parse.unquote(path)
    parts = path.lstrip("/").split("/", 1)
    has = lambda h: headers.get(h) is not None
    if has("x-ms-version"):  # Azure: /account/container/blob
        parts = parts[1].split("/", 1) if len(parts) > 1 else [""]
        key = parts[1] if len(parts) > 1 else ""
        comp = urllib.parse.parse_qs(query).get("comp", [""])[0]
        if method == "GET" and comp == "list":
            include = urllib.parse.parse_qs(query).get("include", [""])[0]
            return "version_list" if "versions" in include else "list"
        if method == "PUT" and comp == "block":
            return "multipart"
        if method == "PUT" and comp == "blocklist":
            return "multipart_complete"
        if comp or "restype" in params or not key:
            return "other"
        if method == "DELETE":
            return "version_delete" if "versionid" in params else "delete"
    else:
        key = parts[1] if len(parts) > 1 else ""
        if method == "GET" and "versioning" in params:
            return "versioning"
        if method == "GET" and "versions" in params:
            return "version_list"
        if method == "DELETE" and "versionId" in params:
            return "version_delete"
        if method == "POST" and "delete" in params:
            # DeleteObjects: object_store deletes objects this way; a version id in the body
            # makes it a version delete.
            return "version_delete" if b"<VersionId>" in (body or b"") else "delete"
        if method == "GET" and not key:
            return "list"
        if method == "POST" and "uploadId" in params:
            return "multipart_complete"
        if ((method == "POST" and "uploads" in params) or (method == "PUT" and "partNumber" in params)
                or (method == "DELETE" and "uploadId" in params)):
            return "multipart"
        if not key and method not in ("GET", "HEAD"):
            return "other"
        if method == "DELETE":
            return "delete"
    if method == "PUT":
        if "/_delta_log/" in decoded:
            return "delta_log"
        if has("If-Match") or has("If-None-Match"):
            return "cond_put"
        return "put"
    if method == "HEAD":
        return "head"
    if method == "GET":
        return "get"
    return "other"


def pick_rule(kind, path, body=b""):
    """The rule that applies to this request (counting it in every rule it matches), or None.
    `match` is looked for in the raw and decoded path, and in a DeleteObjects body (its keys)."""
    decoded = urllib.parse.unquote(path)
    if kind in ("delete", "version_delete") and body:
        decoded += " " + body.decode("latin-1")
    chosen = None
    with LOCK:
        for rule in RULES:
            if rule["kind"] not in ("*", kind):
                continue
            m = rule.get("match")
            if m and m not in path and m not in decoded:
                continue
            n = rule["seen"]
            rule["seen"] += 1
            count = int(rule.get("count", 1))
            if n >= int(rule.get("skip", 0)) and (count < 0 or n < int(rule.get("skip", 0)) + count):
                chosen = chosen or rule
    return chosen


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if VERBOSE:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def drop(self, rst):
        """Closes the client connection now: RST (SO_LINGER 0) or shutdown (FIN)."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.rfile.close()  # its makefile reference would keep the descriptor open
        self.connection.close()

    def control(self, body):
        path = self.path.split("?", 1)[0]
        if path == "/__health" and self.command == "GET":
            return self.reply(200, b"ok", "text/plain")
        if path == "/__log" and self.command == "GET":
            with LOCK:
                data = json.dumps(LOG).encode()
            return self.reply(200, data)
        if path == "/__clear" and self.command == "POST":
            with LOCK:
                RULES.clear()
                LOG.clear()
            return self.reply(200, b'{"ok": true}')
        if path == "/__fault" and self.command == "POST":
            try:
                rule = json.loads(body or b"{}")
                assert isinstance(rule, dict), "a JSON object"
                assert rule.get("kind") in KINDS, f"kind one of {sorted(KINDS)}"
                assert rule.get("fault") in FAULTS, f"fault one of {sorted(FAULTS)}"
                for k in ("count", "skip", "delay_ms", "status"):
                    int(rule.get(k, 0))
            except Exception as e:
                return self.reply(400, json.dumps({"error": str(e)}).encode())
            rule["seen"] = 0
            with LOCK:
                RULES.append(rule)
                n = len(RULES)
            return self.reply(200, json.dumps({"ok": True, "rules": n}).encode())
        return self.reply(404, b'{"error": "unknown control endpoint"}')

    def handle_any(self):
        try:
            body = self.read_body()
            if self.path.startswith("/__"):
                return self.control(body)
            self.proxy(body)
        except Exception:
            traceback.print_exc()
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = handle_any

    def proxy(self, body):
        path, _, query = self.path.partition("?")
        kind = classify(self.command, path, query, self.headers, body)
        rule = pick_rule(kind, path, body)
        fault = rule["fault"] if rule else None
        entry = {"method": self.command, "path": path, "query": query, "kind": kind,
                 "ranged": self.headers.get("Range") is not None, "fault": fault,
                 "status": None, "upstream": None}
        with LOCK:
            LOG.append(entry)
        if rule and int(rule.get("delay_ms", 0)) > 0:
            time.sleep(int(rule["delay_ms"]) / 1000)
        if fault == "reset":
            return self.drop(rst=True)
        if fault == "status":
            status = int(rule.get("status", 503))
            code = rule.get("code") or ERROR_CODES.get(status, "InternalError" if status >= 500 else "InvalidRequest")
            xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
                   '<Resource>%s</Resource><RequestId>fault-proxy</RequestId></Error>'
                   % (escape(code), escape("injected by fault_proxy.py (%s %s)" % (status, kind)), escape(path)))
            entry["status"] = status
            return self.reply(status, xml.encode(), "application/xml")
        try:
            conn = http.client.HTTPConnection(*UPSTREAM, timeout=120)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or self.headers.get("Content-Length") is not None or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            headers = resp.getheaders()
            conn.close()
        except Exception as e:
            entry["status"] = 502
            return self.reply(502, json.dumps({"error": "upstream: %s" % e}).encode())
        entry["upstream"] = resp.status
        if fault == "lost":
            return self.drop(rst=False)
        entry["status"] = resp.status
        self.send_response_only(resp.status, resp.reason)
        has_length = False
        for name, value in headers:
            if name.lower() in HOP:
                continue
            if name.lower() == "content-length":
                if self.command != "HEAD" and resp.status not in (204, 304):
                    value = str(len(data))
                has_length = True
            self.send_header(name, value)
        if not has_length and self.command != "HEAD" and resp.status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    global UPSTREAM, VERBOSE
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    url = urllib.parse.urlsplit(args.upstream)
    if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
        sys.exit("--upstream must be http://127.0.0.1:PORT (loopback only)")
    UPSTREAM = ("127.0.0.1", url.port or 80)
    VERBOSE = args.verbose
    server = Server(("127.0.0.1", args.port), Handler)
    print("listening on %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
