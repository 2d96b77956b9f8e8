//! Stage 7, verify: the auditor's check of a manifest, trusting nothing but the manifest and
//! the objects it names.
//!
//! Checks, one line each: the manifest parses with every required field; the hash chain to the
//! job's previous manifest; per file `before.rows − rows_removed = after.rows` and the table
//! sums; each rewritten file still has its recorded sha256 and each deleted file is still gone.
//! The verdict is PASS or FAIL (exit 0 or 3); a manifest that cannot be read at all is exit 2.

use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::store::Location;

/// One check and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

/// The outcome of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub manifest: String,
    pub checks: Vec<Check>,
    pub pass: bool,
}

/// Resolves a manifest argument (a local path or a URL) to its folder and object path.
pub fn locate(arg: &str) -> Result<(Location, Path)> {
    let (dir, name) = match arg.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => (".", arg),
    };
    let folder =
        Location::parse(dir, std::path::Path::new("."), &Default::default()).map_err(|m| {
            Error::Manifest {
                path: arg.to_string(),
                message: m,
            }
        })?;
    let path = folder.child(name);
    Ok((folder, path))
}

/// Verifies the manifest at `arg`.
pub async fn verify(arg: &str) -> Result<Report> {
    let (folder, path) = locate(arg)?;
    let stored = manifest::read(&folder, &path)
        .await?
        .ok_or_else(|| Error::Manifest {
            path: arg.to_string(),
            message: "no such manifest".into(),
        })?;
    let m = &stored.manifest;
    let mut checks = vec![Check {
        ok: m.status == "complete",
        what: format!(
            "manifest parses, all required fields present, status {:?} (job {}, run {})",
            m.status, m.job, m.run_id
        ),
    }];
    checks.push(check_chain(&folder, &stored).await?);
    checks.extend(check_arithmetic(m));
    for t in &m.tables {
        let loc = Location::parse(&t.location, std::path::Path::new("."), &Default::default())
            .map_err(|msg| Error::Manifest {
                path: arg.to_string(),
                message: format!("table {} location: {msg}", t.name),
            })?;
        for f in &t.files {
            checks.push(check_file(&loc, &t.name, f).await?);
        }
    }
    let pass = checks.iter().all(|c| c.ok);
    Ok(Report {
        manifest: folder.object_url(&path),
        checks,
        pass,
    })
}

async fn check_chain(folder: &Location, stored: &manifest::Stored) -> Result<Check> {
    let m = &stored.manifest;
    let history = manifest::all(folder).await?;
    let earlier: Vec<_> = history
        .iter()
        .filter(|s| s.manifest.sequence < m.sequence)
        .collect();
    let expected_prev = earlier
        .iter()
        .rev()
        .find(|s| s.manifest.sequence == m.sequence - 1);
    let check = match (&m.previous_sha256, expected_prev) {
        (None, _) if m.sequence == 1 => Check {
            ok: true,
            what: "hash chain: first manifest of the job".into(),
        },
        (Some(h), Some(p)) if *h == p.sha256 => Check {
            ok: true,
            what: format!(
                "hash chain: previous manifest {} matches",
                p.manifest.run_id
            ),
        },
        (Some(_), Some(p)) => Check {
            ok: false,
            what: format!(
                "hash chain: previous manifest {} does not match the recorded sha256 (edited or replaced)",
                p.path
            ),
        },
        (None, Some(p)) => Check {
            ok: false,
            what: format!(
                "hash chain: manifest records no previous sha256 but {} precedes it",
                p.path
            ),
        },
        (_, None) => Check {
            ok: false,
            what: format!(
                "hash chain: previous manifest (sequence {}) is missing",
                m.sequence.saturating_sub(1)
            ),
        },
    };
    Ok(check)
}

fn check_arithmetic(m: &Manifest) -> Vec<Check> {
    let mut out = Vec::new();
    for t in &m.tables {
        let mut bad = Vec::new();
        for f in &t.files {
            let after_rows = f.after.as_ref().map_or(0, |a| a.rows);
            if f.before.rows.checked_sub(f.rows_removed) != Some(after_rows) {
                bad.push(format!(
                    "{}: {} - {} != {}",
                    f.path, f.before.rows, f.rows_removed, after_rows
                ));
            }
        }
        let sum: u64 = t.files.iter().map(|f| f.rows_removed).sum();
        let rewritten = t.files.iter().filter(|f| f.after.is_some()).count() as u64;
        let deleted = t.files.len() as u64 - rewritten;
        if sum != t.rows_removed {
            bad.push(format!(
                "rows_removed {} != sum over files {sum}",
                t.rows_removed
            ));
        }
        if rewritten != t.files_rewritten || deleted != t.files_deleted {
            bad.push(format!(
                "files_rewritten/files_deleted {}/{} != files listed in the manifest {rewritten}/{deleted}",
                t.files_rewritten, t.files_deleted
            ));
        }
        out.push(Check {
            ok: bad.is_empty(),
            what: if bad.is_empty() {
                format!(
                    "table {}: row arithmetic holds ({} rows removed)",
                    t.name, t.rows_removed
                )
            } else {
                format!(
                    "table {}: row arithmetic broken: {}",
                    t.name,
                    bad.join("; ")
                )
            },
        });
    }
    out
}

async fn check_file(loc: &Location, table: &str, f: &manifest::FileRecord) -> Result<Check> {
    let path = loc.child(&f.path);
    let shown = format!("{}{}", loc.url, f.path);
    let current = match loc.store.get(&path).await {
        Ok(g) => Some(
            g.bytes()
                .await
                .map_err(|e| Error::store(format!("reading {shown}"), e))?,
        ),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(Error::store(format!("reading {shown}"), e)),
    };
    Ok(match (&f.after, current) {
        (Some(after), Some(bytes)) => {
            let sha = manifest::sha256_hex(&bytes);
            if sha == after.sha256 {
                Check {
                    ok: true,
                    what: format!("table {table}: {} has its purged content", f.path),
                }
            } else if sha == f.before.sha256 {
                Check {
                    ok: false,
                    what: format!(
                        "table {table}: {shown} holds its PRE-PURGE content (restored from backup?)"
                    ),
                }
            } else {
                Check {
                    ok: false,
                    what: format!("table {table}: {shown} changed since the purge (sha256 {sha})"),
                }
            }
        }
        (Some(_), None) => Check {
            ok: false,
            what: format!("table {table}: {shown} is missing"),
        },
        (None, None) => Check {
            ok: true,
            what: format!("table {table}: {} stays deleted", f.path),
        },
        (None, Some(bytes)) => {
            let restored = manifest::sha256_hex(&bytes) == f.before.sha256;
            Check {
                ok: false,
                what: format!(
                    "table {table}: {shown} was deleted by the purge but exists again{}",
                    if restored {
                        " with its PRE-PURGE content"
                    } else {
                        ""
                    }
                ),
            }
        }
    })
}
