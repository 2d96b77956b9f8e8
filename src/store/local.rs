//! `file://`: `LocalFileSystem` has no conditional replace (`PutMode::Update`). [`LocalStore`]
//! wraps it and does every put itself: the new bytes are written and flushed to a hidden
//! temporary file (`.lakepurge-*.tmp`) beside the target, then renamed over it (`Overwrite`),
//! hard-linked to it if it does not exist (`Create`), or renamed over it after the target's
//! current etag is compared with the expected one under a process-wide lock (`Update`; against
//! other lakepurge processes, [`TableLocks`] makes it atomic); `rename(2)` is atomic on POSIX
//! file systems. Uploads in parts (large files) are its own too: the parts are written into
//! such a hidden file at their offsets, and completing renames it over the target. A process
//! killed mid-write leaves only a hidden temporary file, which [`clean_temporaries`] removes.
//! Readers see the old file or the new one, never a torn one. The guarantee against writers
//! outside lakepurge is weaker than on S3: one that replaces the file in the microseconds
//! between the etag check and the rename is overwritten.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use super::Location;
use super::direct_io::{open_direct, write_at, write_synced};
use crate::error::{Error, Result};

/// Temporary objects lakepurge writes beside a file it replaces are named
/// `.lakepurge-<random>-<name>.tmp`: hidden from table readers, and recognisable for cleanup.
pub const TEMP_PREFIX: &str = ".lakepurge-";
pub const TEMP_SUFFIX: &str = ".tmp";

/// The file a temporary object was written for (relative path), if `rel` names one.
fn temp_target(rel: &str) -> Option<String> {
    let (dir, name) = match rel.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), rel),
    };
    let inner = name.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
    let (_random, target) = inner.split_once('-')?;
    Some(format!("{dir}{target}"))
}

/// Whether `rel` names a temporary object of lakepurge's (hidden, `.tmp`: no reader of a
/// dataset takes it for data).
pub fn is_temporary(rel: &str) -> bool {
    temp_target(rel).is_some()
}

/// Deletes temporary objects an interrupted run left under `location` (see [`TEMP_PREFIX`])
/// for the files `owned` accepts (a shard cleans only its own files' temporaries). A purge
/// calls it under the table's lock ([`TableLocks`]), so no other lakepurge process is writing
/// one of them.
pub async fn clean_temporaries(location: &Location, owned: impl Fn(&str) -> bool) -> Result<usize> {
    use futures::TryStreamExt;
    let stale: Vec<Path> = location
        .store
        .list(Some(&location.prefix))
        .try_filter_map(|m| {
            let rel = location.relative(&m.location);
            let is_temp = temp_target(&rel).is_some_and(|target| owned(&target));
            futures::future::ready(Ok(is_temp.then_some(m.location)))
        })
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing {}", location.url), e))?;
    for p in &stale {
        match location.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                tracing::info!(object = %p, "deleted a temporary object left by an interrupted run");
            }
            Err(e) => return Err(Error::store(format!("deleting {p}"), e)),
        }
    }
    Ok(stale.len())
}

/// Advisory locks (`flock`) on the folders of local tables, held by a purge from before it
/// plans them until it ends (the kernel drops them when the process ends, however it ends).
/// Two lakepurge processes never work on one `file://` table at once: the later one waits,
/// then plans what the earlier one left. This makes the etag check and the rename of a
/// replacement (and the check and unlink of a deletion, and the cleanup of temporaries)
/// atomic against every other lakepurge process, which a lock inside one process cannot.
/// Writers other than lakepurge do not take the lock.
#[derive(Debug, Default)]
pub struct TableLocks {
    held: Vec<std::fs::File>,
}

