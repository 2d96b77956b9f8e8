//! The events a run applies, spilled as they stream from the query: the sorted event ids, and
//! per subject type the subject ids with the event of each, in Arrow IPC in anonymous
//! temporary files (unlinked at creation: nothing is left behind, even by a killed run).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use arrow::array::{ArrayBuilder, AsArray, RecordBatch, StringArray, StringBuilder, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::ipc::writer::{FileWriter, StreamWriter};
use sha2::{Digest, Sha256};

use super::normalize_value;
use crate::error::{Error, Result};
use crate::spec::Normalize;

/// The distinct subjects of one subject type, spilled: batches of (subject id, event index)
/// in event id order.
#[derive(Debug, Clone)]
pub struct Subjects {
    len: usize,
    file: Arc<File>,
}

/// One batch of subjects: the ids as a rule compares them, and for each the index of its
/// event (see [`EventIds`]).
pub struct SubjectBatch {
    pub ids: StringArray,
    pub events: UInt32Array,
}

impl Subjects {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the subjects back in batches, the ids normalised as `normalize` says.
    pub fn batches(
        &self,
        normalize: Option<Normalize>,
    ) -> Result<impl Iterator<Item = Result<SubjectBatch>> + '_> {
        let reader =
            StreamReader::try_new_buffered(At::new(&self.file), None).map_err(spill_err)?;
        Ok(reader.map(move |batch| {
            let batch = batch.map_err(spill_err)?;
            let raw = batch.column(0).as_string::<i32>();
            let ids = match normalize {
                None => raw.clone(),
                Some(n) => raw
                    .iter()
                    .map(|v| v.map(|s| normalize_value(n, s)))
                    .collect(),
            };
            let events = batch
                .column(1)
                .as_primitive::<arrow::datatypes::UInt32Type>();
            Ok(SubjectBatch {
                ids,
                events: events.clone(),
            })
        }))
    }
}

/// The distinct event ids a run applies, sorted, spilled in batches of [`IDS_PER_BATCH`]: the
/// index of an id is its rank.
#[derive(Debug, Clone, Default)]
pub struct EventIds {
    len: usize,
    file: Option<Arc<File>>,
}

/// Event ids per spilled batch: an id's batch is its index divided by this.
pub(super) const IDS_PER_BATCH: usize = 4096;

/// Subjects per spilled batch.
pub(super) const SUBJECTS_PER_BATCH: usize = 65536;

impl EventIds {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids of the events at `indices` (ascending, distinct), each batch holding some read
    /// once.
    pub fn names(&self, indices: &[u32]) -> Result<Vec<String>> {
        let mut names = Vec::with_capacity(indices.len());
        let Some(&last) = indices.last() else {
            return Ok(names);
        };
        let file = self
            .file
            .as_ref()
            .filter(|_| (last as usize) < self.len && indices.is_sorted_by(|a, b| a < b))
            .ok_or_else(|| {
                Error::Internal(format!(
                    "event indices out of order or past the {} events",
                    self.len
                ))
            })?;
        let mut reader = FileReader::try_new_buffered(At::new(file), None).map_err(spill_err)?;
        let mut at = 0;
        while let Some(&first) = indices.get(at) {
            let block = first as usize / IDS_PER_BATCH;
            reader.set_index(block).map_err(spill_err)?;
            let batch = reader
                .next()
                .ok_or_else(|| Error::Internal(format!("event id batch {block} missing")))?
                .map_err(spill_err)?;
            let ids = batch.column(0).as_string::<i32>();
            while let Some(&i) = indices
                .get(at)
                .filter(|&&i| i as usize / IDS_PER_BATCH == block)
            {
                names.push(ids.value(i as usize % IDS_PER_BATCH).to_string());
                at += 1;
            }
        }
        Ok(names)
    }

    /// Names the events of per-event counts.
    pub fn name_counts(&self, counts: &BTreeMap<u32, u64>) -> Result<BTreeMap<String, u64>> {
        let indices: Vec<u32> = counts.keys().copied().collect();
        let names = self.names(&indices)?;
        Ok(names.into_iter().zip(counts.values().copied()).collect())
    }
}

fn spill_err(e: arrow::error::ArrowError) -> Error {
    Error::Internal(format!("events spilled to a temporary file: {e}"))
}

fn temp_file() -> Result<File> {
    tempfile::tempfile().map_err(|e| {
        Error::Internal(format!(
            "cannot create a temporary file in {} for the events: {e}",
            std::env::temp_dir().display()
        ))
    })
}

