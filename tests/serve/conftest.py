"""A real temper-serve process on loopback over the real SmolLM2 model, shared by the tests."""

import os
import re
import subprocess
import threading

import pytest


def start(model: str, name: str):
    """Starts temper-serve on `model`; returns its process and base URL."""
    bin_dir = os.environ["TEMPER_BIN_DIR"]
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "temper-serve"), "--model", model, "--host", "127.0.0.1",
         "--port", "0", "--served-model-name", name, "--max-batch", "4"],
        stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    match = re.search(r"listening on (http://\S+)", first)
    assert match, f"temper-serve did not start: {first}{proc.stderr.read() if proc.poll() is not None else ''}"
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, match.group(1)


@pytest.fixture(scope="session")
def server():
    proc, url = start(os.environ["TEMPER_SOURCE_MODEL"], "smollm2")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def artifact_servers():
    """Servers over the INT8 artifact and its 3-rank tensor-parallel twin (both written by
    scripts/test.sh into TEMPER_ARTIFACTS)."""
    root = os.environ["TEMPER_ARTIFACTS"]
    started = [start(os.path.join(root, name), name) for name in ("int8-w8a16", "tp3-int8")]
    yield {name: url for (_, url), name in zip(started, ("int8-w8a16", "tp3-int8"))}
    for proc, _ in started:
        proc.terminate()
        proc.wait(timeout=30)
