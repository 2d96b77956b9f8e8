//! Reading a Parquet file for the plan: from its store by ranges (the footer, then only what
//! the reader asks for), or from memory.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use crate::store::ObjectVersion;

/// A Parquet object read through its store: the footer first, then only the byte ranges the
/// reader asks for (the key columns of the row groups not pruned).
#[derive(Clone)]
pub struct StoreReader {
    pub object: ObjectVersion,
    /// Bytes fetched so far (footer, page indexes, key-column chunks).
    pub bytes_read: Arc<std::sync::atomic::AtomicU64>,
}

impl StoreReader {
    pub fn new(object: ObjectVersion) -> StoreReader {
        StoreReader {
            object,
            bytes_read: Default::default(),
        }
    }

    /// A ranged read of the version listed: a file replaced while it is being read fails with
    /// a precondition error instead of mixing two versions.
    async fn range(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let bytes = self.object.range(range).await;
        if let Ok(b) = &bytes {
            self.bytes_read
                .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        bytes.map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
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
        async move {
            let mut out = Vec::with_capacity(ranges.len());
            for r in ranges {
                out.push(self.range(r).await?);
            }
            Ok(out)
        }
        .boxed()
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
