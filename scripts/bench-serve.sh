#!/usr/bin/env bash
# Serving benchmark (BENCHMARKS.md "Serving"): SmolLM2 INT8 (W8A16) behind temper-serve at
# 1, 4 and 16 concurrent streaming users, beside the same artifact generating one request at
# a time in-process (`optimize generate`), and the load generator's fidelity to a STAIRS
# pattern. Needs the model (scripts/quickstart.sh or scripts/fetch-assets.sh + import).
# Usage: scripts/bench-serve.sh [seconds per level, default 30]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-30}
tokens=64
cargo build --release --bin optimize --bin temper-serve --bin temper-load >/dev/null
bin=target/release
model=.cache/models/smollm2-135m-instruct
out=.cache/bench-serve
mkdir -p "$out"
"$bin/optimize" --model "$model" --instance-type ml.g6.12xlarge --quantize int8 --no-eval \
  --output "$out/int8" --overwrite --json >/dev/null
prompt="Write a short story about a lighthouse keeper who finds a message in a bottle."

echo "== one request at a time, in-process (optimize generate, $tokens tokens x 3)"
for i in 1 2 3; do
  "$bin/optimize" generate --model "$out/int8" --prompt "$prompt" --max-tokens $tokens --ignore-eos --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["report"]; print("  decode %.1f tok/s, prefill %.1f ms" % (r["decode_tokens_per_second"], r["prefill_seconds"]*1000))'
done

"$bin/temper-serve" --model "$out/int8" --host 127.0.0.1 --port 0 --max-batch 16 \
  2>"$out/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$out/serve.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$out/serve.log" | head -1)
head -1 "$out/serve.log"

for users in 1 4 16; do
  echo "== $users concurrent streaming users, $secs s"
  "$bin/temper-load" --url "$url" --users $users --duration "$secs" --stream \
    --max-tokens $tokens --prompt "$prompt" --json > "$out/users-$users.json"
  python3 - "$out/users-$users.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = lambda p: f"p50 {p['p50']:.0f} / p90 {p['p90']:.0f} / p99 {p['p99']:.0f} ms"
print(f"  {r['tokens_per_second']:.1f} tok/s, {r['requests']} requests, {r['errors']} errors")
print(f"  time to first token {f(r['first_byte_ms'])}; between tokens {f(r['inter_chunk_ms'])}")
print(f"  offered load {r['delivered_user_seconds']:.1f} / {r['planned_user_seconds']:.1f} user-s")
PY
done

echo "== STAIRS 3 steps x 10 s, 4 users per step (offered-load fidelity)"
"$bin/temper-load" --url "$url" --stairs 10,3,4 --max-tokens 16 --prompt "$prompt"
