"""Scale-out: API-only servers and worker agents (`temper-worker --join`) on one PostgreSQL,
each a separate process on loopback, driven through boto3.

- 100 jobs created through two servers run exactly once each on three agents;
- an agent SIGKILLed mid-job: its job ends FAILED within the lease, naming the agent and its
  host (or is run again once when it asks), and its worker dies with it;
- PostgreSQL restarted mid-run: servers and agents reconnect, every job ends COMPLETED;
- capacity: a job no agent can run waits, saying why in Describe; bad agent settings are
  refused, saying what to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REGION, create_request, live_workers, wait_for_status

FINISHED = {"COMPLETED", "FAILED", "STOPPED"}
TINY_PREFIX = "tiny/"


def psql(database: str, sql: str) -> list[str]:
    out = subprocess.run(
        ["psql", database, "-tAc", sql], check=True, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if line]


@pytest.fixture(scope="session")
def tiny_model(s3_server, tmp_path_factory) -> str:
    """A 5 MB Llama with random weights under s3://models/tiny/: a job of it takes well under
    a second, so that 100 of them test the scheduling, not the quantizer."""
    import boto3

    from conftest import S3_KEYS

    out = tmp_path_factory.mktemp("tiny") / "model"
    here = Path(__file__).resolve().parent
    subprocess.run(
        [sys.executable, str(here.parent / "python" / "make_aligned_model.py"), str(out)],
        check=True, capture_output=True,
    )
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name=REGION, **S3_KEYS)
    for f in sorted(out.iterdir()):
        s3.upload_file(str(f), "models", TINY_PREFIX + f.name)
    return "s3://models/" + TINY_PREFIX


class Agent:
    """One `temper-worker --join` process."""

    def __init__(self, bin_dir: Path, workdir: Path, database: str, s3_url: str, name: str,
                 extra: list[str]):
        self.bin_dir, self.workdir, self.database = bin_dir, workdir, database
        self.s3_url, self.name, self.extra = s3_url, name, extra
        self.data_dir = workdir / "data"
        self.log = workdir / "agent.log"
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "temper-worker"), "--join", self.database,
            "--name", self.name, "--data-dir", str(self.data_dir),
            "--s3-endpoint", self.s3_url, "--s3-region", REGION,
            "--stop-grace-secs", "5", *self.extra,
        ]

    def start(self) -> None:
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         env=env)
        deadline = time.time() + 30
        while "joined" not in self.log.read_text():
            if self.proc.poll() is not None:
                pytest.fail(f"agent {self.name} exited:\n{self.log.read_text()}")
            if time.time() > deadline:
                pytest.fail(f"agent {self.name} did not join:\n{self.log.read_text()}")
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def worker_logs(self) -> list[Path]:
        return sorted((self.data_dir / "jobs").glob("*/worker.log"))

    def live_workers(self) -> list[int]:
        """Its temper-worker --job-dir processes still running."""
        return live_workers(self.data_dir, job_dir_only=True)


@pytest.fixture
def make_agent(bin_dir, s3_server, tmp_path):
    agents: list[Agent] = []

    def make(database: str, *extra: str, name: str | None = None) -> Agent:
        name = name or f"agent{len(agents)}"
        agent = Agent(bin_dir, tmp_path / name, database, s3_server, name, list(extra))
        agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if agent.proc and agent.proc.poll() is None:
            agent.kill()


def wait_all(sm, names: list[str], timeout: float) -> dict[str, dict]:
    """Polls List (one call for every job) until each named job has finished."""
    deadline = time.time() + timeout
    while True:
        jobs = {}
        for page in sm.get_paginator("list_optimization_jobs").paginate():
            for j in page["OptimizationJobSummaries"]:
                jobs[j["OptimizationJobName"]] = j
        pending = [n for n in names if jobs.get(n, {}).get("OptimizationJobStatus") not in FINISHED]
        if not pending:
            return jobs
        if time.time() > deadline:
            pytest.fail(f"{len(pending)} jobs unfinished after {timeout} s, e.g. "
                        f"{[(n, jobs.get(n, {}).get('OptimizationJobStatus')) for n in pending[:5]]}")
        time.sleep(0.5)


def run_logs(server, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(server.bin_dir / "temper-server"), "logs", name, "--endpoint", server.url,
         "--credentials", str(server.creds)],
        capture_output=True, text=True, timeout=60,
    )


def test_hundred_jobs_through_two_servers_run_once_each_on_three_agents(
    make_server, make_agent, database, tiny_model
):
    first = make_server("--store", database, "--api-only")
    second = make_server("--store", database, "--api-only")
    agents = [make_agent(database, "--slots", "1", "--poll-ms", "200") for _ in range(3)]
    clients = [first.client(), second.client()]
    names = [f"many-{i:03d}" for i in range(100)]

    def create(i: int) -> None:
        clients[i % 2].create_optimization_job(
            **create_request(names[i], ModelSource={"S3": {"S3Uri": tiny_model}})
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(len(names))))
    jobs = wait_all(clients[0], names, timeout=600)
    failed = {n: clients[0].describe_optimization_job(OptimizationJobName=n).get("FailureReason")
              for n in names if jobs[n]["OptimizationJobStatus"] != "COMPLETED"}
    assert not failed, failed

    # Exactly once: one claim each, one worker log each, one completion in it.
    assert psql(database, "SELECT DISTINCT attempt FROM jobs") == ["1"]
    logs = [log for agent in agents for log in agent.worker_logs()]
    assert len(logs) == 100, [str(p) for p in logs]
    for log in logs:
        assert log.read_text().count("completed: s3://out/") == 1, log
    # All three agents took part (claims are oldest first, SKIP LOCKED, as slots free up).
    per_agent = dict(line.split("|") for line in psql(
        database, "SELECT agent, count(*) FROM jobs GROUP BY agent"))
    assert sorted(per_agent) == ["agent0", "agent1", "agent2"], per_agent

    # Log and progress through either server, whichever agent ran the job.
    for server in (first, second):
        out = run_logs(server, "many-007")
        assert out.returncode == 0, out.stderr
        assert "completed: s3://out/many-007\n" in out.stdout, out.stdout
        ran_on = psql(database, "SELECT agent FROM jobs WHERE name = 'many-007'")[0]
        assert f"run by worker agent {ran_on} on " in out.stderr, out.stderr

    # The agents, as any server lists them.
    out = subprocess.run(
        [str(second.bin_dir / "temper-server"), "agents", "--endpoint", second.url,
         "--credentials", str(second.creds)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["agent0", "agent1", "agent2"], out.stdout
    assert all(": live, 0 of 1 slot(s) busy, any instance type" in line for line in lines), lines

    # One server killed: the other keeps answering, the agents keep running jobs.
    first.kill(signal.SIGKILL)
    clients[1].create_optimization_job(
        **create_request("after-kill", ModelSource={"S3": {"S3Uri": tiny_model}})
    )
    d = wait_for_status(clients[1], "after-kill", FINISHED, timeout=120)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")


def running_on(database: str, name: str, timeout: float = 120) -> str:
    """Waits until a job runs, and names the agent holding it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = psql(database, f"SELECT status, agent FROM jobs WHERE name = '{name}'")
        if rows and rows[0].startswith("INPROGRESS|"):
            return rows[0].split("|")[1]
        time.sleep(0.05)
    pytest.fail(f"{name} did not start within {timeout} s")


