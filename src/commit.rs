//! Stage 5, commit: puts a rewritten file in place of the original, or deletes an emptied one,
//! only if the object is still the version that was read.
//!
//! Replacement is one conditional put (`PutMode::Update` with the etag and version read), which
//! is atomic on every store: readers see the old file or the new one. On `file://` the
//! [`LocalStore`](crate::store::LocalStore) wrapper provides it. A file that changed since it
//! was read is a [`Error::Conflict`]: the caller reads it again and redoes it; stale data is
//! never written over newer data. Deletion checks the version first; object stores have no
//! conditional delete, so a write landing between that check and the delete is lost (a window
//! of one request; documented in the README).

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use crate::error::{Error, Result};

/// The version of an object that was read: what a replacement is conditional on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadVersion {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// The new version of a replaced object.
#[derive(Debug, Clone)]
pub struct Written {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// Replaces `path` with `bytes` if it is still at `read`.
pub async fn replace(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Bytes,
    read: &ReadVersion,
) -> Result<Written> {
    let opts = PutOptions::from(PutMode::Update(UpdateVersion {
        e_tag: read.e_tag.clone(),
        version: read.version.clone(),
    }));
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(r) => Ok(Written {
            e_tag: r.e_tag,
            version: r.version,
        }),
        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
            Err(Error::Conflict {
                path: path.to_string(),
            })
        }
        Err(e) => Err(Error::store(format!("replacing {path}"), e)),
    }
}

/// Deletes `path` if it is still at `read`.
pub async fn delete(store: &dyn ObjectStore, path: &Path, read: &ReadVersion) -> Result<()> {
    let current = match store.head(path).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(()),
        Err(e) => {
            return Err(Error::store(
                format!("checking {path} before deleting it"),
                e,
            ));
        }
    };
    if current.e_tag != read.e_tag || current.version != read.version {
        return Err(Error::Conflict {
            path: path.to_string(),
        });
    }
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store(format!("deleting {path}"), e)),
    }
}
