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
    #[error("{what} s3://{bucket}/{key}: {}{source}", hint(source))]
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
    #[error("the transfer was stopped")]
    Stopped,
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

/// A sentence for the S3 errors people meet most, ahead of the store's own text.
fn hint(source: &object_store::Error) -> &'static str {
    let text = source.to_string();
    if text.contains("NoSuchBucket") {
        "the bucket does not exist (create it, or fix the bucket name); "
    } else if text.contains("AccessDenied") || text.contains("InvalidAccessKeyId") {
        "access was denied: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of the server \
         and the bucket's policy; "
    } else if matches!(source, object_store::Error::NotFound { .. }) {
        "the object does not exist; "
    } else {
        ""
    }
}

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
    // Folder markers (empty objects named like the prefix or a sub-folder, as the S3
    // console and Hadoop-style tools make them) are not files of the model.
    let keys: Vec<String> = objects.iter().map(|m| m.location.to_string()).collect();
    objects.retain(|m| {
        let key = m.location.to_string();
        let folder = key == root.as_ref()
            || keys
                .iter()
                .any(|other| other.len() > key.len() && other.starts_with(&format!("{key}/")));
        !(m.size == 0 && folder)
    });
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

/// Fails with [`ObjectsError::OutputNotEmpty`] if anything is stored under `prefix`:
/// checked before a job's work, and again by [`upload_dir`] before writing.
pub async fn ensure_empty(store: &dyn ObjectStore, bucket: &str, prefix: &str) -> Result<()> {
    let root = key_path(bucket, prefix)?;
    if let Some(existing) = store.list(Some(&root)).next().await {
        let existing = existing.map_err(store_err("listing", bucket, prefix))?;
        return Err(ObjectsError::OutputNotEmpty {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            example: existing.location.to_string(),
        });
    }
    Ok(())
}

/// Uploads the artifact in `dir` under `prefix`, which must hold no objects yet.
/// `stop` is polled between files and parts; when it turns true, or any write fails,
/// what this upload wrote is deleted (an unfinished multipart upload is aborted) and
/// the prefix is left as empty as it was found.
pub async fn upload_dir(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    dir: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<usize> {
    let root = key_path(bucket, prefix)?;
    ensure_empty(store, bucket, prefix).await?;
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
        let sent = if stop() {
            Err(ObjectsError::Stopped)
        } else {
            let mut sent = |n| {
                done += n;
                progress(done, total);
            };
            upload_file(store, bucket, &key, &dir.join(rel), &mut sent, stop).await
        };
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
    stop: &(dyn Fn() -> bool + Sync),
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
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(io(e));
            }
        };
        if n == 0 {
            break;
        }
        if stop() {
            let _ = writer.abort().await;
            return Err(ObjectsError::Stopped);
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    async fn put(store: &InMemory, key: &str, bytes: &[u8]) {
        store
            .put(
                &KeyPath::parse(key).unwrap(),
                PutPayload::from(bytes.to_vec()),
            )
            .await
            .unwrap();
    }

    async fn keys(store: &InMemory) -> Vec<String> {
        let mut out: Vec<String> = store
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        out.sort();
        out
    }

    #[tokio::test]
    async fn downloads_skip_folder_markers_and_keep_layout() {
        let store = InMemory::new();
        put(&store, "models/llama", b"").await; // the console's "models/llama/" marker
        put(&store, "models/llama/config.json", b"{}").await;
        put(&store, "models/llama/sub", b"").await;
        put(&store, "models/llama/sub/tokenizer.json", b"[1]").await;
        put(&store, "models/llama/empty.txt", b"").await; // a real empty file stays
        let dest = tempfile::tempdir().unwrap();
        let mut seen = 0;
        let n = download_prefix(&store, "b", "models/llama/", dest.path(), &mut |d, _| {
            seen = d
        })
        .await
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            std::fs::read(dest.path().join("config.json")).unwrap(),
            b"{}"
        );
        assert_eq!(
            std::fs::read(dest.path().join("sub/tokenizer.json")).unwrap(),
            b"[1]"
        );
        assert!(dest.path().join("empty.txt").is_file());
        assert_eq!(seen, 5);
        let err = download_prefix(&store, "b", "nothing/", dest.path(), &mut |_, _| {})
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no objects under s3://b/nothing/"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn uploads_put_the_manifest_last_refuse_a_used_prefix_and_clean_up_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("manifest.json", "{}"),
            ("config.json", "{}"),
            ("model.safetensors", "x"),
        ] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        assert_eq!(
            files_under(dir.path()).unwrap().last().unwrap(),
            Path::new("manifest.json")
        );
        let store = InMemory::new();
        let never = || false;
        upload_dir(&store, "b", "out/a/", dir.path(), &mut |_, _| {}, &never)
            .await
            .unwrap();
        assert_eq!(keys(&store).await.len(), 3);
        let err = upload_dir(&store, "b", "out/a/", dir.path(), &mut |_, _| {}, &never)
            .await
            .unwrap_err();
        assert!(matches!(err, ObjectsError::OutputNotEmpty { .. }), "{err}");

        // Stopped after the first file: what was written is removed again.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let after_one = || calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1;
        let err = upload_dir(
            &store,
            "b",
            "out/b/",
            dir.path(),
            &mut |_, _| {},
            &after_one,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ObjectsError::Stopped), "{err}");
        assert!(keys(&store).await.iter().all(|k| k.starts_with("out/a/")));
    }
}
