//! Storage: every byte lakepurge reads or writes goes through `object_store`, so `file://`,
//! `memory://` and the cloud schemes run the same code.
//!
//! [`Location`] turns a spec's location string (an object-store URL, or a path relative to the
//! spec file) into a store and a prefix. Stores are shared per scheme and authority within a
//! process, so `memory://` locations of one job see each other.
//!
//! `LocalFileSystem` has no conditional replace (`PutMode::Update`). [`LocalStore`] wraps it and
//! does every put itself: the new bytes are written and flushed to a hidden temporary file
//! (`.lakepurge-*.tmp`) beside the target, then renamed over it (`Overwrite`), hard-linked to it
//! if it does not exist (`Create`), or renamed over it after the target's current etag is
//! compared with the expected one under a process-wide lock (`Update`; against other
//! lakepurge processes, [`TableLocks`] makes it atomic); `rename(2)` is atomic
//! on POSIX file systems. Uploads in parts (large files) are its own too: the parts are written
//! into such a hidden file at their offsets, and completing renames it over the target. A
//! process killed mid-write leaves only a hidden temporary file, which
//! [`clean_temporaries`] removes. Readers see the old file or the new one, never a torn one. The guarantee against
//! concurrent writers is weaker than on S3: a writer outside lakepurge that replaces the file in
//! the microseconds between the etag check and the rename is overwritten.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use url::Url;

use crate::error::{Error, Result};

/// A resolved location: the store that holds it, the URL it was given as and its prefix.
#[derive(Clone)]
pub struct Location {
    /// The location as a URL, always ending with `/`.
    pub url: Url,
    pub store: Arc<dyn ObjectStore>,
    /// The prefix of the location inside `store`.
    pub prefix: Path,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)
    }
}

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

/// Deletes temporary objects an interrupted run left under `location` (see [`TEMP_PREFIX`])
/// for the files `owned` accepts (a shard cleans only its own files' temporaries). Two purges
/// of different runs must not work on the same table at the same time.
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

/// The shared stores of this process, keyed by scheme, authority and options.
static STORES: LazyLock<Mutex<BTreeMap<String, Arc<dyn ObjectStore>>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

impl Location {
    /// Resolves `location` as written in a spec. A value without a scheme is a local path,
    /// relative to `base_dir` (the folder of the spec file that names it).
    pub fn parse(
        location: &str,
        base_dir: &FsPath,
        options: &BTreeMap<String, String>,
    ) -> std::result::Result<Self, String> {
        let url = to_url(location, base_dir)?;
        let (store, prefix) = store_for(&url, options)?;
        Ok(Location { url, store, prefix })
    }

    /// The location of `relative` (a `/`-separated path) under this location.
    pub fn child(&self, relative: &str) -> Path {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(
            relative
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        Path::from_iter(parts)
    }

    /// `path` relative to this location's prefix, `/`-separated.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// A full URL of an object of this store, as DataFusion wants it.
    pub fn object_url(&self, path: &Path) -> String {
        let mut root = self.url.clone();
        root.set_path("/");
        format!("{}{}", root, path)
    }

    /// The scheme-and-authority URL DataFusion registers this store under.
    pub fn store_url(&self) -> Url {
        let mut root = self.url.clone();
        root.set_path("/");
        root
    }

    /// Lists the data files under this location: every object whose name does not start with
    /// `_` or `.` (hidden, temporary or metadata objects), in path order.
    /// The data files under this location as the store lists them, page by page (no order,
    /// nothing collected).
    pub fn list_data_files(&self) -> BoxStream<'static, Result<ObjectMeta>> {
        use futures::{StreamExt, TryStreamExt};
        let (base, url) = (self.clone(), self.url.clone());
        self.store
            .list(Some(&self.prefix))
            .try_filter(move |m| futures::future::ready(is_data_file(&base.relative(&m.location))))
            .map_err(move |e| Error::store(format!("listing {url}"), e))
            .boxed()
    }

