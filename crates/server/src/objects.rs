//! S3 transfers of a worker through the `object_store` crate: fetching a model prefix
//! to a local directory, and writing an artifact directory to an output prefix.
//!
//! The endpoint and region may point at any S3-compatible store; credentials come from
//! the standard `AWS_*` environment variables. An output is never left half-written
//! where a finished one is expected: `manifest.json`, which every temper artifact has,
//! is uploaded last, and a failed upload deletes what it had written.

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as KeyPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files above this size are sent in parts (S3's minimum part size is 5 MiB).
const MULTIPART_ABOVE: u64 = 32 << 20;
const PART_SIZE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("S3 settings for bucket {bucket}: {source}")]
    Settings {
        bucket: String,
        source: Box<object_store::Error>,
    },
    #[error("{what} s3://{bucket}/{key}: {source}")]
    Store {
        what: &'static str,
        bucket: String,
        key: String,
        // Boxed: object_store's error is large, and these travel up many frames.
        source: Box<object_store::Error>,
    },
    #[error("there are no objects under s3://{bucket}/{prefix}; check ModelSource.S3.S3Uri (it names a prefix holding config.json and *.safetensors)")]
    Empty { bucket: String, prefix: String },
    #[error("the output location s3://{bucket}/{prefix} already holds objects (for example {example}); choose an empty S3OutputLocation so that no existing artifact is overwritten")]
    OutputNotEmpty {
        bucket: String,
        prefix: String,
        example: String,
    },
    #[error("the object key {key} cannot be stored as a local file: {why}")]
    BadKey { key: String, why: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, ObjectsError>;

/// Where S3 is (for S3-compatible stores) and how outputs are encrypted.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Passed to S3 as SSE-KMS on every object written.
    pub kms_key_id: Option<String>,
}

/// A store for one bucket.
pub fn bucket_store(bucket: &str, opts: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &opts.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    if let Some(region) = &opts.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &opts.kms_key_id {
        builder = builder.with_sse_kms_encryption(key);
    }
    let store = builder.build().map_err(|source| ObjectsError::Settings {
        bucket: bucket.to_string(),
        source: Box::new(source),
    })?;
    Ok(Arc::new(store))
}

fn key_path(bucket: &str, key: &str) -> Result<KeyPath> {
    KeyPath::parse(key.trim_matches('/')).map_err(|e| ObjectsError::BadKey {
        key: format!("s3://{bucket}/{key}"),
        why: e.to_string(),
    })
}

fn store_err(
    what: &'static str,
    bucket: &str,
    key: &str,
) -> impl FnOnce(object_store::Error) -> ObjectsError {
    let (bucket, key) = (bucket.to_string(), key.to_string());
    move |source| ObjectsError::Store {
        what,
        bucket,
        key,
        source: Box::new(source),
    }
}

/// Downloads every object under `prefix` into `dest`, keeping the key's layout below
/// the prefix. `progress` is called with (bytes done, bytes in all).
pub async fn download_prefix(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    dest: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<usize> {
    let root = key_path(bucket, prefix)?;
    let mut objects = Vec::new();
    let mut listing = store.list(Some(&root));
    while let Some(meta) = listing.next().await {
        objects.push(meta.map_err(store_err("listing", bucket, prefix))?);
    }
    if objects.is_empty() {
        return Err(ObjectsError::Empty {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    let total: u64 = objects.iter().map(|m| m.size).sum();
    let mut done = 0u64;
    for meta in &objects {
        let parts: Vec<String> = meta
            .location
            .prefix_match(&root)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
            .unwrap_or_default();
        // object_store's paths have no empty, `.` or `..` segments, so the joined path
        // stays inside `dest`.
        if parts.is_empty() {
            return Err(ObjectsError::BadKey {
                key: format!("s3://{bucket}/{}", meta.location),
                why: "it is the prefix itself, not an object under it".into(),
            });
        }
        let target = parts.iter().fold(dest.to_path_buf(), |p, s| p.join(s));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| ObjectsError::Io {
                    what: "creating",
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        let key = meta.location.to_string();
        let got = store
            .get(&meta.location)
            .await
            .map_err(store_err("reading", bucket, &key))?;
        let io = |source| ObjectsError::Io {
            what: "writing",
            path: target.clone(),
            source,
        };
        let mut file = tokio::fs::File::create(&target).await.map_err(io)?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(store_err("reading", bucket, &key))?;
            file.write_all(&chunk)
                .await
                .map_err(|source| ObjectsError::Io {
                    what: "writing",
                    path: target.clone(),
                    source,
                })?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        file.flush().await.map_err(|source| ObjectsError::Io {
            what: "writing",
            path: target.clone(),
            source,
        })?;
    }
    Ok(objects.len())
}

/// Every file under `dir`, as paths relative to it, `manifest.json` last.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| ObjectsError::Io {
            what: "reading",
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ObjectsError::Io {
                what: "reading",
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out.sort_by_key(|p| p == Path::new("manifest.json"));
    Ok(out)
}

/// Uploads the artifact in `dir` under `prefix`, which must hold no objects yet.
pub async fn upload_dir(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    dir: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<usize> {
    let root = key_path(bucket, prefix)?;
    if let Some(existing) = store.list(Some(&root)).next().await {
        let existing = existing.map_err(store_err("listing", bucket, prefix))?;
        return Err(ObjectsError::OutputNotEmpty {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            example: existing.location.to_string(),
        });
    }
    let files = files_under(dir)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0u64;
    let mut written: Vec<KeyPath> = Vec::new();
    for rel in &files {
        let key = rel.components().fold(root.clone(), |k, c| {
            k.clone().join(c.as_os_str().to_string_lossy().as_ref())
        });
        let sent = upload_file(store, bucket, &key, &dir.join(rel), &mut |n| {
            done += n;
            progress(done, total);
        })
        .await;
        if let Err(e) = sent {
            // Leave nothing behind that looks like (part of) an artifact.
            for k in &written {
                let _ = store.delete(k).await;
            }
            return Err(e);
        }
        written.push(key);
    }
    Ok(files.len())
}

async fn upload_file(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &KeyPath,
    path: &Path,
    sent: &mut (dyn FnMut(u64) + Send),
) -> Result<()> {
    let io = |source| ObjectsError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    };
    let key_str = key.to_string();
    let size = tokio::fs::metadata(path).await.map_err(io)?.len();
    if size <= MULTIPART_ABOVE {
        let bytes = tokio::fs::read(path).await.map_err(io)?;
        store
            .put(key, PutPayload::from(bytes))
            .await
            .map_err(store_err("writing", bucket, &key_str))?;
        sent(size);
        return Ok(());
    }
    let upload = store.put_multipart(key).await.map_err(store_err(
        "starting a multipart upload of",
        bucket,
        &key_str,
    ))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut buf = vec![0u8; PART_SIZE];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        // At most a few parts in flight, so memory stays a few parts, not one file.
        writer
            .wait_for_capacity(4)
            .await
            .map_err(store_err("writing", bucket, &key_str))?;
        writer.write(&buf[..n]);
        sent(n as u64);
    }
    writer
        .finish()
        .await
        .map_err(store_err("finishing the upload of", bucket, &key_str))?;
    Ok(())
}
