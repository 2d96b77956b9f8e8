//! Storage: every byte lakepurge reads or writes goes through `object_store`, so `file://`,
//! `memory://` and the cloud schemes run the same code.
//!
//! [`Location`] turns a spec's location string (an object-store URL, or a path relative to the
//! spec file) into a store and a prefix. Stores are shared per scheme and authority within a
//! process, so `memory://` locations of one job see each other; each is wrapped in a
//! [`CountingStore`] (bytes read and written).
//!
//! - [`local`]: `file://` with a conditional replace, temporary files and table locks;
//! - [`direct_io`]: writing new files to local disk past the page cache;
//! - [`read`]: one version of an object read by ranges (plan, rewrite, verify) and hashed;
//! - [`counting`]: the byte counters;
//! - [`fault`]: a fault-injecting wrapper, for tests only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path as FsPath;
use std::sync::{Arc, LazyLock, Mutex};

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use url::Url;

use crate::error::{Error, Result};

pub mod counting;
pub mod direct_io;
pub mod fault;
pub mod local;
pub mod read;
pub mod versions;

pub use counting::{BYTES_READ, BYTES_WRITTEN, CountingStore};
pub use direct_io::{DIRECT_IO_ALIGN, aligned_buffer};
pub use local::{
    LocalStore, TEMP_PREFIX, TEMP_SUFFIX, TableLocks, clean_temporaries, is_temporary,
};
pub use read::{ObjectVersion, RangedObject, current_object, hash_object};
pub use versions::{S3Versions, Versioning};

/// A resolved location: the store that holds it, the URL it was given as and its prefix.
#[derive(Clone)]
pub struct Location {
    /// The location as a URL, always ending with `/`.
    pub url: Url,
    pub store: Arc<dyn ObjectStore>,
    /// The prefix of the location inside `store`.
    pub prefix: Path,
    /// On S3: the calls object_store lacks, to find and delete object versions.
    pub versions: Option<Arc<S3Versions>>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// A store and, on S3, its version calls.
#[derive(Clone)]
struct Built {
    store: Arc<dyn ObjectStore>,
    versions: Option<Arc<S3Versions>>,
}

/// The shared stores of this process, keyed by scheme, authority and options.
static STORES: LazyLock<Mutex<BTreeMap<String, Built>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

impl Location {
    /// Resolves `location` as written in a spec. A value without a scheme is a local path,
    /// relative to `base_dir` (the folder of the spec file that names it).
    pub fn parse(
        location: &str,
        base_dir: &FsPath,
        options: &BTreeMap<String, String>,
    ) -> std::result::Result<Self, String> {
        let url = to_url(location, base_dir)?;
        let (Built { store, versions }, prefix) = store_for(&url, options)?;
        Ok(Location {
            url,
            store,
            prefix,
            versions,
        })
    }

    /// The location of `relative` under this location. `relative` is a key suffix as the
    /// store names it (`/`-separated, from a listing, a log or a manifest): it is never encoded
    /// again, so `%`, spaces, `=`, `:` and non-ASCII characters name the same object on every
    /// store. A segment the store cannot hold as given (`.`, `..`, a control character) is
    /// encoded instead, so it can never reach outside this location.
    pub fn child(&self, relative: &str) -> Path {
        use object_store::path::PathPart;
        let mut key = self.prefix.as_ref().to_string();
        for segment in relative.split('/').filter(|s| !s.is_empty()) {
            if !key.is_empty() {
                key.push('/');
            }
            match PathPart::parse(segment) {
                Ok(_) => key.push_str(segment),
                Err(_) => key.push_str(PathPart::from(segment).as_ref()),
            }
        }
        // Every segment is a valid part: parsing cannot fail.
        Path::parse(&key).unwrap_or_else(|_| Path::from_iter(key.split('/')))
    }

    /// The location of the folder `name` (one segment) under this location, in the same store.
    pub fn folder(&self, name: &str) -> Location {
        let mut url = self.url.clone();
        url.set_path(&format!("{}{name}/", self.url.path()));
        Location {
            url,
            store: self.store.clone(),
            prefix: self.child(name),
            versions: self.versions.clone(),
        }
    }