/// Reads a spilled file from its own position (positional reads: any number of readers share
/// the file).
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> At<'a> {
    fn new(file: &'a File) -> At<'a> {
        At { file, pos: 0 }
    }
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for At<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.file.metadata()?.len();
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// Writes the query's rows into the spilled files as they stream.
pub(super) struct Spiller {
    /// The events location, for messages.
    location: String,
    ids: FileWriter<std::io::BufWriter<File>>,
    ids_file: Arc<File>,
    id_batch: StringBuilder,
    ids_written: usize,
    digest: Sha256,
    last_id: Option<String>,
    by_type: BTreeMap<String, TypeSpill>,
}

struct TypeSpill {
    writer: StreamWriter<std::io::BufWriter<File>>,
    file: Arc<File>,
    ids: StringBuilder,
    events: Vec<u32>,
    len: usize,
}

fn id_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "event_id",
        DataType::Utf8,
        false,
    )]))
}

fn subject_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("subject_id", DataType::Utf8, false),
        Field::new("event", DataType::UInt32, false),
    ]))
}

fn cloned(file: &File) -> Result<File> {
    file.try_clone()
        .map_err(|e| Error::Internal(format!("temporary file for the events: {e}")))
}

impl Spiller {
    pub(super) fn new(location: &str) -> Result<Spiller> {
        let file = Arc::new(temp_file()?);
        let ids = FileWriter::try_new_buffered(cloned(&file)?, &id_schema()).map_err(spill_err)?;
        Ok(Spiller {
            location: location.to_string(),
            ids,
            ids_file: file,
            id_batch: StringBuilder::new(),
            ids_written: 0,
            digest: Sha256::new(),
            last_id: None,
            by_type: BTreeMap::new(),
        })
    }

    /// Adds one distinct (event, type, subject); rows come in event id order.
    pub(super) fn push(&mut self, id: &str, ty: &str, subject: &str) -> Result<()> {
        if self.last_id.as_deref() != Some(id) {
            if self.last_id.as_deref().is_some_and(|last| last > id) {
                return Err(Error::events(
                    &self.location,
                    "event ids came back out of order",
                ));
            }
            if self.ids_written + self.id_batch.len() >= u32::MAX as usize {
                return Err(Error::events(&self.location, "more than 4 billion events"));
            }
            self.digest.update(id.as_bytes());
            self.digest.update(b"\n");
            self.id_batch.append_value(id);
            self.last_id = Some(id.to_string());
            if self.id_batch.len() == IDS_PER_BATCH {
                self.flush_ids()?;
            }
        }
        let event = (self.ids_written + self.id_batch.len() - 1) as u32;
        if !self.by_type.contains_key(ty) {
            let file = Arc::new(temp_file()?);
            let writer = StreamWriter::try_new_buffered(cloned(&file)?, &subject_schema())
                .map_err(spill_err)?;
            self.by_type.insert(
                ty.to_string(),
                TypeSpill {
                    writer,
                    file,
                    ids: StringBuilder::new(),
                    events: Vec::new(),
                    len: 0,
                },
            );
        }
        if let Some(t) = self.by_type.get_mut(ty) {
            t.ids.append_value(subject);
            t.events.push(event);
            t.len += 1;
            if t.events.len() == SUBJECTS_PER_BATCH {
                t.flush()?;
            }
        }
        Ok(())
    }

    fn flush_ids(&mut self) -> Result<()> {
        if self.id_batch.is_empty() {
            return Ok(());
        }
        let n = self.id_batch.len();
        let batch = RecordBatch::try_new(id_schema(), vec![Arc::new(self.id_batch.finish())])
            .map_err(spill_err)?;
        self.ids.write(&batch).map_err(spill_err)?;
        self.ids_written += n;
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<(EventIds, String, BTreeMap<String, Subjects>)> {
        self.flush_ids()?;
        self.ids.finish().map_err(spill_err)?;
        let ids = EventIds {
            len: self.ids_written,
            file: Some(self.ids_file),
        };
        let mut by_type = BTreeMap::new();
        for (ty, mut t) in self.by_type {
            t.flush()?;
            t.writer.finish().map_err(spill_err)?;
            by_type.insert(
                ty,
                Subjects {
                    len: t.len,
                    file: t.file,
                },
            );
        }
        Ok((ids, hex::encode(self.digest.finalize()), by_type))
    }
}

impl TypeSpill {
    fn flush(&mut self) -> Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        let events = UInt32Array::from(std::mem::take(&mut self.events));
        let batch = RecordBatch::try_new(
            subject_schema(),
            vec![Arc::new(self.ids.finish()), Arc::new(events)],
        )
        .map_err(spill_err)?;
        self.writer.write(&batch).map_err(spill_err)
    }
}
