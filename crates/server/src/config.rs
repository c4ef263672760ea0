//! How a server is set up: what it listens on, where it keeps jobs, who may call it,
//! what local paths jobs may touch, and its limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the credentials file {path}: {why}")]
    Credentials { path: PathBuf, why: String },
    #[error("{0}")]
    Invalid(String),
}

/// Where the worker reaches S3 (for S3-compatible stores: an endpoint and region).
/// Credentials come from the usual AWS environment variables of the server, which
/// the worker inherits (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Access key -> secret key of the callers allowed; `None` only with `--no-auth`.
    pub credentials: Option<BTreeMap<String, String>>,
    /// The region of ARNs for unsigned requests (signed ones use the signing region).
    pub region: String,
    /// Directories `file://` URIs and plain paths may point into (canonical paths);
    /// empty means the API takes `s3://` URIs only.
    pub local_roots: Vec<PathBuf>,
    /// `--device` given to every worker (`--worker-device`); `None`: `auto`.
    pub worker_device: Option<String>,
    /// ResourceLimitExceeded past this many stored jobs.
    pub max_jobs: usize,
    /// ResourceLimitExceeded past this many unfinished (queued or running) jobs.
    pub max_unfinished_jobs: usize,
    /// Worker processes run at once; later jobs wait in STARTING.
    pub concurrent_jobs: usize,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's line and headers.
    pub header_read_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a job is stopped or runs out of time.
    pub stop_grace: Duration,
    /// How often the supervisor looks at running jobs.
    pub poll_interval: Duration,
    pub worker_exe: PathBuf,
    pub s3: S3Settings,
    /// Models an inference-recommendations job may name besides completed optimization
    /// jobs (`--model NAME=URI`).
    pub models: BTreeMap<String, temper_core::spec::Location>,
    /// USD per hour by instance type (`--price-list FILE`), before the catalog's prices.
    pub prices: BTreeMap<String, f64>,
    /// A PostgreSQL URL to keep jobs in (`--store`); `None`: SQLite in the data directory.
    pub store: Option<String>,
    /// Answer the API only (`--api-only`): run no jobs, beside the one server that runs a
    /// shared database's jobs.
    pub api_only: bool,
}

impl Config {
    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("jobs.sqlite3")
    }

    /// A job's own directory. Named by the job's store id, never by its name, so a
    /// name can never reach outside the data directory.
    pub fn job_dir(&self, id: i64) -> PathBuf {
        self.data_dir.join("jobs").join(id.to_string())
    }

    /// Checks the settings that are only wrong together.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.api_only && self.store.is_none() {
            return Err(ConfigError::Invalid(
                "--api-only answers requests from a shared database and runs no jobs: give \
                 --store postgres://... (with SQLite in --data-dir its jobs would never run)"
                    .into(),
            ));
        }
        if let Some(url) = &self.store {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(format!(
                    "--store {}: give a PostgreSQL URL (postgres://user:password@host:port/\
                     database), or leave --store out to keep jobs in SQLite in --data-dir",
                    crate::postgres::redact(url)
                )));
            }
        }
        if self.credentials.is_none() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "--no-auth is for local use only, but --listen {} is not a loopback address; \
                 give --credentials FILE to serve other hosts",
                self.listen
            )));
        }
        if self.concurrent_jobs == 0 {
            return Err(ConfigError::Invalid(
                "--concurrent-jobs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Reads a `--model NAME=URI` registration.
pub fn parse_model(arg: &str) -> Result<(String, temper_core::spec::Location), ConfigError> {
    let (name, uri) = arg.split_once('=').ok_or_else(|| {
        ConfigError::Invalid(format!(
            "--model {arg}: expected NAME=URI, e.g. --model llama-8b=s3://models/llama-8b/"
        ))
    })?;
    let location = temper_core::spec::Location::parse(uri)
        .map_err(|e| ConfigError::Invalid(format!("--model {arg}: {e}")))?;
    if name.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--model {arg}: the name is empty"
        )));
    }
    Ok((name.to_string(), location))
}

/// Reads a `--price-list` file: a JSON object of instance type to USD per hour.
pub fn read_prices(path: &Path) -> Result<BTreeMap<String, f64>, ConfigError> {
    let invalid =
        |why: String| ConfigError::Invalid(format!("--price-list {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    let prices: BTreeMap<String, f64> = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "{e}; expected a JSON object of instance type to USD per hour, e.g. \
             {{\"ml.g6.xlarge\": 1.1267}}"
        ))
    })?;
    for (instance, price) in &prices {
        temper_catalog::Instance::lookup(instance).map_err(|e| invalid(e.to_string()))?;
        if !(price.is_finite() && *price > 0.0) {
            return Err(invalid(format!(
                "the price of {instance} is {price}; give a positive number of USD per hour"
            )));
        }
    }
    Ok(prices)
}

/// Reads an AWS-style credentials file (the format of `~/.aws/credentials`): every
/// profile's `aws_access_key_id` / `aws_secret_access_key` pair is a caller allowed.
pub fn read_credentials(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let err = |why: String| ConfigError::Credentials {
        path: path.to_path_buf(),
        why,
    };
    let ini = ini::Ini::load_from_file(path).map_err(|e| err(e.to_string()))?;
    let mut keys = BTreeMap::new();
    for (section, props) in ini.iter() {
        let section = section.unwrap_or("(top)");
        match (
            props.get("aws_access_key_id"),
            props.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                keys.insert(id.to_string(), secret.to_string());
            }
            (None, None) => {}
            _ => {
                return Err(err(format!(
                    "profile [{section}] needs both aws_access_key_id and aws_secret_access_key"
                )))
            }
        }
    }
    if keys.is_empty() {
        return Err(err(
            "no profile has aws_access_key_id and aws_secret_access_key".into(),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = AK1\naws_secret_access_key = s1\n\n[ci]\naws_access_key_id=AK2\naws_secret_access_key=s2\nregion=eu-west-1\n",
        )
        .unwrap();
        let keys = read_credentials(&path).unwrap();
        assert_eq!(keys.get("AK1").map(String::as_str), Some("s1"));
        assert_eq!(keys.get("AK2").map(String::as_str), Some("s2"));

        std::fs::write(&path, "[default]\naws_access_key_id = AK1\n").unwrap();
        let err = read_credentials(&path).unwrap_err().to_string();
        assert!(err.contains("[default]") && err.contains("both"), "{err}");
        std::fs::write(&path, "[default]\nregion = x\n").unwrap();
        assert!(read_credentials(&path).is_err());
        assert!(read_credentials(&dir.path().join("missing")).is_err());
    }
}
