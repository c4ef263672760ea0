#!/usr/bin/env bash
# Scale-out figures for BENCHMARKS.md, in one run on this machine:
# - the job API's load test on one server with SQLite, beside two API-only servers sharing
#   one PostgreSQL database (alternated, ROUNDS times each);
# - worker agents' claim latency (queued -> running) with 3 agents, at the default poll
#   (1 s) and at 200 ms.
#   bash scripts/bench-scale-out.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
cargo build --release -p temper-server -p temper-worker -p temper-benches --bin api_load
pg=$(mktemp -d)/pg
url=$(bash scripts/postgres.sh start "$pg")
trap 'bash scripts/postgres.sh stop "$pg"' EXIT
fresh() { local name=bench_$RANDOM$RANDOM; psql "$url" -qc "CREATE DATABASE $name" >&2; echo "${url%/*}/$name"; }
for r in $(seq "$rounds"); do
  echo "== round $r: SQLite, one server"
  target/release/api_load
  echo "== round $r: PostgreSQL, two API-only servers"
  target/release/api_load --store "$(fresh)" --servers 2
done
echo "== claim latency"
python3 scripts/claim_latency.py "$(fresh)" target/release --poll-ms 1000
python3 scripts/claim_latency.py "$(fresh)" target/release --poll-ms 200
