#!/usr/bin/env bash
# Regenerates dropout.ptx from dropout.cu with nvcc (the CUDA 13.0 toolkit from the Python
# package index that ../shared/gpu/build-cuda.sh installs under ~/.cache/soup-cuda, or any nvcc
# on PATH). PTX for compute_80 is JIT-compiled by the driver for newer GPUs (Hopper included).
# The first line of dropout.ptx records the sha256 of the sources it was built from; the test
# `ptx_is_built_from_the_committed_kernel` fails when they differ.
set -euo pipefail
cd "$(dirname "$0")"
NVCC=${NVCC:-$(command -v nvcc || ls ~/.cache/soup-cuda/venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -1)}
[ -x "$NVCC" ] || { echo "no nvcc: run ../shared/gpu/build-cuda.sh once, or set NVCC" >&2; exit 1; }
sum=$(cat dropout_hash.h dropout.cu | sha256sum | cut -d' ' -f1)
"$NVCC" --ptx -arch=compute_80 -O3 -o dropout.ptx.tmp dropout.cu
{ echo "// sources sha256 $sum"; cat dropout.ptx.tmp; } > dropout.ptx
rm dropout.ptx.tmp
echo "dropout.ptx from sources $sum"
