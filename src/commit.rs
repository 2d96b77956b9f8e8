//! Stage 5, commit: puts a rewritten file in place of the original, or deletes an emptied one,
//! only if the object is still the version that was read.
//!
//! Replacement is one conditional put (`PutMode::Update` with the etag and version read), which
//! is atomic on every store: readers see the old file or the new one. On `file://` the
//! [`LocalStore`](crate::store::LocalStore) wrapper provides it. A file that changed since it
//! was read is a [`Error::Conflict`]: the caller reads it again and redoes it; stale data is
//! never written over newer data. Deletion checks the version first; object stores have no
//! conditional delete, so a write landing between that check and the delete is lost (a window
//! of one request; documented in the README).
//!
//! Large files go up in parts while they are written ([`PartWriter`] feeds a [`PartUpload`]),
//! so memory holds a few parts rather than the whole new file; on `file://` the parts go to a
//! hidden temporary file that completion renames over the original (`store::LocalStore`). Parts are
//! invisible until the upload completes, and completion is atomic. object_store has no
//! conditional completion, so [`PartUpload::complete_if`] checks the version read just before
//! completing: a write landing between that check and the completion (one request) is lost,
//! as for deletes. A failed or refused upload is aborted, which deletes its parts.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, UpdateVersion,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The version of an object that was read: what a replacement is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadVersion {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

impl ReadVersion {
    /// Whether `current` (the object as it is now) is still this version.
    fn is(&self, current: &object_store::ObjectMeta) -> bool {
        current.e_tag == self.e_tag && current.version == self.version
    }
}

/// The new version of a replaced object.
#[derive(Debug, Clone)]
pub struct Written {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// Replaces `path` with `bytes` if it is still at `read`.
pub async fn replace(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Bytes,
    read: &ReadVersion,
) -> Result<Written> {
    let opts = PutOptions::from(PutMode::Update(UpdateVersion {
        e_tag: read.e_tag.clone(),
        version: read.version.clone(),
    }));
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(r) => Ok(Written {
            e_tag: r.e_tag,
            version: r.version,
        }),
        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
            Err(Error::Conflict {
                path: path.to_string(),
            })
        }
        Err(e) => Err(Error::store(format!("replacing {path}"), e)),
    }
}

/// Deletes `path` if it is still at `read`.
pub async fn delete(store: &dyn ObjectStore, path: &Path, read: &ReadVersion) -> Result<()> {
    let current = match store.head(path).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(()),
        Err(e) => {
            return Err(Error::store(
                format!("checking {path} before deleting it"),
                e,
            ));
        }
    };
    if !read.is(&current) {
        return Err(Error::Conflict {
            path: path.to_string(),
        });
    }
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store(format!("deleting {path}"), e)),
    }
}

/// Files at least this large are read by ranges and uploaded in parts.
/// `LAKEPURGE_MULTIPART_THRESHOLD` (bytes) overrides it.
pub const MULTIPART_THRESHOLD: u64 = 64 << 20;

/// The size of each uploaded part (S3's minimum is 5 MiB, except for the last part).
pub const PART_SIZE: usize = 8 << 20;

/// The threshold in effect (see [`MULTIPART_THRESHOLD`]).
pub fn multipart_threshold() -> u64 {
    std::env::var("LAKEPURGE_MULTIPART_THRESHOLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MULTIPART_THRESHOLD)
}

/// A `Write` that hands what is written to an upload in parts of [`PART_SIZE`] bytes (through
/// a bounded channel: the writer waits while the upload is behind), hashing it on the way.
pub struct PartWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    /// The part being filled, after `pad` bytes of alignment.
    buf: Vec<u8>,
    pad: usize,
    hasher: Sha256,
    size: u64,
}

impl PartWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> PartWriter {
        let (buf, pad) = crate::store::aligned_buffer(PART_SIZE);
        PartWriter {
            tx,
            buf,
            pad,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let (next, pad) = crate::store::aligned_buffer(PART_SIZE);
        let part = std::mem::replace(&mut self.buf, next);
        let part = Bytes::from(part).slice(self.pad..);
        self.pad = pad;
        self.tx
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the upload of the new file stopped"))
    }

