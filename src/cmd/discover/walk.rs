//! Walking a root: its listing, streamed, grouped into tables. A table is the folder above the
//! `key=value` partition folders that holds Parquet files; a Delta, Iceberg or Hudi root (its
//! log found in the listing) is one table, whatever folders it has inside.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::ObjectMeta;

use crate::error::{Error, Result};
use crate::store::{Location, is_data_file};
use crate::table::detect::{Logged, format_of};

/// A group of Parquet files found under a root.
#[derive(Debug)]
pub struct FoundTable {
    /// The table's root relative to the walked root (`""` for the root itself).
    pub root: String,
    pub format: Option<Logged>,
    /// Its Parquet files, in path order.
    pub files: Vec<ObjectMeta>,
}

/// Whether a file name is a Parquet file's (by its extension).
fn is_parquet(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".parquet", ".parq", ".pq"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// The folder of a file, above its `key=value` partition folders.
fn hive_root(relative: &str) -> String {
    let mut segments: Vec<&str> = relative.split('/').collect();
    segments.pop();
    while segments.last().is_some_and(|s| s.contains('=')) {
        segments.pop();
    }
    segments.join("/")
}

/// Lists `root` and groups its Parquet files into tables. Hidden objects (a segment starting
/// with `_` or `.`) are passed over, except that a table format's log marks its root; a table
/// format's own data files (under its root) belong to it, hidden or not.
pub async fn tables(root: &Location) -> Result<Vec<FoundTable>> {
    let mut formats: BTreeMap<String, Logged> = BTreeMap::new();
    let mut parquet: Vec<(String, ObjectMeta)> = Vec::new();
    let mut listing = root.store.list(Some(&root.prefix));
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| Error::store(format!("listing {}", root.url), e))?
    {
        let rel = root.relative(&meta.location);
        if let Some((format, at)) = format_of(&rel) {
            formats.insert(at, format);
            continue;
        }
        if is_parquet(&rel) {
            parquet.push((rel, meta));
        }
    }
    let mut grouped: BTreeMap<String, FoundTable> = BTreeMap::new();
    for (rel, meta) in parquet {
        // The deepest table format root holding the file, else its partitioned folder.
        let owner = formats
            .iter()
            .filter(|(at, _)| at.is_empty() || rel.starts_with(&format!("{at}/")))
            .max_by_key(|(at, _)| at.len());
        let (at, format) = match owner {
            Some((at, f)) => (at.clone(), Some(*f)),
            None if is_data_file(&rel) => (hive_root(&rel), None),
            None => continue,
        };
        grouped
            .entry(at.clone())
            .or_insert_with(|| FoundTable {
                root: at,
                format,
                files: Vec::new(),
            })
            .files
            .push(meta);
    }
    let mut out: Vec<FoundTable> = grouped.into_values().collect();
    for t in &mut out {
        t.files.sort_by(|a, b| a.location.cmp(&b.location));
    }
    Ok(out)
}

/// Up to `n` of `count` items spread evenly (all of them when `n` is 0), as indices.
pub fn spread(count: usize, n: usize) -> Vec<usize> {
    if n == 0 || n >= count {
        return (0..count).collect();
    }
    let mut picks: Vec<usize> = (0..n).map(|i| i * count / n).collect();
    picks.dedup();
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_the_folders_above_partitions() {
        assert_eq!(hive_root("a/b/dt=1/h=2/part-0.parquet"), "a/b");
        assert_eq!(hive_root("part-0.parquet"), "");
        assert_eq!(hive_root("x/part-0.parquet"), "x");
        assert!(is_parquet("p.PARQUET") && is_parquet("p.snappy.parquet") && !is_parquet("p.csv"));
        assert_eq!(spread(10, 3), vec![0, 3, 6]);
        assert_eq!(spread(2, 5), vec![0, 1]);
        assert_eq!(spread(4, 0), vec![0, 1, 2, 3]);
    }
}
