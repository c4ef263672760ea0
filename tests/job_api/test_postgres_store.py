"""The job API on a PostgreSQL store (`temper-server --store postgres://...`): a real job
through boto3, the store surviving a server restart, and the refusals (a second server on
the same database, a URL that is wrong)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from conftest import create_request, wait_for_status


def test_jobs_live_in_postgres_across_restarts(make_server, database, tmp_path):
    server = make_server("--store", database)
    sm = server.client()
    sm.create_optimization_job(**create_request("pg-fp8"))
    d = wait_for_status(sm, "pg-fp8", {"COMPLETED", "FAILED", "STOPPED"}, timeout=300)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    # The rows are PostgreSQL's, not a file of the data directory.
    assert not (server.data_dir / "jobs.sqlite3").exists()
    rows = subprocess.run(
        ["psql", database, "-tAc", "SELECT kind, name, status FROM jobs"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert rows == ["optimization|pg-fp8|COMPLETED"], rows

    # A second server on the same database is refused while the first runs its jobs.
    second = tmp_path / "second"
    out = subprocess.run(
        [str(server.bin_dir / "temper-server"), "--listen", "127.0.0.1:0",
         "--data-dir", str(second), "--no-auth", "--store", database],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "are run by another temper-server or by worker agents" in out.stderr, out.stderr

    server.kill()
    server.start()
    sm = server.client()
    d = sm.describe_optimization_job(OptimizationJobName="pg-fp8")
    assert d["OptimizationJobStatus"] == "COMPLETED"
    listed = sm.list_optimization_jobs()["OptimizationJobSummaries"]
    assert [j["OptimizationJobName"] for j in listed] == ["pg-fp8"]
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.create_optimization_job(**create_request("pg-fp8"))


def test_two_servers_answer_from_one_database(make_server, database):
    runner = make_server("--store", database)
    api = make_server("--store", database, "--api-only")
    sm_runner, sm_api = runner.client(), api.client()
    names = [f"shared-{i}" for i in range(4)]
    for i, name in enumerate(names):
        (sm_api if i % 2 == 0 else sm_runner).create_optimization_job(**create_request(name))
    for name in names:
        # Created through either server, run by the runner, described by both alike.
        d = wait_for_status(sm_api, name, {"COMPLETED", "FAILED", "STOPPED"}, timeout=300)
        assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
        other = sm_runner.describe_optimization_job(OptimizationJobName=name)
        assert other["OptimizationJobArn"] == d["OptimizationJobArn"]
        assert other["LastModifiedTime"] == d["LastModifiedTime"]
    # Every job ran exactly once, on the runner; the API-only server ran none.
    logs = sorted((runner.data_dir / "jobs").glob("*/worker.log"))
    assert len(logs) == len(names)
    for log in logs:
        assert log.read_text().count("completed: s3://out/") == 1, log
    assert not list((api.data_dir / "jobs").glob("*/worker.log"))

    # The same name created through both servers at once: exactly one wins.
    outcomes = []

    def create(sm):
        try:
            sm.create_optimization_job(**create_request("raced"))
            outcomes.append("created")
        except sm.exceptions.ResourceInUse:
            outcomes.append("in use")

    threads = [threading.Thread(target=create, args=(sm,)) for sm in (sm_api, sm_runner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created", "in use"], outcomes

    # A listing started on one server goes on on the other: no job repeated or skipped.
    first = sm_api.list_optimization_jobs(MaxResults=3, SortBy="Name")
    rest = sm_runner.list_optimization_jobs(
        MaxResults=3, SortBy="Name", NextToken=first["NextToken"]
    )
    listed = [j["OptimizationJobName"] for j in first["OptimizationJobSummaries"]] + [
        j["OptimizationJobName"] for j in rest["OptimizationJobSummaries"]
    ]
    assert listed == sorted(names + ["raced"]), listed

    # Logs live with the runner; the API-only server says so.
    with pytest.raises(Exception) as e:
        subprocess.run(
            [str(api.bin_dir / "temper-server"), "logs", "shared-0", "--endpoint", api.url,
             "--credentials", str(api.creds)],
            capture_output=True, text=True, timeout=60, check=True,
        )
    assert "--api-only" in e.value.stderr, e.value.stderr
    sm_runner.stop_optimization_job(OptimizationJobName="raced")
    wait_for_status(sm_api, "raced", {"STOPPED", "COMPLETED"}, timeout=120)
    # One server killed: the other keeps answering.
    runner.kill(signal.SIGKILL)
    d = sm_api.describe_optimization_job(OptimizationJobName="shared-3")
    assert d["OptimizationJobStatus"] == "COMPLETED"


def test_bad_store_urls_are_refused_at_start(bin_dir, tmp_path):
    def start(url: str) -> str:
        out = subprocess.run(
            [str(bin_dir / "temper-server"), "--listen", "127.0.0.1:0",
             "--data-dir", str(tmp_path / "d"), "--no-auth", "--store", url],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0
        return out.stderr

    err = start("mysql://db/jobs")
    assert "give a PostgreSQL URL" in err, err
    out = subprocess.run(
        [str(bin_dir / "temper-server"), "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "d"), "--no-auth", "--api-only"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "--api-only" in out.stderr and "--store" in out.stderr, out.stderr
    t = time.time()
    err = start("postgres://temper:hunter2@127.0.0.1:1/jobs")
    assert "127.0.0.1:1" in err and "check the URL" in err and "hunter2" not in err, err
    assert time.time() - t < 30
