//! What a CreateInferenceRecommendationsJob request must also satisfy beyond its shapes,
//! reported like shape violations (member path, value, rule), all at once.
//!
//! SageMaker's own rules: a traffic pattern's type names the member it uses, and a phase
//! or a stair gives every one of its members; latency thresholds name a percentile; the
//! traffic fits the job's duration.
//!
//! temper's, because it answers the job on the user's own hosts: the model is named by
//! `ModelName` (there is no model registry, so `ModelPackageVersionArn` is refused); it
//! load-tests its own `temper-serve`, so existing `Endpoints`, serverless endpoints and VPC
//! settings are refused rather than silently ignored; load tests (traffic, stopping
//! conditions, sweeps) belong to `Advanced` jobs, which must list the endpoint
//! configurations to test; a sweep names only the serving options temper applies.

use crate::recommendation::{
    CreateInferenceRecommendationsJobRequest, RecommendationJobType, TrafficPattern, TrafficType,
};
use crate::validate::{to_result, Violation};
use crate::ApiError;
use serde_json::Value;

/// The percentiles a latency threshold may name.
pub const PERCENTILES: [&str; 4] = ["P50", "P90", "P95", "P99"];

/// The environment variables an `Advanced` job may sweep: what `temper-serve` reads
/// (`OPTION_MAX_ROLLING_BATCH_SIZE`, `OPTION_MAX_INPUT_LEN`) and what the job prepares
/// before serving (`OPTION_QUANTIZE`, `OPTION_TENSOR_PARALLEL_DEGREE`).
pub const SWEEPABLE: [&str; 4] = [
    "OPTION_QUANTIZE",
    "OPTION_TENSOR_PARALLEL_DEGREE",
    "OPTION_MAX_ROLLING_BATCH_SIZE",
    "OPTION_MAX_INPUT_LEN",
];

