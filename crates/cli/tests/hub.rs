//! `--model org/name[@revision]` against a local server that answers the Hugging Face Hub's file
//! API (`/api/models/{id}/revision/{rev}`, `/{id}/resolve/{rev}/{file}` with range requests) from
//! a directory on disk: the real Hub is not reachable from the machines temper is built on.
//! What is checked: only the files a job reads are fetched into `HF_HOME`; a connection dropped
//! mid-file is resumed with a range request; gated, missing, offline and
//! safetensors-less models get errors that say what to do; `HF_HUB_OFFLINE=1` runs from the
//! cache.

mod common;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_good_token";

#[derive(Clone)]
struct Hub {
    dir: PathBuf,
    /// `(path, range)` of every file request.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Whether the next full-body download of `model.safetensors` is cut off halfway.
    cut: Arc<Mutex<bool>>,
}

impl Hub {
    /// Files of `org`'s repository, or the status it answers with.
    fn files(&self, org: &str, headers: &HeaderMap) -> Result<Vec<String>, StatusCode> {
        let authorised = headers
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap_or("") == format!("Bearer {TOKEN}"));
        let mut files: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        match org {
            "test-org" => {}
            "gated" if authorised => {}
            "gated" => return Err(StatusCode::UNAUTHORIZED),
            "binonly" => return Ok(vec!["config.json".into(), "pytorch_model.bin".into()]),
            _ => return Err(StatusCode::NOT_FOUND),
        }
        // Files a job must not fetch.
        files.push("README.md".into());
        files.push("pytorch_model.bin".into());
        Ok(files)
    }
}

async fn info(
    State(hub): State<Hub>,
    UrlPath((org, _name, _rev)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    match hub.files(&org, &headers) {
        Ok(files) => {
            let siblings: Vec<_> = files
                .iter()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            axum::Json(serde_json::json!({ "sha": COMMIT, "siblings": siblings })).into_response()
        }
        Err(status) => status.into_response(),
    }
}

async fn resolve(
    State(hub): State<Hub>,
    UrlPath((org, name, _rev, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(status) = hub.files(&org, &headers) {
        return status.into_response();
    }
    let Ok(bytes) = std::fs::read(hub.dir.join(&file)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    hub.seen
        .lock()
        .unwrap()
        .push((format!("{org}/{name}/{file}"), range.clone()));
    let size = bytes.len();
    let (start, end) = match range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) {
        Some((a, b)) => (
            a.parse::<usize>().unwrap_or(0),
            b.parse::<usize>().map(|e| e + 1).unwrap_or(size).min(size),
        ),
        None => (0, size),
    };
    let body = bytes[start..end].to_vec();
    let status = if range.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::PARTIAL_CONTENT
    };
    let mut response = Response::builder()
        .status(status)
        .header("etag", format!("\"{file}-{size}\""))
        .header("x-repo-commit", COMMIT)
        .header(
            "content-range",
            format!("bytes {start}-{}/{size}", end.max(1) - 1),
        );
    let cut_now = file == "model.safetensors" && range == "bytes=0-" && {
        let mut cut = hub.cut.lock().unwrap();
        std::mem::replace(&mut *cut, false)
    };
    if cut_now {
        // Half the body, then the stream fails and the server drops the connection.
        // The pause lets the first half reach the client before the connection goes.
        use futures_util::StreamExt;
        let half = body[..body.len() / 2].to_vec();
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(half)]);
        let fail = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err(std::io::Error::other("connection dropped"))
        });
        response = response.header("content-length", body.len());
        return response.body(Body::from_stream(first.chain(fail))).unwrap();
    }
    response.body(Body::from(body)).unwrap()
}

