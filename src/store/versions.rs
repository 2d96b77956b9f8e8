//! Object versions on versioned S3 buckets. Replacing or deleting an object there leaves its
//! old bytes as a *noncurrent version*, readable by version id: after a purge, the versions
//! that held erased rows must go too (`old_versions = "delete"`).
//!
//! object_store has no call to list or delete versions, so these three requests
//! (GetBucketVersioning, ListObjectVersions, DeleteObject with a version id) are made here,
//! signed with SigV4 by `aws-sigv4` (never a hand-written signer), with the credentials, region
//! and endpoint object_store resolved for the same location (`AWS_*`, `storage_options`).

use std::time::SystemTime;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::path::Path;

use crate::error::{Error, Result};

/// How many times a transient failure of a version call is retried, and the first backoff
/// (multiplied by 4 each time).
const SEND_RETRIES: u32 = 4;
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A failed version call: worth retrying, or not.
enum Failure {
    Transient(Error),
    Final(Error),
}

/// A bucket's versioning state (S3 GetBucketVersioning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    /// Never enabled: replacing an object leaves nothing behind.
    Off,
    Enabled,
    /// Was enabled: versions written then are still there.
    Suspended,
}

impl std::fmt::Display for Versioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Versioning::Off => "off",
            Versioning::Enabled => "enabled",
            Versioning::Suspended => "suspended",
        })
    }
}

/// One version of a key, as ListObjectVersions gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    /// A delete marker (what deleting a key on a versioned bucket leaves), not data.
    pub delete_marker: bool,
}

/// What became of a version lakepurge deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The store refused: S3 Object Lock holds the version.
    Locked(ObjectLock),
}

/// What holds an object version under S3 Object Lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    /// `legal_hold` when a legal hold is on (whatever the retention), else the retention's
    /// mode: `governance` or `compliance`.
    pub mode: String,
    /// The retention's retain-until date, as the store gives it.
    pub retain_until: Option<String>,
}

impl ObjectLock {
    /// The lock a version's headers describe at `now`: a legal hold that is `ON`, or a
    /// retention whose date is after `now` (a date that cannot be read counts as in force).
    fn from_headers(
        legal_hold: Option<&str>,
        mode: Option<&str>,
        retain_until: Option<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<ObjectLock> {
        let held = legal_hold.is_some_and(|h| h.eq_ignore_ascii_case("ON"));
        let retained = mode.is_some()
            && retain_until.as_deref().is_some_and(|t| {
                chrono::DateTime::parse_from_rfc3339(t).map_or(true, |until| until > now)
            });
        match (held, retained) {
            (true, _) => Some(ObjectLock {
                mode: "legal_hold".into(),
                retain_until: retain_until.filter(|_| retained),
            }),
            (false, true) => Some(ObjectLock {
                mode: mode.unwrap_or_default().to_ascii_lowercase(),
                retain_until,
            }),
            (false, false) => None,
        }
    }
}

/// The version calls of one S3 bucket.
pub struct S3Versions {
    client: reqwest::Client,
    /// `https://host[/bucket]`: where keys go after a `/`.
    bucket_endpoint: String,
    region: String,
    credentials: AwsCredentialProvider,
}

impl std::fmt::Debug for S3Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Versions({})", self.bucket_endpoint)
    }
}