def test_a_killed_agent_loses_its_job_within_the_lease(make_server, make_agent, database):
    server = make_server("--store", database, "--api-only")
    sm = server.client()
    lease = ["--lease-secs", "3", "--poll-ms", "200"]
    agents = {a.name: a for a in (make_agent(database, *lease) for _ in range(2))}

    # A job without the retry tag: FAILED, naming the agent and its host.
    sm.create_optimization_job(**create_request("orphaned"))
    holder = agents[running_on(database, "orphaned")]
    deadline = time.time() + 30
    while not holder.live_workers() and time.time() < deadline:
        time.sleep(0.05)
    assert holder.live_workers(), "the job's worker runs"
    killed_at = time.time()
    holder.kill(signal.SIGKILL)
    out = subprocess.run(
        [str(server.bin_dir / "temper-server"), "agents", "--endpoint", server.url,
         "--credentials", str(server.creds)],
        capture_output=True, text=True, timeout=60,
    )
    assert f"{holder.name} on " in out.stdout and "1 of 1 slot(s) busy (orphaned)" in out.stdout, out
    d = wait_for_status(sm, "orphaned", FINISHED, timeout=60)
    took = time.time() - killed_at
    assert d["OptimizationJobStatus"] == "FAILED", d
    out = subprocess.run(
        [str(server.bin_dir / "temper-server"), "agents", "--endpoint", server.url,
         "--credentials", str(server.creds)],
        capture_output=True, text=True, timeout=60,
    )
    assert f"{holder.name} on {open('/proc/sys/kernel/hostname').read().strip()}: LOST" in out.stdout, out
    reason = d["FailureReason"]
    host = open("/proc/sys/kernel/hostname").read().strip()
    assert f"worker agent {holder.name} on host {host}" in reason, reason
    assert "3 s lease" in reason and "temper:retry-on-host-loss" in reason, reason
    # Within the lease, a poll of the sweeping agent, and this test's own polling.
    assert took < 3 + 0.2 + 2.5, took
    # Its worker died with it (PR_SET_PDEATHSIG): nothing runs the job any more.
    time.sleep(0.5)
    assert holder.live_workers() == [], "the killed agent's worker must not live on"

    # A job that asks to be run again: queued again once, completed by the other agent.
    tags = [{"Key": "temper:retry-on-host-loss", "Value": "true"}]
    survivor = next(a for a in agents.values() if a is not holder)
    replacement = make_agent(database, *lease)
    sm.create_optimization_job(**create_request("retried", Tags=tags))
    holder = {survivor.name: survivor, replacement.name: replacement}[running_on(database, "retried")]
    other = replacement if holder is survivor else survivor
    deadline = time.time() + 30
    # Killed once its first attempt has reported some log: both attempts' logs are kept.
    while not psql(database, "SELECT 1 FROM job_logs l JOIN jobs j ON j.id = l.job_id "
                             "WHERE j.name = 'retried' LIMIT 1"):
        assert time.time() < deadline, "the first attempt reported no log"
        time.sleep(0.05)
    assert holder.live_workers()
    holder.kill(signal.SIGKILL)
    d = wait_for_status(sm, "retried", FINISHED, timeout=300)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    assert psql(database, "SELECT attempt, agent FROM jobs WHERE name = 'retried'") == [
        f"2|{other.name}"
    ]
    out = run_logs(server, "retried")
    assert out.returncode == 0, out.stderr
    first_attempt, second_attempt = out.stdout.split("--- attempt 2 (the job was run again) ---")
    assert "download" in first_attempt and "completed" not in first_attempt, out.stdout
    assert second_attempt.count("completed: s3://out/retried\n") == 1, out.stdout