fn serve(dir: &Path) -> (String, Hub) {
    let hub = Hub {
        dir: dir.to_path_buf(),
        seen: Default::default(),
        cut: Arc::new(Mutex::new(true)),
    };
    let app = Router::new()
        .route("/api/models/{org}/{name}/revision/{rev}", get(info))
        .route("/{org}/{name}/resolve/{rev}/{file}", get(resolve))
        .with_state(hub.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{addr}"), hub)
}

/// A tiny model to serve, and an `optimize` with the Hub environment set.
struct Setup {
    _model: tempfile::TempDir,
    home: tempfile::TempDir,
    endpoint: String,
    hub: Hub,
}

fn setup() -> Setup {
    let model = tempfile::tempdir().unwrap();
    TinyModel::default().write(model.path());
    let (endpoint, hub) = serve(model.path());
    Setup {
        _model: model,
        home: tempfile::tempdir().unwrap(),
        endpoint,
        hub,
    }
}

fn job(s: &Setup, model: &str, out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = optimize();
    cmd.args(["--model", model, "--instance-type", "ml.g6.xlarge"])
        .args(["--quantize", "int8", "--no-eval", "--json", "--output"])
        .arg(out)
        .env("HF_HOME", s.home.path())
        .env("HF_ENDPOINT", &s.endpoint)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn error_of(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    stdout_json(o)["error"].as_str().unwrap().to_string()
}

#[test]
fn a_hub_model_is_fetched_into_the_cache_resuming_a_dropped_download() {
    let s = setup();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("artifact");
    let o = job(&s, "test-org/tiny@main", &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(out.join("config.json").exists());
    // The standard cache layout, with only what a job reads.
    let snapshot = s
        .home
        .path()
        .join("hub/models--test-org--tiny/snapshots")
        .join(COMMIT);
    let mut cached: Vec<String> = std::fs::read_dir(&snapshot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    // The served model's own files (all of which a job reads), not README.md or the .bin.
    let mut served: Vec<String> = std::fs::read_dir(s._model.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    served.sort();
    assert!(served.contains(&"model.safetensors".to_string()));
    assert_eq!(cached, served);
    // The first body of model.safetensors was cut halfway; the retry asked for the rest.
    let seen = s.hub.seen.lock().unwrap().clone();
    let resumed = seen.iter().any(|(path, range)| {
        path.ends_with("model.safetensors")
            && range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n > 0)
    });
    assert!(resumed, "no resuming range request in {seen:?}");
    assert!(!seen
        .iter()
        .any(|(p, _)| p.ends_with(".bin") || p.ends_with(".md")));
    let source = std::fs::read(snapshot.join("model.safetensors")).unwrap();
    let served = std::fs::read(s._model.path().join("model.safetensors")).unwrap();
    assert_eq!(
        source, served,
        "the resumed file differs from the served one"
    );

    // Offline: the cache alone serves a second job, with no request to the Hub.
    let before = s.hub.seen.lock().unwrap().len();
    let again = work.path().join("again");
    let o = job(
        &s,
        "test-org/tiny@main",
        &again,
        &[
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(s.hub.seen.lock().unwrap().len(), before);
}

#[test]
fn gated_missing_offline_and_safetensors_less_models_say_what_to_do() {
    let s = setup();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("x");
    let e = error_of(&job(&s, "gated/tiny", &out, &[]));
    assert!(e.contains("gated") && e.contains("HF_TOKEN"), "{e}");
    let o = job(&s, "gated/tiny", &out, &[("HF_TOKEN", TOKEN)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));

    let e = error_of(&job(&s, "nobody/nothing", &work.path().join("y"), &[]));
    assert!(e.contains("not found"), "{e}");
    let e = error_of(&job(&s, "binonly/tiny", &work.path().join("y"), &[]));
    assert!(e.contains(".safetensors"), "{e}");
    let e = error_of(&job(
        &s,
        "test-org/tiny",
        &work.path().join("y"),
        &[("HF_ENDPOINT", "http://127.0.0.1:9")],
    ));
    assert!(
        e.contains("cannot reach") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
    let e = error_of(&job(
        &s,
        "test-org/never-fetched",
        &work.path().join("y"),
        &[("HF_HUB_OFFLINE", "1")],
    ));
    assert!(e.contains("not in the Hugging Face cache"), "{e}");
    let e = error_of(&job(&s, "no-such-dir", &work.path().join("y"), &[]));
    assert!(e.contains("not a Hugging Face Hub id"), "{e}");
    // Nothing was written for any of the failures.
    assert!(!work.path().join("y").exists());
}
