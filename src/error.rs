//! The crate's error type. Each variant says whose fault it is, which decides the exit code:
//! bad input (specs, events, table data, usage) exits 2 with nothing written; storage and
//! internal failures exit 1 (what was done is recorded, a rerun resumes); verification
//! failures are not errors but a FAIL verdict (exit 3, see `verify`).
//!
//! Every message names the file, table, column or field it is about.

use std::fmt;

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A job or table spec is malformed or inconsistent.
    #[error("{file}: {message}")]
    Spec { file: String, message: String },

    /// The erasure-event dataset cannot be used.
    #[error("events at {location}: {message}")]
    Events { location: String, message: String },

    /// The hold dataset cannot be used (a missing column, a row that is not a hold).
    #[error("holds at {location}: {message}")]
    Holds { location: String, message: String },

    /// A table's data does not fit its spec (missing column, unmatchable type, corrupt file).
    #[error("table {table}: {file}: {message}")]
    Table {
        table: String,
        file: String,
        message: String,
    },

    /// The command line asks for something impossible (bad run id, bad shard...).
    #[error("{0}")]
    Usage(String),

    /// A manifest cannot be read or parsed.
    #[error("manifest {path}: {message}")]
    Manifest { path: String, message: String },

    /// The object store failed (network, permissions, missing object).
    #[error("storage: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },

    /// A table file's data is corrupt: found while rewriting it, after its footer was read
    /// (a bad page, a chunk past the end). Bad input: rerunning does not help.
    #[error("{path}: the file's data is corrupt: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A Parquet file could not be decoded or encoded.
    #[error("parquet {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// DataFusion failed while querying events or tables.
    #[error("query over {context}: {source}")]
    Query {
        context: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },

    /// An Arrow kernel failed (type conversion, row encoding).
    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow::error::ArrowError,
    },

    /// delta-rs failed reading or committing a Delta table's log (other than a storage error
    /// or a conflict, which have their own variants).
    #[error("table {table}: {context}: {source}")]
    Delta {
        table: String,
        context: String,
        #[source]
        source: Box<deltalake_core::DeltaTableError>,
    },

    /// An Iceberg table's catalog or metadata failed (a database error, metadata the library
    /// could not read or write); bad input is `Table` (exit 2).
    #[error("table {table}: {context}: {message}")]
    Iceberg {
        table: String,
        context: String,
        message: String,
    },

    /// A bug: a task panicked or an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),

    /// A file changed under us between read and replace (a concurrent writer).
    #[error("{path} changed while it was being purged; it was left as the other writer wrote it")]
    Conflict { path: String },

    /// The job's lease (see `lease`) is held by another run: nothing was done.
    #[error(
        "the job is being run by {holder} (lease {lease}): one run of a job works at a time; \
         try again when it has finished"
    )]
    Busy { lease: String, holder: String },

    /// The store refused a permission a policy needs.
    #[error("storage: {context}: permission refused ({permission}): {source}")]
    Permission {
        context: String,
        permission: String,
        #[source]
        source: object_store::Error,
    },
}

