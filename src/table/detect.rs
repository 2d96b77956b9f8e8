//! Table formats lakepurge must not rewrite behind their log. A Delta Lake, Iceberg or Hudi
//! table is Parquet files plus a log that records each file's path, size and statistics;
//! rewriting a file in place breaks the table (readers trust the log), and older versions keep
//! serving the erased rows from files the log still names. So a `format = "parquet"` location
//! that is such a table, holds one, or lies inside one is refused (bad input, exit 2) before
//! anything is read or written, with a message naming the format and where its log is.
//!
//! A table format shows in object names: `_delta_log/` (Delta Lake), `.hoodie/` (Hudi), a
//! `metadata/` folder holding `*.metadata.json`, `version-hint.text` or Avro manifests
//! (Iceberg). The location's own folder and each folder above it, up to the store's root, are
//! listed once with a delimiter before anything is read (a folder that cannot be listed proves
//! nothing and is passed over); a table deeper inside the location shows in its listing.

use futures::TryStreamExt;
use object_store::path::Path;

use super::Table;
use crate::error::{Error, Result};

/// A table format with a log of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    Delta,
    Iceberg,
    Hudi,
}

impl Logged {
    pub fn name(self) -> &'static str {
        match self {
            Logged::Delta => "Delta Lake",
            Logged::Iceberg => "Iceberg",
            Logged::Hudi => "Hudi",
        }
    }

    /// Where the format keeps its log, relative to the table's root.
    fn log(self) -> &'static str {
        match self {
            Logged::Delta => "_delta_log/",
            Logged::Iceberg => "metadata/",
            Logged::Hudi => ".hoodie/",
        }
    }

    /// What to do instead.
    fn advice(self, root: &str) -> String {
        match self {
            Logged::Delta => format!(
                "Register the table's root ({root}) with format = \"delta\": lakepurge then \
                 purges it through its log"
            ),
            Logged::Iceberg => format!(
                "Register the table ({root}) with format = \"iceberg\", its identifier and its \
                 catalog: lakepurge then purges it through the catalog"
            ),
            Logged::Hudi => format!(
                "lakepurge cannot purge {} tables yet: leave it out of this job",
                self.name()
            ),
        }
    }

    /// The format a folder named `name` holding `children` (file names) is the log of.
    fn of_folder<'a>(name: &str, mut children: impl Iterator<Item = &'a str>) -> Option<Logged> {
        match name {
            "_delta_log" => Some(Logged::Delta),
            ".hoodie" => Some(Logged::Hudi),
            "metadata" if children.any(is_iceberg_metadata) => Some(Logged::Iceberg),
            _ => None,
        }
    }
}

/// A file of Iceberg's `metadata/` folder: table metadata, its version hint, or a manifest
/// (Avro, never a Parquet file).
fn is_iceberg_metadata(file: &str) -> bool {
    file.ends_with(".metadata.json") || file == "version-hint.text" || file.ends_with(".avro")
}

/// The table format a path (relative to a listed location) belongs to, with that table's
/// root relative to the location.
pub fn format_of(relative: &str) -> Option<(Logged, String)> {
    let segments: Vec<&str> = relative.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let rest = segments[i + 1..].iter().copied();
        // Iceberg's metadata files sit right in `metadata/`.
        let direct = segments.len() == i + 2;
        let format = match *segment {
            "metadata" if !direct => None,
            name => Logged::of_folder(name, rest),
        };
        if let Some(format) = format {
            return Some((format, segments[..i].join("/")));
        }
    }
    None
}

/// The error for `table` found to be (or hold) a table of `format` rooted at `root` (relative
/// to the location).
pub fn refused(table: &Table, format: Logged, root: &str) -> Error {
    let at = match root {
        "" => table.location.url.to_string(),
        root => format!("{}{root}/", table.location.url),
    };
    refusal(
        table,
        format,
        &format!("{at} is a {} table", format.name()),
        &at,
    )
}

/// The error for `table`, whose `what` (the table of `format` at `at`, a folder URL ending in
/// `/`) has a log lakepurge must not bypass.
fn refusal(table: &Table, format: Logged, what: &str, at: &str) -> Error {
    Error::table(
        &table.spec.name,
        &table.location,
        format!(
            "{what} (its log: {at}{}); lakepurge never rewrites such a table's files behind its \
             log, which would corrupt it and leave the erased rows in its history. {}",
            format.log(),
            format.advice(at)
        ),
    )
}

/// Refuses `table` if its location, or a folder above it, is the root of a table with a log:
/// one listing with a delimiter per folder, from the location up to the store's root. (Tables
/// deeper inside the location show in its listing, see [`format_of`].)
pub async fn refuse_inside(table: &Table) -> Result<()> {
    let store = &table.location.store;
    let parts: Vec<String> = table
        .location
        .prefix
        .parts()
        .map(|p| p.as_ref().to_string())
        .collect();
    for depth in (0..=parts.len()).rev() {
        let folder = Path::from_iter(parts[..depth].iter().map(String::as_str));
        let listing = match store.list_with_delimiter(Some(&folder)).await {
            Ok(listing) => listing,
            // The table's own folder must be listable (its files are listed next).
            Err(e) if depth == parts.len() => {
                return Err(Error::store(format!("listing {}", table.location.url), e));
            }
            Err(_) => {
                tracing::debug!(folder = %folder, "cannot list a folder above a table: passed over");
                continue;
            }
        };
        for sub in &listing.common_prefixes {
            let Some(name) = sub.filename() else {
                continue;
            };
            let children: Vec<String> = if name == "metadata" {
                store
                    .list(Some(sub))
                    .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
                    .try_collect()
                    .await
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            if let Some(format) = Logged::of_folder(name, children.iter().map(String::as_str)) {
                return Err(if depth == parts.len() {
                    refused(table, format, "")
                } else {
                    refused_above(table, format, folder.as_ref())
                });
            }
        }
    }
    Ok(())
}

/// The error for `table` lying inside a table of `format` rooted at `root` (a path of the
/// store).
fn refused_above(table: &Table, format: Logged, root: &str) -> Error {
    let mut url = table.location.store_url();
    url.set_path(&if root.is_empty() {
        "/".to_string()
    } else {
        format!("/{root}/")
    });
    let what = format!(
        "the location is inside the {} table at {url}",
        format.name()
    );
    refusal(table, format, &what, url.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_show_in_object_names() {
        assert_eq!(
            format_of("_delta_log/00000000000000000000.json"),
            Some((Logged::Delta, String::new()))
        );
        assert_eq!(
            format_of("sales/_delta_log/_last_checkpoint"),
            Some((Logged::Delta, "sales".into()))
        );
        assert_eq!(
            format_of("t/.hoodie/hoodie.properties"),
            Some((Logged::Hudi, "t".into()))
        );
        assert_eq!(
            format_of("db/t/metadata/00001-abc.metadata.json"),
            Some((Logged::Iceberg, "db/t".into()))
        );
        // A data file or a folder that only looks like one is not a log.
        assert_eq!(format_of("metadata/part-0.parquet"), None);
        assert_eq!(format_of("dt=2026-11-24/part-0.parquet"), None);
        assert_eq!(format_of("metadata/x/y.metadata.json"), None);
    }
}