impl S3Versions {
    /// The version calls of `bucket` as `builder` is configured (endpoint, region, style),
    /// with the credentials of the store built from it.
    pub fn new(
        builder: &AmazonS3Builder,
        bucket: &str,
        credentials: AwsCredentialProvider,
    ) -> Option<Self> {
        let get = |k| builder.get_config_value(&k);
        let bucket = get(AmazonS3ConfigKey::Bucket).unwrap_or_else(|| bucket.to_string());
        if bucket.is_empty() {
            return None;
        }
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bucket_endpoint = match (get(AmazonS3ConfigKey::Endpoint), virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        Some(S3Versions {
            // A request that hangs is a transient failure, retried like any other.
            client: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            bucket_endpoint,
            region,
            credentials,
        })
    }

    /// Whether versioning is on for the bucket.
    pub async fn status(&self) -> Result<Versioning> {
        let body = self
            .send(
                reqwest::Method::GET,
                "",
                "versioning",
                "s3:GetBucketVersioning",
            )
            .await?;
        let text = String::from_utf8_lossy(&body);
        Ok(match element(&text, "Status").as_deref() {
            Some("Enabled") => Versioning::Enabled,
            Some("Suspended") => Versioning::Suspended,
            _ => Versioning::Off,
        })
    }

    /// Every version of `key` (data and delete markers), newest first.
    pub async fn list(&self, key: &Path) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = format!("prefix={}&versions", encode(key.as_ref()));
            if let Some((k, v)) = &marker {
                query = format!(
                    "key-marker={}&prefix={}&version-id-marker={}&versions",
                    encode(k),
                    encode(key.as_ref()),
                    encode(v)
                );
            }
            let body = self
                .send(reqwest::Method::GET, "", &query, "s3:ListBucketVersions")
                .await?;
            let page = parse_versions(&body, key.as_ref())
                .map_err(|m| self.error(&format!("listing the versions of {key}"), m))?;
            out.extend(page.versions);
            match page.next {
                Some(next) => marker = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Deletes one version of `key` for good (a missing version is not an error). A refusal
    /// (403) is looked up: a version S3 Object Lock holds (a legal hold, or a retention not
    /// yet expired) is [`Deletion::Locked`], with what holds it; any other refusal is the
    /// error it is.
    pub async fn delete(&self, key: &Path, version: &str) -> Result<Deletion> {
        let query = format!("versionId={}", encode(version));
        let refused = match self
            .send(
                reqwest::Method::DELETE,
                key.as_ref(),
                &query,
                "s3:DeleteObjectVersion",
            )
            .await
        {
            Ok(_) => return Ok(Deletion::Deleted),
            Err(e) if e.is_permission_denied() => e,
            Err(e) => return Err(e),
        };
        match self.lock(key, version).await {
            Ok(Some(lock)) => {
                tracing::warn!(file = %key, version, mode = %lock.mode, retain_until = ?lock.retain_until, "the store holds this old version under Object Lock: not deleted");
                Ok(Deletion::Locked(lock))
            }
            Ok(None) => Err(refused),
            Err(e) => {
                tracing::warn!(file = %key, version, error = %e, "cannot look up the Object Lock of a version whose deletion was refused");
                Err(refused)
            }
        }
    }

    /// The Object Lock holding a version of `key` now, from its HeadObject headers
    /// (`x-amz-object-lock-legal-hold`, `-mode`, `-retain-until-date`): none when neither a
    /// legal hold is on nor a retention runs past now.
    pub async fn lock(&self, key: &Path, version: &str) -> Result<Option<ObjectLock>> {
        let query = format!("versionId={}", encode(version));
        let (headers, _) = self
            .send_full(
                reqwest::Method::HEAD,
                key.as_ref(),
                &query,
                "s3:GetObjectVersion, s3:GetObjectLegalHold and s3:GetObjectRetention",
            )
            .await?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(ObjectLock::from_headers(
            header("x-amz-object-lock-legal-hold").as_deref(),
            header("x-amz-object-lock-mode").as_deref(),
            header("x-amz-object-lock-retain-until-date"),
            chrono::Utc::now(),
        ))
    }

    fn error(&self, what: &str, message: String) -> Error {
        Error::store(
            format!("{what} at {}", self.bucket_endpoint),
            object_store::Error::Generic {
                store: "S3",
                source: message.into(),
            },
        )
    }

    /// Sends a signed request for `key` (empty: the bucket) with `query`; returns the body.
    /// Transient failures (no response, 5xx, throttling) are retried with backoff; a refusal
    /// (403) is an error whose source is `PermissionDenied` naming `permission`.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &str,
        permission: &str,
    ) -> Result<Bytes> {
        self.send_full(method, key, query, permission)
            .await
            .map(|(_, body)| body)
    }

    /// [`Self::send`], with the response's headers.
    async fn send_full(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &str,
        permission: &str,
    ) -> Result<(reqwest::header::HeaderMap, Bytes)> {
        let mut retry = 0;
        loop {
            match self.send_once(method.clone(), key, query, permission).await {
                Err(Failure::Transient(e)) if retry < SEND_RETRIES => {
                    let wait = FIRST_BACKOFF * 4u32.pow(retry);
                    tracing::warn!(error = %e, retry, ?wait, "transient S3 error: retrying");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(Failure::Transient(e) | Failure::Final(e)) => return Err(e),
                Ok(body) => return Ok(body),
            }
        }
    }

    async fn send_once(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &str,
        permission: &str,
    ) -> std::result::Result<(reqwest::header::HeaderMap, Bytes), Failure> {
        let url = format!(
            "{}/{}?{query}",
            self.bucket_endpoint,
            key.split('/').map(encode).collect::<Vec<_>>().join("/")
        );
        let what = format!("{method} {}", url.split('?').next().unwrap_or(&url));
        let mut request = http::Request::builder()
            .method(method.as_str())
            .uri(&url)
            .body(())
            .map_err(|e| Failure::Final(self.error(&what, e.to_string())))?;
        self.sign(&mut request)
            .await
            .map_err(|m| Failure::Final(self.error(&what, m)))?;
        let mut builder = self.client.request(method, &url);
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| Failure::Transient(self.error(&what, e.to_string())))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Transient(self.error(&what, e.to_string())))?;
        if status.is_success() {
            return Ok((headers, body));
        }
        let code = element(&String::from_utf8_lossy(&body), "Code").unwrap_or_default();
        let message = format!("HTTP {status} {code}");
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(Failure::Final(Error::store(
                format!("{what} at {}", self.bucket_endpoint),
                object_store::Error::PermissionDenied {
                    path: key.to_string(),
                    source: format!("{message}: the role lacks {permission}").into(),
                },
            )));
        }
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || matches!(
                code.as_str(),
                "SlowDown" | "RequestTimeout" | "InternalError"
            );
        let e = self.error(&what, message);
        Err(if transient {
            Failure::Transient(e)
        } else {
            Failure::Final(e)
        })
    }

    /// Signs `request` (SigV4, service s3, unsigned empty payload hashed) in place.
    async fn sign(&self, request: &mut http::Request<()>) -> std::result::Result<(), String> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
            SigningSettings, UriPathNormalizationMode, sign,
        };
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| format!("credentials: {e}"))?;
        let identity = aws_credential_types::Credentials::new(
            &credential.key_id,
            &credential.secret_key,
            credential.token.clone(),
            None,
            "lakepurge",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let uri = request.uri().to_string();
        let signable = SignableRequest::new(
            request.method().as_str(),
            &uri,
            std::iter::empty(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// Percent-encodes a key segment or query value as S3 expects (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// The text of the first `<name>` element of a small XML document.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}

/// One page of ListObjectVersions.
struct Page {
    versions: Vec<Version>,
    /// The key and version id markers of the next page, if truncated.
    next: Option<(String, String)>,
}

/// Parses a ListVersionsResult, keeping the versions of exactly `key` in document order
/// (newest first).
fn parse_versions(body: &[u8], key: &str) -> std::result::Result<Page, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let (mut versions, mut text) = (Vec::new(), String::new());
    let (mut current, mut next_key, mut next_version, mut truncated) =
        (None::<(bool, String, String)>, None, None, false);
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                text.clear();
                let name = e.name();
                if name.as_ref() == b"Version" || name.as_ref() == b"DeleteMarker" {
                    let marker = name.as_ref() == b"DeleteMarker";
                    current = Some((marker, String::new(), String::new()));
                }
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            // An entity (`&amp;`, `&#38;`) comes as an event of its own, between text events.
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| e.to_string())?;
                match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => text.push(c),
                    None => text.push_str(
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?,
                    ),
                }
            }
            Event::End(e) => {
                let value = std::mem::take(&mut text);
                match (e.name().as_ref(), current.as_mut()) {
                    (b"Key", Some(c)) => c.1 = value,
                    (b"VersionId", Some(c)) => c.2 = value,
                    (b"Version" | b"DeleteMarker", Some(_)) => {
                        if let Some((delete_marker, k, id)) = current.take()
                            && k == key
                        {
                            versions.push(Version { id, delete_marker });
                        }
                    }
                    (b"IsTruncated", None) => truncated = value == "true",
                    (b"NextKeyMarker", None) => next_key = Some(value),
                    (b"NextVersionIdMarker", None) => next_version = Some(value),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let next = match (truncated, next_key, next_version) {
        (true, Some(k), Some(v)) => Some((k, v)),
        _ => None,
    };
    Ok(Page { versions, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_holds_while_a_legal_hold_is_on_or_a_retention_runs() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let lock = |hold, mode, until: Option<&str>| {
            ObjectLock::from_headers(hold, mode, until.map(str::to_string), now)
        };
        let future = Some("2030-01-01T00:00:00.000Z");
        let past = Some("2020-01-01T00:00:00Z");
        assert_eq!(lock(None, None, None), None);
        assert_eq!(lock(Some("OFF"), Some("GOVERNANCE"), past), None);
        assert_eq!(
            lock(None, Some("COMPLIANCE"), future),
            Some(ObjectLock {
                mode: "compliance".into(),
                retain_until: future.map(str::to_string)
            })
        );
        // A legal hold holds whatever the retention; an expired date is not reported.
        assert_eq!(
            lock(Some("ON"), Some("GOVERNANCE"), past),
            Some(ObjectLock {
                mode: "legal_hold".into(),
                retain_until: None
            })
        );
        // A date that cannot be read is taken as in force: never assumed expired.
        assert_eq!(
            lock(None, Some("GOVERNANCE"), Some("soon")).map(|l| l.mode),
            Some("governance".into())
        );
    }

    #[test]
    fn versions_of_the_key_in_document_order() {
        let xml = br#"<?xml version="1.0"?><ListVersionsResult><IsTruncated>false</IsTruncated>
            <DeleteMarker><Key>t/a.parquet</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest></DeleteMarker>
            <Version><Key>t/a.parquet</Key><VersionId>v2</VersionId></Version>
            <Version><Key>t/a.parquet.bak</Key><VersionId>x</VersionId></Version>
            <Version><Key>t/a.parquet</Key><VersionId>v1&amp;</VersionId></Version>
            </ListVersionsResult>"#;
        let page = parse_versions(xml, "t/a.parquet").unwrap();
        let got: Vec<(&str, bool)> = page
            .versions
            .iter()
            .map(|v| (v.id.as_str(), v.delete_marker))
            .collect();
        assert_eq!(got, vec![("v3", true), ("v2", false), ("v1&", false)]);
        assert!(page.next.is_none());
    }

    #[test]
    fn keys_are_encoded_per_s3() {
        assert_eq!(encode("dt=2026-11-24"), "dt%3D2026-11-24");
        assert_eq!(
            element("<A><Status>Enabled</Status></A>", "Status").unwrap(),
            "Enabled"
        );
    }
}