/// The column names of `schema`, comma-separated: what a message lists when a column is
/// missing.
pub(crate) fn column_names(schema: &arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A reader's message about a value it could not decode (JSON's `whilst decoding field 'x':
/// expected string got "…"`), without the value: in the event and hold datasets a value may be
/// a subject id, and no output line names one. The field is kept; quoted text and the token
/// after `got` are masked.
pub(crate) fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find('"') {
        out.push_str(&rest[..at]);
        match rest[at + 1..].find('"') {
            Some(end) => {
                out.push_str("\"…\"");
                rest = &rest[at + 1 + end + 1..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    // `got 9`, `got true`: the token after `got`.
    let mut masked = String::with_capacity(out.len());
    let mut words = out.split(' ').peekable();
    while let Some(w) = words.next() {
        masked.push_str(w);
        if let Some(next) = words.next_if(|_| w == "got") {
            // A quoted value is masked already; a bare one (a number, `true`) is masked here.
            masked.push(' ');
            masked.push_str(if next.starts_with('"') { next } else { "…" });
        }
        if words.peek().is_some() {
            masked.push(' ');
        }
    }
    masked
}

/// Whether the first I/O error in `error`'s source chain is one a retry cannot fix. Errors
/// without one (an HTTP failure, a closed connection) are not.
fn permanent_io(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return !matches!(
                io.kind(),
                Interrupted
                    | TimedOut
                    | WouldBlock
                    | ConnectionReset
                    | ConnectionAborted
                    | ConnectionRefused
                    | NotConnected
                    | BrokenPipe
                    | UnexpectedEof
                    | ResourceBusy
                    | Other
            );
        }
        next = e.source();
    }
    false
}

impl Error {
    /// The process exit code this error maps to (see README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec { .. }
            | Error::Events { .. }
            | Error::Holds { .. }
            | Error::Table { .. }
            | Error::Usage(_)
            | Error::Corrupt { .. }
            | Error::Manifest { .. } => 2,
            Error::Store { .. }
            | Error::Parquet { .. }
            | Error::Query { .. }
            | Error::Arrow { .. }
            | Error::Internal(_)
            | Error::Delta { .. }
            | Error::Iceberg { .. }
            | Error::Conflict { .. }
            | Error::Busy { .. } => 1,
            Error::Permission { .. } => 2,
        }
    }

    /// Whether retrying may help: a storage failure that is not a definite answer (not found,
    /// precondition, permission) nor a local I/O error a retry cannot fix (disk full,
    /// permission denied, read-only file system, a path that is not a folder...).
    /// object_store's HTTP stores already retry 5xx, timeouts and throttling internally; what
    /// reaches here as `Generic` is retried once more by the caller.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store {
                source: object_store::Error::Generic { source, .. },
                ..
            } => !permanent_io(source.as_ref()),
            _ => false,
        }
    }

    /// Whether the store refused the request (403).
    pub fn is_permission_denied(&self) -> bool {
        matches!(
            self,
            Error::Store {
                source: object_store::Error::PermissionDenied { .. },
                ..
            }
        )
    }

    /// Whether the object changed or went away while it was read (a concurrent writer).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. }
                | Error::Store {
                    source: object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ..
                }
        )
    }

    pub fn spec(file: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Spec {
            file: file.to_string(),
            message: message.to_string(),
        }
    }

    pub fn events(location: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Events {
            location: location.to_string(),
            message: message.to_string(),
        }
    }

    pub fn holds(location: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Holds {
            location: location.to_string(),
            message: message.to_string(),
        }
    }

    pub fn table(table: &str, file: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Table {
            table: table.to_string(),
            file: file.to_string(),
            message: message.to_string(),
        }
    }

    pub fn store(context: impl fmt::Display, source: object_store::Error) -> Self {
        Error::Store {
            context: context.to_string(),
            source,
        }
    }

    pub fn parquet(path: impl fmt::Display, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.to_string(),
            source,
        }
    }

    /// A failure to decode a table file's data at `path` (which names the file and column):
    /// corrupt data (a codec's own error included), except for a storage error met reading it.
    pub fn corrupt(path: impl fmt::Display, source: parquet::errors::ParquetError) -> Self {
        match source {
            parquet::errors::ParquetError::External(e) if e.is::<object_store::Error>() => {
                Error::parquet(path, parquet::errors::ParquetError::External(e))
            }
            source => Error::Corrupt {
                path: path.to_string(),
                source,
            },
        }
    }

    pub fn query(context: impl fmt::Display, source: datafusion::error::DataFusionError) -> Self {
        Error::Query {
            context: context.to_string(),
            source: Box::new(source),
        }
    }

    pub fn arrow(context: impl fmt::Display, source: arrow::error::ArrowError) -> Self {
        Error::Arrow {
            context: context.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[test]
    fn decode_errors_lose_their_values_and_keep_their_fields() {
        let m =
            "Json error: whilst decoding field 'subject_id': expected [ got \"secret@example.com\"";
        assert_eq!(
            without_values(m),
            "Json error: whilst decoding field 'subject_id': expected [ got \"…\""
        );
        assert_eq!(
            without_values("whilst decoding field 'subject_id': expected string got 9 here"),
            "whilst decoding field 'subject_id': expected string got … here"
        );
        assert_eq!(without_values("unterminated \"abc"), "unterminated …");
    }
}