    /// Sends the last part; returns the sha256 (hex) and size of everything written.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        if self.buf.len() > self.pad {
            self.send()?;
        }
        Ok((hex::encode(self.hasher.finalize()), self.size))
    }
}

impl std::io::Write for PartWriter {
    /// Parts are exactly [`PART_SIZE`] bytes but the last, each in its own aligned buffer (so
    /// that on local disk they can be written with direct I/O).
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        let mut rest = data;
        while !rest.is_empty() {
            let room = PART_SIZE - (self.buf.len() - self.pad);
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            if self.buf.len() - self.pad == PART_SIZE {
                self.send()?;
            }
            rest = later;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A replacement uploaded in parts to the object's own path; nothing is visible until
/// [`PartUpload::complete_if`].
pub struct PartUpload {
    upload: Box<dyn MultipartUpload>,
    path: Path,
    parts: usize,
}

impl PartUpload {
    pub async fn start(store: &dyn ObjectStore, path: &Path) -> Result<PartUpload> {
        let upload = store
            .put_multipart_opts(path, PutMultipartOptions::default())
            .await
            .map_err(|e| Error::store(format!("starting the upload of {path}"), e))?;
        Ok(PartUpload {
            upload,
            path: path.clone(),
            parts: 0,
        })
    }

    pub async fn put(&mut self, part: Bytes) -> Result<()> {
        self.parts += 1;
        self.upload
            .put_part(PutPayload::from(part))
            .await
            .map_err(|e| Error::store(format!("uploading part {} of {}", self.parts, self.path), e))
    }

    /// Deletes the uploaded parts; a failure is logged (the store's lifecycle rules for
    /// incomplete uploads are the backstop).
    pub async fn abort(mut self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(path = %self.path, error = %e, "could not abort an incomplete upload");
        }
    }

    /// Completes the upload of an object at a path nothing else writes (a table with a log
    /// names each rewrite after the run and the old path).
    pub async fn complete(mut self) -> Result<Written> {
        match self.upload.complete().await {
            Ok(r) => Ok(Written {
                e_tag: r.e_tag,
                version: r.version,
            }),
            Err(e) => {
                let e = Error::store(format!("completing the upload of {}", self.path), e);
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Completes the upload if the object is still at `read`; otherwise aborts it and returns
    /// a conflict.
    pub async fn complete_if(self, store: &dyn ObjectStore, read: &ReadVersion) -> Result<Written> {
        let current = match store.head(&self.path).await {
            Ok(m) => Some(m),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => {
                let e = Error::store(format!("checking {} before replacing it", self.path), e);
                self.abort().await;
                return Err(e);
            }
        };
        let unchanged = current.is_some_and(|c| read.is(&c));
        if !unchanged {
            let path = self.path.to_string();
            self.abort().await;
            return Err(Error::Conflict { path });
        }
        self.complete().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parts_are_whole_aligned_and_hashed() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let data: Vec<u8> = (0..PART_SIZE * 5 / 2).map(|i| (i % 253) as u8).collect();
        let writing = std::thread::spawn(move || {
            let mut w = PartWriter::new(tx);
            for piece in data.chunks(1_000_003) {
                w.write_all(piece).unwrap();
            }
            (w.finish().unwrap(), data)
        });
        let mut parts = Vec::new();
        while let Some(p) = rx.blocking_recv() {
            parts.push(p);
        }
        let ((sha, size), data) = writing.join().unwrap();
        let sizes: Vec<usize> = parts.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![PART_SIZE, PART_SIZE, PART_SIZE / 2]);
        assert!(
            parts
                .iter()
                .all(|p| p.as_ptr().align_offset(crate::store::DIRECT_IO_ALIGN) == 0)
        );
        assert_eq!(parts.concat(), data);
        assert_eq!(size, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }
}
