//! One version of an object, read by ranges: every request names the version first read
//! (`If-Match` its etag, and its version where the store has them), so a file replaced while it
//! is read fails the read instead of mixing two versions. [`ObjectVersion`] is the one reader;
//! planning reads footers and key columns through it (async), the rewrite of a large file reads
//! row groups through [`RangedObject`] (a blocking thread), and [`hash_object`] streams a
//! version through sha256 for the manifest and for `verify`.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{GetOptions, ObjectMeta, ObjectStore};

/// One version of an object: where it is, its size, and the etag and version read.
#[derive(Clone, Debug)]
pub struct ObjectVersion {
    pub store: Arc<dyn ObjectStore>,
    pub meta: ObjectMeta,
}

impl ObjectVersion {
    pub fn new(store: Arc<dyn ObjectStore>, meta: ObjectMeta) -> ObjectVersion {
        ObjectVersion { store, meta }
    }

    pub fn location(&self) -> &Path {
        &self.meta.location
    }

    pub fn size(&self) -> u64 {
        self.meta.size
    }

    fn options(&self, range: Option<Range<u64>>) -> GetOptions {
        GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            if_match: self.meta.e_tag.clone(),
            version: self.meta.version.clone(),
            ..GetOptions::default()
        }
    }

    /// `range` of this version: a precondition (or not-found) error if the object changed.
    pub async fn range(&self, range: Range<u64>) -> object_store::Result<Bytes> {
        let got = self
            .store
            .get_opts(&self.meta.location, self.options(Some(range)))
            .await?;
        got.bytes().await
    }
}

/// The sha256 (hex) of the object version `object`, streamed (never held whole): a file
/// replaced meanwhile is a precondition (or not-found) error.
pub async fn hash_object(object: &ObjectVersion) -> object_store::Result<String> {
    use futures::TryStreamExt;
    use sha2::Digest;
    let mut stream = object
        .store
        .get_opts(&object.meta.location, object.options(None))
        .await?
        .into_stream();
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = stream.try_next().await? {
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The object at `path` now, with its sha256 (streamed, never held whole); `None` when there
/// is none. How an unknown outcome is looked up: a write whose response was lost either left
/// its bytes there or did not.
pub async fn current_object(
    store: &Arc<dyn object_store::ObjectStore>,
    path: &object_store::path::Path,
) -> object_store::Result<Option<(object_store::ObjectMeta, String)>> {
    use object_store::ObjectStoreExt;
    let meta = match store.head(path).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let sha = hash_object(&ObjectVersion::new(Arc::clone(store), meta.clone())).await?;
    Ok(Some((meta, sha)))
}

/// An object version read by ranges from a blocking thread, for the rewrite of a large file (it
/// waits on the async store with the runtime's handle); [`RangedObject::failure`] keeps the
/// store's error of a read that failed. [`RangedObject::hold`] keeps one row group's bytes at a
/// time; other reads (footer, page indexes, bloom filters, page headers) are fetched as asked.
#[derive(Clone)]
pub struct RangedObject {
    inner: Arc<RangedInner>,
}

struct RangedInner {
    object: ObjectVersion,
    runtime: tokio::runtime::Handle,
    window: Mutex<Option<(u64, Bytes)>>,
    failure: Mutex<Option<object_store::Error>>,
}

/// What a read outside the held row group fetches when the reader does not say how much it
/// wants (a footer, a page header).
const RANGED_READ_AHEAD: u64 = 64 << 10;

impl RangedObject {
    /// Call from a blocking thread of the `runtime`.
    pub fn new(object: ObjectVersion, runtime: tokio::runtime::Handle) -> RangedObject {
        RangedObject {
            inner: Arc::new(RangedInner {
                object,
                runtime,
                window: Mutex::new(None),
                failure: Mutex::new(None),
            }),
        }
    }

    /// The store's error that stopped a read, if one did.
    pub fn failure(&self) -> Option<object_store::Error> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Option<(u64, Bytes)>> {
        self.inner
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads `range` (a row group) and holds it for the reads that follow, dropping what was
    /// held before: one row group in memory at a time.
    pub fn hold(&self, range: Range<u64>) -> parquet::errors::Result<()> {
        *self.window() = None;
        let bytes = self.fetch(range.clone())?;
        *self.window() = Some((range.start, bytes));
        Ok(())
    }

    /// `range` from the held row group if it holds it, else from the store.
    fn read(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        if let Some((start, bytes)) = self.window().as_ref()
            && range.start >= *start
            && range.end <= start + bytes.len() as u64
        {
            return Ok(bytes.slice((range.start - start) as usize..(range.end - start) as usize));
        }
        self.fetch(range)
    }

    fn fetch(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let inner = &self.inner;
        let got = inner.runtime.block_on(inner.object.range(range));
        got.map_err(|e| {
            let message = format!("reading {}: {e}", inner.object.location());
            *inner
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            parquet::errors::ParquetError::General(message)
        })
    }
}

impl parquet::file::reader::Length for RangedObject {
    fn len(&self) -> u64 {
        self.inner.object.size()
    }
}

impl parquet::file::reader::ChunkReader for RangedObject {
    type T = bytes::buf::Reader<Bytes>;

    /// The rest of the held row group from `start`, or up to [`RANGED_READ_AHEAD`] bytes of the
    /// object: enough for a footer or a page header. A longer read stops with an error, never
    /// with bytes of the wrong place.
    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        if let Some((at, bytes)) = self.window().as_ref()
            && start >= *at
            && start <= at + bytes.len() as u64
        {
            return Ok(bytes.slice((start - at) as usize..).reader());
        }
        let end = start
            .saturating_add(RANGED_READ_AHEAD)
            .min(self.inner.object.size());
        Ok(self.fetch(start..end.max(start))?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.read(start..start.saturating_add(length as u64))
    }
}
