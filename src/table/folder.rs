//! A plain folder of Parquet files (`format = "parquet"`): the table is what the store lists
//! under the location, after refusing a location that is, holds or lies inside a table with a
//! log ([`super::detect`]). A purge replaces each rewritten file in place with a conditional
//! write: every file is its own commit, and there is no log.

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;

use super::{Files, Format, Log, Table, detect};
use crate::error::{Error, Result};

/// The plain folder format.
#[derive(Debug)]
pub struct Folder;

#[async_trait::async_trait]
impl Format for Folder {
    async fn files(&self, table: &Table) -> Result<Files> {
        detect::refuse_inside(table).await?;
        Ok((data_files(table), None))
    }

    fn log(&self) -> Option<&dyn Log> {
        None
    }
}

/// The table's data files as the store lists them, page by page (no order, nothing
/// collected): every object whose path has no segment starting with `_` or `.` (hidden,
/// temporary or metadata objects). An object of a table format's log is an error.
fn data_files(table: &Table) -> futures::stream::BoxStream<'static, Result<ObjectMeta>> {
    let table = table.clone();
    table
        .location
        .store
        .list(Some(&table.location.prefix))
        .map_err({
            let url = table.location.url.clone();
            move |e| Error::store(format!("listing {url}"), e)
        })
        .try_filter_map(move |m| {
            let rel = table.location.relative(&m.location);
            let found = match detect::format_of(&rel) {
                Some((f, root)) => Err(detect::refused(&table, f, &root)),
                None => Ok(crate::store::is_data_file(&rel).then_some(m)),
            };
            futures::future::ready(found)
        })
        .boxed()
}