/// Checks every rule; all broken ones are reported in one `ValidationException`.
pub fn check(req: &CreateInferenceRecommendationsJobRequest) -> Result<(), ApiError> {
    to_result(violations(req))
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub(crate) fn violations(req: &CreateInferenceRecommendationsJobRequest) -> Vec<Violation> {
    let mut out = Vec::new();
    let input = &req.input_config;
    let mut rule = |path: String, value: Option<Value>, text: String| {
        out.push(Violation::new(&path, value.as_ref(), text));
    };
    if let Some(arn) = &input.model_package_version_arn {
        rule(
            "inputConfig.modelPackageVersionArn".into(),
            Some(json(arn)),
            "temper has no SageMaker model registry; leave this out and name the model with \
             InputConfig.ModelName (the name of a completed optimization job)"
                .into(),
        );
    }
    if input.model_name.is_none() && input.model_package_version_arn.is_none() {
        rule(
            "inputConfig.modelName".into(),
            None,
            "Member must be set: the model to recommend instances for (the name of a \
             completed optimization job)"
                .into(),
        );
    }
    if let Some(endpoints) = &input.endpoints {
        rule(
            "inputConfig.endpoints".into(),
            Some(json(endpoints)),
            "temper load-tests the temper-serve endpoints it starts itself; existing \
             SageMaker endpoints cannot be benchmarked here, leave this out"
                .into(),
        );
    }
    if let Some(vpc) = &input.vpc_config {
        rule(
            "inputConfig.vpcConfig".into(),
            Some(vpc.clone()),
            "temper runs its load tests on this host and applies no VPC; leave this out".into(),
        );
    }
    if let Some(kind) = input
        .container_config
        .as_ref()
        .and_then(|c| c.supported_endpoint_type.as_deref())
        .filter(|&t| t != "RealTime")
    {
        rule(
            "inputConfig.containerConfig.supportedEndpointType".into(),
            Some(json(&kind)),
            "temper recommends real-time endpoints only; use RealTime or leave this out".into(),
        );
    }
    let advanced = req.job_type == RecommendationJobType::Advanced;
    let configs = input.endpoint_configurations.as_deref().unwrap_or(&[]);
    if advanced && configs.is_empty() {
        rule(
            "inputConfig.endpointConfigurations".into(),
            None,
            "Member must be set for Advanced jobs: the instance types (and environment \
             sweeps) to load-test"
                .into(),
        );
    }
    if !advanced {
        let load_test_members = [
            (
                "inputConfig.trafficPattern",
                input.traffic_pattern.is_some(),
            ),
            ("inputConfig.resourceLimit", input.resource_limit.is_some()),
            ("stoppingConditions", req.stopping_conditions.is_some()),
        ];
        for (path, set) in load_test_members {
            if set {
                rule(
                    path.into(),
                    None,
                    "only Advanced jobs run load tests; use JobType Advanced or leave this out"
                        .into(),
                );
            }
        }
    }
    for (i, c) in configs.iter().enumerate() {
        let at = format!("inputConfig.endpointConfigurations.{}.member", i + 1);
        if let Some(s) = &c.serverless_config {
            rule(
                format!("{at}.serverlessConfig"),
                Some(s.clone()),
                "temper recommends real-time endpoints only; give an InstanceType instead".into(),
            );
        }
        if c.instance_type.is_none() {
            rule(
                format!("{at}.instanceType"),
                None,
                "Member must be set: the instance type this configuration is for".into(),
            );
        }
        let ranges = c
            .environment_parameter_ranges
            .as_ref()
            .and_then(|r| r.categorical_parameter_ranges.as_deref())
            .unwrap_or(&[]);
        if !advanced && !ranges.is_empty() {
            rule(
                format!("{at}.environmentParameterRanges"),
                None,
                "only Advanced jobs sweep environment parameters; use JobType Advanced".into(),
            );
        }
        let mut seen: Vec<&str> = Vec::new();
        for (j, p) in ranges.iter().enumerate() {
            let path = format!(
                "{at}.environmentParameterRanges.categoricalParameterRanges.{}.member.name",
                j + 1
            );
            if !SWEEPABLE.contains(&p.name.as_str()) {
                rule(
                    path.clone(),
                    Some(json(&p.name)),
                    format!(
                        "temper sweeps only the serving options it applies: {}",
                        SWEEPABLE.join(", ")
                    ),
                );
            }
            if seen.contains(&p.name.as_str()) {
                rule(
                    path,
                    Some(json(&p.name)),
                    "each variable may be swept once per endpoint configuration".into(),
                );
            }
            seen.push(&p.name);
        }
    }
    if let Some(t) = &input.traffic_pattern {
        traffic(t, input.job_duration_in_seconds, &mut rule);
    }
    if let Some(stop) = &req.stopping_conditions {
        if let Some(n) = stop.max_invocations.filter(|&n| n < 1) {
            rule(
                "stoppingConditions.maxInvocations".into(),
                Some(json(&n)),
                "Member must be at least 1 (invocations per minute)".into(),
            );
        }
        for (i, t) in stop.model_latency_thresholds.iter().flatten().enumerate() {
            let at = format!("stoppingConditions.modelLatencyThresholds.{}.member", i + 1);
            match t.percentile.as_deref() {
                Some(p) if PERCENTILES.contains(&p) => {}
                other => rule(
                    format!("{at}.percentile"),
                    other.map(|p| json(&p)),
                    format!("Member must be one of {}", PERCENTILES.join(", ")),
                ),
            }
            if t.value_in_milliseconds.is_none_or(|v| v < 1) {
                rule(
                    format!("{at}.valueInMilliseconds"),
                    t.value_in_milliseconds.map(|v| json(&v)),
                    "Member must be a latency of at least 1 millisecond".into(),
                );
            }
        }
    }
    out
}

/// Reports each of `members` (wire name, value) under `at` that is unset.
fn require(
    at: &str,
    members: &[(&str, Option<i32>)],
    text: &str,
    rule: &mut impl FnMut(String, Option<Value>, String),
) {
    for (m, v) in members {
        if v.is_none() {
            rule(format!("{at}.{m}"), None, text.into());
        }
    }
}

fn traffic(
    t: &TrafficPattern,
    job_seconds: Option<i32>,
    rule: &mut impl FnMut(String, Option<Value>, String),
) {
    let at = "inputConfig.trafficPattern";
    let kind = t.traffic_type.unwrap_or(TrafficType::Phases);
    let name = match kind {
        TrafficType::Phases => "PHASES",
        TrafficType::Stairs => "STAIRS",
    };
    let mut seconds: i64 = 0;
    match kind {
        TrafficType::Phases => {
            if t.stairs.is_some() {
                rule(
                    format!("{at}.stairs"),
                    None,
                    format!("a {name} pattern takes Phases, not Stairs"),
                );
            }
            let phases = t.phases.as_deref().unwrap_or(&[]);
            if phases.is_empty() {
                rule(
                    format!("{at}.phases"),
                    None,
                    format!("Member must be set for a {name} pattern"),
                );
            }
            for (i, p) in phases.iter().enumerate() {
                let members = [
                    ("initialNumberOfUsers", p.initial_number_of_users),
                    ("spawnRate", p.spawn_rate),
                    ("durationInSeconds", p.duration_in_seconds),
                ];
                let at = format!("{at}.phases.{}.member", i + 1);
                require(&at, &members, "Member must be set in every phase", rule);
                seconds += i64::from(p.duration_in_seconds.unwrap_or(0));
            }
        }
        TrafficType::Stairs => {
            if t.phases.is_some() {
                rule(
                    format!("{at}.phases"),
                    None,
                    format!("a {name} pattern takes Stairs, not Phases"),
                );
            }
            match &t.stairs {
                None => rule(
                    format!("{at}.stairs"),
                    None,
                    format!("Member must be set for a {name} pattern"),
                ),
                Some(s) => {
                    let members = [
                        ("durationInSeconds", s.duration_in_seconds),
                        ("numberOfSteps", s.number_of_steps),
                        ("usersPerStep", s.users_per_step),
                    ];
                    require(
                        &format!("{at}.stairs"),
                        &members,
                        "Member must be set",
                        rule,
                    );
                    seconds = i64::from(s.duration_in_seconds.unwrap_or(0))
                        * i64::from(s.number_of_steps.unwrap_or(0));
                }
            }
        }
    }
    if let Some(limit) = job_seconds {
        if seconds > i64::from(limit) {
            rule(
                at.into(),
                None,
                format!(
                    "the traffic lasts {seconds} s, longer than JobDurationInSeconds ({limit} \
                     s); shorten it or raise the job's duration"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<CreateInferenceRecommendationsJobRequest, ApiError> {
        crate::parse_recommendation_request(v.to_string().as_bytes())
    }

    fn advanced() -> Value {
        json!({
            "JobName": "rec-1", "JobType": "Advanced",
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "InputConfig": {
                "ModelName": "llama-int8",
                "EndpointConfigurations": [{"InstanceType": "ml.g5.xlarge",
                    "EnvironmentParameterRanges": {"CategoricalParameterRanges": [
                        {"Name": "OPTION_QUANTIZE", "Value": ["none", "int8", "fp8"]}]}}],
                "TrafficPattern": {"TrafficType": "STAIRS",
                    "Stairs": {"DurationInSeconds": 30, "NumberOfSteps": 3, "UsersPerStep": 2}},
                "ResourceLimit": {"MaxNumberOfTests": 3, "MaxParallelOfTests": 1},
            },
            "StoppingConditions": {"MaxInvocations": 1000, "FlatInvocations": "Stop",
                "ModelLatencyThresholds": [{"Percentile": "P95", "ValueInMilliseconds": 2000}]},
        })
    }

    fn message(v: Value) -> String {
        parse(v).unwrap_err().message().to_string()
    }

    #[test]
    fn a_full_advanced_request_parses() {
        let req = parse(advanced()).unwrap();
        assert_eq!(req.job_type, RecommendationJobType::Advanced);
        let stairs = req.input_config.traffic_pattern.unwrap().stairs.unwrap();
        assert_eq!(stairs.number_of_steps, Some(3));
        let default = json!({"JobName": "rec-2", "JobType": "Default",
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "InputConfig": {"ModelName": "llama-int8",
                "ContainerConfig": {"SupportedInstanceTypes": ["ml.g5.xlarge", "ml.g6.xlarge"]}}});
        assert!(parse(default).is_ok());
    }

    #[test]
    fn model_packages_and_missing_models_are_refused_by_member() {
        let mut v = advanced();
        v["InputConfig"]["ModelPackageVersionArn"] =
            json!("arn:aws:sagemaker:us-east-1:123456789012:model-package/m/1");
        let m = message(v);
        assert!(
            m.contains("'inputConfig.modelPackageVersionArn'") && m.contains("ModelName"),
            "{m}"
        );
        let mut v = advanced();
        v["InputConfig"]
            .as_object_mut()
            .unwrap()
            .remove("ModelName");
        let m = message(v);
        assert!(m.contains("Value null at 'inputConfig.modelName'"), "{m}");
    }

    #[test]
    fn an_unknown_percentile_is_refused_naming_the_allowed_ones() {
        let mut v = advanced();
        v["StoppingConditions"]["ModelLatencyThresholds"][0]["Percentile"] = json!("P97");
        let m = message(v);
        assert!(
            m.contains(
                "Value 'P97' at 'stoppingConditions.modelLatencyThresholds.1.member.percentile'"
            ) && m.contains("P50, P90, P95, P99"),
            "{m}"
        );
    }

    #[test]
    fn traffic_patterns_must_match_their_type_and_fit_the_job() {
        let mut v = advanced();
        v["InputConfig"]["TrafficPattern"] = json!({"TrafficType": "PHASES",
            "Stairs": {"DurationInSeconds": 30, "NumberOfSteps": 3, "UsersPerStep": 1}});
        let m = message(v);
        assert!(
            m.contains("takes Phases, not Stairs")
                && m.contains("'inputConfig.trafficPattern.phases'"),
            "{m}"
        );
        let mut v = advanced();
        v["InputConfig"]["TrafficPattern"] = json!({"TrafficType": "PHASES",
            "Phases": [{"InitialNumberOfUsers": 1, "DurationInSeconds": 120}]});
        v["InputConfig"]["JobDurationInSeconds"] = json!(60);
        let m = message(v);
        assert!(m.contains("phases.1.member.spawnRate"), "{m}");
        assert!(m.contains("the traffic lasts 120 s"), "{m}");
    }

    #[test]
    fn sweeps_name_serving_options_once() {
        let mut v = advanced();
        v["InputConfig"]["EndpointConfigurations"][0]["EnvironmentParameterRanges"] = json!({"CategoricalParameterRanges": [
                {"Name": "OPTION_QUANTIZE", "Value": ["int8"]},
                {"Name": "OPTION_QUANTIZE", "Value": ["fp8"]},
                {"Name": "OMP_NUM_THREADS", "Value": ["2"]}]});
        let m = message(v);
        assert!(m.contains("swept once"), "{m}");
        assert!(
            m.contains("Value 'OMP_NUM_THREADS'") && m.contains("OPTION_MAX_ROLLING_BATCH_SIZE"),
            "{m}"
        );
    }

    #[test]
    fn load_tests_belong_to_advanced_jobs_with_endpoints() {
        let mut v = advanced();
        v["JobType"] = json!("Default");
        let m = message(v);
        for member in [
            "inputConfig.trafficPattern",
            "inputConfig.resourceLimit",
            "stoppingConditions",
        ] {
            assert!(m.contains(&format!("'{member}'")), "{member}: {m}");
        }
        let mut v = advanced();
        v["InputConfig"]
            .as_object_mut()
            .unwrap()
            .remove("EndpointConfigurations");
        let m = message(v);
        assert!(m.contains("'inputConfig.endpointConfigurations'"), "{m}");
        let mut v = advanced();
        v["InputConfig"]["Endpoints"] = json!([{"EndpointName": "prod"}]);
        v["InputConfig"]["EndpointConfigurations"][0]["ServerlessConfig"] =
            json!({"MemorySizeInMB": 2048, "MaxConcurrency": 2});
        let m = message(v);
        assert!(
            m.contains("'inputConfig.endpoints'") && m.contains("serverlessConfig"),
            "{m}"
        );
    }
}
