//! One run of a job at a time, on every store: a lease object beside the job's manifests
//! (`<manifests>/<job>/.lease.json`).
//!
//! The manifests of a job form one hash chain, and each event is confirmed once per job: two
//! runs working at once would both take the same previous manifest and confirm the same events.
//! So `purge` holds the job's lease while it works:
//!
//! - taken with a create-only put, or, when the object is there but every holder in it has
//!   expired (or, on this host, its process is gone), with a put conditional on the version read;
//!   two takers race on that condition and exactly one wins;
//! - renewed by its holder every third of its time to live, again conditionally;
//! - checked again right before the confirmations and the manifest are written: a holder whose
//!   lease was taken over (it stalled past its expiry) stops there, having written no record;
//! - released when the run ends, whatever the outcome.
//!
//! The shards of one run share its lease (each is a holder of its own, `--shard I/N`); an
//! unsharded attempt, which may write the manifest, holds it alone. A run that finds the lease
//! held by another run (or another unsharded attempt of its own run id) exits 1 at once, naming
//! the holder: Airflow's retry runs it again later. Expiry compares clocks of the machines
//! involved: they must agree to well within the time to live (60 s by default,
//! `LAKEPURGE_LEASE_TTL_MS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Shard;
use crate::store::Location;

/// How long a holder's claim lasts without renewal, by default.
const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The lease object as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Doc {
    job: String,
    run_id: String,
    holders: Vec<Holder>,
}

/// One process holding the lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Holder {
    id: String,
    /// `I/N` for a shard; none for an unsharded attempt.
    shard: Option<String>,
    host: String,
    pid: u32,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: i64,
}

impl Holder {
    /// Whether the holder still holds its claim at `now_ms`: not expired, and not a process of
    /// this host that is gone (a crashed attempt on the same machine is taken over at once).
    fn live(&self, now_ms: i64, host: &str) -> bool {
        if self.expires_at_ms <= now_ms {
            return false;
        }
        self.host != host || process_alive(self.pid)
    }
}

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    folder: Location,
    path: Path,
    holder_id: String,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    ttl: Duration,
}

/// The version of the lease object read, for a conditional put.
type Read = Option<(Doc, UpdateVersion)>;

impl Lease {
    /// Takes the lease of `job` in its manifest `folder` for `run_id` (and `shard`), or fails
    /// (exit 1) naming the run that holds it.
    pub async fn acquire(
        folder: &Location,
        job: &str,
        run_id: &str,
        shard: Option<Shard>,
    ) -> Result<Lease> {
        let ttl = ttl();
        let path = folder.child(".lease.json");
        let host = hostname();
        let me = Holder {
            id: uuid::Uuid::new_v4().to_string(),
            shard: shard.map(|s| s.to_string()),
            host: host.clone(),
            pid: std::process::id(),
            expires_at_ms: 0,
        };
        for _ in 0..20 {
            let read = read(folder, &path).await?;
            let now = now_ms();
            let mut mine = me.clone();
            mine.expires_at_ms = now + ttl.as_millis() as i64;
            let (doc, version) = match read {
                None => (
                    Doc {
                        job: job.to_string(),
                        run_id: run_id.to_string(),
                        holders: vec![mine],
                    },
                    None,
                ),
                // A put of ours whose response was lost (its retry then failed): it is ours.
                Some((doc, _)) if doc.holders.iter().any(|h| h.id == me.id) => {
                    return Ok(Lease::held(folder, path, me.id, ttl));
                }
                Some((mut doc, version)) => {
                    doc.holders.retain(|h| h.live(now, &host));
                    let shares = doc.run_id == run_id
                        && me.shard.is_some()
                        && doc
                            .holders
                            .iter()
                            .all(|h| h.shard.is_some() && h.shard != me.shard);
                    if !doc.holders.is_empty() && !shares {
                        return Err(busy(folder, &doc));
                    }
                    if doc.holders.is_empty() {
                        doc.run_id = run_id.to_string();
                    }
                    doc.holders.push(mine);
                    (doc, Some(version))
                }
            };
            if put(folder, &path, &doc, version).await? {
                tracing::info!(lease = %folder.object_url(&path), run_id, "took the job's lease");
                return Ok(Lease::held(folder, path, me.id, ttl));
            }
            // Another process changed the lease between the read and the put: read it again.
        }
        Err(Error::Busy {
            lease: folder.object_url(&path),
            holder: "other processes (the lease kept changing)".into(),
        })
    }

