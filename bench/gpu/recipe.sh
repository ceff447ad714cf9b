#!/usr/bin/env bash
# Second device call (see bench/gpu/README.md): join the real SmolLM2 GGUF from the two carried
# halves, then run the code-math recipe on the GPU at the largest budget that the first call's
# measured speeds say fits in about 5 minutes (bench/gpu/pick_budget.py), and keep the table.
set -uo pipefail
export LD_LIBRARY_PATH=$(dirname $(find / -name 'libcublas.so.13' 2>/dev/null | head -1)):$(dirname $(find / -name 'libcudart.so.13' 2>/dev/null | head -1)):$(dirname $(find / -name 'libcurand.so.10' 2>/dev/null | head -1)):${LD_LIBRARY_PATH:-}
W=/tmp/soup
[ -x "$W/soup" ] && [ -f "$W/model.gguf.part1" ] || { echo "the first call's files are gone (machine released)"; exit 3; }
cat "$W/model.gguf.part1" .gpu2/model.gguf.part2 > "$W/model.gguf"
echo "$(cat .gpu2/model.gguf.sha256)  $W/model.gguf" | sha256sum -c - || exit 4
S="$W/soup --data-dir $W/data --device cuda"
$S recipe code-math --show > "$W/code-math.toml"
python3 bench/gpu/pick_budget.py "$W"/bench-cuda-bf16.jsonl "${SOUP_GPU_SECONDS:-300}" ${SOUP_GPU_SIZE:+"$SOUP_GPU_SIZE"} >> "$W/code-math.toml"
sed -i "s|^model = .*|model = \"$W/model.gguf\"|" "$W/code-math.toml"
cp "$W/code-math.toml" "$OUT/"
tail -12 "$OUT/code-math.toml"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/smi.csv" 2>/dev/null &
SMI=$!
start=$(date +%s)
timeout "${SOUP_GPU_LIMIT:-420}" $S recipe "$W/code-math.toml" --budget gpu > "$OUT/recipe.md" 2> "$OUT/recipe.log"
rc=$?
echo "recipe rc $rc after $(( $(date +%s) - start )) s"
kill $SMI 2>/dev/null
# The table of whatever finished, also when the time limit cut the run (--stored runs nothing).
$S recipe "$W/code-math.toml" --budget gpu --stored > "$OUT/recipe-stored.md" 2>/dev/null
$S recipe "$W/code-math.toml" --budget gpu --stored --csv > "$OUT/recipe.csv" 2>/dev/null
$S --json runs list > "$OUT/runs.json" 2>&1 || true
$S adapter list > "$OUT/adapters.txt" 2>&1 || true
cat "$OUT/recipe-stored.md"; tail -5 "$OUT/recipe.log"
