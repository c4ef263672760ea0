"""Fixtures of the job-API contract tests: a real S3 server (moto in server mode) and
real temper-server processes on loopback, driven with the real boto3 client.

Environment (scripts/test.sh sets both):
  TEMPER_BIN_DIR       directory holding the temper-server and temper-worker binaries
  TEMPER_SOURCE_MODEL  the SmolLM2-135M Hugging Face directory to optimize
Missing ones FAIL the tests: a contract test that silently skips proves nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))

ACCESS_KEY = "AKIDTEMPERTEST"
SECRET_KEY = "temper-test-secret"
REGION = "us-east-1"
S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
ROLE = "arn:aws:iam::123456789012:role/TemperTest"
MODEL_PREFIX = "smollm2/"


def _env_path(var: str) -> Path:
    value = os.environ.get(var)
    if not value or not Path(value).exists():
        pytest.fail(
            f"{var}={value!r} is not set or does not exist; run scripts/test.sh, or build "
            "with `cargo build --release -p temper-server -p temper-worker` and set TEMPER_BIN_DIR=target/release "
            "and TEMPER_SOURCE_MODEL=.cache/models/smollm2-135m-instruct",
            pytrace=False,
        )
    return Path(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return _env_path("TEMPER_BIN_DIR")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on loopback, with the model under s3://models/smollm2/."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port(port, proc, log, "moto server")
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name=REGION, **S3_KEYS)
    s3.create_bucket(Bucket="models")
    s3.create_bucket(Bucket="out")
    model = _env_path("TEMPER_SOURCE_MODEL")
    for f in sorted(model.iterdir()):
        if f.is_file():
            s3.upload_file(str(f), "models", MODEL_PREFIX + f.name)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def s3(s3_server):
    return boto3.client("s3", endpoint_url=s3_server, region_name=REGION, **S3_KEYS)


class Server:
    """One temper-server process; restartable on the same data directory."""

    def __init__(self, bin_dir: Path, workdir: Path, s3_url: str, extra: list[str]):
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.creds = workdir / "credentials"
        workdir.mkdir(parents=True, exist_ok=True)
        self.creds.write_text(
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        self.s3_url = s3_url
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        cmd = [
            str(self.bin_dir / "temper-server"),
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir),
            "--credentials", str(self.creds),
            "--s3-endpoint", self.s3_url,
            "--s3-region", REGION,
            "--stop-grace-secs", "10",
            *self.extra,
        ]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.port, self.proc, self.log, "temper-server")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def client(self, **config) -> "boto3.client":
        return sagemaker(self.url, **config)

    def stop_all_jobs(self) -> None:
        """Leaves no worker behind: workers outlive the server by design."""
        if self.proc is None or self.proc.poll() is not None:
            return
        sm = self.client()
        for page in sm.get_paginator("list_optimization_jobs").paginate():
            for job in page["OptimizationJobSummaries"]:
                if job["OptimizationJobStatus"] in ("STARTING", "INPROGRESS"):
                    sm.stop_optimization_job(OptimizationJobName=job["OptimizationJobName"])
        for page in sm.get_paginator("list_inference_recommendations_jobs").paginate():
            for job in page["InferenceRecommendationsJobs"]:
                if job["Status"] in ("PENDING", "IN_PROGRESS"):
                    sm.stop_inference_recommendations_job(JobName=job["JobName"])
        deadline = time.time() + 30
        while time.time() < deadline and (
            any(
                j["OptimizationJobStatus"] in ("STARTING", "INPROGRESS", "STOPPING")
                for j in sm.list_optimization_jobs(MaxResults=100)["OptimizationJobSummaries"]
            )
            or any(
                j["Status"] in ("PENDING", "IN_PROGRESS", "STOPPING")
                for j in sm.list_inference_recommendations_jobs(MaxResults=100)[
                    "InferenceRecommendationsJobs"
                ]
            )
        ):
            time.sleep(0.2)


def sagemaker(url: str, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **config):
    return boto3.client(
        "sagemaker",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture
def make_server(bin_dir, s3_server, tmp_path):
    servers: list[Server] = []

    def make(*extra: str) -> Server:
        server = Server(bin_dir, tmp_path / f"server{len(servers)}", s3_server, list(extra))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        try:
            server.stop_all_jobs()
        finally:
            if server.proc and server.proc.poll() is None:
                server.kill(signal.SIGTERM)
            # Workers outlive their server by design; a test that failed half-way must
            # not leave one running into the next test.
            for pid in worker_pids(server):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def worker_pids(server: "Server") -> list[int]:
    """The live temper-worker processes of a server's data directory."""
    return live_workers(server.data_dir.resolve())


def live_workers(under: Path, job_dir_only: bool = False) -> list[int]:
    """The live temper-worker processes whose arguments name a path under `under`
    (with `job_dir_only`, only those running a job: `--job-dir`, not an agent)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if (
            state not in "ZX"
            and argv
            and argv[0].endswith(b"temper-worker")
            and (not job_dir_only or b"--job-dir" in argv)
            and any(str(under).encode() in a for a in argv)
        ):
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def database() -> str:
    """A PostgreSQL database of its own on the test server (TEMPER_TEST_POSTGRES)."""
    base = os.environ.get("TEMPER_TEST_POSTGRES")
    if not base:
        pytest.fail(
            "TEMPER_TEST_POSTGRES is not set: run scripts/test.sh, or start a server with "
            "`url=$(bash scripts/postgres.sh start /tmp/temper-pg)` and set it to $url",
            pytrace=False,
        )
    name = "temper_api_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", base, "-qc", f"CREATE DATABASE {name}"], check=True)
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


def create_request(name: str, **overrides) -> dict:
    """A CreateOptimizationJob request for the model in the local S3 server."""
    req = {
        "OptimizationJobName": name,
        "RoleArn": ROLE,
        "ModelSource": {"S3": {"S3Uri": "s3://models/" + MODEL_PREFIX}},
        "DeploymentInstanceType": "ml.g6.12xlarge",
        "OptimizationConfigs": [
            {"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}
        ],
        "OutputConfig": {"S3OutputLocation": f"s3://out/{name}/"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    req.update(overrides)
    return req


def wait_for_status(sm, name: str, statuses: set[str], timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        d = sm.describe_optimization_job(OptimizationJobName=name)
        status = d["OptimizationJobStatus"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in statuses:
            d["_seen"] = seen
            return d
        time.sleep(0.1)
    pytest.fail(f"job {name} did not reach {statuses} in {timeout} s; statuses seen: {seen}")
