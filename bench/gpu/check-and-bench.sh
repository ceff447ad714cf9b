#!/usr/bin/env bash
# First device call (see bench/gpu/README.md): unpack the carried CUDA build, check it against
# the CPU on the tiny fixture, and measure speed on random weights of SmolLM2's shapes.
# Carried: .gpu/soup.xz, .gpu/smollm2-config.json, .gpu/model.gguf.part1 (kept in /tmp/soup for
# the second call).
set -uo pipefail
export LD_LIBRARY_PATH=$(dirname $(find / -name 'libcublas.so.13' 2>/dev/null | head -1)):$(dirname $(find / -name 'libcudart.so.13' 2>/dev/null | head -1)):$(dirname $(find / -name 'libcurand.so.10' 2>/dev/null | head -1)):${LD_LIBRARY_PATH:-}
W=/tmp/soup; mkdir -p "$W"
cp .gpu/model.gguf.part1 "$W/" && cp .gpu/smollm2-config.json "$W/"
xz -dc .gpu/soup.xz > "$W/soup" && chmod +x "$W/soup"
S="$W/soup --data-dir $W/data"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.csv"
T=tests/fixtures/reference/tiny-llama
TEXT="The quick brown fox jumps over the lazy dog and counts to ten."
$S --device cpu inspect logits --model $T --text "$TEXT" --out "$OUT/logits-cpu.safetensors"
$S --device cuda --dtype f32 inspect logits --model $T --text "$TEXT" --out "$OUT/logits-cuda-f32.safetensors"
$S --device cuda --dtype bf16 inspect logits --model $T --text "$TEXT" --out "$OUT/logits-cuda-bf16.safetensors"
python3 bench/gpu/compare_logits.py "$OUT"/logits-cpu.safetensors "$OUT"/logits-cuda-f32.safetensors "$OUT"/logits-cuda-bf16.safetensors | tee "$OUT/check.txt"
for dt in ${SOUP_GPU_DTYPES:-bf16 f32}; do
  timeout 150 $S --device cuda --dtype $dt bench --config "$W/smollm2-config.json" --reps 5 --only ${SOUP_GPU_ONLY:-gen,train,merge} \
    > "$OUT/bench-cuda-$dt.jsonl" 2> "$OUT/bench-cuda-$dt.log"
  echo "bench $dt: rc $?"; cat "$OUT/bench-cuda-$dt.jsonl"
done
cp "$OUT"/bench-cuda-*.jsonl "$W/"
ls -la "$W"