    /// The lease `holder_id` holds, renewed from now on.
    fn held(folder: &Location, path: Path, holder_id: String, ttl: Duration) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew(
            folder.clone(),
            path.clone(),
            holder_id.clone(),
            ttl,
            Arc::clone(&lost),
        ));
        Lease {
            folder: folder.clone(),
            path,
            holder_id,
            lost,
            renewer,
            ttl,
        }
    }

    /// Fails unless this process still holds the lease with time to spare: called right
    /// before a record (confirmations, manifest) is written.
    pub async fn check(&self) -> Result<()> {
        let lost = || Error::Busy {
            lease: self.folder.object_url(&self.path),
            holder: "another process: this run's lease expired and was taken over".into(),
        };
        if self.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        let Some((doc, _)) = read(&self.folder, &self.path).await? else {
            return Err(lost());
        };
        let margin = (self.ttl / 3).as_millis() as i64;
        let held = doc
            .holders
            .iter()
            .any(|h| h.id == self.holder_id && h.expires_at_ms > now_ms() + margin);
        if held { Ok(()) } else { Err(lost()) }
    }

    /// Gives the lease up (removes this holder; the object goes with the last one). A failure
    /// is logged: the claim expires by itself.
    pub async fn release(self) {
        self.renewer.abort();
        for _ in 0..5 {
            match self.try_release().await {
                Ok(true) => return,
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the job's lease: it expires by itself");
                    return;
                }
            }
        }
    }

    async fn try_release(&self) -> Result<bool> {
        let Some((mut doc, version)) = read(&self.folder, &self.path).await? else {
            return Ok(true);
        };
        let before = doc.holders.len();
        doc.holders.retain(|h| h.id != self.holder_id);
        if doc.holders.len() == before {
            return Ok(true);
        }
        if doc.holders.is_empty() {
            // No store deletes conditionally; a taker that read this version puts against it
            // and fails, and one that reads after the delete creates the object afresh.
            return match self.folder.store.delete(&self.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                Err(e) => Err(Error::store(
                    format!("releasing the lease {}", self.path),
                    e,
                )),
            };
        }
        put(&self.folder, &self.path, &doc, Some(version)).await
    }
}

/// Renews `holder`'s claim every third of `ttl` until aborted; sets `lost` when the claim is
/// gone (taken over after it expired).
async fn renew(folder: Location, path: Path, holder: String, ttl: Duration, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let renewed = async {
            for _ in 0..5 {
                let Some((mut doc, version)) = read(&folder, &path).await? else {
                    return Ok(false);
                };
                let Some(h) = doc.holders.iter_mut().find(|h| h.id == holder) else {
                    return Ok(false);
                };
                h.expires_at_ms = now_ms() + ttl.as_millis() as i64;
                if put(&folder, &path, &doc, Some(version)).await? {
                    return Ok(true);
                }
            }
            Ok::<_, Error>(true)
        };
        match renewed.await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(lease = %path, "the job's lease was taken over: this run writes no record");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %path, error = %e, "could not renew the job's lease; trying again")
            }
        }
    }
}

fn busy(folder: &Location, doc: &Doc) -> Error {
    let holders: Vec<String> = doc
        .holders
        .iter()
        .map(|h| {
            let shard = h
                .shard
                .as_ref()
                .map(|s| format!(" shard {s}"))
                .unwrap_or_default();
            format!("{}:{}{shard}", h.host, h.pid)
        })
        .collect();
    Error::Busy {
        lease: folder.object_url(&folder.child(".lease.json")),
        holder: format!(
            "run {} of job {} ({})",
            doc.run_id,
            doc.job,
            holders.join(", ")
        ),
    }
}