def test_postgres_restarted_mid_run(make_server, make_agent, database, tiny_model):
    cluster = os.environ.get("TEMPER_TEST_POSTGRES_DIR")
    if not cluster:
        pytest.fail("TEMPER_TEST_POSTGRES_DIR is not set: run scripts/test.sh, which starts "
                    "the test database and names its cluster directory", pytrace=False)
    server = make_server("--store", database, "--api-only")
    sm = server.client()
    for _ in range(2):
        make_agent(database, "--poll-ms", "200")
    names = [f"restart-{i}" for i in range(3)] + ["restart-smollm2"]
    for name in names[:3]:
        sm.create_optimization_job(**create_request(name, ModelSource={"S3": {"S3Uri": tiny_model}}))
    # A longer job is running while the database goes away.
    sm.create_optimization_job(**create_request("restart-smollm2"))
    running_on(database, "restart-smollm2")
    root = Path(__file__).resolve().parents[2]
    subprocess.run(["bash", str(root / "scripts" / "postgres.sh"), "restart", cluster],
                   check=True, capture_output=True, timeout=120)
    # Servers reconnect: the first call may report the dropped connection, the next works.
    deadline = time.time() + 30
    while True:
        try:
            sm.list_optimization_jobs()
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for name in ["restart-after"]:
        sm.create_optimization_job(**create_request(name, ModelSource={"S3": {"S3Uri": tiny_model}}))
    jobs = wait_all(sm, names + ["restart-after"], timeout=300)
    statuses = {n: j["OptimizationJobStatus"] for n, j in jobs.items()}
    assert set(statuses.values()) == {"COMPLETED"}, {
        n: sm.describe_optimization_job(OptimizationJobName=n).get("FailureReason")
        for n, s in statuses.items() if s != "COMPLETED"
    }


