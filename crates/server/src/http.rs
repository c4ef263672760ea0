//! The HTTP face of the service: SageMaker's JSON 1.1 protocol on `POST /`, and
//! temper's own read-only job views (progress, log) under `/temper/`.
//!
//! Every request is size-limited and, unless the server runs with `--no-auth`, must
//! carry a valid AWS Signature V4 made with a key from the credentials file.

use crate::service::Service;
use crate::sigv4::{self, RequestParts, SigError};
use crate::store::JobKind;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use temper_api::{ApiError, Operation};
use temper_jobdir::files as worker_files;

const JSON_11: &str = "application/x-amz-json-1.1";
/// The service name clients sign for (the model's `signingName`).
const SIGNING_NAME: &str = "sagemaker";
/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Oversized bodies up to this size are read and dropped before the error is sent.
const DRAIN_CAP: usize = 64 << 20;
/// The most of a log one request returns.
const LOG_CHUNK: u64 = 1 << 20;

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", post(sagemaker))
        .route("/temper/jobs/{name}/progress", get(progress))
        .route("/temper/jobs/{name}/log", get(log))
        .route("/temper/agents", get(agents))
        .with_state(service)
}

fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = temper_api::EpochSeconds::now().0 as u64;
    format!("{t:016x}-{n:016x}")
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON_11));
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-amzn-requestid", id);
    }
    resp
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, e.to_body().to_string().into_bytes())
}

impl From<SigError> for ApiError {
    fn from(e: SigError) -> Self {
        match e {
            SigError::Missing => {
                ApiError::MissingAuthenticationToken(format!("Missing Authentication Token: {e}"))
            }
            SigError::UnknownKey(_) => ApiError::UnrecognizedClient(format!(
                "The security token included in the request is invalid: {e}"
            )),
            other => ApiError::InvalidSignature(other.to_string()),
        }
    }
}

/// Reads the body within the limit and checks the signature; returns the body and the
/// region ARNs should carry.
async fn admit(service: &Service, req: Request) -> Result<(Bytes, String), ApiError> {
    let (parts, body) = req.into_parts();
    let limit = service.config.max_body_bytes;
    let too_large = || {
        ApiError::RequestEntityTooLarge(format!(
            "The request body is larger than this server's limit of {limit} bytes"
        ))
    };
    if let Some(len) = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            // Read (and drop) a moderately oversized body before answering, so that the
            // client, still sending, gets the error instead of a broken pipe. Beyond
            // the cap the connection is simply closed.
            if len <= DRAIN_CAP {
                let mut frames = body.into_data_stream();
                while let Some(Ok(_)) = frames.next().await {}
            }
            return Err(too_large());
        }
    }
    // A client that stops sending mid-body must not hold a connection and its task
    // forever.
    let body = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::ValidationException(format!(
                "The request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|_| too_large())?;
    let Some(secrets) = &service.config.credentials else {
        // Unsigned requests are only for local use: refuse any that name another host,
        // as a web page's request does after DNS rebinding to 127.0.0.1.
        let host = parts.headers.get("host").and_then(|h| h.to_str().ok());
        if !host.is_some_and(is_loopback_host) {
            return Err(ApiError::MissingAuthenticationToken(format!(
                "This server runs with --no-auth and serves only requests addressed to a \
                 loopback host, not {}",
                host.unwrap_or("(no Host header)")
            )));
        }
        return Ok((body, service.config.region.clone()));
    };
    let headers = header_pairs(&parts.headers);
    let request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let now = temper_api::EpochSeconds::now().0 as i64;
    let auth = sigv4::verify(&request, secrets, now)?;
    if auth.service != SIGNING_NAME {
        return Err(ApiError::InvalidSignature(format!(
            "The request was signed for service '{}'; sign it for '{SIGNING_NAME}'",
            auth.service
        )));
    }
    // The region goes into ARNs: hold it to the characters a region has.
    if auth.region.is_empty()
        || !auth
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::InvalidSignature(format!(
            "The credential scope's region '{}' is not a region name",
            auth.region
        )));
    }
    // The operation is chosen by X-Amz-Target: unsigned, a captured request could be
    // replayed as another operation on the same body.
    if parts.method == axum::http::Method::POST
        && !auth.signed_headers.iter().any(|h| h == "x-amz-target")
    {
        return Err(ApiError::InvalidSignature(
            "SignedHeaders must include x-amz-target".into(),
        ));
    }
    Ok((body, auth.region))
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn sagemaker(State(service): State<Arc<Service>>, req: Request) -> Response {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (body, region) = match admit(&service, req).await {
        Ok(admitted) => admitted,
        Err(e) => return error_response(&e),
    };
    let op = match Operation::from_target(&target) {
        Ok(op) => op,
        Err(e) => return error_response(&e),
    };
    // Run inline: every operation is a few indexed SQLite statements (a Describe
    // costs what a signed no-op request costs, BENCHMARKS.md); the hand-off to tokio's
    // blocking pool it replaced showed up in profiles as futex wake-ups.
    match service.call(op, &body, &region) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => error_response(&e),
    }
}

/// A query parameter of a request.
fn query_param(req: &Request, key: &str) -> Option<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// The job kind a view asks for (`?kind=optimization|recommendation`); `None` for either.
fn view_kind(req: &Request) -> Result<Option<JobKind>, ApiError> {
    match query_param(req, "kind") {
        None => Ok(None),
        Some(k) => JobKind::parse(&k).map(Some).ok_or_else(|| {
            ApiError::ValidationException(format!(
                "kind={k} is not a job kind; use kind=optimization or kind=recommendation"
            ))
        }),
    }
}

/// Where a view reads a job's log and progress.
enum Source {
    /// What the worker agent that runs (or ran) it reported to the shared database.
    Reported(crate::store::Reported),
    /// The job's directory here: this server runs its jobs.
    Dir(std::path::PathBuf),
}

