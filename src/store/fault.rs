//! A fault-injecting `ObjectStore` wrapper, for testing retries, clean failure and concurrent
//! writers against any store. Install it for a URL with [`crate::store::register`].
//!
//! Faults are armed per operation kind and path substring: fail the next N puts (or gets, or
//! lists) touching a path, delay every operation, or play a concurrent writer that replaces an
//! object just before lakepurge's conditional replace of it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Which operations a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    List,
}

#[derive(Debug, Default)]
struct Faults {
    /// (operation, path substring, failures left)
    failures: Vec<(Op, String, usize)>,
    /// Before the conditional replace of a path containing the substring, write these bytes.
    concurrent_writes: Vec<(String, Bytes)>,
    delay: Option<Duration>,
    injected: usize,
    /// Before the next get of a path containing the substring, another writer deletes it.
    deletes_before_get: Vec<String>,
    /// Right after the next metadata read (`head`) of a path containing the substring, another
    /// writer replaces it with these bytes.
    writes_after_head: Vec<(String, Bytes)>,
    /// The path of every read (a get other than a `head`), in order.
    reads: Vec<String>,
}

/// The wrapper. Cheap to clone: clones share their faults.
#[derive(Clone)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Mutex<Faults>>,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultStore {
            inner,
            faults: Arc::new(Mutex::new(Faults::default())),
        }
    }

    /// Fails the next `times` operations of kind `op` whose path contains `path`.
    pub fn fail(&self, op: Op, path: &str, times: usize) {
        if let Ok(mut f) = self.faults.lock() {
            f.failures.push((op, path.to_string(), times));
        }
    }

    /// Just before the next conditional replace of a path containing `path`, another writer
    /// replaces the object with `bytes`.
    pub fn concurrent_write(&self, path: &str, bytes: Bytes) {
        if let Ok(mut f) = self.faults.lock() {
            f.concurrent_writes.push((path.to_string(), bytes));
        }
    }

    /// Just before the next get of a path containing `path`, another writer deletes the object.
    pub fn concurrent_delete(&self, path: &str) {
        if let Ok(mut f) = self.faults.lock() {
            f.deletes_before_get.push(path.to_string());
        }
    }

    /// Right after the next `head` of a path containing `path` (how a large file's read by
    /// ranges starts), another writer replaces the object with `bytes`.
    pub fn write_after_head(&self, path: &str, bytes: Bytes) {
        if let Ok(mut f) = self.faults.lock() {
            f.writes_after_head.push((path.to_string(), bytes));
        }
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        if let Ok(mut f) = self.faults.lock() {
            f.failures.clear();
            f.concurrent_writes.clear();
            f.deletes_before_get.clear();
            f.writes_after_head.clear();
            f.delay = None;
        }
    }

    /// Delays every operation.
    pub fn delay(&self, d: Duration) {
        if let Ok(mut f) = self.faults.lock() {
            f.delay = Some(d);
        }
    }

    /// The paths read so far (gets other than `head`s), in order; `take` empties the list.
    pub fn take_reads(&self) -> Vec<String> {
        self.faults
            .lock()
            .map(|mut f| std::mem::take(&mut f.reads))
            .unwrap_or_default()
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> usize {
        self.faults.lock().map(|f| f.injected).unwrap_or(0)
    }

    /// Consumes one armed failure for (op, path), if any, as the error to return.
    fn take_failure(&self, op: Op, path: &str) -> Option<object_store::Error> {
        let mut f = self.faults.lock().ok()?;
        let hit = f
            .failures
            .iter_mut()
            .find(|(o, p, left)| *o == op && path.contains(p.as_str()) && *left > 0)?;
        hit.2 -= 1;
        f.injected += 1;
        Some(object_store::Error::Generic {
            store: "FaultStore",
            source: format!("injected {op:?} failure on {path}").into(),
        })
    }

    async fn check(&self, op: Op, path: &str) -> object_store::Result<()> {
        let delay = self.faults.lock().ok().and_then(|f| f.delay);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match self.take_failure(op, path) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(Op::Put, location.as_ref()).await?;
        if matches!(opts.mode, PutMode::Update(_)) {
            let write = self.faults.lock().ok().and_then(|mut f| {
                let i = f
                    .concurrent_writes
                    .iter()
                    .position(|(p, _)| location.as_ref().contains(p.as_str()))?;
                Some(f.concurrent_writes.remove(i).1)
            });
            if let Some(bytes) = write {
                self.inner.put(location, PutPayload::from(bytes)).await?;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(Op::Put, location.as_ref()).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(Op::Get, location.as_ref()).await?;
        if !options.head
            && let Ok(mut f) = self.faults.lock()
        {
            f.reads.push(location.to_string());
        }
        // Only whole-object reads (purge's), not the ranged reads of planning.
        let delete = options.range.is_none()
            && self.faults.lock().ok().is_some_and(|mut f| {
                match f
                    .deletes_before_get
                    .iter()
                    .position(|p| location.as_ref().contains(p.as_str()))
                {
                    Some(i) => {
                        f.deletes_before_get.remove(i);
                        true
                    }
                    None => false,
                }
            });
        if delete {
            self.inner.delete(location).await?;
        }
        let write = options
            .head
            .then(|| {
                let mut f = self.faults.lock().ok()?;
                let i = f
                    .writes_after_head
                    .iter()
                    .position(|(p, _)| location.as_ref().contains(p.as_str()))?;
                Some(f.writes_after_head.remove(i).1)
            })
            .flatten();
        let got = self.inner.get_opts(location, options).await;
        if let Some(bytes) = write {
            self.inner.put(location, PutPayload::from(bytes)).await?;
        }
        got
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.take_failure(Op::List, prefix.map_or("", |p| p.as_ref())) {
            Some(e) => futures::stream::once(async move { Err(e) }).boxed(),
            None => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check(Op::List, prefix.map_or("", |p| p.as_ref()))
            .await?;
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
}