    pub async fn list_files(&self) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        let mut files: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_filter(|m| futures::future::ready(is_data_file(&self.relative(&m.location))))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing {}", self.url), e))?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }
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

/// Whether a path relative to a table or event location names a data file: no segment may
/// start with `_` or `.` (Spark's and Hive's convention for metadata and temporary files).
pub fn is_data_file(relative: &str) -> bool {
    relative
        .split('/')
        .all(|seg| !seg.is_empty() && !seg.starts_with('_') && !seg.starts_with('.'))
}

/// Installs `store` for every location under `url`'s scheme and authority (e.g.
/// `memory://faulty`) that has no storage options: how tests put a [`crate::fault::FaultStore`]
/// in front of a run.
pub fn register(url: &str, store: Arc<dyn ObjectStore>) -> std::result::Result<(), String> {
    let url = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let key = format!("{}://{}?", url.scheme(), url.authority());
    STORES
        .lock()
        .map_err(|_| "store registry poisoned".to_string())?
        .insert(key, store);
    Ok(())
}

fn to_url(location: &str, base_dir: &FsPath) -> std::result::Result<Url, String> {
    let mut url = match Url::parse(location) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ => {
            let path = base_dir.join(location);
            let abs = std::path::absolute(&path)
                .map_err(|e| format!("cannot make {} absolute: {e}", path.display()))?;
            Url::from_directory_path(&abs)
                .map_err(|()| format!("{} is not a valid local path", abs.display()))?
        }
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

fn store_for(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> std::result::Result<(Arc<dyn ObjectStore>, Path), String> {
    let key = format!(
        "{}://{}?{}",
        url.scheme(),
        url.authority(),
        options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let prefix = Path::from_url_path(url.path()).map_err(|e| format!("bad path in {url}: {e}"))?;
    let mut stores = STORES
        .lock()
        .map_err(|_| "store registry poisoned".to_string())?;
    if let Some(store) = stores.get(&key) {
        return Ok((Arc::clone(store), prefix));
    }
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(LocalStore::new()),
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            for (k, v) in options {
                let key = k.parse().map_err(|e| format!("storage_options.{k}: {e}"))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.build()
                    .map_err(|e| redact_error(&e.to_string(), options))?,
            )
        }
        "gs" => {
            let mut b =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                let key = k.parse().map_err(|e| format!("storage_options.{k}: {e}"))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.build()
                    .map_err(|e| redact_error(&e.to_string(), options))?,
            )
        }
        "az" | "abfs" | "abfss" | "azure" => {
            let mut b =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                let key = k.parse().map_err(|e| format!("storage_options.{k}: {e}"))?;
                b = b.with_config(key, v);
            }
            Arc::new(
                b.build()
                    .map_err(|e| redact_error(&e.to_string(), options))?,
            )
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?} in {url}: expected file, memory, s3, gs, az or abfss"
            ));
        }
    };
    let store: Arc<dyn ObjectStore> = Arc::new(CountingStore { inner: store });
    stores.insert(key, Arc::clone(&store));
    Ok((store, prefix))
}

/// Removes option values (which may be secrets) from an error message.
fn redact_error(message: &str, options: &BTreeMap<String, String>) -> String {
    options
        .values()
        .filter(|v| v.len() >= 4)
        .fold(message.to_string(), |m, v| m.replace(v.as_str(), "***"))
}

/// An object read by ranges, for the rewrite of a large file on a blocking thread (it waits on
/// the async store with the runtime's handle). Every request names the version read (`If-Match`
/// its etag, and its version where the store has them), so a file replaced meanwhile fails the
/// read instead of mixing two versions; [`RangedObject::failure`] keeps the store's error.
/// [`prefetch`](crate::rewrite::Source::prefetch) holds one row group's bytes at a time; other
/// reads (footer, page indexes, bloom filters, page headers) are fetched as asked.
#[derive(Clone)]
pub struct RangedObject {
    inner: Arc<RangedInner>,
}

struct RangedInner {
    store: Arc<dyn ObjectStore>,
    location: Path,
    meta: ObjectMeta,
    runtime: tokio::runtime::Handle,
    window: Mutex<Option<(u64, Bytes)>>,
    failure: Mutex<Option<object_store::Error>>,
}

