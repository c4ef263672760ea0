"""A real temper-serve process on loopback over the real SmolLM2 model, shared by the tests."""

import os
import re
import subprocess
import threading

import pytest


@pytest.fixture(scope="session")
def server():
    bin_dir = os.environ["TEMPER_BIN_DIR"]
    model = os.environ["TEMPER_SOURCE_MODEL"]
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "temper-serve"), "--model", model, "--host", "127.0.0.1",
         "--port", "0", "--served-model-name", "smollm2", "--max-batch", "4"],
        stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    match = re.search(r"listening on (http://\S+)", first)
    assert match, f"temper-serve did not start: {first}{proc.stderr.read() if proc.poll() is not None else ''}"
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    yield match.group(1)
    proc.terminate()
    proc.wait(timeout=30)
