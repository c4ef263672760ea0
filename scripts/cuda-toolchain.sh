#!/usr/bin/env bash
# nvcc, ptxas and the CUDA headers from PyPI (CUDA 13.4; no GPU and no root needed), into
# .cache/cuda-pip, once. Prints the CUDA_HOME to use:
#   export CUDA_HOME=$(bash scripts/cuda-toolchain.sh) PATH=$CUDA_HOME/bin:$PATH
#   cargo build --release --features cuda
# Facts behind the pins: ../shared/design/CUDA.md (13.4.x: cudarc 0.19 rejects 13.5).
set -euo pipefail
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_dir="$_root/.cache/cuda-pip"
_v=13.4.92
if [ ! -x "$_dir/nvidia/cu13/bin/nvcc" ] || [ "$(cat "$_dir/.version" 2>/dev/null)" != "$_v" ]; then
  rm -rf "$_dir"
  # One pip call with every component pinned: nvcc's own dependencies are unpinned, and a
  # second `pip install --target` into the same folder would skip or wipe the first.
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$_dir" \
    "nvidia-cuda-nvcc==$_v" "nvidia-cuda-crt==$_v" "nvidia-nvvm==$_v" \
    "nvidia-cuda-runtime==$_v" "nvidia-cuda-cccl==13.3.5.0.6" >&2
  echo "$_v" > "$_dir/.version"
fi
CUDA_HOME="$_dir/nvidia/cu13"
command -v g++ >/dev/null || { echo "nvcc needs gcc/g++ on PATH (apt-get install g++)" >&2; exit 1; }
echo "$CUDA_HOME"
