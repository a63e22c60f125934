//! `storage`: objects on local disk (`file://`) or S3 (`s3://bucket/prefix`) through object_store.
//! Big objects stream: files go up in 8 MiB parts and come down chunk by chunk, never whole in
//! memory.
pub mod fake;
pub mod lua;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Usage(String),
    #[error("{store}: {key}: not found")]
    NotFound { store: String, key: String },
    #[error("{store}: {what}: {cause}")]
    Backend { store: String, what: String, cause: String },
}

/// How to reach an S3-compatible service (the rest comes from the AWS_* environment).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `http(s)://endpoint/bucket/key` rather than `bucket.endpoint` (default: true with an
    /// endpoint, false for AWS itself).
    pub path_style: Option<bool>,
    pub allow_http: Option<bool>,
    /// Read by hand (secrets allowed); named so an unknown key lists them.
    #[serde(skip)]
    pub access_key_id: Option<String>,
    #[serde(skip)]
    pub secret_access_key: Option<String>,
}

/// An open store: a backend and the prefix every key lives under.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Key,
    /// The URL as given, without credentials.
    pub url: String,
}

/// One object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Meta {
    pub key: String,
    pub size: u64,
    /// RFC 3339, UTC.
    pub modified: String,
    pub etag: Option<String>,
}

const PART: usize = 8 * 1024 * 1024;

impl Store {
    /// Opens `file:///abs`, `file://./rel` (relative to `base`) or `s3://bucket[/prefix]`.
    pub fn open(url: &str, base: &Path, s3: &S3Options) -> Result<Store, StorageError> {
        if let Some(rest) = url.strip_prefix("file://") {
            let dir = if rest.starts_with('/') { PathBuf::from(rest) } else { base.join(rest) };
            std::fs::create_dir_all(&dir)
                .map_err(|e| StorageError::Usage(format!("{url}: cannot create {}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| StorageError::Usage(format!("{url}: {e}")))?;
            return Ok(Store { inner: Arc::new(fs), prefix: Key::default(), url: url.to_string() });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StorageError::Usage(format!("{url}: no bucket (s3://bucket/prefix)")));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(e) = &s3.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &s3.region {
                b = b.with_region(r);
            }
            let path_style = s3.path_style.unwrap_or(s3.endpoint.is_some());
            b = b.with_virtual_hosted_style_request(!path_style);
            if let Some(a) = s3.allow_http {
                b = b.with_allow_http(a);
            }
            if s3.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) && s3.allow_http != Some(true) {
                return Err(StorageError::Usage(format!(
                    "{url}: the endpoint is plain http://; set allow_http = true to use it (requests and credentials cross the network unencrypted), or use https://"
                )));
            }
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = &s3.secret_access_key {
                b = b.with_secret_access_key(k);
            }
            let store = b.build().map_err(|e| StorageError::Usage(format!("{url}: {}", one_line(&e.to_string()))))?;
            let prefix = Key::parse(prefix.trim_matches('/'))
                .map_err(|e| StorageError::Usage(format!("{url}: invalid prefix: {e}")))?;
            return Ok(Store { inner: Arc::new(store), prefix, url: url.to_string() });
        }
        Err(StorageError::Usage(format!(
            "unsupported storage URL '{url}': use file:///path, file://./relative or s3://bucket/prefix"
        )))
    }

    fn key(&self, key: &str) -> Result<Key, StorageError> {
        let k = Key::parse(key.trim_start_matches('/'))
            .map_err(|e| StorageError::Usage(format!("invalid key '{key}': {}", one_line(&e.to_string()))))?;
        if k.as_ref().is_empty() {
            return Err(StorageError::Usage("an empty key".into()));
        }
        Ok(self.prefix.parts().chain(k.parts()).collect())
    }

    /// The key as the caller knows it (without the store's prefix).
    fn relative(&self, full: &Key) -> String {
        full.prefix_match(&self.prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| full.to_string())
    }

    fn err(&self, what: impl Into<String>, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => {
                StorageError::NotFound { store: self.url.clone(), key: what.into() }
            }
            other => StorageError::Backend {
                store: self.url.clone(),
                what: what.into(),
                cause: one_line(&other.to_string()),
            },
        }
    }