impl TableLocks {
    /// Locks the folders of the `file://` locations among `tables` (name, location) in one
    /// order (so two processes cannot deadlock), each folder once; other schemes and folders
    /// that do not exist (a table with no files) are passed over.
    pub async fn acquire(tables: &[(&str, &Location)]) -> Result<TableLocks> {
        let mut dirs: BTreeMap<std::path::PathBuf, &str> = BTreeMap::new();
        for (name, loc) in tables {
            if loc.url.scheme() != "file" {
                continue;
            }
            let Ok(dir) = loc.url.to_file_path() else {
                continue;
            };
            if let Ok(canonical) = std::fs::canonicalize(&dir) {
                dirs.entry(canonical).or_insert(name);
            }
        }
        let mut locks = TableLocks::default();
        for (dir, table) in dirs {
            let shown = dir.display().to_string();
            let failed = |e: &dyn fmt::Display| {
                Error::store(
                    format!("locking the folder of table {table} ({shown})"),
                    local_error(e.to_string()),
                )
            };
            let file = std::fs::File::open(&dir).map_err(|e| failed(&e))?;
            let file = match file.try_lock() {
                Ok(()) => file,
                Err(std::fs::TryLockError::WouldBlock) => {
                    tracing::warn!(table, folder = %shown, "another lakepurge process is purging this table: waiting for it to finish");
                    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                        .await
                        .map_err(|e| failed(&e))?
                        .map_err(|e| failed(&e))?
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(failed(&e)),
            };
            locks.held.push(file);
        }
        Ok(locks)
    }
}

/// `LocalFileSystem` with a conditional replace (`PutMode::Update`); see the module docs.
#[derive(Debug)]
pub struct LocalStore {
    inner: LocalFileSystem,
    replace_lock: tokio::sync::Mutex<()>,
}

impl LocalStore {
    pub fn new() -> Self {
        LocalStore {
            inner: LocalFileSystem::new(),
            replace_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes `payload` to a new hidden temporary file beside `target`, flushed to disk.
    async fn write_temp(
        &self,
        target: &std::path::Path,
        name: &str,
        payload: PutPayload,
    ) -> object_store::Result<std::path::PathBuf> {
        let tmp = temp_beside(target, name);
        let tmp_w = tmp.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(dir) = tmp_w.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_synced(&tmp_w, &payload)
        })
        .await
        .map_err(|e| local_error(format!("writing {}: {e}", tmp.display())))?
        .map_err(|e| local_io(format!("writing {}", tmp.display()), e))?;
        Ok(tmp)
    }

