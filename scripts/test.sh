#!/usr/bin/env bash
# The whole test suite: Rust unit and end-to-end tests on the real model, the
# independent Python reader over an artifact of every scheme, then the job API's
# contract tests (boto3, the AWS CLI and moto's S3 server on loopback), then temper-serve
# through the official OpenAI client.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
bash scripts/fetch-assets.sh
python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

# Everything is built once, with the CUDA kernels: nvcc from PyPI compiles them (no GPU is
# needed), their per-element arithmetic is tested on the host, and tests that need a GPU
# say they did not run.
CUDA_HOME=$(bash scripts/cuda-toolchain.sh)
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
features=(--features temper-cuda/cuda)
cargo build --release "${features[@]}" --bin optimize --bin temper-server --bin temper-worker --bin temper-serve
bin=target/release/optimize
model=.cache/models/smollm2-135m-instruct
[ -f "$model/config.json" ] || "$bin" import-gguf .cache/assets/SmolLM2-135M-Instruct.Q4_1.gguf "$model" --json >/dev/null

artifacts=.cache/test-artifacts
mkdir -p "$artifacts"
# A throwaway PostgreSQL for the job store's shared suite and the job API on PostgreSQL.
pg=$(mktemp -d)/pg
TEMPER_TEST_POSTGRES=$(bash scripts/postgres.sh start "$pg")
# The cluster directory lets the agents test restart the database mid-run.
TEMPER_TEST_POSTGRES_DIR=$pg
export TEMPER_TEST_POSTGRES TEMPER_TEST_POSTGRES_DIR
trap 'bash scripts/postgres.sh stop "$pg"' EXIT
# The EAGLE training test also leaves its head and a trace of it for tests/python.
TEMPER_EAGLE_ARTIFACTS="$root/$artifacts" cargo test --workspace --release "${features[@]}"
# What ran on a GPU and what did not, said plainly.
cargo test --release -p temper-cuda --features cuda --test device -- --nocapture 2>&1 | grep -E "NOT RUN|test result"
# Dockerfile.cuda's build stage, run as the script it calls (no container engine here).
bash scripts/build-cuda.sh "$root/.cache/cuda-build"

run() { # name, flags...
  local name=$1; shift
  "$bin" --model "$model" --instance-type ml.g6.12xlarge --output "$artifacts/$name" --overwrite --json "$@" >/dev/null
}
run fp8-dynamic --quantize fp8
run fp8-static --quantize fp8 --scheme FP8
run int8-w8a16 --quantize int8
run int8-w8a16-g64 --quantize int8 --group-size 64
run int8-w8a8 --quantize int8 --scheme W8A8
run int4-w4a16 --quantize int4
run int4-awq --quantize awq
# Tensor-parallel rank files, reassembled and compared byte for byte by tests/python.
run tp3-dense --tensor-parallel 3
run tp3-int8 --quantize int8 --tensor-parallel 3
run tp3-int4 --quantize int4 --tensor-parallel 3
# FP8_BLOCK needs 128-aligned fused layers (SmolLM2's 576 are not, and the plan refuses
# it as vLLM would): a small aligned f32 Llama with random weights stands in.
aligned=.cache/models/aligned-llama-f32
python3 tests/python/make_aligned_model.py "$aligned"
"$bin" --model "$aligned" --instance-type ml.g6e.xlarge --output "$artifacts/fp8-block" --overwrite --json \
  --quantize fp8 --scheme FP8_BLOCK >/dev/null
TEMPER_SOURCE_MODEL_FP8_BLOCK="$root/$aligned" TEMPER_ARTIFACTS="$root/$artifacts" TEMPER_SOURCE_MODEL="$root/$model" python3 -m pytest -q tests/python
TEMPER_BIN_DIR="$root/target/release" TEMPER_SOURCE_MODEL="$root/$model" python3 -m pytest -q tests/job_api
TEMPER_BIN_DIR="$root/target/release" TEMPER_ARTIFACTS="$root/$artifacts" TEMPER_SOURCE_MODEL="$root/$model" python3 -m pytest -q tests/serve