async fn read(folder: &Location, path: &Path) -> Result<Read> {
    let got = match folder.store.get(path).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::store(format!("reading the lease {path}"), e)),
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got
        .bytes()
        .await
        .map_err(|e| Error::store(format!("reading the lease {path}"), e))?;
    let doc = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
        path: folder.object_url(path),
        message: format!("unreadable lease (delete it if no run of the job is working): {e}"),
    })?;
    Ok(Some((doc, version)))
}

/// Puts `doc`: create-only without a `version`, else conditional on it. `false` when another
/// process got there first.
async fn put(
    folder: &Location,
    path: &Path,
    doc: &Doc,
    version: Option<UpdateVersion>,
) -> Result<bool> {
    let bytes = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::Internal(format!("encoding the lease: {e}")))?;
    let mode = match version {
        None => PutMode::Create,
        Some(v) => PutMode::Update(v),
    };
    match folder
        .store
        .put_opts(path, PutPayload::from(bytes), PutOptions::from(mode))
        .await
    {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotFound { .. },
        ) => Ok(false),
        Err(e) => Err(Error::store(format!("writing the lease {path}"), e)),
    }
}

fn ttl() -> Duration {
    std::env::var("LAKEPURGE_LEASE_TTL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DEFAULT_TTL, Duration::from_millis)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::from("unknown");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether process `pid` of this host still runs.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn folder(name: &str) -> Location {
        Location::parse(
            &format!("memory://lease-{name}/audit/job/"),
            std::path::Path::new("."),
            &BTreeMap::new(),
        )
        .unwrap()
    }

    fn shard(i: u32) -> Option<Shard> {
        Some(Shard { index: i, count: 2 })
    }

    #[tokio::test]
    async fn one_unsharded_run_at_a_time_and_shards_share() {
        let f = folder("a");
        let first = Lease::acquire(&f, "job", "r1", None).await.unwrap();
        let e = Lease::acquire(&f, "job", "r2", None).await.err().unwrap();
        assert!(matches!(e, Error::Busy { .. }), "{e}");
        assert!(e.to_string().contains("run r1"), "{e}");
        // Another attempt of the same run id, unsharded, is refused too.
        assert!(Lease::acquire(&f, "job", "r1", None).await.is_err());
        first.check().await.unwrap();
        first.release().await;
        let a = Lease::acquire(&f, "job", "r2", shard(0)).await.unwrap();
        let b = Lease::acquire(&f, "job", "r2", shard(1)).await.unwrap();
        // The same shard twice, another run's shard, the unsharded final step: refused.
        assert!(Lease::acquire(&f, "job", "r2", shard(1)).await.is_err());
        assert!(Lease::acquire(&f, "job", "r3", shard(0)).await.is_err());
        assert!(Lease::acquire(&f, "job", "r2", None).await.is_err());
        a.release().await;
        b.check().await.unwrap();
        b.release().await;
        let last = Lease::acquire(&f, "job", "r2", None).await.unwrap();
        last.release().await;
        assert!(read(&f, &f.child(".lease.json")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_expired_or_dead_holder_is_taken_over_and_the_old_one_notices() {
        let f = folder("b");
        let path = f.child(".lease.json");
        let old = Lease::acquire(&f, "job", "r1", None).await.unwrap();
        // Its claim runs out (a stalled process): another run takes over.
        let (mut doc, v) = read(&f, &path).await.unwrap().unwrap();
        doc.holders[0].expires_at_ms = now_ms() - 1;
        assert!(put(&f, &path, &doc, Some(v)).await.unwrap());
        let new = Lease::acquire(&f, "job", "r2", None).await.unwrap();
        assert!(
            old.check().await.is_err(),
            "a taken-over lease still checks"
        );
        new.check().await.unwrap();
        // A holder of this host whose process is gone is taken over at once.
        let (mut doc, v) = read(&f, &path).await.unwrap().unwrap();
        doc.holders[0].pid = u32::MAX - 7;
        assert!(put(&f, &path, &doc, Some(v)).await.unwrap());
        Lease::acquire(&f, "job", "r3", None)
            .await
            .unwrap()
            .release()
            .await;
    }
}
