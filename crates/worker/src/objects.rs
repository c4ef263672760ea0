//! S3 transfers of a worker through the `object_store` crate: fetching a model prefix
//! or a speculative-decoding training data source to a local directory, and writing an
//! artifact directory to an output prefix.
//!
//! The endpoint and region may point at any S3-compatible store; credentials come from
//! the standard `AWS_*` environment variables. An output is never left half-written
//! where a finished one is expected: `manifest.json`, which every temper artifact has,
//! is uploaded last, and a failed upload deletes what it had written.

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as KeyPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
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
    #[error("no training data: no object key starts with s3://{bucket}/{prefix}; check TrainingDataSource.S3Uri (with S3DataType S3Prefix it names a key prefix: the objects under it, or whose keys start with it, are the data files)")]
    NoTrainingData { bucket: String, prefix: String },
    #[error(transparent)]
    Manifest(#[from] temper_text::TextError),
    #[error(
        "training data manifest {manifest}: entry [{index}], key `{key}` ({object}): {reason}"
    )]
    ManifestKey {
        manifest: String,
        /// The entry's index in the manifest's JSON list (the prefix is entry 0).
        index: usize,
        key: String,
        /// Where the key leads: prefix + key.
        object: String,
        reason: String,
    },
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

/// The store of a bucket, by name.
pub type BucketStores<'a> = dyn Fn(&str) -> Result<Arc<dyn ObjectStore>> + 'a;

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

/// Every object under `root` (a folder, as object_store lists), folder markers left out.
async fn list_under(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    root: Option<&KeyPath>,
) -> Result<Vec<ObjectMeta>> {
    let mut objects = Vec::new();
    let mut listing = store.list(root);
    while let Some(meta) = listing.next().await {
        objects.push(meta.map_err(store_err("listing", bucket, prefix))?);
    }
    // Folder markers (empty objects named like the prefix or a sub-folder, as the S3
    // console and Hadoop-style tools make them) are not files.
    let keys: Vec<String> = objects.iter().map(|m| m.location.to_string()).collect();
    let root = root.map(|r| r.as_ref()).unwrap_or("");
    objects.retain(|m| {
        let key = m.location.to_string();
        let folder = key == root
            || keys
                .iter()
                .any(|other| other.len() > key.len() && other.starts_with(&format!("{key}/")));
        !(m.size == 0 && folder)
    });
    Ok(objects)
}

/// The key's segments below `root`, or an error if it is not below it.
fn below(bucket: &str, location: &KeyPath, root: &KeyPath) -> Result<Vec<String>> {
    let parts: Vec<String> = location
        .prefix_match(root)
        .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        return Err(ObjectsError::BadKey {
            key: format!("s3://{bucket}/{location}"),
            why: "it is the prefix itself, not an object under it".into(),
        });
    }
    Ok(parts)
}

