"""Compilation (ModelCompilationConfig) through the real client: an FP8 TensorRT-LLM
checkpoint for a GPU instance and the Neuron settings for an inf2 instance, written to S3 by
the worker; the other engine's options refused at Create."""

from __future__ import annotations

import json

import botocore.exceptions
import pytest

from conftest import create_request, wait_for_status

TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}


def keys(s3, prefix: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket="out", Prefix=prefix).get("Contents", [])}


def text(s3, key: str) -> str:
    return s3.get_object(Bucket="out", Key=key)["Body"].read().decode()


def test_fp8_then_tensorrt_llm_checkpoint(server, s3):
    sm = server.client()
    req = create_request(
        "trt",
        OptimizationConfigs=[
            {"ModelQuantizationConfig": {"OverrideEnvironment": {
                "OPTION_QUANTIZE": "fp8", "OPTION_FP8_SCHEME": "FP8"}}},
            {"ModelCompilationConfig": {"OverrideEnvironment": {
                "OPTION_MAX_INPUT_LEN": "512", "OPTION_MAX_OUTPUT_LEN": "256",
                "OPTION_MAX_ROLLING_BATCH_SIZE": "16"}}},
        ],
        OptimizationEnvironment={"OPTION_EVAL": "false"},
    )
    sm.create_optimization_job(**req)
    d = wait_for_status(sm, "trt", TERMINAL, timeout=600)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    got = keys(s3, "trt/")
    for name in ["config.json", "rank0.safetensors", "rank1.safetensors", "rank2.safetensors",
                 "trtllm-build.json", "serving.properties", "manifest.json", "tokenizer.json"]:
        assert f"trt/{name}" in got, sorted(got)
    assert not any(k.endswith("model.safetensors") for k in got), "no unsplit weights"
    cfg = json.loads(text(s3, "trt/config.json"))
    assert cfg["quantization"]["quant_algo"] == "FP8" and cfg["mapping"]["tp_size"] == 3
    build = json.loads(text(s3, "trt/trtllm-build.json"))
    assert (build["max_input_len"], build["max_seq_len"], build["max_batch_size"]) == (512, 768, 16)
    assert "--use_fp8_context_fmha" in build["command"]  # L4 is sm_89
    props = text(s3, "trt/serving.properties")
    for line in ["option.rolling_batch=trtllm", "option.tensor_parallel_degree=3",
                 "option.max_seq_len=768", "option.max_rolling_batch_size=16"]:
        assert line in props, props
    m = json.loads(text(s3, "trt/manifest.json"))
    assert [p["name"] for p in m["passes"]] == ["quantize", "compile"]
    assert "tensorrtllm" in m["recommended_image"]


def test_neuron_settings_for_inf2(server, s3):
    sm = server.client()
    req = create_request(
        "neuron",
        DeploymentInstanceType="ml.inf2.xlarge",
        OptimizationConfigs=[{"ModelCompilationConfig": {"OverrideEnvironment": {
            "OPTION_TENSOR_PARALLEL_DEGREE": "2", "OPTION_N_POSITIONS": "1024",
            "OPTION_DTYPE": "bf16"}}}],
    )
    sm.create_optimization_job(**req)
    d = wait_for_status(sm, "neuron", TERMINAL, timeout=300)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    props = text(s3, "neuron/serving.properties")
    for line in ["option.tensor_parallel_degree=2", "option.n_positions=1024", "option.dtype=bf16"]:
        assert line in props, props
    settings = json.loads(text(s3, "neuron/neuron-compile.json"))
    assert settings["neuron_cores"] == 2 and "neuronx-cc" in settings["neff"]
    assert "neuronx" in json.loads(text(s3, "neuron/manifest.json"))["recommended_image"]


@pytest.mark.parametrize("instance,env,needle", [
    ("ml.g6.xlarge", {"OPTION_N_POSITIONS": "512"}, "OPTION_N_POSITIONS is a Neuron compilation option"),
    ("ml.inf2.xlarge", {"OPTION_MAX_INPUT_LEN": "512"}, "OPTION_MAX_INPUT_LEN is a TensorRT-LLM"),
    ("ml.g6.xlarge", {"OPTION_MAX_NUM_TOKENS": "many"}, "OPTION_MAX_NUM_TOKENS=many"),
])
def test_the_wrong_engines_options_are_refused_at_create(server, instance, env, needle):
    sm = server.client()
    req = create_request("bad-compile", DeploymentInstanceType=instance,
                         OptimizationConfigs=[{"ModelCompilationConfig": {"OverrideEnvironment": env}}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_optimization_job(**req)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert needle in e.value.response["Error"]["Message"]
