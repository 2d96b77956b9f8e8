//! The SQL catalog of Iceberg tables: the JDBC catalog schema that pyiceberg, Spark and Trino
//! share (`iceberg_tables(catalog_name, table_namespace, table_name, metadata_location,
//! previous_metadata_location)`), on SQLite or PostgreSQL.
//!
//! A commit is one compare-and-swap: `UPDATE … WHERE metadata_location = <the one read>`, and
//! it counts only when the database says it changed exactly one row (a swap that reports
//! success without swapping is a conflict, never a commit). A swap whose answer was lost is
//! looked up: the row holds the new location or it does not.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::error::{Error, Result};
use crate::spec::{CatalogKind, CatalogSpec};

/// A table's row in a SQL catalog.
#[derive(Debug, Clone)]
pub struct SqlCatalog {
    db: Db,
    /// The catalog's name (`catalog_name`).
    name: String,
    /// The URI as the spec gives it, for messages.
    shown: String,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How a swap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// The row now names the new metadata.
    Swapped,
    /// The row did not name the metadata read (another writer committed): nothing changed.
    Lost,
}

impl SqlCatalog {
    /// Connects to the catalog `spec` names (`base`: the folder relative SQLite paths resolve
    /// against). Opening never creates a database: a mistyped path is an error.
    pub async fn connect(spec: &CatalogSpec, base: &Path, table: &str) -> Result<Self> {
        let bad = |m: String| {
            Error::table(
                table,
                format!("catalog {}", spec.uri),
                format!("catalog.uri: {m}"),
            )
        };
        if spec.kind != CatalogKind::Sql {
            return Err(bad("only type = \"sql\" catalogs are supported".into()));
        }
        let name = spec.name.clone().unwrap_or_default();
        let db = match parse_uri(&spec.uri, base).map_err(bad)? {
            Target::Sqlite(path) => {
                if !path.is_file() {
                    return Err(bad(format!(
                        "no SQLite database at {} (expected the catalog's database file, as \
                         sqlite:////absolute/path.db or sqlite:///relative/path.db)",
                        path.display()
                    )));
                }
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(false)
                    .busy_timeout(std::time::Duration::from_secs(30));
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(2)
                        .connect_with(options)
                        .await
                        .map_err(|e| db_error(table, &spec.uri, "opening the catalog", e))?,
                )
            }
            Target::Postgres(url) => Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&url)
                    .await
                    .map_err(|e| db_error(table, &spec.uri, "opening the catalog", e))?,
            ),
        };
        Ok(SqlCatalog {
            db,
            name,
            shown: spec.uri.clone(),
        })
    }

    /// The catalog's description in messages.
    pub fn shown(&self) -> String {
        format!("catalog {:?} at {}", self.name, self.shown)
    }

    /// The metadata location the catalog names for `namespace.table`, `None` when it has no
    /// such table.
    pub async fn metadata_location(
        &self,
        table: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>> {
        let got: Option<Option<String>> = match &self.db {
            Db::Sqlite(pool) => sqlx::query(
                "SELECT metadata_location FROM iceberg_tables \
                 WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
            )
            .bind(&self.name)
            .bind(namespace)
            .bind(name)
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|r| r.try_get::<Option<String>, _>(0)).transpose()),
            Db::Postgres(pool) => sqlx::query(
                "SELECT metadata_location FROM iceberg_tables \
                 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
            )
            .bind(&self.name)
            .bind(namespace)
            .bind(name)
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|r| r.try_get::<Option<String>, _>(0)).transpose()),
        }
        .map_err(|e| db_error(table, &self.shown, "reading the catalog", e))?;
        Ok(got.flatten())
    }

    /// Swaps the table's metadata location from `old` to `new`, only if it is still `old`.
    /// An error is an answer not known (the caller looks the row up).
    pub async fn swap(
        &self,
        table: &str,
        namespace: &str,
        name: &str,
        old: &str,
        new: &str,
    ) -> Result<Swap> {
        let changed = match &self.db {
            Db::Sqlite(pool) => sqlx::query(
                "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
                 WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
                 AND metadata_location = ?",
            )
            .bind(new)
            .bind(old)
            .bind(&self.name)
            .bind(namespace)
            .bind(name)
            .bind(old)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
            Db::Postgres(pool) => sqlx::query(
                "UPDATE iceberg_tables SET metadata_location = $1, previous_metadata_location = $2 \
                 WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5 \
                 AND metadata_location = $6",
            )
            .bind(new)
            .bind(old)
            .bind(&self.name)
            .bind(namespace)
            .bind(name)
            .bind(old)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        }
        .map_err(|e| db_error(table, &self.shown, "committing (compare-and-swap)", e))?;
        match changed {
            1 => Ok(Swap::Swapped),
            0 => Ok(Swap::Lost),
            n => Err(Error::Iceberg {
                table: table.to_string(),
                context: format!("committing through {}", self.shown()),
                message: format!(
                    "the compare-and-swap changed {n} rows (expected 1): the catalog holds the \
                     table more than once"
                ),
            }),
        }
    }
}