/// What a read outside the prefetched row group fetches when the reader does not say how
/// much it wants (a footer, a page header).
const RANGED_READ_AHEAD: u64 = 64 << 10;

impl RangedObject {
    /// `meta` is the version read. Call from a blocking thread of the `runtime`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        location: Path,
        meta: ObjectMeta,
        runtime: tokio::runtime::Handle,
    ) -> RangedObject {
        RangedObject {
            inner: Arc::new(RangedInner {
                store,
                location,
                meta,
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

    /// `range` from the prefetched row group if it holds it, else from the store.
    fn read(&self, range: std::ops::Range<u64>) -> parquet::errors::Result<Bytes> {
        if let Some((start, bytes)) = self.window().as_ref()
            && range.start >= *start
            && range.end <= start + bytes.len() as u64
        {
            return Ok(bytes.slice((range.start - start) as usize..(range.end - start) as usize));
        }
        self.fetch(range)
    }

    fn fetch(&self, range: std::ops::Range<u64>) -> parquet::errors::Result<Bytes> {
        let inner = &self.inner;
        let opts = GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            if_match: inner.meta.e_tag.clone(),
            version: inner.meta.version.clone(),
            ..GetOptions::default()
        };
        let got = inner.runtime.block_on(async {
            match inner.store.get_opts(&inner.location, opts).await {
                Ok(g) => g.bytes().await,
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| {
            let message = format!("reading {}: {e}", inner.location);
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
        self.inner.meta.size
    }
}

impl parquet::file::reader::ChunkReader for RangedObject {
    type T = bytes::buf::Reader<Bytes>;

    /// The rest of the prefetched row group from `start`, or up to [`RANGED_READ_AHEAD`] bytes
    /// of the object: enough for a footer or a page header. A longer read stops with an
    /// error, never with bytes of the wrong place.
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
            .min(self.inner.meta.size);
        Ok(self.fetch(start..end.max(start))?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.read(start..start.saturating_add(length as u64))
    }
}

impl crate::rewrite::Source for RangedObject {
    fn prefetch(&self, range: std::ops::Range<u64>) -> parquet::errors::Result<()> {
        // The previous row group goes first: one is held at a time.
        *self.window() = None;
        let bytes = self.fetch(range.clone())?;
        *self.window() = Some((range.start, bytes));
        Ok(())
    }
}

/// Bytes this process read from and wrote to object stores (payloads of gets and puts).
pub static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub static BYTES_WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts the bytes of gets and puts into [`BYTES_READ`] and [`BYTES_WRITTEN`]: every store a
/// location resolves to is wrapped in it.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let n = payload.content_length() as u64;
        let r = self.inner.put_opts(location, payload, opts).await?;
        BYTES_WRITTEN.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let r = self.inner.get_opts(location, options).await?;
        if !r.meta.location.as_ref().is_empty() {
            BYTES_READ.fetch_add(
                r.range.end - r.range.start,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(r)
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

/// Buffers that start at a multiple of this (a rewritten file) are written to local disk
/// directly (`O_DIRECT`), bypassing the page cache, except for their last partial block.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// An empty buffer with room for `capacity` bytes after `pad` zero bytes, so that what is
/// appended starts at a [`DIRECT_IO_ALIGN`] boundary (as long as the buffer does not grow past
/// its capacity). Returns the buffer and `pad`.
pub fn aligned_buffer(capacity: usize) -> (Vec<u8>, usize) {
    let mut buf: Vec<u8> = Vec::with_capacity(capacity.saturating_add(DIRECT_IO_ALIGN));
    let pad = buf
        .as_ptr()
        .align_offset(DIRECT_IO_ALIGN)
        .min(DIRECT_IO_ALIGN);
    buf.resize(pad, 0);
    (buf, pad)
}

/// Writes `payload` to a new file at `path` and flushes it to disk. A payload of one aligned
/// buffer (see [`DIRECT_IO_ALIGN`]) is written with direct I/O where the file system allows it:
/// the page cache is skipped (the data goes to disk at the flush anyway), which on the machine
/// of `benches/` saved up to half a second of kernel time a run. Where direct I/O is refused,
/// the file is written the ordinary way.
fn write_synced(path: &std::path::Path, payload: &PutPayload) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    let chunks: Vec<&Bytes> = payload.iter().collect();
    let direct = if direct_head(&chunks, 0) > 0 {
        open_direct(path)
    } else {
        None
    };
    write_at(&f, direct.as_ref(), &chunks, 0)?;
    f.sync_all()
}

/// How many leading bytes of `chunks`, written at offset `at`, can go by direct I/O: the whole
/// blocks of a single aligned buffer at an aligned offset.
fn direct_head(chunks: &[&Bytes], at: u64) -> usize {
    match chunks {
        [one]
            if one.as_ptr().align_offset(DIRECT_IO_ALIGN) == 0
                && at.is_multiple_of(DIRECT_IO_ALIGN as u64) =>
        {
            one.len() / DIRECT_IO_ALIGN * DIRECT_IO_ALIGN
        }
        _ => 0,
    }
}

/// Writes `chunks` at offset `at` of `file`: the [`direct_head`] through `direct` (the same file
/// opened for direct I/O) when there is one, the rest, or everything when direct I/O refuses the
/// write, through `file`.
fn write_at(
    file: &std::fs::File,
    direct: Option<&std::fs::File>,
    chunks: &[&Bytes],
    at: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let head = direct_head(chunks, at);
    let mut skip = match (direct, chunks) {
        // Refused (the file system's alignment rules): the ordinary handle writes it all.
        (Some(d), [one]) if head > 0 && d.write_all_at(&one[..head], at).is_ok() => head,
        _ => 0,
    };
    let mut at = at;
    for chunk in chunks {
        let start = skip.min(chunk.len());
        file.write_all_at(&chunk[start..], at + start as u64)?;
        at += chunk.len() as u64;
        skip -= start;
    }
    Ok(())
}

/// `path` opened for writing with direct I/O (`O_DIRECT`), if the file system allows it.
fn open_direct(path: &std::path::Path) -> Option<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
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

    #[test]
    fn files_written_directly_or_not_hold_exactly_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * DIRECT_IO_ALIGN + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        // An aligned buffer (the direct path where the file system allows it), the same
        // shorter than a block, an unaligned one, and several chunks.
        let mut room = vec![0u8; data.len() + 2 * DIRECT_IO_ALIGN];
        let pad = room.as_ptr().align_offset(DIRECT_IO_ALIGN);
        room[pad..pad + data.len()].copy_from_slice(&data);
        let aligned = Bytes::from(room).slice(pad..pad + data.len());
        assert_eq!(aligned.as_ptr().align_offset(DIRECT_IO_ALIGN), 0);
        let cases: Vec<(&str, PutPayload, Vec<u8>)> = vec![
            ("aligned", PutPayload::from(aligned.clone()), data.clone()),
            (
                "short",
                PutPayload::from(aligned.slice(..100)),
                data[..100].to_vec(),
            ),
            (
                "unaligned",
                PutPayload::from(aligned.slice(1..)),
                data[1..].to_vec(),
            ),
            (
                "chunks",
                PutPayload::from_iter([
                    aligned.slice(..DIRECT_IO_ALIGN),
                    aligned.slice(DIRECT_IO_ALIGN..),
                ]),
                data.clone(),
            ),
        ];
        for (name, payload, expected) in cases {
            let path = dir.path().join(name);
            write_synced(&path, &payload).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), expected, "{name}");
        }
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

    #[test]
    fn hidden_and_underscore_segments_are_not_data() {
        assert!(is_data_file("dt=2026-01-01/part-0.parquet"));
        assert!(!is_data_file("_SUCCESS"));
        assert!(!is_data_file("dt=1/.part-0.parquet.crc"));
        assert!(!is_data_file("_temporary/0/part-0.parquet"));
    }
}