def test_capacity_and_bad_settings(make_server, make_agent, database, bin_dir, tmp_path):
    server = make_server("--store", database, "--api-only")
    sm = server.client()
    # No agent yet: a queued job says so.
    sm.create_optimization_job(**create_request("needs-p5", DeploymentInstanceType="ml.p5.48xlarge"))
    d = sm.describe_optimization_job(OptimizationJobName="needs-p5")
    assert d["OptimizationJobStatus"] == "STARTING"
    assert "no worker agent has joined" in d["FailureReason"], d["FailureReason"]
    out = run_logs(server, "needs-p5")
    assert out.returncode == 0 and out.stdout == "", out
    assert "needs-p5: STARTING" in out.stderr and "no worker agent has joined" in out.stderr, out

    make_agent(database, "--instance-types", "ml.g6.*", name="l4-box")
    sm.create_optimization_job(**create_request("fits-g6"))
    d = wait_for_status(sm, "fits-g6", FINISHED, timeout=300)
    assert d["OptimizationJobStatus"] == "COMPLETED", d.get("FailureReason")
    d = sm.describe_optimization_job(OptimizationJobName="needs-p5")
    assert d["OptimizationJobStatus"] == "STARTING"
    reason = d["FailureReason"]
    assert "no worker agent runs ml.p5.48xlarge" in reason and "l4-box" in reason, reason
    assert "MaxPendingTimeInSeconds" not in reason or "waited" not in reason
    # Stopped while it waits: STOPPED, by the queue keeper (no agent takes it).
    sm.stop_optimization_job(OptimizationJobName="needs-p5")
    d = wait_for_status(sm, "needs-p5", FINISHED, timeout=30)
    assert d["OptimizationJobStatus"] == "STOPPED"

    def refused(*args: str) -> str:
        out = subprocess.run([str(bin_dir / "temper-worker"), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0, out
        return out.stderr

    err = refused("--join", database, "--instance-types", "ml.g6.huge", "--data-dir",
                  str(tmp_path / "x"))
    assert "ml.g6.huge" in err and "ml.g6.xlarge" in err, err
    err = refused("--join", database, "--name", "l4-box", "--data-dir", str(tmp_path / "y"))
    assert "named l4-box" in err and "--name" in err, err
    err = refused("--join", "postgres://temper:hunter2@127.0.0.1:1/jobs", "--data-dir",
                  str(tmp_path / "z"))
    assert "127.0.0.1:1" in err and "hunter2" not in err, err
    err = refused("--join", database, "--lease-secs", "0.1")
    assert "--lease-secs" in err, err
    # A server that would run the jobs itself is refused beside agents, and the reverse.
    out = subprocess.run(
        [str(bin_dir / "temper-server"), "--listen", "127.0.0.1:0", "--data-dir",
         str(tmp_path / "runner"), "--no-auth", "--store", database],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "--api-only" in out.stderr, out.stderr


def test_stop_and_runtime_limit_reach_the_agent(make_server, make_agent, database):
    api = [make_server("--store", database, "--api-only") for _ in range(2)]
    first, second = api[0].client(), api[1].client()
    agent = make_agent(database)  # the default poll (1 s): a Stop is announced, not polled
    first.create_optimization_job(**create_request("stopped-elsewhere"))
    running_on(database, "stopped-elsewhere")
    deadline = time.time() + 30
    while not agent.live_workers() and time.time() < deadline:
        time.sleep(0.05)
    asked = time.time()
    second.stop_optimization_job(OptimizationJobName="stopped-elsewhere")
    d = wait_for_status(first, "stopped-elsewhere", FINISHED, timeout=60)
    assert d["OptimizationJobStatus"] == "STOPPED", d
    # SIGTERM reached the worker: it stops at its next tensor, well within the grace.
    assert time.time() - asked < 5 + 2, time.time() - asked
    assert agent.live_workers() == []

    second.create_optimization_job(**create_request(
        "too-slow", StoppingCondition={"MaxRuntimeInSeconds": 1}))
    d = wait_for_status(first, "too-slow", FINISHED, timeout=60)
    assert d["OptimizationJobStatus"] == "FAILED", d
    assert "MaxRuntimeInSeconds (1 s)" in d["FailureReason"], d["FailureReason"]
