"""Fixtures for the compressed-tensors artifact tests.

The real artifacts come from the environment (set by scripts/test.sh):
  TEMPER_ARTIFACTS     a directory with one subdirectory per scheme
                       (fp8-dynamic, fp8-block, fp8-static, int8-w8a16, int8-w8a16-g64,
                       int8-w8a8, int4-w4a16, int4-awq)
  TEMPER_SOURCE_MODEL  the source model directory they were made from (SmolLM2-135M bf16)
Missing ones FAIL the tests (they never skip): an artifact test that silently skips proves
nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ct_reader  # noqa: E402

HOW_TO = (
    "Produce them with scripts/test.sh (it imports SmolLM2-135M to a bf16 Hugging Face "
    "directory, quantizes it with every scheme into $TEMPER_ARTIFACTS/<scheme> and runs "
    "these tests), or set TEMPER_SOURCE_MODEL=<source model dir> and "
    "TEMPER_ARTIFACTS=<dir holding " + ", ".join(ct_reader.SCHEMES) + "> yourself, "
    "e.g. from `temper quantize` runs, or, to test only this reader, from "
    "`python tests/python/make_reference_artifact.py --source <model dir> --out <dir>`."
)


def _env_dir(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set. {HOW_TO}", pytrace=False)
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{var}={value} is not a directory. {HOW_TO}", pytrace=False)
    return path


class _Env:
    """Resolves the artifact directories inside the test body, so that a missing one
    FAILS the test (a fixture that fails shows up as a setup error instead)."""

    def source(self, scheme: str | None = None) -> Path:
        # A scheme may come from its own source model (FP8_BLOCK needs 128-aligned layers,
        # which SmolLM2 lacks): TEMPER_SOURCE_MODEL_FP8_BLOCK overrides for `fp8-block`.
        var = "TEMPER_SOURCE_MODEL"
        if scheme is not None and os.environ.get(f"{var}_{scheme.upper().replace('-', '_')}"):
            var = f"{var}_{scheme.upper().replace('-', '_')}"
        path = _env_dir(var)
        if not (path / "config.json").exists():
            pytest.fail(f"{var}={path} has no config.json. {HOW_TO}", pytrace=False)
        return path

    def artifact(self, scheme: str) -> Path:
        path = _env_dir("TEMPER_ARTIFACTS") / scheme
        if not path.is_dir():
            pytest.fail(f"{path} does not exist (TEMPER_ARTIFACTS has no {scheme} artifact). {HOW_TO}",
                        pytrace=False)
        return path

    def dirs(self, scheme: str) -> tuple[Path, Path]:
        """(artifact directory, source model directory)."""
        return self.artifact(scheme), self.source(scheme)


@pytest.fixture(scope="session")
def env() -> _Env:
    return _Env()


class _Cache:
    """Loaded checkpoints and value-check results, shared by the tests of a session."""

    def __init__(self):
        self.checkpoints: dict[Path, ct_reader.Checkpoint] = {}
        self.values: dict[tuple, tuple] = {}

    def checkpoint(self, path: Path) -> ct_reader.Checkpoint:
        path = Path(path).resolve()
        if path not in self.checkpoints:
            self.checkpoints[path] = ct_reader.load_checkpoint(path)
        return self.checkpoints[path]

    def check_values(self, scheme: str, artifact: Path, source: Path):
        key = (scheme, Path(artifact).resolve(), Path(source).resolve())
        if key not in self.values:
            self.values[key] = ct_reader.check_values(scheme, self.checkpoint(artifact), self.checkpoint(source))
        return self.values[key]


@pytest.fixture(scope="session")
def cache() -> _Cache:
    return _Cache()