/// The job of `kind`, else an optimization job of that name, else a recommendations job,
/// and where its log (from byte `offset`) and progress are read, for the read-only views.
async fn find_job(
    service: &Arc<Service>,
    name: String,
    kind: Option<JobKind>,
    offset: u64,
) -> Result<(crate::store::JobRecord, Source), ApiError> {
    let svc = service.clone();
    let found = tokio::task::spawn_blocking(move || {
        let kinds = match kind {
            Some(k) => vec![k],
            None => vec![JobKind::Optimization, JobKind::Recommendation],
        };
        for k in kinds {
            if let Some(job) = svc.store.get(k, &name)? {
                let reported = svc.store.reported(job.id, offset, LOG_CHUNK)?;
                return Ok((name, Some((job, reported))));
            }
        }
        Ok::<_, crate::store::StoreError>((name, None))
    })
    .await
    .map_err(|e| ApiError::InternalFailure(e.to_string()))??;
    match found {
        (_, Some((job, Some(reported)))) => Ok((job, Source::Reported(reported))),
        // Never started (queued, or stopped or failed while queued): no log anywhere yet.
        (_, Some((job, None))) if service.config.api_only && job.start_time.is_none() => {
            Ok((job, Source::Reported(Default::default())))
        }
        (_, Some((_, None))) if service.config.api_only => Err(ApiError::ValidationException(
            "This job is run by the temper-server that runs this database's jobs as its own \
             processes (not by a worker agent), and this server answers the API only \
             (--api-only) and holds no job's files; ask that server for its log and progress"
                .into(),
        )),
        (_, Some((job, None))) => {
            let dir = service.config.job_dir(job.id);
            Ok((job, Source::Dir(dir)))
        }
        (name, None) => Err(ApiError::ResourceNotFound(format!(
            "Could not find {} '{name}'",
            kind.map_or(
                "an optimization or inference recommendations job",
                JobKind::noun
            )
        ))),
    }
}

/// `GET /temper/agents`: the worker agents of the shared database, live or not, with what
/// each runs, as JSON.
async fn agents(State(service): State<Arc<Service>>, req: Request) -> Response {
    if let Err(e) = admit(&service, req).await {
        return error_response(&e);
    }
    let svc = service.clone();
    let found = tokio::task::spawn_blocking(move || svc.store.agents()).await;
    let agents =
        match found {
            Ok(Ok(Some(agents))) => agents,
            Ok(Ok(None)) => return error_response(&ApiError::ValidationException(
                "This server keeps its jobs in SQLite and runs them itself: worker agents join \
                 a shared PostgreSQL (--store postgres://...)"
                    .into(),
            )),
            Ok(Err(e)) => return error_response(&e.into()),
            Err(e) => return error_response(&ApiError::InternalFailure(e.to_string())),
        };
    let agents: Vec<serde_json::Value> = agents
        .into_iter()
        .map(|a| {
            serde_json::json!({
                "Name": a.info.name,
                "Host": a.info.host,
                "Slots": a.info.slots,
                "InstanceTypes": a.info.instance_types,
                "LeaseSeconds": a.info.lease_secs,
                "SecondsSinceRenewal": a.seen_secs_ago,
                "Live": a.live,
                "Running": a.running,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        serde_json::json!({ "Agents": agents })
            .to_string()
            .into_bytes(),
    )
}

/// `GET /temper/jobs/{name}/progress`: status, phase, counts and ETA as JSON.
async fn progress(
    State(service): State<Arc<Service>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let kind = match view_kind(&req) {
        Ok(k) => k,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = admit(&service, req).await {
        return error_response(&e);
    }
    let (job, source) = match find_job(&service, name, kind, u64::MAX).await {
        Ok(found) => found,
        Err(e) => return error_response(&e),
    };
    let (progress, log_bytes, agent, host) = match source {
        Source::Reported(r) => (r.progress, r.log_size, r.agent, r.host),
        Source::Dir(dir) => (
            worker_files::read_progress(&dir).and_then(|p| serde_json::to_value(p).ok()),
            std::fs::metadata(worker_files::log_path(&dir))
                .map(|m| m.len())
                .unwrap_or(0),
            None,
            None,
        ),
    };
    let failure_reason = service.failure_reason(&job);
    let body = serde_json::json!({
        "Kind": job.kind().column(),
        "OptimizationJobName": job.name,
        "OptimizationJobStatus": crate::store::status_name(job.status),
        "FailureReason": failure_reason,
        "Progress": progress,
        "LogBytes": log_bytes,
        "Agent": agent,
        "Host": host,
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// `GET /temper/jobs/{name}/log?offset=N`: up to 1 MiB of the worker's log from byte N;
/// the `x-temper-log-size` header gives the log's size so a follower knows where it is.
async fn log(
    State(service): State<Arc<Service>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let offset: u64 = query_param(&req, "offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kind = match view_kind(&req) {
        Ok(k) => k,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = admit(&service, req).await {
        return error_response(&e);
    }
    let (chunk, size) = match find_job(&service, name, kind, offset).await {
        Ok((_, Source::Reported(r))) => (r.log, r.log_size),
        Ok((_, Source::Dir(dir))) => {
            read_from(&worker_files::log_path(&dir), offset).unwrap_or_default()
        }
        Err(e) => return error_response(&e),
    };
    let mut resp = Response::new(Body::from(chunk));
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-temper-log-size", HeaderValue::from(size));
    resp
}

fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let start = offset.min(size);
    f.seek(SeekFrom::Start(start))?;
    let mut chunk = Vec::new();
    f.take(LOG_CHUNK).read_to_end(&mut chunk)?;
    Ok((chunk, size))
}
