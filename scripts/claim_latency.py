"""Claim latency of worker agents: how long a queued job waits before an agent runs it.

Starts an API-only temper-server and AGENTS worker agents (one slot each) on the
PostgreSQL database given, creates JOBS jobs of a 5 MB model at once through boto3, and
reports queued-to-running time (StartTime - CreationTime) p50/p99/max and the jobs finished
per second; then SPACED jobs one at a time, each created once the last has finished, whose
wait is the claim alone (an agent is free). Used by scripts/bench-scale-out.sh; the numbers are in BENCHMARKS.md.

    python3 scripts/claim_latency.py DATABASE_URL BIN_DIR [--jobs 100] [--agents 3] [--poll-ms 1000]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("database")
    p.add_argument("bin_dir", type=Path)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--poll-ms", type=int, default=1000)
    p.add_argument("--spaced", type=int, default=20)
    a = p.parse_args()
    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="temper-claims-"))
    model = work / "model"
    subprocess.run([sys.executable, str(root / "tests/python/make_aligned_model.py"), str(model)],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(a.bin_dir / "temper-server"), "--listen", f"127.0.0.1:{port}", "--no-auth",
             "--data-dir", str(work / "server"), "--store", a.database, "--api-only",
             "--local-root", str(work)],
            stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w")))
        for i in range(a.agents):
            procs.append(subprocess.Popen(
                [str(a.bin_dir / "temper-worker"), "--join", a.database, "--name", f"agent{i}",
                 "--data-dir", str(work / f"agent{i}"), "--local-root", str(work),
                 "--poll-ms", str(a.poll_ms), "--lease-secs", "15"],
                stdout=subprocess.DEVNULL, stderr=open(work / f"agent{i}.log", "w")))
        deadline = time.time() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.time() < deadline, (work / "server.log").read_text()
            time.sleep(0.05)
        sm = boto3.client("sagemaker", endpoint_url=f"http://127.0.0.1:{port}",
                          region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
        def create(name):
            sm.create_optimization_job(
                OptimizationJobName=name, RoleArn="arn:aws:iam::123456789012:role/r",
                ModelSource={"S3": {"S3Uri": str(model)}},
                DeploymentInstanceType="ml.g6.12xlarge",
                OptimizationConfigs=[{"ModelQuantizationConfig": {
                    "OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}],
                OutputConfig={"S3OutputLocation": str(work / "out" / name)},
                StoppingCondition={"MaxRuntimeInSeconds": 3600})

        def pct(waits, q):
            return waits[min(len(waits) - 1, int(q * len(waits)))] * 1000

        names = [f"claim-{i:04d}" for i in range(a.jobs)]
        started = time.time()
        for name in names:
            create(name)
        while True:
            done = [sm.describe_optimization_job(OptimizationJobName=n) for n in names]
            if all(d["OptimizationJobStatus"] in ("COMPLETED", "FAILED", "STOPPED") for d in done):
                break
            time.sleep(0.5)
        wall = time.time() - started
        bad = [d["OptimizationJobName"] for d in done if d["OptimizationJobStatus"] != "COMPLETED"]
        assert not bad, (bad[:3], done[0].get("FailureReason"))
        waits = sorted((d["OptimizationStartTime"] - d["CreationTime"]).total_seconds()
                       for d in done)
        print(f"{a.jobs} jobs, {a.agents} agents x 1 slot, poll {a.poll_ms} ms: all COMPLETED in "
              f"{wall:.1f} s ({a.jobs / wall:.1f} jobs/s)")
        print(f"  queued -> running: p50 {pct(waits, 0.5):.0f} ms, p99 {pct(waits, 0.99):.0f} ms, "
              f"max {waits[-1] * 1000:.0f} ms (includes the wait for a free slot)")
        spaced = []
        for i in range(a.spaced):
            name = f"spaced-{i:04d}"
            create(name)
            while True:
                d = sm.describe_optimization_job(OptimizationJobName=name)
                if d["OptimizationJobStatus"] in ("COMPLETED", "FAILED", "STOPPED"):
                    break
                time.sleep(0.05)
            assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
            spaced.append((d["OptimizationStartTime"] - d["CreationTime"]).total_seconds())
        spaced.sort()
        print(f"  {a.spaced} jobs one at a time (an agent free): queued -> running p50 "
              f"{pct(spaced, 0.5):.0f} ms, p99 {pct(spaced, 0.99):.0f} ms")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
