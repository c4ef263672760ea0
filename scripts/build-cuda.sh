#!/usr/bin/env bash
# The build stage of Dockerfile.cuda, as a script that runs the same way inside the image
# and outside it (CI has no container engine, so it runs this): nvcc from PyPI, the three
# binaries built with the `cuda` feature, installed into OUT/bin, then checked: they start,
# they link no CUDA library (libcuda is opened at run time, so they start without a GPU),
# and asking for a GPU where there is none is a clear error.
#   bash scripts/build-cuda.sh OUT
set -euo pipefail
out=${1:?usage: scripts/build-cuda.sh OUT_DIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v nvcc >/dev/null; then
  CUDA_HOME=$(bash scripts/cuda-toolchain.sh)
  export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
fi
bins=(optimize temper-server temper-worker)
started=$(date +%s)
cargo build --release --locked --features temper-cuda/cuda "${bins[@]/#/--bin=}"
echo "build-cuda: cargo build with the cuda feature took $(( $(date +%s) - started )) s" >&2
mkdir -p "$out/bin"
for b in "${bins[@]}"; do
  install -m 0755 "target/release/$b" "$out/bin/$b"
  "$out/bin/$b" --version >/dev/null
  if ldd "$out/bin/$b" | grep -Ei 'libcuda|libcudart|libnvrtc'; then
    echo "build-cuda: $b links a CUDA library; it must load CUDA at run time only" >&2
    exit 1
  fi
done
# The kernels are inside: the build says it has CUDA, and with no driver (here, or a
# container started without --gpus) --device cuda names what is missing.
if msg=$("$out/bin/optimize" --model /nonexistent --instance-type ml.g6.xlarge --quantize fp8 \
           --output "$out/never" --device cuda 2>&1); then
  echo "build-cuda: optimize --device cuda succeeded with no model" >&2; exit 1
fi
case "$msg" in
  *"no CUDA driver"*|*"CUDA device"*) ;;
  *) echo "build-cuda: unexpected answer to --device cuda: $msg" >&2; exit 1 ;;
esac
[ ! -e "$out/never" ] || { echo "build-cuda: a failed job left $out/never" >&2; exit 1; }
echo "build-cuda: ${bins[*]} in $out/bin"