/// Where a SQL catalog's URI points.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Reads a catalog URI as SQLAlchemy (pyiceberg) and the JDBC catalogs write it:
/// `sqlite:///relative.db` (relative to `base`), `sqlite:////absolute.db`,
/// `postgresql[+driver]://…` or `postgres://…`.
fn parse_uri(uri: &str, base: &Path) -> std::result::Result<Target, String> {
    let uri = uri.trim();
    if let Some(path) = uri.strip_prefix("sqlite:///") {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path == ":memory:" {
            return Err(format!("{uri:?} names no database file"));
        }
        let path = PathBuf::from(path);
        return Ok(Target::Sqlite(if path.is_absolute() {
            path
        } else {
            base.join(path)
        }));
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| format!("{uri:?} is not a database URI"))?;
    let scheme = scheme.split('+').next().unwrap_or(scheme);
    match scheme {
        "postgresql" | "postgres" => {
            // Checked here, so that a typo is exit 2 rather than a connection error.
            let url = format!("postgresql://{rest}");
            sqlx::postgres::PgConnectOptions::from_str(&url)
                .map_err(|e| format!("{uri:?} is not a PostgreSQL URI: {e}"))?;
            Ok(Target::Postgres(url))
        }
        "sqlite" => Err(format!(
            "{uri:?}: write a SQLite catalog as sqlite:////absolute/path.db or \
             sqlite:///relative/path.db"
        )),
        other => Err(format!(
            "{uri:?}: a {other} database is not supported (sqlite or postgresql)"
        )),
    }
}

/// A database error: bad input when the database is not a catalog (no `iceberg_tables`),
/// else a failure of the catalog (exit 1, its outcome looked up where it matters).
fn db_error(table: &str, uri: &str, what: &str, e: sqlx::Error) -> Error {
    let text = e.to_string();
    if text.contains("no such table") || text.contains("does not exist") {
        return Error::table(
            table,
            format!("catalog {uri}"),
            format!(
                "{what}: the database is not an Iceberg SQL catalog (no iceberg_tables table): \
                 {text}"
            ),
        );
    }
    Error::Iceberg {
        table: table.to_string(),
        context: format!("{what} at {uri}"),
        message: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_read_as_sqlalchemy_writes_them() {
        let base = Path::new("/jobs");
        assert_eq!(
            parse_uri("sqlite:////var/cat.db", base),
            Ok(Target::Sqlite("/var/cat.db".into()))
        );
        assert_eq!(
            parse_uri("sqlite:///cat.db", base),
            Ok(Target::Sqlite("/jobs/cat.db".into()))
        );
        assert_eq!(
            parse_uri("postgresql+psycopg2://u:p@127.0.0.1:5432/cat", base),
            Ok(Target::Postgres(
                "postgresql://u:p@127.0.0.1:5432/cat".into()
            ))
        );
        assert!(parse_uri("sqlite://cat.db", base).is_err());
        assert!(parse_uri("mysql://h/db", base).is_err());
        assert!(parse_uri("sqlite:///:memory:", base).is_err());
    }
}
