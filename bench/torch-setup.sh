#!/usr/bin/env bash
# Installs the PyTorch + transformers + PEFT reference that `../shared/bench/torch_reference.py`
# (and bench/sitting.sh) measure soup against, into a virtual environment OUTSIDE the repository.
#
#   bash bench/torch-setup.sh [VENV]      # VENV defaults to /work/torch-venv
#
# The package index only has torch's default wheel, whose CUDA libraries are separate packages
# (about 4.5 GB installed in all). A CPU sitting never uses them, but that torch will not import
# without them (tried on 2026-12-01: `import torch` fails preloading libcublasLt), so the script
# tries the light install first and falls back to the full one. Versions are pinned so that two
# sittings compare the same reference.
set -euo pipefail
VENV="${1:-/work/torch-venv}"
TORCH=2.15.0
TRANSFORMERS=5.23.0
PEFT=0.21.2

python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --upgrade --quiet pip
"$PIP" install --quiet --no-deps "torch==$TORCH"
"$PIP" install --quiet filelock typing-extensions sympy networkx jinja2 fsspec setuptools
if ! "$VENV/bin/python" -c 'import torch; torch.ones(2) @ torch.ones(2)' 2>/dev/null; then
    echo "torch without its CUDA packages does not import; installing its full dependencies" >&2
    "$PIP" install --quiet "torch==$TORCH"
fi
"$PIP" install --quiet "transformers==$TRANSFORMERS" "peft==$PEFT" safetensors gguf accelerate psutil
"$VENV/bin/python" - <<'PY'
import torch, transformers, peft
print(f"torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__}")
print(torch.__config__.show())
PY