    /// Puts `payload` at `location` through a temporary file: renamed over the target
    /// (`Overwrite`), hard-linked only if the target does not exist (`Create`), or renamed only
    /// if the target still has the expected etag (`Update`).
    async fn put_via_temp(
        &self,
        location: &Path,
        payload: PutPayload,
        mode: PutMode,
    ) -> object_store::Result<PutResult> {
        let target = self.inner.path_to_filesystem(location)?;
        let name = location.filename().unwrap_or("object");
        let tmp = self.write_temp(&target, name, payload).await?;
        let _guard = self.replace_lock.lock().await;
        let outcome = match mode {
            PutMode::Overwrite => std::fs::rename(&tmp, &target)
                .map_err(|e| local_io(format!("renaming over {}", target.display()), e)),
            PutMode::Create => {
                let linked = std::fs::hard_link(&tmp, &target);
                let _ = std::fs::remove_file(&tmp);
                linked.map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: Box::new(e),
                    },
                    _ => local_io(format!("creating {}", target.display()), e),
                })
            }
            PutMode::Update(expected) => match self.inner.head(location).await {
                Ok(current) if current.e_tag == expected.e_tag => std::fs::rename(&tmp, &target)
                    .map_err(|e| local_io(format!("renaming over {}", target.display()), e)),
                Ok(current) => Err(object_store::Error::Precondition {
                    path: location.to_string(),
                    source: format!(
                        "etag is {:?}, expected {:?}",
                        current.e_tag.as_deref().unwrap_or(""),
                        expected.e_tag.as_deref().unwrap_or("")
                    )
                    .into(),
                }),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = outcome {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the new directory entry durable.
        if let Some(dir) = target.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        let meta = self.inner.head(location).await?;
        Ok(PutResult {
            e_tag: meta.e_tag,
            version: meta.version,
        })
    }
}

/// A hidden temporary file beside `target` (see [`TEMP_PREFIX`]).
fn temp_beside(target: &std::path::Path, name: &str) -> std::path::PathBuf {
    target.with_file_name(format!(
        "{TEMP_PREFIX}{}-{name}{TEMP_SUFFIX}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// An upload in parts to a local file (see [`LocalStore::put_multipart_opts`]).
struct LocalUpload {
    /// `None` once completed or aborted.
    file: Option<Arc<std::fs::File>>,
    /// The same file opened for direct I/O, where the file system allows it: parts that start
    /// at an aligned offset from an aligned buffer go through it, but for their last partial
    /// block.
    direct: Option<Arc<std::fs::File>>,
    tmp: std::path::PathBuf,
    target: std::path::PathBuf,
    location: Path,
    /// Bytes handed to parts so far: where the next part starts.
    written: u64,
}

impl fmt::Debug for LocalUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalUpload({})", self.tmp.display())
    }
}

fn upload_finished() -> object_store::Error {
    local_error("the upload is already completed or aborted".into())
}

#[async_trait]
impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        let at = self.written;
        self.written += data.content_length() as u64;
        let file = self.file.clone();
        let direct = self.direct.clone();
        let tmp = self.tmp.clone();
        Box::pin(async move {
            let file = file.ok_or_else(upload_finished)?;
            let failed =
                |e: &dyn fmt::Display| local_error(format!("writing {}: {e}", tmp.display()));
            tokio::task::spawn_blocking(move || {
                let chunks: Vec<&Bytes> = data.iter().collect();
                write_at(&file, direct.as_deref(), &chunks, at)
            })
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| local_io(format!("writing {}", tmp.display()), e))
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let file = self.file.take().ok_or_else(upload_finished)?;
        self.direct = None;
        let (tmp, target) = (self.tmp.clone(), self.target.clone());
        let failed = |e: &dyn fmt::Display| {
            local_error(format!("completing {}: {e}", self.target.display()))
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            file.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            // Make the new directory entry durable.
            if let Some(dir) = target.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| local_io(format!("completing {}", self.target.display()), e))?;
        let meta = LocalFileSystem::new().head(&self.location).await?;
        Ok(PutResult {
            e_tag: meta.e_tag,
            version: meta.version,
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.file = None;
        self.direct = None;
        let tmp = self.tmp.clone();
        match tokio::task::spawn_blocking(move || std::fs::remove_file(tmp)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Ok(Err(e)) => Err(local_io(format!("deleting {}", self.tmp.display()), e)),
            Err(e) => Err(local_error(format!("deleting {}: {e}", self.tmp.display()))),
        }
    }
}

/// A local file-system failure with its `io::Error` kept as the source: its kind tells a
/// failure a retry may fix from one it cannot (see `Error::is_transient`).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct LocalIoError {
    context: String,
    #[source]
    source: std::io::Error,
}

fn local_io(context: String, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalStore",
        source: Box::new(LocalIoError { context, source }),
    }
}

fn local_error(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalStore",
        source: message.into(),
    }
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore(conditional replace over {})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !opts.attributes.is_empty() {
            return self.inner.put_opts(location, payload, opts).await;
        }
        self.put_via_temp(location, payload, opts.mode).await
    }

    /// Parts go to a hidden temporary file beside the target (named as for puts, so an
    /// interrupted upload is cleaned up the same way), written at their offsets; completing
    /// flushes it to disk and renames it over the target.
    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let target = self.inner.path_to_filesystem(location)?;
        let tmp = temp_beside(&target, location.filename().unwrap_or("object"));
        let tmp_c = tmp.clone();
        let (file, direct) = tokio::task::spawn_blocking(move || {
            if let Some(dir) = tmp_c.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::File::create(&tmp_c)?;
            // A second handle for the aligned parts, with direct I/O where allowed.
            let direct = open_direct(&tmp_c);
            Ok::<_, std::io::Error>((file, direct))
        })
        .await
        .map_err(|e| local_error(format!("creating {}: {e}", tmp.display())))?
        .map_err(|e| local_io(format!("creating {}", tmp.display()), e))?;
        Ok(Box::new(LocalUpload {
            file: Some(Arc::new(file)),
            direct: direct.map(Arc::new),
            tmp,
            target,
            location: location.clone(),
            written: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::direct_io::{DIRECT_IO_ALIGN, aligned_buffer};
    use object_store::UpdateVersion;

    #[tokio::test]
    async fn local_errors_a_retry_cannot_fix_are_not_transient() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        // A folder that is a file: ENOTDIR, whatever the user's rights.
        let under_a_file = Path::from(format!("{}/file/part.parquet", dir.path().display()));
        let store = LocalStore::new();
        let e = store
            .put(&under_a_file, PutPayload::from_static(b"data"))
            .await
            .unwrap_err();
        let e = Error::store("writing", e);
        assert!(!e.is_transient(), "{e}");
        for (kind, transient) in [
            (std::io::ErrorKind::TimedOut, true),
            (std::io::ErrorKind::Interrupted, true),
            (std::io::ErrorKind::StorageFull, false),
            (std::io::ErrorKind::PermissionDenied, false),
            (std::io::ErrorKind::ReadOnlyFilesystem, false),
        ] {
            let e = Error::store(
                "x",
                local_io("writing x".into(), std::io::Error::from(kind)),
            );
            assert_eq!(e.is_transient(), transient, "{kind:?}");
        }
        // An error with no I/O error under it (an HTTP store's) stays transient.
        let e = Error::store("x", local_error("connection closed".into()));
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn local_conditional_replace_refuses_a_stale_etag() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(".", dir.path(), &BTreeMap::new()).unwrap();
        let path = loc.child("a.bin");
        let first = loc.store.put(&path, "one".into()).await.unwrap();
        let expected = UpdateVersion {
            e_tag: first.e_tag.clone(),
            version: None,
        };
        let opts = PutOptions::from(PutMode::Update(expected.clone()));
        loc.store
            .put_opts(&path, "two".into(), opts.clone())
            .await
            .unwrap();
        // The etag changed: the same expectation is now stale and must be refused.
        let err = loc
            .store
            .put_opts(&path, "three".into(), opts)
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::Precondition { .. }),
            "{err}"
        );
        let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"two");
        // No temporary object is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["a.bin".to_string()]);
    }

    #[tokio::test]
    async fn local_upload_in_parts_is_hidden_until_complete() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(".", dir.path(), &BTreeMap::new()).unwrap();
        let path = loc.child("a.bin");
        let read = loc.store.put(&path, "old".into()).await.unwrap();
        let names = || -> Vec<String> {
            let mut n: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        let mut upload = loc.store.put_multipart(&path).await.unwrap();
        let (a, b) = (
            upload.put_part("first,".into()),
            upload.put_part("second".into()),
        );
        // Parts land at their offsets whatever order they finish in.
        b.await.unwrap();
        a.await.unwrap();
        let listed = names();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(
            temp_target(&listed[0]).is_some_and(|t| t == "a.bin"),
            "{listed:?}"
        );
        let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"old", "visible before completion");
        let done = upload.complete().await.unwrap();
        assert_ne!(done.e_tag, read.e_tag);
        let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"first,second");
        assert_eq!(names(), vec!["a.bin".to_string()]);

        // Aligned parts at aligned offsets (written directly where the file system allows it,
        // the last partial block the ordinary way).
        let aligned = |len: usize, seed: u8| -> (Bytes, Vec<u8>) {
            let (mut buf, pad) = aligned_buffer(len);
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
            buf.extend_from_slice(&data);
            (Bytes::from(buf).slice(pad..), data)
        };
        let (one, mut expected) = aligned(2 * DIRECT_IO_ALIGN, 3);
        let (two, tail) = aligned(DIRECT_IO_ALIGN + 7, 5);
        expected.extend_from_slice(&tail);
        let mut upload = loc.store.put_multipart(&path).await.unwrap();
        upload.put_part(one.into()).await.unwrap();
        upload.put_part(two.into()).await.unwrap();
        upload.complete().await.unwrap();
        let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], &expected[..]);
        // Back to the earlier content, for the abort below.
        loc.store.put(&path, "first,second".into()).await.unwrap();

        let mut aborted = loc.store.put_multipart(&path).await.unwrap();
        aborted.put_part("never".into()).await.unwrap();
        aborted.abort().await.unwrap();
        assert_eq!(names(), vec!["a.bin".to_string()]);
        let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&body[..], b"first,second");
    }
}
