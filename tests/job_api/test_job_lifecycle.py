"""Real jobs on SmolLM2-135M through the job API: from and to the local S3 server,
stopped, out of time, queued too long, deleted, across a server restart, with the
worker killed, on local roots, and once through the AWS CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import botocore
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY, create_request, wait_for_status, worker_pids
from shapes import check_response

TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}


def objects_under(s3, bucket: str, prefix: str) -> dict[str, dict]:
    try:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    except s3.exceptions.NoSuchBucket:
        return {}
    return {o["Key"][len(prefix):]: o for o in listing.get("Contents", [])}


def logs(server, name: str) -> str:
    out = subprocess.run(
        [str(server.bin_dir / "temper-server"), "logs", name, "--endpoint", server.url,
         "--credentials", str(server.creds)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_full_lifecycle_from_and_to_s3(server, s3):
    sm = server.client()
    req = create_request(
        "llama-fp8",
        OutputConfig={"S3OutputLocation": "s3://out/llama-fp8/", "KmsKeyId": "alias/temper-test"},
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    arn = sm.create_optimization_job(**req)["OptimizationJobArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:optimization-job/llama-fp8"
    d = wait_for_status(sm, "llama-fp8", TERMINAL)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    assert "INPROGRESS" in d["_seen"] and d["_seen"][-1] == "COMPLETED"
    d.pop("_seen")
    check_response("DescribeOptimizationJob", d)
    image = d["OptimizationOutput"]["RecommendedInferenceImage"]
    assert "djl-inference" in image and "lmi" in image
    assert "FailureReason" not in d

    out = objects_under(s3, "out", "llama-fp8/")
    for name in ("config.json", "model.safetensors", "manifest.json", "tokenizer.json"):
        assert name in out, sorted(out)
    manifest = json.loads(s3.get_object(Bucket="out", Key="llama-fp8/manifest.json")["Body"].read())
    assert manifest["recommended_image"] == image
    assert manifest["evaluation"]["measured"] is True
    # KmsKeyId reached S3 as SSE-KMS on every object written.
    for key in out:
        head = s3.head_object(Bucket="out", Key="llama-fp8/" + key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"].endswith("alias/temper-test"), head["SSEKMSKeyId"]

    text = logs(server, "llama-fp8")
    for phase in ("download", "quantize", "upload", "completed: s3://out/llama-fp8"):
        assert phase in text, text
    assert "llama-fp8: COMPLETED" in text

    sm.delete_optimization_job(OptimizationJobName="llama-fp8")
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.describe_optimization_job(OptimizationJobName="llama-fp8")
    # The artifact stays where it was sent.
    assert "manifest.json" in objects_under(s3, "out", "llama-fp8/")


def test_quantize_then_shard_in_one_job(server, s3):
    """temper lifts SageMaker's one-technique rule for sharding: FP8 then tensor-parallel 3
    in one job writes vLLM's per-rank files, and the manifest accounts for them."""
    sm = server.client()
    req = create_request(
        "fp8-tp3",
        OutputConfig={"S3OutputLocation": "s3://out/fp8-tp3/"},
        OptimizationConfigs=[
            {"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}},
            {"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "3"}}},
        ],
    )
    sm.create_optimization_job(**req)
    d = wait_for_status(sm, "fp8-tp3", TERMINAL)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    assert d["OptimizationConfigs"] == req["OptimizationConfigs"]
    out = objects_under(s3, "out", "fp8-tp3/")
    for name in [f"model-rank-{r}-part-0.safetensors" for r in range(3)] + [
        "config.json", "serving.properties", "manifest.json", "tokenizer.json"
    ]:
        assert name in out, sorted(out)
    assert "model.safetensors" not in out and not any(k.startswith(".pass-") for k in out), sorted(out)
    props = s3.get_object(Bucket="out", Key="fp8-tp3/serving.properties")["Body"].read().decode()
    assert "option.tensor_parallel_degree=3" in props and "option.load_format=sharded_state" in props, props
    manifest = json.loads(s3.get_object(Bucket="out", Key="fp8-tp3/manifest.json")["Body"].read())
    assert [p["name"] for p in manifest["passes"]] == ["quantize", "shard"]
    sharding = manifest["sharding"]
    assert sharding["tensor_parallel_degree"] == 3
    files = {f["path"]: f for r in sharding["ranks"] for f in r["files"]}
    for name, f in files.items():
        assert out[name]["Size"] == f["bytes"] and len(f["sha256"]) == 64, (name, f)


SHARD_TO = lambda degree: [  # noqa: E731
    {"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}},
    {"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": degree}}},
]


def test_tensor_parallel_degrees_refused_at_create(make_server):
    """A degree that cannot work is CreateOptimizationJob's ValidationException naming the
    option and the value: not a number, below 1, or (for a model the server can read, a
    local one) one SmolLM2's 9 attention heads do not split by."""
    model = Path(os.environ["TEMPER_SOURCE_MODEL"]).resolve()
    server = make_server("--local-root", str(model.parent))
    sm = server.client()
    for degree in ["0", "-2", "abc", "2"]:
        for source in ("s3://models/" + "smollm2/", f"file://{model}"):
            if degree == "2" and source.startswith("s3://"):
                continue  # an S3 model is read by its worker only: see the next test
            req = create_request(f"tp-{len(degree)}", ModelSource={"S3": {"S3Uri": source}},
                                 OptimizationConfigs=SHARD_TO(degree))
            with pytest.raises(botocore.exceptions.ClientError) as e:
                sm.create_optimization_job(**req)
            err = e.value.response["Error"]
            assert err["Code"] == "ValidationException", (degree, source, err)
            assert f"OPTION_TENSOR_PARALLEL_DEGREE={degree}" in err["Message"], (degree, source, err)
    assert sm.list_optimization_jobs()["OptimizationJobSummaries"] == []


def test_degree_the_s3_model_cannot_take_fails_its_job_naming_it(server):
    """The server reads no S3 (its workers do), so SmolLM2 from S3 with degree 2 is
    accepted at Create and fails in its worker, before any output is written, with the
    same message a local model gets at Create."""
    sm = server.client()
    sm.create_optimization_job(**create_request("s3-tp2", OptimizationConfigs=SHARD_TO("2")))
    d = wait_for_status(sm, "s3-tp2", TERMINAL)
    assert d["OptimizationJobStatus"] == "FAILED"
    assert "OPTION_TENSOR_PARALLEL_DEGREE=2" in d["FailureReason"], d["FailureReason"]


def test_stop_during_run_and_delete(server, s3):
    sm = server.client()
    sm.create_optimization_job(**create_request("to-stop"))
    wait_for_status(sm, "to-stop", {"INPROGRESS"}, timeout=60)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.delete_optimization_job(OptimizationJobName="to-stop")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "StopOptimizationJob" in e.value.response["Error"]["Message"]

    # Stop once the worker is past the download, in the pipeline itself.
    deadline = time.time() + 60
    while "quantize" not in logs(server, "to-stop") and time.time() < deadline:
        time.sleep(0.1)
    stopped_at = time.time()
    sm.stop_optimization_job(OptimizationJobName="to-stop")
    status = sm.describe_optimization_job(OptimizationJobName="to-stop")["OptimizationJobStatus"]
    assert status in ("STOPPING", "STOPPED")
    d = wait_for_status(sm, "to-stop", TERMINAL, timeout=60)
    assert d["OptimizationJobStatus"] == "STOPPED", d.get("FailureReason")
    # The worker handled SIGTERM itself (the server's SIGKILL comes after 10 s).
    assert time.time() - stopped_at < 8
    assert "stopped: no output was written" in logs(server, "to-stop")
    assert objects_under(s3, "out", "to-stop/") == {}
    assert worker_pids(server) == []
    # Stopping a stopped job changes nothing; deleting it now works.
    sm.stop_optimization_job(OptimizationJobName="to-stop")
    assert sm.describe_optimization_job(OptimizationJobName="to-stop")["OptimizationJobStatus"] == "STOPPED"
    sm.delete_optimization_job(OptimizationJobName="to-stop")


def test_max_runtime_expiry(server, s3):
    sm = server.client()
    sm.create_optimization_job(
        **create_request("too-slow", StoppingCondition={"MaxRuntimeInSeconds": 2})
    )
    d = wait_for_status(sm, "too-slow", TERMINAL, timeout=60)
    assert d["OptimizationJobStatus"] == "FAILED"
    assert "MaxRuntimeInSeconds (2 s)" in d["FailureReason"], d["FailureReason"]
    assert "stopped with SIGTERM" in d["FailureReason"], d["FailureReason"]
    assert objects_under(s3, "out", "too-slow/") == {}


def test_queued_job_waits_for_a_slot(server, s3):
    """One job runs at a time (--concurrent-jobs 1); the next waits in STARTING. The
    expiry of MaxPendingTimeInSeconds (at least 1800 s in the model, 7200 s in the installed botocore) is tested in
    crates/server/tests/supervisor.rs on a job created that long ago."""
    sm = server.client()
    sm.create_optimization_job(**create_request("first"))
    wait_for_status(sm, "first", {"INPROGRESS"}, timeout=60)
    sm.create_optimization_job(
        **create_request("queued", StoppingCondition={"MaxPendingTimeInSeconds": 7200})
    )
    time.sleep(1)
    d = sm.describe_optimization_job(OptimizationJobName="queued")
    assert d["OptimizationJobStatus"] == "STARTING"
    assert "OptimizationStartTime" not in d
    sm.stop_optimization_job(OptimizationJobName="first")
    wait_for_status(sm, "first", {"STOPPED"}, timeout=60)
    wait_for_status(sm, "queued", {"INPROGRESS"}, timeout=30)
    sm.stop_optimization_job(OptimizationJobName="queued")
    assert wait_for_status(sm, "queued", TERMINAL, timeout=60)["OptimizationJobStatus"] == "STOPPED"


def test_server_restart_mid_run(server, s3):
    sm = server.client()
    sm.create_optimization_job(**create_request("survivor"))
    sm.create_optimization_job(**create_request("waiting"))
    wait_for_status(sm, "survivor", {"INPROGRESS"}, timeout=60)
    server.kill(signal.SIGKILL)
    assert len(worker_pids(server)) == 1, "the worker outlives its server"
    server.start()
    sm = server.client()
    d = wait_for_status(sm, "survivor", TERMINAL)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    assert "adopted the running worker" in server.log.read_text()
    assert "manifest.json" in objects_under(s3, "out", "survivor/")
    # The queued job was kept and runs after the restart.
    d = wait_for_status(sm, "waiting", TERMINAL)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")


def test_worker_killed_with_sigkill(server, s3):
    sm = server.client()
    sm.create_optimization_job(**create_request("victim"))
    wait_for_status(sm, "victim", {"INPROGRESS"}, timeout=60)
    pids = worker_pids(server)
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    d = wait_for_status(sm, "victim", TERMINAL, timeout=30)
    assert d["OptimizationJobStatus"] == "FAILED"
    assert "SIGKILL" in d["FailureReason"] and f"pid {pids[0]}" in d["FailureReason"], d["FailureReason"]
    assert objects_under(s3, "out", "victim/") == {}


def test_worker_gone_while_server_down_is_failed_with_reason(server, s3):
    sm = server.client()
    sm.create_optimization_job(**create_request("orphan"))
    wait_for_status(sm, "orphan", {"INPROGRESS"}, timeout=60)
    server.kill(signal.SIGKILL)
    for pid in worker_pids(server):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    server.start()
    d = wait_for_status(server.client(), "orphan", TERMINAL, timeout=30)
    assert d["OptimizationJobStatus"] == "FAILED"
    assert "earlier run of the server" in d["FailureReason"], d["FailureReason"]


def test_local_roots(make_server, tmp_path):
    model = Path(os.environ["TEMPER_SOURCE_MODEL"]).resolve()
    out_root = tmp_path / "outputs"
    out_root.mkdir()
    server = make_server("--local-root", str(model.parent), "--local-root", str(out_root))
    sm = server.client()
    local = lambda name, **kw: create_request(  # noqa: E731
        name,
        ModelSource={"S3": {"S3Uri": f"file://{model}"}},
        OutputConfig={"S3OutputLocation": f"file://{out_root}/{name}", **kw},
    )
    for bad, why in (
        (create_request("outside", ModelSource={"S3": {"S3Uri": "file:///etc/ssl"}}), "outside"),
        (local("escape", S3OutputLocation=f"file://{out_root}/../escape"), "absolute"),
        (local("kms-local", KmsKeyId="alias/k"), "KmsKeyId"),
        (
            create_request(
                "calib-outside",
                OptimizationEnvironment={"OPTION_CALIB_DATA": "/etc/passwd"},
            ),
            "OPTION_CALIB_DATA",
        ),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sm.create_optimization_job(**bad)
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert why in e.value.response["Error"]["Message"], e.value.response["Error"]["Message"]

    sm.create_optimization_job(**local("local-int8", S3OutputLocation=f"file://{out_root}/int8"))
    d = wait_for_status(sm, "local-int8", TERMINAL)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    assert (out_root / "int8" / "manifest.json").is_file()


def test_aws_cli(server, tmp_path):
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "none"),
    )

    def aws(*args: str) -> dict:
        out = subprocess.run(
            # `python -m awscli` is the `aws` command, found without relying on PATH
            # (a fresh pyenv has no shim for it until a rehash).
            [sys.executable, "-m", "awscli", "sagemaker", *args, "--endpoint-url", server.url, "--output", "json"],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    request = create_request("from-cli", ModelSource={"S3": {"S3Uri": "s3://models/nothing-here/"}})
    doc = tmp_path / "job.json"
    doc.write_text(json.dumps(request))
    created = aws("create-optimization-job", "--cli-input-json", f"file://{doc}")
    assert created["OptimizationJobArn"].endswith(":optimization-job/from-cli")
    deadline = time.time() + 30
    while time.time() < deadline:
        d = aws("describe-optimization-job", "--optimization-job-name", "from-cli")
        if d["OptimizationJobStatus"] in TERMINAL:
            break
        time.sleep(0.2)
    assert d["OptimizationJobStatus"] == "FAILED"
    assert "no objects under s3://models/nothing-here" in d["FailureReason"]
    listed = aws("list-optimization-jobs", "--name-contains", "cli")
    assert [j["OptimizationJobName"] for j in listed["OptimizationJobSummaries"]] == ["from-cli"]
