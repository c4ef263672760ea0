//! temper-server: SageMaker's optimization-job API on your own host.
//!
//! boto3 and the AWS CLI talk to it unchanged (`endpoint_url`). Each job runs in a
//! `temper-worker` process, which fetches the model (from S3 through `object_store`,
//! or a local root), runs the same job the `optimize` command runs, and writes the
//! artifact back. Jobs are kept in SQLite in the data directory, and survive restarts.
//!
//! - [`http`]: the wire protocol, signature checks, body limit;
//! - [`service`]: the optimization-job operations; [`recommendations`]: the
//!   inference-recommendations operations (one store and supervisor for both kinds);
//! - [`store`] / [`sqlite`] / [`postgres`]: where jobs are kept (SQLite in the data
//!   directory by default, or a PostgreSQL database, `--store postgres://...`), both through
//!   [`columns`];
//! - [`supervisor`]: worker processes, StoppingCondition, reconciliation after restart.
//!
//! The worker is its own crate (temper-worker), which this one does not link: the server
//! never loads the model runtime. They share a job's directory (temper-jobdir).

pub mod client;
pub mod config;
pub mod http;
pub mod keeper;
pub mod list;
pub mod recommendations;
pub mod service;
pub mod sigv4;
pub mod supervisor;

// The store is its own crate (worker agents use it too); these paths stay the server's.
pub use temper_store::{columns, postgres, sqlite, store};

use config::Config;
use std::sync::Arc;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("another temper-server uses the data directory {0}; stop it, or give this one another --data-dir")]
    Busy(std::path::PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Opens the store, adopts or settles the jobs a previous run left, and returns the
/// service with its supervisor running. One server per data directory: a second one is
/// refused (it would start every queued job a second time).
pub fn open(mut config: Config) -> Result<Arc<service::Service>, ServeError> {
    config.check()?;
    let io = |what: String| move |source| ServeError::Io { what, source };
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(dir.join("jobs"))
        .map_err(io(format!("creating the data directory {}", dir.display())))?;
    // Canonical, so that a worker's command line (which names its job directory) is
    // recognised by the next server however its --data-dir is spelt.
    config.data_dir = dir
        .canonicalize()
        .map_err(io(format!("resolving {}", dir.display())))?;
    let lock_path = config.data_dir.join("server.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(io(format!("creating {}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(ServeError::Busy(config.data_dir.clone()));
    }
    let config = Arc::new(config);
    let (store, runner_lock): (Arc<dyn store::JobStore>, _) = match &config.store {
        None => (
            Arc::new(sqlite::SqliteStore::open(&config.database_path())?),
            None,
        ),
        Some(url) => {
            let postgres = Arc::new(postgres::PostgresStore::open(url)?);
            if config.api_only {
                // Jobs are run by worker agents (or by another server): keep their queue.
                keeper::start(postgres.clone(), config.poll_interval).map_err(|source| {
                    ServeError::Io {
                        what: "starting the queue keeper".into(),
                        source,
                    }
                })?;
            }
            let lock = (!config.api_only)
                .then(|| postgres::lock_runner(url))
                .transpose()?;
            (postgres, lock)
        }
    };
    let wake = if config.api_only {
        supervisor::Wake::none()
    } else {
        supervisor::start(store.clone(), config.clone())?
    };
    Ok(Arc::new(service::Service {
        store,
        config,
        wake,
        _data_lock: lock,
        _runner_lock: runner_lock.map(std::sync::Mutex::new),
        creating: std::sync::Mutex::new(()),
    }))
}

/// Serves on `listener` until `shutdown` resolves. Running workers are left running:
/// the next server on the same data directory adopts them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<service::Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = temper_http::Limits {
        header_read_timeout: service.config.header_read_timeout,
        ..temper_http::Limits::default()
    };
    temper_http::serve(listener, http::router(service), limits, shutdown)
        .await
        .map_err(|source| ServeError::Io {
            what: "serving HTTP".into(),
            source,
        })
}
