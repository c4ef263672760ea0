"""The job API on a PostgreSQL store (`temper-server --store postgres://...`): a real job
through boto3, the store surviving a server restart, and the refusals (a second server on
the same database, a URL that is wrong)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from conftest import create_request, wait_for_status


@pytest.fixture
def database() -> str:
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
    assert "another temper-server runs the jobs of" in out.stderr, out.stderr

    server.kill()
    server.start()
    sm = server.client()
    d = sm.describe_optimization_job(OptimizationJobName="pg-fp8")
    assert d["OptimizationJobStatus"] == "COMPLETED"
    listed = sm.list_optimization_jobs()["OptimizationJobSummaries"]
    assert [j["OptimizationJobName"] for j in listed] == ["pg-fp8"]
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.create_optimization_job(**create_request("pg-fp8"))


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
    t = time.time()
    err = start("postgres://temper:hunter2@127.0.0.1:1/jobs")
    assert "127.0.0.1:1" in err and "check the URL" in err and "hunter2" not in err, err
    assert time.time() - t < 30
