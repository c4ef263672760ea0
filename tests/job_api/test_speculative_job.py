"""An EAGLE speculative-decoding job through the real client: training data given as a
SageMaker ManifestFile in S3 (the worker downloads the manifest's keys), options in the job's
OptimizationEnvironment, and the artifact in S3 with the head, its serving configuration and
the measurements."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import create_request, wait_for_status

TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}
SHAREGPT = Path(__file__).resolve().parents[2] / ".cache/assets/ShareGPT_V3_unfiltered_cleaned_split.json"


def first_conversations(n: int) -> list[dict]:
    """The first `n` usable ShareGPT records, as OpenAI chat lines (read record by record:
    the public file is truncated)."""
    decoder = json.JSONDecoder()
    text = SHAREGPT.read_text(encoding="utf-8")
    at = text.index("[") + 1
    out = []
    while len(out) < n:
        while text[at] in " \n\r\t,":
            at += 1
        record, at = decoder.raw_decode(text, at)
        turns = record.get("conversations") or []
        roles = {"human": "user", "gpt": "assistant"}
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in turns if t["from"] in roles]
        if len(messages) >= 2 and messages[0]["role"] == "user" and len(messages[0]["content"]) < 600:
            out.append({"messages": messages[:2]})
    return out


def data_bucket(s3) -> None:
    if "data" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket="data")


def test_eagle_job_with_a_manifest_file_in_s3(server, s3):
    data_bucket(s3)
    lines = "".join(json.dumps(c) + "\n" for c in first_conversations(24))
    s3.put_object(Bucket="data", Key="eagle/part-0.jsonl", Body=lines.encode())
    manifest = [{"prefix": "s3://data/eagle/"}, "part-0.jsonl"]
    s3.put_object(Bucket="data", Key="eagle.manifest", Body=json.dumps(manifest).encode())
    sm = server.client()
    req = create_request(
        "eagle",
        DeploymentInstanceType="ml.g6.xlarge",
        OptimizationConfigs=[
            {
                "ModelSpeculativeDecodingConfig": {
                    "Technique": "EAGLE",
                    "TrainingDataSource": {"S3Uri": "s3://data/eagle.manifest", "S3DataType": "ManifestFile"},
                }
            }
        ],
        OptimizationEnvironment={
            "OPTION_EAGLE_STEPS": "2",
            "OPTION_EAGLE_HELD_OUT": "3",
            "OPTION_EAGLE_EVAL_PROMPTS": "1",
            "OPTION_EAGLE_DRAFT_VOCAB_SIZE": "512",
            "OPTION_MAX_MODEL_LEN": "256",
        },
    )
    sm.create_optimization_job(**req)
    d = wait_for_status(sm, "eagle", TERMINAL, timeout=900)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="out", Prefix="eagle/").get("Contents", [])}
    for name in ["speculative/config.json", "speculative/model.safetensors", "model.safetensors",
                 "serving.properties", "manifest.json"]:
        assert f"eagle/{name}" in keys, sorted(keys)
    props = s3.get_object(Bucket="out", Key="eagle/serving.properties")["Body"].read().decode()
    assert 'option.speculative_config={"method":"eagle3"' in props, props
    m = json.loads(s3.get_object(Bucket="out", Key="eagle/manifest.json")["Body"].read())
    spec = m["speculative_decoding"]
    assert spec["training"]["steps_done"] == 2
    assert spec["data"]["source"]["data_type"] == "S3Prefix"  # the worker's local copy
    assert any(f.endswith("part-0.jsonl") for f in spec["data"]["files"]), spec["data"]
    data = spec["data"]
    assert data["conversations_read"] == 24, data
    assert data["samples"] + data["dropped_too_long"] + data["dropped_no_assistant"] == 24, data
    assert data["samples"] >= 4, data
    assert spec["measurement"]["results"][0]["identical_outputs"] == 1


def test_a_manifest_naming_a_missing_key_fails_the_job_naming_it(server, s3):
    data_bucket(s3)
    s3.put_object(Bucket="data", Key="bad.manifest",
                  Body=json.dumps([{"prefix": "s3://data/none/"}, "absent.jsonl"]).encode())
    sm = server.client()
    req = create_request(
        "eagle-bad",
        DeploymentInstanceType="ml.g6.xlarge",
        OptimizationConfigs=[
            {
                "ModelSpeculativeDecodingConfig": {
                    "Technique": "EAGLE",
                    "TrainingDataSource": {"S3Uri": "s3://data/bad.manifest", "S3DataType": "ManifestFile"},
                }
            }
        ],
    )
    sm.create_optimization_job(**req)
    d = wait_for_status(sm, "eagle-bad", TERMINAL, timeout=300)
    assert d["OptimizationJobStatus"] == "FAILED"
    assert "absent.jsonl" in d["FailureReason"], d["FailureReason"]
