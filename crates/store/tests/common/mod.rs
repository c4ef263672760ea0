#![allow(dead_code)] // each test binary uses a part of it

//! What the store's test suites share: a job record like Create stores, and a database of
//! its own on the test server.

use temper_store::store::JobRecord;

/// An optimization job as CreateOptimizationJob stores it.
pub fn optimization(name: &str, created: f64, quantize: &str) -> JobRecord {
    optimization_with(name, created, quantize, serde_json::json!({}))
}

/// An optimization job whose request has `extra` members too (tags, another instance type).
pub fn optimization_with(
    name: &str,
    created: f64,
    quantize: &str,
    extra: serde_json::Value,
) -> JobRecord {
    let mut body = serde_json::json!({
        "OptimizationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/r",
        "ModelSource": {"S3": {"S3Uri": "s3://models/m/"}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": [{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": quantize}}}],
        "OutputConfig": {"S3OutputLocation": format!("s3://out/{name}/")},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let request = temper_api::parse_create_request(body.to_string().as_bytes()).unwrap();
    let spec = temper_api::to_job_spec(&request, &Default::default()).unwrap();
    JobRecord::queued(request, spec, format!("arn:opt/{name}"), created)
}

/// A database of its own on the test server, by URL.
pub fn fresh_database() -> String {
    let Ok(url) = std::env::var("TEMPER_TEST_POSTGRES") else {
        panic!(
            "TEMPER_TEST_POSTGRES is not set: run scripts/test.sh, or start a server with \
             `url=$(bash scripts/postgres.sh start /tmp/temper-pg)` and set \
             TEMPER_TEST_POSTGRES=$url"
        );
    };
    let name = format!(
        "temper_contract_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
