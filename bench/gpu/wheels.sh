#!/usr/bin/env bash
# Downloads, here, the wheels that torch_reference_cuda.py needs beside the GPU machine's own
# PyTorch (that machine has no registry access): transformers, PEFT and what they import that a
# PyTorch install may lack. Into .gpu3/wheels (about 28 MB; carried alone: the binary and the
# GGUF halves fill the other two calls).
# Binary wheels are fetched for CPython 3.10-3.13, since the device's Python version is not known.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=.gpu3/wheels; mkdir -p "$D"
pip download -q --no-deps -d "$D" transformers==4.57.1 peft==0.17.1 accelerate==1.10.1 \
  huggingface_hub==0.35.3 tokenizers==0.22.1 safetensors==0.6.2 tqdm==4.67.1 packaging==25.0 \
  filelock==3.20.0 fsspec==2025.9.0 requests==2.32.5 urllib3==2.5.0 idna==3.10 \
  charset_normalizer==3.4.3 certifi==2025.10.5 hf-xet==1.1.10 psutil==7.1.0
for v in 310 311 312 313; do
  pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --python-version $v -d "$D" regex==2025.9.18 PyYAML==6.0.3 \
    charset_normalizer==3.4.3
done
du -sh "$D"; ls "$D"
