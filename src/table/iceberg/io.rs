//! The bytes of an Iceberg table's metadata, through the table's own `object_store`: the
//! `iceberg` crate parses and writes the metadata JSON, manifests and manifest lists in memory
//! (its in-memory file I/O), and lakepurge moves the bytes, so every store runs the same code
//! and new metadata files are written create-only.

use std::path::Path;

use bytes::Bytes;
use iceberg::io::FileIO;
use iceberg::spec::{Manifest, ManifestFile, ManifestList, SnapshotRef, TableMetadata};
use object_store::ObjectStoreExt;

use super::relative;
use crate::error::{Error, Result};
use crate::spec::TableSpec;
use crate::store::Location;
use crate::table::Table;

/// A table's refs as its metadata file has them: name, type (`branch` or `tag`) and snapshot
/// id. Read from the JSON itself: the crate keeps them private, and drops them from format v1
/// metadata, which writers such as pyiceberg and Spark give refs too.
pub type Refs = Vec<(String, String, i64)>;

/// Reads the table metadata JSON at `uri` (the catalog's metadata location), with its refs.
pub async fn read_metadata(table: &Table, uri: &str) -> Result<(TableMetadata, Refs)> {
    let base = table.spec.source.parent().unwrap_or(Path::new("."));
    read_metadata_refs(&table.spec, base, uri).await
}

/// [`read_metadata`] before the table's location is known (from the metadata itself).
pub async fn read_metadata_at(spec: &TableSpec, base: &Path, uri: &str) -> Result<TableMetadata> {
    Ok(read_metadata_refs(spec, base, uri).await?.0)
}

/// The table metadata JSON at `uri`, and its refs.
async fn read_metadata_refs(
    spec: &TableSpec,
    base: &Path,
    uri: &str,
) -> Result<(TableMetadata, Refs)> {
    let (dir, name) = uri.rsplit_once('/').ok_or_else(|| {
        Error::table(
            &spec.name,
            uri,
            "the catalog's metadata location is not a path",
        )
    })?;
    let folder = Location::parse(dir, base, &spec.storage_options)
        .map_err(|m| Error::table(&spec.name, uri, format!("metadata location: {m}")))?;
    let path = folder.child(name);
    let bytes = folder
        .store
        .get(&path)
        .await
        .map_err(|e| Error::store(format!("reading the Iceberg metadata {uri}"), e))?
        .bytes()
        .await
        .map_err(|e| Error::store(format!("reading the Iceberg metadata {uri}"), e))?;
    if name.ends_with(".gz.metadata.json") {
        return Err(Error::table(
            &spec.name,
            uri,
            "gzip-compressed table metadata is not supported (write.metadata.compression-codec \
             = none)",
        ));
    }
    let metadata = serde_json::from_slice(&bytes).map_err(|e| {
        Error::table(
            &spec.name,
            uri,
            format!("not readable as Iceberg table metadata: {e}"),
        )
    })?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let refs = json["refs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, r)| {
            Some((
                name.clone(),
                r["type"].as_str().unwrap_or("branch").to_string(),
                r["snapshot-id"].as_i64()?,
            ))
        })
        .collect();
    Ok((metadata, refs))
}

/// The bytes of the table's metadata file at `uri` (under the table's location).
pub async fn get(table: &Table, location: &str, uri: &str) -> Result<Bytes> {
    let rel = relative(location, uri).ok_or_else(|| {
        Error::table(
            &table.spec.name,
            uri,
            format!("a metadata file outside the table's location {location}"),
        )
    })?;
    let path = table.location.child(&rel);
    table
        .location
        .store
        .get(&path)
        .await
        .map_err(|e| Error::store(format!("reading {uri}"), e))?
        .bytes()
        .await
        .map_err(|e| Error::store(format!("reading {uri}"), e))
}

/// Writes a new metadata file at `rel` (relative to the table), create-only: a metadata file
/// is never overwritten. A put whose answer was lost and that is retried finds the object
/// there: when it holds these very bytes it is this write's, anything else is an error.
pub async fn put_new(table: &Table, rel: &str, bytes: Bytes) -> Result<()> {
    use crate::store::{put_if_absent, read_if_exists};
    let path = table.location.child(rel);
    let store = &*table.location.store;
    let what = format!("metadata of table {}", table.spec.name);
    if put_if_absent(store, &path, bytes.to_vec(), &what).await?
        || read_if_exists(store, &path, &what).await?.as_ref() == Some(&bytes)
    {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "table {}: {}{rel} exists with other bytes: a metadata file's name is never reused",
        table.spec.name, table.location.url
    )))
}

/// The manifests of `snapshot`, each with its entries, their snapshot ids and sequence numbers
/// inherited from the manifest list as readers do.
pub async fn snapshot_manifests(
    table: &Table,
    metadata: &TableMetadata,
    snapshot: &SnapshotRef,
) -> Result<Vec<(ManifestFile, Manifest)>> {
    let list = manifest_list(table, metadata, snapshot).await?;
    let mut out = Vec::with_capacity(list.len());
    for file in list {
        let manifest = load_manifest(table, metadata, &file).await?;
        out.push((file, manifest));
    }
    Ok(out)
}

/// The manifest list of `snapshot`.
pub async fn manifest_list(
    table: &Table,
    metadata: &TableMetadata,
    snapshot: &SnapshotRef,
) -> Result<Vec<ManifestFile>> {
    let uri = snapshot.manifest_list();
    let bytes = get(table, metadata.location(), uri).await?;
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version())
        .map_err(|e| Error::table(&table.spec.name, uri, format!("not a manifest list: {e}")))?;
    Ok(list.consume_entries().into_iter().collect())
}

/// One manifest, with values inherited from its manifest list entry `file`.
pub async fn load_manifest(
    table: &Table,
    metadata: &TableMetadata,
    file: &ManifestFile,
) -> Result<Manifest> {
    let bytes = get(table, metadata.location(), &file.manifest_path).await?;
    let memory = FileIO::new_with_memory();
    memory
        .new_output(&file.manifest_path)
        .map_err(|e| super::error(table, "reading a manifest", e))?
        .write(bytes)
        .await
        .map_err(|e| super::error(table, "reading a manifest", e))?;
    file.load_manifest(&memory).await.map_err(|e| {
        Error::table(
            &table.spec.name,
            &file.manifest_path,
            format!("not a readable manifest: {e}"),
        )
    })
}

/// Where the `iceberg` crate writes a new metadata file, before lakepurge stores it.
pub struct Staged {
    pub memory: FileIO,
}

impl Default for Staged {
    fn default() -> Self {
        Staged {
            memory: FileIO::new_with_memory(),
        }
    }
}

impl Staged {
    /// The bytes written at `uri`.
    pub async fn bytes(&self, table: &Table, uri: &str) -> Result<Bytes> {
        self.memory
            .new_input(uri)
            .map_err(|e| super::error(table, "writing metadata", e))?
            .read()
            .await
            .map_err(|e| super::error(table, "writing metadata", e))
    }
}
