//! A small signed client of the service, for `temper-server logs` and the load test
//! (boto3 is the client the API is built for; this one only needs what they need).

use crate::sigv4::{self, RequestParts};
use std::path::Path;
use temper_api::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the endpoint {0} is not an http://host:port URL")]
    Endpoint(String),
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{0}")]
    Api(ApiError),
    #[error("HTTP {status} from {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("no credentials: {0}")]
    Credentials(String),
}

/// An access key pair.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else `profile` of the credentials
    /// file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`).
    pub fn resolve(file: Option<&Path>, profile: &str) -> Result<Credentials, ClientError> {
        if let (Ok(access_key), Ok(secret_key)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            return Ok(Credentials {
                access_key,
                secret_key,
            });
        }
        let path = match file {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
                Some(p) => p.into(),
                None => std::env::home_dir()
                    .unwrap_or_default()
                    .join(".aws/credentials"),
            },
        };
        let ini = ini::Ini::load_from_file(&path)
            .map_err(|e| ClientError::Credentials(format!("{}: {e}", path.display())))?;
        let section = ini.section(Some(profile)).ok_or_else(|| {
            ClientError::Credentials(format!("{} has no profile [{profile}]", path.display()))
        })?;
        match (
            section.get("aws_access_key_id"),
            section.get("aws_secret_access_key"),
        ) {
            (Some(a), Some(s)) => Ok(Credentials {
                access_key: a.into(),
                secret_key: s.into(),
            }),
            _ => Err(ClientError::Credentials(format!(
                "profile [{profile}] of {} lacks aws_access_key_id or aws_secret_access_key",
                path.display()
            ))),
        }
    }
}

pub struct Client {
    endpoint: String,
    host: String,
    credentials: Option<Credentials>,
    region: String,
    http: reqwest::Client,
}

impl Client {
    /// `credentials: None` sends unsigned requests (for a `--no-auth` server).
    pub fn new(
        endpoint: &str,
        credentials: Option<Credentials>,
        region: &str,
    ) -> Result<Client, ClientError> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .strip_prefix("http://")
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| ClientError::Endpoint(endpoint.clone()))?
            .to_string();
        Ok(Client {
            endpoint,
            host,
            credentials,
            region: region.to_string(),
            http: reqwest::Client::new(),
        })
    }

    fn headers(
        &self,
        method: &str,
        path: &str,
        query: &str,
        mut headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Vec<(String, String)> {
        headers.push(("host".into(), self.host.clone()));
        if let Some(c) = &self.credentials {
            let req = RequestParts {
                method,
                path,
                query,
                headers: &headers,
                body,
            };
            let now = temper_api::EpochSeconds::now().0 as i64;
            let signed = sigv4::sign(
                &req,
                &c.access_key,
                &c.secret_key,
                &self.region,
                "sagemaker",
                now,
            );
            headers.extend(signed);
        }
        headers
    }

    /// Calls a SageMaker operation (`target` like `DescribeOptimizationJob`).
    pub async fn call(
        &self,
        operation: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = body.to_string().into_bytes();
        let headers = self.headers(
            "POST",
            "/",
            "",
            vec![
                ("content-type".into(), "application/x-amz-json-1.1".into()),
                (
                    "x-amz-target".into(),
                    format!("{}.{operation}", temper_api::TARGET_PREFIX),
                ),
            ],
            &bytes,
        );
        let url = format!("{}/", self.endpoint);
        let (status, body, _) = self
            .send(reqwest::Method::POST, &url, headers, bytes)
            .await?;
        if status == 200 {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Status {
                url,
                status,
                body: format!("unreadable JSON: {e}"),
            });
        }
        Err(failure(url, status, &body))
    }

    /// A signed GET of one of temper's own paths; returns the body and headers.
    pub async fn get(
        &self,
        path: &str,
        query: &str,
    ) -> Result<(Vec<u8>, reqwest::header::HeaderMap), ClientError> {
        let headers = self.headers("GET", path, query, vec![], b"");
        let url = if query.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{query}", self.endpoint)
        };
        let (status, body, map) = self
            .send(reqwest::Method::GET, &url, headers, vec![])
            .await?;
        if status == 200 {
            return Ok((body, map));
        }
        Err(failure(url, status, &body))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>, reqwest::header::HeaderMap), ClientError> {
        let http = |source| ClientError::Http {
            url: url.to_string(),
            source,
        };
        let mut req = self.http.request(method, url).body(body);
        for (k, v) in headers {
            // reqwest sets Host from the URL itself, identically.
            if k != "host" {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.map_err(http)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(http)?.to_vec();
        Ok((status, body, headers))
    }
}

/// A non-200 answer: the service's error when the body is one, else the raw reply.
fn failure(url: String, status: u16, body: &[u8]) -> ClientError {
    match ApiError::from_body(body) {
        Some(e) => ClientError::Api(e),
        None => ClientError::Status {
            url,
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}