    fn meta(&self, m: &object_store::ObjectMeta) -> Meta {
        Meta {
            key: self.relative(&m.location),
            size: m.size,
            modified: m.last_modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            etag: m.e_tag.clone(),
        }
    }

    pub async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<Meta, StorageError> {
        let k = self.key(key)?;
        let size = data.len() as u64;
        let r = self.inner.put(&k, data.into()).await.map_err(|e| self.err(key, e))?;
        Ok(Meta { key: key.to_string(), size, modified: now(), etag: r.e_tag })
    }

    /// Uploads a local file in parts, reading it as it goes.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<Meta, StorageError> {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::Usage(format!("cannot read {}: {e}", path.display())))?;
        self.put_reader(key, &mut f).await
    }

    /// Uploads what `reader` yields, in 8 MiB parts (at most 4 in flight); an error aborts the
    /// upload, leaving no object.
    pub async fn put_reader(
        &self,
        key: &str,
        reader: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<Meta, StorageError> {
        let k = self.key(key)?;
        let upload = self.inner.put_multipart(&k).await.map_err(|e| self.err(key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(StorageError::Usage(format!("reading the data for {key}: {e}")));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = w.wait_for_capacity(4).await {
                let _ = w.abort().await;
                return Err(self.err(key, e));
            }
            w.write(&buf[..n]);
            size += n as u64;
        }
        let r = w.finish().await.map_err(|e| self.err(key, e))?;
        Ok(Meta { key: key.to_string(), size, modified: now(), etag: r.e_tag })
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let k = self.key(key)?;
        let r = self.inner.get(&k).await.map_err(|e| self.err(key, e))?;
        Ok(r.bytes().await.map_err(|e| self.err(key, e))?.to_vec())
    }

    /// Streams an object into a local file (a temporary name, renamed when complete).
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<Meta, StorageError> {
        let k = self.key(key)?;
        let r = self.inner.get(&k).await.map_err(|e| self.err(key, e))?;
        let meta = self.meta(&r.meta);
        let tmp = path.with_file_name(format!(
            ".{}.runbook-{:08x}",
            path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            rand::random::<u32>()
        ));
        let local = |e: std::io::Error| StorageError::Usage(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(local)?;
        }
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await.map_err(local)?;
            let mut stream = r.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(key, e))?;
                f.write_all(&chunk).await.map_err(local)?;
            }
            f.sync_all().await.map_err(local)?;
            crate::files::check_replaceable(path).map_err(StorageError::Usage)?;
            tokio::fs::rename(&tmp, path).await.map_err(local)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map(|_| meta)
    }

    /// A stream of an object's bytes, for callers that process it as it arrives.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(Meta, futures_util::stream::BoxStream<'static, Result<bytes::Bytes, StorageError>>), StorageError>
    {
        let k = self.key(key)?;
        let r = self.inner.get(&k).await.map_err(|e| self.err(key, e))?;
        let meta = self.meta(&r.meta);
        let (store, what) = (self.url.clone(), key.to_string());
        let s = r
            .into_stream()
            .map(move |c| {
                c.map_err(|e| StorageError::Backend {
                    store: store.clone(),
                    what: what.clone(),
                    cause: one_line(&e.to_string()),
                })
            })
            .boxed();
        Ok((meta, s))
    }

    pub async fn stat(&self, key: &str) -> Result<Option<Meta>, StorageError> {
        let k = self.key(key)?;
        match self.inner.head(&k).await {
            Ok(m) => Ok(Some(self.meta(&m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Every object under `prefix` (all of them when empty), by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Meta>, StorageError> {
        let p = if prefix.trim_matches('/').is_empty() {
            self.prefix.clone()
        } else {
            self.key(prefix.trim_end_matches('/'))?
        };
        let p = if p.as_ref().is_empty() { None } else { Some(p) };
        let mut s = self.inner.list(p.as_ref());
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            match m {
                Ok(m) => out.push(self.meta(&m)),
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(self.err(format!("list {prefix}"), e)),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let k = self.key(key)?;
        match self.inner.delete(&k).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (f, t) = (self.key(from)?, self.key(to)?);
        self.inner.copy(&f, &t).await.map_err(|e| self.err(format!("copy {from} to {to}"), e))
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
