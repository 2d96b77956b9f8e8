//! A fault-injecting proxy between the program and a test object store (`fault_proxy.py`
//! beside this file): it forwards every request unchanged except where a rule makes requests
//! of one kind (`cond_put`, `version_list`, `get`...) fail, so the tests can check that what
//! the program claims stays true when the store misbehaves. Rules and the request log are
//! reached over plain HTTP on the proxy's own loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cloud::Server;
use crate::common::python;

/// `fault_proxy.py` on a free port of 127.0.0.1 in front of an upstream server, stopped on
/// drop. Point the program at [`FaultProxy::endpoint`] instead of the server's.
pub struct FaultProxy {
    server: Server,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (e.g. "http://127.0.0.1:5000").
    pub fn start(upstream: &str) -> FaultProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fault_proxy.py");
        let upstream = upstream.to_string();
        let server = Server::start("tests/it/fault_proxy.py", move |port| {
            let mut c = Command::new(python());
            c.arg(&script)
                .args(["--upstream", &upstream, "--port", &port.to_string()]);
            c
        });
        FaultProxy { server }
    }

    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Adds a rule, such as `json!({"kind": "cond_put", "fault": "lost", "count": 1})`; keys:
    /// `kind`, `fault` (`lost`, `reset`, `status`, `delay`), `count` (-1: forever), `skip`,
    /// `match` (a substring of the path), `status`, `code`, `delay_ms` (see the script's doc).
    /// Panics if the proxy refuses it.
    pub fn inject(&self, rule: serde_json::Value) {
        self.request("POST", "/__fault", &rule.to_string());
    }

    /// Removes every rule and clears the log.
    pub fn clear(&self) {
        self.request("POST", "/__clear", "");
    }

    /// Every request proxied since the start (or the last `clear`), in order: `method`,
    /// `path`, `query`, `kind`, `ranged`, `fault` (null if none), `status` (returned to the
    /// client; null for `lost` and `reset`), `upstream` (the upstream's status, or null).
    pub fn log(&self) -> Vec<serde_json::Value> {
        let body = self.request("GET", "/__log", "");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("fault proxy log ({e}): {body}"))
    }

    /// How many requests a rule made fail (or delayed).
    pub fn faults_fired(&self) -> usize {
        self.log().iter().filter(|e| !e["fault"].is_null()).count()
    }

    /// One control request (HTTP/1.1, `Connection: close`, read to EOF); the response body,
    /// panicking unless the status is 200.
    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let port = self.server.port;
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to the fault proxy on port {port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("fault proxy {method} {path}: {e}"));
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .unwrap_or_else(|e| panic!("fault proxy {method} {path}: {e}"));
        let response = String::from_utf8_lossy(&response);
        let (head, content) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("fault proxy {method} {path}: bad response {response:?}"));
        let status = head.split(' ').nth(1).unwrap_or("");
        assert_eq!(status, "200", "fault proxy {method} {path}: {response}");
        content.to_string()
    }
}