/// Writes each object to its local path; `progress` gets (bytes done, bytes in all).
async fn fetch_objects(
    store: &dyn ObjectStore,
    bucket: &str,
    objects: &[(KeyPath, PathBuf)],
    total: u64,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<()> {
    let mut done = 0u64;
    for (location, target) in objects {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| ObjectsError::Io {
                    what: "creating",
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        let key = location.to_string();
        let got = store
            .get(location)
            .await
            .map_err(store_err("reading", bucket, &key))?;
        let io = |source| ObjectsError::Io {
            what: "writing",
            path: target.clone(),
            source,
        };
        let mut file = tokio::fs::File::create(target).await.map_err(io)?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(store_err("reading", bucket, &key))?;
            file.write_all(&chunk).await.map_err(io)?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        file.flush().await.map_err(io)?;
    }
    Ok(())
}

/// `dest` with the key segments appended. object_store's paths have no empty, `.` or
/// `..` segments, so the joined path stays inside `dest`.
fn local_target(dest: &Path, parts: &[String]) -> PathBuf {
    parts.iter().fold(dest.to_path_buf(), |p, s| p.join(s))
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
    let objects = list_under(store, bucket, prefix, Some(&root)).await?;
    if objects.is_empty() {
        return Err(ObjectsError::Empty {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    let total: u64 = objects.iter().map(|m| m.size).sum();
    let mut planned = Vec::with_capacity(objects.len());
    for meta in &objects {
        let parts = below(bucket, &meta.location, &root)?;
        planned.push((meta.location.clone(), local_target(dest, &parts)));
    }
    fetch_objects(store, bucket, &planned, total, progress).await?;
    Ok(planned.len())
}

/// Downloads a training data source of `S3DataType` `S3Prefix` into `dest`: every
/// object whose key starts with `prefix` as a string, as S3 and SageMaker read a
/// prefix (`data/train` takes `data/train.jsonl` and `data/train/part-1.json`), folder
/// markers left out. Files keep their key's layout below the prefix's last `/`
/// (`train.jsonl`, `train/part-1.json`). Returns the number of files.
pub async fn download_training_prefix(
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: &str,
    dest: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<usize> {
    let wanted = prefix.trim_start_matches('/');
    // The folder holding the prefix: object_store lists folders, not string prefixes.
    let folder = match wanted.rfind('/') {
        Some(at) => &wanted[..at],
        None => "",
    };
    let root = key_path(bucket, folder)?;
    let listed_root = (!folder.is_empty()).then_some(&root);
    let mut objects = list_under(store, bucket, prefix, listed_root).await?;
    objects.retain(|m| m.location.as_ref().starts_with(wanted));
    if objects.is_empty() {
        return Err(ObjectsError::NoTrainingData {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    let total: u64 = objects.iter().map(|m| m.size).sum();
    let mut planned = Vec::with_capacity(objects.len());
    for meta in &objects {
        let parts = below(bucket, &meta.location, &root)?;
        planned.push((meta.location.clone(), local_target(dest, &parts)));
    }
    fetch_objects(store, bucket, &planned, total, progress).await?;
    Ok(planned.len())
}

/// Downloads a training data source of `S3DataType` `ManifestFile` into `dest`: the
/// manifest object at `s3://bucket/key` is read ([`temper_text::Manifest`]:
/// `[{"prefix": "s3://bucket/p/"}, "relative/key1", ...]`) and each object prefix + key
/// is written to `dest/<key>`. Every key is checked before any is downloaded: a missing
/// one is an error naming the manifest, the key and its entry. `stores` gives the store
/// of a bucket (the prefix may name another bucket than the manifest's). A key listed
/// twice is fetched once. Returns the number of files.
pub async fn download_manifest(
    stores: &BucketStores<'_>,
    bucket: &str,
    key: &str,
    dest: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<usize> {
    let uri = format!("s3://{bucket}/{key}");
    let store = stores(bucket)?;
    let location = key_path(bucket, key)?;
    let bytes = store
        .get(&location)
        .await
        .map_err(store_err("reading the manifest", bucket, key))?
        .bytes()
        .await
        .map_err(store_err("reading the manifest", bucket, key))?;
    let manifest = temper_text::Manifest::parse(&bytes, &uri)?;
    let Some(rest) = manifest.prefix.strip_prefix("s3://") else {
        return Err(temper_text::TextError::Manifest {
            manifest: uri,
            reason: format!(
                "its prefix `{}` is not an s3:// location; a manifest in S3 lists S3 objects",
                manifest.prefix
            ),
        }
        .into());
    };
    let (data_bucket, data_prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if data_bucket.is_empty() {
        return Err(temper_text::TextError::Manifest {
            manifest: uri,
            reason: format!("its prefix `{}` names no bucket", manifest.prefix),
        }
        .into());
    }
    let data_store = stores(data_bucket)?;
    let mut planned = Vec::with_capacity(manifest.keys.len());
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for (i, rel) in manifest.keys.iter().enumerate() {
        let object = format!("s3://{data_bucket}/{data_prefix}{rel}");
        let key_error = |reason: String| ObjectsError::ManifestKey {
            manifest: uri.clone(),
            index: i + 1,
            key: rel.clone(),
            object: object.clone(),
            reason,
        };
        let parts: Vec<String> = KeyPath::parse(rel)
            .map_err(|e| key_error(format!("it cannot be stored as a local file: {e}")))?
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        if parts.is_empty() {
            return Err(key_error("it names no object".into()));
        }
        if !seen.insert(parts.clone()) {
            continue;
        }
        let full = format!("{data_prefix}{rel}");
        let location = KeyPath::parse(full.trim_matches('/'))
            .map_err(|e| key_error(format!("not a valid object key: {e}")))?;
        let meta = match data_store.head(&location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => {
                let mut reason = "no such object".to_string();
                if !data_prefix.is_empty() && !data_prefix.ends_with('/') {
                    reason.push_str(
                        " (the prefix does not end with `/`, and keys are appended to it as \
                         they are)",
                    );
                }
                return Err(key_error(reason));
            }
            Err(e) => return Err(store_err("reading", data_bucket, &full)(e)),
        };
        total += meta.size;
        planned.push((location, local_target(dest, &parts)));
    }
    fetch_objects(data_store.as_ref(), data_bucket, &planned, total, progress).await?;
    Ok(planned.len())
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
    async fn training_prefixes_are_string_prefixes_as_s3_reads_them() {
        let store = InMemory::new();
        put(&store, "data/train", b"").await; // a folder marker
        put(&store, "data/train.jsonl", b"a").await;
        put(&store, "data/train/part-1.json", b"bb").await;
        put(&store, "data/train/_SUCCESS", b"").await; // a real empty file: kept
        put(&store, "data/training/x.json", b"ccc").await;
        put(&store, "data/test.jsonl", b"no").await;
        put(&store, "top.jsonl", b"t").await;

        let files = |dir: &Path| {
            let mut out: Vec<String> = files_under(dir)
                .unwrap()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            out.sort();
            out
        };
        let dest = tempfile::tempdir().unwrap();
        let mut seen = (0, 0);
        let n = download_training_prefix(&store, "b", "data/train", dest.path(), &mut |d, t| {
            seen = (d, t)
        })
        .await
        .unwrap();
        assert_eq!(n, 4);
        assert_eq!(seen, (6, 6));
        assert_eq!(
            files(dest.path()),
            vec![
                "train.jsonl",
                "train/_SUCCESS",
                "train/part-1.json",
                "training/x.json"
            ]
        );
        assert_eq!(
            std::fs::read(dest.path().join("train/part-1.json")).unwrap(),
            b"bb"
        );

        // A folder-style prefix: what is under it, laid out below it.
        let dest = tempfile::tempdir().unwrap();
        let n = download_training_prefix(&store, "b", "data/train/", dest.path(), &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(files(dest.path()), vec!["_SUCCESS", "part-1.json"]);

        // A prefix at the top of the bucket.
        let dest = tempfile::tempdir().unwrap();
        let n = download_training_prefix(&store, "b", "to", dest.path(), &mut |_, _| {})
            .await
            .unwrap();
        assert_eq!((n, files(dest.path())), (1, vec!["top.jsonl".to_string()]));

        let err = download_training_prefix(&store, "b", "data/val", dest.path(), &mut |_, _| {})
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ObjectsError::NoTrainingData { .. }),
            "{err:?}"
        );
        assert!(
            msg.contains("s3://b/data/val") && msg.contains("TrainingDataSource.S3Uri"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn manifests_are_read_checked_and_fetched() {
        let manifests = Arc::new(InMemory::new());
        let data = Arc::new(InMemory::new());
        put(&data, "sets/chat/a.jsonl", b"a").await;
        put(&data, "sets/chat/sub/b.json", b"bb").await;
        put(&data, "sets/other.jsonl", b"o").await;
        let m = |json: &str| json.as_bytes().to_vec();
        put(
            &manifests,
            "m/good.json",
            &m(r#"[{"prefix": "s3://data/sets/chat/"}, "a.jsonl", "sub/b.json", "a.jsonl"]"#),
        )
        .await;
        put(
            &manifests,
            "m/missing.json",
            &m(r#"[{"prefix": "s3://data/sets/chat/"}, "a.jsonl", "sub/b.json", "gone.jsonl"]"#),
        )
        .await;
        put(
            &manifests,
            "m/noslash.json",
            &m(r#"[{"prefix": "s3://data/sets/chat"}, "a.jsonl"]"#),
        )
        .await;
        put(
            &manifests,
            "m/local.json",
            &m(r#"[{"prefix": "/data/"}, "a.jsonl"]"#),
        )
        .await;
        put(&manifests, "m/broken.json", &m(r#"[{"prefix": "#)).await;
        put(
            &manifests,
            "m/dots.json",
            &m(r#"[{"prefix": "s3://data/sets/"}, "../x"]"#),
        )
        .await;
        let stores = |bucket: &str| -> Result<Arc<dyn ObjectStore>> {
            match bucket {
                "man" => Ok(manifests.clone()),
                "data" => Ok(data.clone()),
                other => panic!("unexpected bucket {other}"),
            }
        };

        let dest = tempfile::tempdir().unwrap();
        let mut seen = (0, 0);
        let n = download_manifest(&stores, "man", "m/good.json", dest.path(), &mut |d, t| {
            seen = (d, t)
        })
        .await
        .unwrap();
        // The repeated key is fetched once.
        assert_eq!((n, seen), (2, (3, 3)));
        assert_eq!(std::fs::read(dest.path().join("a.jsonl")).unwrap(), b"a");
        assert_eq!(
            std::fs::read(dest.path().join("sub/b.json")).unwrap(),
            b"bb"
        );
        assert!(!dest.path().join("other.jsonl").exists());

        // A missing key: the manifest, the entry and the key, before anything is fetched.
        let dest = tempfile::tempdir().unwrap();
        let err = download_manifest(
            &stores,
            "man",
            "m/missing.json",
            dest.path(),
            &mut |_, _| {},
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, ObjectsError::ManifestKey { index: 3, key, .. } if key == "gone.jsonl"),
            "{err:?}"
        );
        assert!(
            msg.contains("s3://man/m/missing.json")
                && msg.contains("entry [3]")
                && msg.contains("`gone.jsonl`")
                && msg.contains("s3://data/sets/chat/gone.jsonl")
                && msg.contains("no such object"),
            "{msg}"
        );
        assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 0);

        let cases = [
            ("m/noslash.json", "does not end with `/`"),
            ("m/local.json", "not an s3:// location"),
            ("m/broken.json", "not valid JSON"),
            ("m/dots.json", "cannot be stored as a local file"),
            (
                "m/absent.json",
                "reading the manifest s3://man/m/absent.json",
            ),
        ];
        for (key, says) in cases {
            let msg = download_manifest(&stores, "man", key, dest.path(), &mut |_, _| {})
                .await
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(&format!("s3://man/{key}")) && msg.contains(says),
                "{msg}"
            );
        }
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
