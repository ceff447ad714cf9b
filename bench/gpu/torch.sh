#!/usr/bin/env bash
# Device call for the PyTorch+PEFT side (see bench/gpu/README.md), carrying .gpu3 (wheels from
# bench/gpu/wheels.sh and .gpu3/smollm2-config.json): installs transformers and PEFT beside the
# machine's own PyTorch without a registry, then runs torch_reference_cuda.py on random weights
# of SmolLM2's shapes, f32 and bf16, with and without LoRA dropout: the figures that
# check-and-bench.sh's `soup bench --device cuda` lines are compared with.
set -uo pipefail
python3 -m pip install -q --no-index --find-links .gpu3/wheels transformers peft > "$OUT/pip.log" 2>&1 \
  || { echo "pip install failed"; tail -20 "$OUT/pip.log"; exit 3; }
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
for dt in ${SOUP_GPU_DTYPES:-bf16 f32}; do
  timeout 150 python3 bench/gpu/torch_reference_cuda.py --config .gpu3/smollm2-config.json --device cuda --dtype $dt \
    > "$OUT/torch-cuda-$dt.jsonl" 2> "$OUT/torch-cuda-$dt.log"
  echo "torch $dt: rc $?"; cat "$OUT/torch-cuda-$dt.jsonl"
done
timeout 90 python3 bench/gpu/torch_reference_cuda.py --config .gpu3/smollm2-config.json --device cuda --dtype bf16 \
  --only train --dropout 0.05 > "$OUT/torch-cuda-bf16-dropout.jsonl" 2>> "$OUT/torch-cuda-bf16.log"
cat "$OUT/torch-cuda-bf16-dropout.jsonl"