    /// `path` relative to this location's prefix, `/`-separated.
    pub fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.prefix) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// A full URL of an object of this store, as DataFusion wants it.
    /// The key's segments are percent-encoded into the URL, so a reader that decodes the URL
    /// (DataFusion does) finds the key as it is (`%`, spaces, `#`, non-ASCII).
    pub fn object_url(&self, path: &Path) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.set_fragment(None);
        match url.path_segments_mut() {
            Ok(mut segments) => {
                segments
                    .clear()
                    .extend(path.parts().map(|p| p.as_ref().to_string()));
            }
            Err(()) => return format!("{}{}", self.store_url(), path),
        }
        url.to_string()
    }

    /// The scheme-and-authority URL DataFusion registers this store under.
    pub fn store_url(&self) -> Url {
        let mut root = self.url.clone();
        root.set_path("/");
        root
    }

    /// Every object under this location whose path has no segment starting with `_` or `.`,
    /// in path order.
    pub async fn list_files(&self) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        let mut files: Vec<ObjectMeta> = self
            .store
            .list(Some(&self.prefix))
            .try_filter(|m| futures::future::ready(is_data_file(&self.relative(&m.location))))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing {}", self.url), e))?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }
}

/// The bytes of the object at `path`, or `None` when there is none; errors say `reading
/// {what} {path}`.
pub async fn read_if_exists(
    store: &dyn ObjectStore,
    path: &Path,
    what: &str,
) -> Result<Option<bytes::Bytes>> {
    use object_store::ObjectStoreExt;
    let failed = |e| Error::store(format!("reading {what} {path}"), e);
    match store.get(path).await {
        Ok(r) => Ok(Some(r.bytes().await.map_err(failed)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(failed(e)),
    }
}

/// Writes `bytes` at `path` unless an object is there (a create-only put): `false`, with
/// nothing written, when one was. Errors say `writing {what} {path}`.
pub async fn put_if_absent(
    store: &dyn ObjectStore,
    path: &Path,
    bytes: Vec<u8>,
    what: &str,
) -> Result<bool> {
    use object_store::{PutMode, PutOptions, PutPayload};
    let opts = PutOptions::from(PutMode::Create);
    match store.put_opts(path, PutPayload::from(bytes), opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(Error::store(format!("writing {what} {path}"), e)),
    }
}

/// Whether a path relative to a table or event location names a data file: no segment may
/// start with `_` or `.` (Spark's and Hive's convention for metadata and temporary files).
pub fn is_data_file(relative: &str) -> bool {
    relative
        .split('/')
        .all(|seg| !seg.is_empty() && !seg.starts_with('_') && !seg.starts_with('.'))
}

/// Installs `store` for every location under `url`'s scheme and authority (e.g.
/// `memory://faulty`) that has no storage options: how tests put a [`fault::FaultStore`]
/// in front of a run.
pub fn register(url: &str, store: Arc<dyn ObjectStore>) -> std::result::Result<(), String> {
    let url = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let key = format!("{}://{}?", url.scheme(), url.authority());
    STORES
        .lock()
        .map_err(|_| "store registry poisoned".to_string())?
        .insert(
            key,
            Built {
                store,
                versions: None,
            },
        );
    Ok(())
}

fn to_url(location: &str, base_dir: &FsPath) -> std::result::Result<Url, String> {
    let mut url = match Url::parse(location) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ => {
            let path = base_dir.join(location);
            let abs = std::path::absolute(&path)
                .map_err(|e| format!("cannot make {} absolute: {e}", path.display()))?;
            let abs = lexically_normal(&abs);
            Url::from_directory_path(&abs)
                .map_err(|()| format!("{} is not a valid local path", abs.display()))?
        }
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// `path` without its `.` and `..` components (a `..` removes the component before it, as a
/// shell's `cd` does with the path as written; symbolic links are not followed).
fn lexically_normal(path: &FsPath) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn store_for(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> std::result::Result<(Built, Path), String> {
    let key = format!(
        "{}://{}?{}",
        url.scheme(),
        url.authority(),
        options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let prefix = Path::from_url_path(url.path()).map_err(|e| format!("bad path in {url}: {e}"))?;
    let mut stores = STORES
        .lock()
        .map_err(|_| "store registry poisoned".to_string())?;
    if let Some(built) = stores.get(&key) {
        return Ok((built.clone(), prefix));
    }
    let mut versions = None;
    let built = |b: Result<Arc<dyn ObjectStore>, object_store::Error>| {
        b.map_err(|e| redact_error(&e.to_string(), options))
    };
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(LocalStore::new()),
        "memory" => Arc::new(InMemory::new()),
        "s3" | "s3a" => {
            let b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
            let b = configured(b, options, |b, k, v| b.with_config(k, v))?;
            let s3 = b
                .clone()
                .build()
                .map_err(|e| redact_error(&e.to_string(), options))?;
            let bucket = url.host_str().unwrap_or_default();
            versions = S3Versions::new(&b, bucket, Arc::clone(s3.credentials())).map(Arc::new);
            Arc::new(s3)
        }
        "gs" => {
            let b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            let b = configured(b, options, |b, k, v| b.with_config(k, v))?;
            built(b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
        }
        "az" | "abfs" | "abfss" | "azure" => {
            let b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            let b = configured(b, options, |b, k, v| b.with_config(k, v))?;
            built(b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?} in {url}: expected file, memory, s3, gs, az or abfss"
            ));
        }
    };
    let built = Built {
        store: Arc::new(CountingStore::new(store)),
        versions,
    };
    stores.insert(key, built.clone());
    Ok((built, prefix))
}

/// A store builder with the `storage_options` applied through its `with_config`; a key the
/// builder does not know is an error naming it.
fn configured<B, K>(
    mut builder: B,
    options: &BTreeMap<String, String>,
    with_config: impl Fn(B, K, &str) -> B,
) -> std::result::Result<B, String>
where
    K: std::str::FromStr,
    K::Err: fmt::Display,
{
    for (k, v) in options {
        let key = k.parse().map_err(|e| format!("storage_options.{k}: {e}"))?;
        builder = with_config(builder, key, v);
    }
    Ok(builder)
}

/// Removes option values (which may be secrets) from an error message.
fn redact_error(message: &str, options: &BTreeMap<String, String>) -> String {
    options
        .values()
        .filter(|v| v.len() >= 4)
        .fold(message.to_string(), |m, v| m.replace(v.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_underscore_segments_are_not_data() {
        assert!(is_data_file("dt=2026-01-01/part-0.parquet"));
        assert!(!is_data_file("_SUCCESS"));
        assert!(!is_data_file("dt=1/.part-0.parquet.crc"));
        assert!(!is_data_file("_temporary/0/part-0.parquet"));
    }

    #[test]
    fn relative_locations_may_go_up() {
        let url = to_url("../wh/./users", FsPath::new("/srv/jobs")).unwrap();
        assert_eq!(url.as_str(), "file:///srv/wh/users/");
    }

    #[test]
    fn child_keeps_keys_as_listed() {
        let loc = Location::parse("memory://t/wh/", FsPath::new("."), &BTreeMap::new()).unwrap();
        for rel in [
            "region=eu%3Awest/part-0.parquet",
            "a b/ü/x=1:2/part 0.parquet",
            "dt=100%25/p.parquet",
        ] {
            let path = loc.child(rel);
            assert_eq!(path.as_ref(), format!("wh/{rel}"));
            assert_eq!(loc.relative(&path), rel);
        }
        let url = loc.object_url(&loc.child("region=eu%3Awest/a b#1.parquet"));
        assert_eq!(url, "memory://t/wh/region=eu%253Awest/a%20b%231.parquet");
        let back = Path::from_url_path(Url::parse(&url).unwrap().path()).unwrap();
        assert_eq!(back.as_ref(), "wh/region=eu%3Awest/a b#1.parquet");
        // Segments a key may not hold as given are encoded: they never leave the location.
        let up = loc.child("../x");
        assert!(
            up.as_ref().starts_with("wh/") && !up.as_ref().contains("/../"),
            "{up}"
        );
    }
}
