//! Reading a Parquet file for the plan: from its store by ranges (the footer, then only what
//! the reader asks for), or from memory.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::store::ObjectVersion;

/// A Parquet object read through its store: the footer first (with the 64 KiB before it, so a
/// small file comes whole in one request), then only the byte ranges the reader asks for (the
/// key columns of the row groups not pruned). What was fetched is held while the file is
/// planned and serves every later read it covers; the ranges of one call are fetched as few
/// requests: ranges less than [`COALESCE_GAP`] apart go as one, the others at once.
#[derive(Clone)]
pub struct StoreReader {
    pub object: ObjectVersion,
    /// Bytes fetched so far (footer, page indexes, key-column chunks), and requests made.
    pub bytes_read: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    /// Ranges fetched so far, by start.
    held: Arc<Mutex<Vec<(u64, Bytes)>>>,
}

/// Ranges of one read less than this apart are fetched in one request (reading the gap costs
/// less than a round trip to an object store).
pub const COALESCE_GAP: u64 = 256 << 10;

impl StoreReader {
    pub fn new(object: ObjectVersion) -> StoreReader {
        StoreReader {
            object,
            bytes_read: Default::default(),
            requests: Default::default(),
            held: Default::default(),
        }
    }

    /// `range` from what is held, if a fetched range covers it.
    fn held(&self, range: &Range<u64>) -> Option<Bytes> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            (range.start >= *start && range.end <= end)
                .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
        })
    }

    /// A ranged read of the version listed: a file replaced while it is being read fails with
    /// a precondition error instead of mixing two versions. The bytes are held for later reads.
    async fn fetch(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .object
            .range(range.clone())
            .await
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        self.bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((range.start, bytes.clone()));
        Ok(bytes)
    }

    async fn range(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        match self.held(&range) {
            Some(bytes) => Ok(bytes),
            None => self.fetch(range).await,
        }
    }

    /// Every range of `ranges` not held, merged where less than [`COALESCE_GAP`] apart, fetched
    /// at once; then each range from what is held.
    async fn ranges(&self, ranges: Vec<Range<u64>>) -> parquet::errors::Result<Vec<Bytes>> {
        let mut missing: Vec<Range<u64>> = ranges
            .iter()
            .filter(|r| self.held(r).is_none())
            .cloned()
            .collect();
        missing.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in missing {
            match merged.last_mut() {
                Some(last) if r.start <= last.end.saturating_add(COALESCE_GAP) => {
                    last.end = last.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        futures::future::try_join_all(merged.into_iter().map(|r| self.fetch(r))).await?;
        ranges
            .into_iter()
            .map(|r| match self.held(&r) {
                Some(bytes) => Ok(bytes),
                None => Err(parquet::errors::ParquetError::General(format!(
                    "range {r:?} was fetched but is not held"
                ))),
            })
            .collect()
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.range(range).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.ranges(ranges).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.object.size();
            let metadata = metadata_reader(options)
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A footer reader that loads the page indexes `options` ask for.
pub(super) fn metadata_reader(options: Option<&ArrowReaderOptions>) -> ParquetMetaDataReader {
    let reader = ParquetMetaDataReader::new();
    match options {
        Some(o) => reader
            .with_column_index_policy(o.column_index_policy())
            .with_offset_index_policy(o.offset_index_policy()),
        None => reader,
    }
}

/// A Parquet file held in memory, readable by the async Arrow reader.
#[derive(Clone)]
pub struct BytesReader {
    pub bytes: Bytes,
}

impl AsyncFileReader for BytesReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let len = self.bytes.len() as u64;
        let out = if range.start <= range.end && range.end <= len {
            Ok(self.bytes.slice(range.start as usize..range.end as usize))
        } else {
            Err(parquet::errors::ParquetError::EOF(format!(
                "range {range:?} is beyond the end of the file ({len} bytes)"
            )))
        };
        futures::future::ready(out).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let out = metadata_reader(options)
            .parse_and_finish(&self.bytes)
            .map(Arc::new);
        futures::future::ready(out).boxed()
    }
}
