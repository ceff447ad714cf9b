#!/usr/bin/env bash
# One side-by-side sitting: soup's `soup bench` and the PyTorch + transformers + PEFT reference
# (../shared/bench/torch_reference.py) on the same model and work, interleaved A/B/A/B so that
# the load of a shared machine falls on both sides alike, then the median of each figure and
# the ratio soup / PyTorch.
#
#   bash bench/sitting.sh MODEL_DIR [ROUNDS] [ONLY] [OUT_DIR]
#
# MODEL_DIR: the HF directory `soup model fetch` writes (f32 SmolLM2-135M-Instruct).
# ROUNDS: A/B rounds (default 3). ONLY: gen, train or gen,train (default gen,train).
# Env: SOUP (default target/release/soup), TORCH_PY (default /work/torch-venv/bin/python, see
# bench/torch-setup.sh), REF (default ../shared/bench/torch_reference.py), SOUP_ARGS (extra
# `soup bench` flags, e.g. "--dtype bf16"), REPS (repetitions per figure inside one run, 3).
# Every JSON line written carries the CPU model, the flags that matter, the load average when
# its run started, the round and the side.
set -euo pipefail
MODEL="${1:?usage: bench/sitting.sh MODEL_DIR [ROUNDS] [ONLY] [OUT_DIR]}"
ROUNDS="${2:-3}"
ONLY="${3:-gen,train}"
OUT="${4:-bench/$(date -u +%Y-%m-%d)-sitting-$(date -u +%H%M)}"
SOUP="${SOUP:-target/release/soup}"
TORCH_PY="${TORCH_PY:-/work/torch-venv/bin/python}"
REF="${REF:-../shared/bench/torch_reference.py}"
REPS="${REPS:-3}"
mkdir -p "$OUT"

# The first processor's value of a /proc/cpuinfo field.
field() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
CPU="$(field 'model name')"
# "AMD EPYC" can name CPUs of different generations: vendor, family and model tell them apart.
KIND="$(field vendor_id) family $(field 'cpu family') model $(field model)"
FLAGS="$(field flags | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f|avx512_bf16|avx512_vnni|amx_tile' | tr '\n' ' ' | sed 's/ $//')"
{
    echo "cpu: $CPU ($KIND)"
    echo "flags that matter: $FLAGS"
    echo "cores: $(nproc)"
    echo "soup: $($SOUP --version 2>/dev/null || echo "$SOUP") args: ${SOUP_ARGS:-}"
    echo "torch: $("$TORCH_PY" -c 'import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)')"
    echo "started: $(date -u +%FT%TZ), rounds $ROUNDS, only $ONLY"
} | tee "$OUT/machine.txt"

# Runs one side and tags each JSON line it prints with the sitting's context.
tag() {
    local side="$1" round="$2" load="$3"
    python3 -c '
import json, sys
side, rnd, load, cpu, flags, kind = sys.argv[1:7]
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    d = json.loads(line)
    d.update(side=side, round=int(rnd), load_at_start=float(load))
    d.setdefault("cpu", cpu)
    d.setdefault("cpu_kind", kind)
    d.setdefault("cpu_flags", flags.split())
    print(json.dumps(d), flush=True)
' "$side" "$round" "$load" "$CPU" "$FLAGS" "$KIND"
}

for r in $(seq 1 "$ROUNDS"); do
    load="$(cut -d' ' -f1 /proc/loadavg)"
    echo "round $r soup (load $load)" >&2
    # shellcheck disable=SC2086
    "$SOUP" bench --model "$MODEL" --only "$ONLY" --reps "$REPS" ${SOUP_ARGS:-} 2>>"$OUT/stderr.log" \
        | tag soup "$r" "$load" | tee -a "$OUT/soup.jsonl"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    echo "round $r torch (load $load)" >&2
    "$TORCH_PY" "$REF" --model "$MODEL" --only "$ONLY" --reps "$REPS" 2>>"$OUT/stderr.log" \
        | tag torch "$r" "$load" | tee -a "$OUT/torch.jsonl"
done

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, statistics, sys, os
out = sys.argv[1]
def rows(side):
    return [json.loads(l) for l in open(os.path.join(out, f"{side}.jsonl"))]
def key(d):
    if d["figure"] == "generate_greedy":
        return ("greedy generation, batch %d" % d["batch"], "new_tokens_per_s")
    if d["figure"] == "lora_train_step" and d.get("dropout", 0.0) == 0.0:
        return ("LoRA training, batch 8 x 256, no dropout", "tokens_per_s")
    return None
figs = {}
for side in ("soup", "torch"):
    for d in rows(side):
        k = key(d)
        if k:
            figs.setdefault(k, {}).setdefault(side, []).append((d[k[1]], d.get("peak_rss_mb"), d["load_at_start"]))
print("| figure | soup | PyTorch | ratio | soup runs | PyTorch runs | load at starts |")
print("|---|---|---|---|---|---|---|")
for (name, unit), sides in figs.items():
    s = [v for v, _, _ in sides.get("soup", [])]
    t = [v for v, _, _ in sides.get("torch", [])]
    loads = sorted(l for side in sides.values() for _, _, l in side)
    ms = statistics.median(s) if s else float("nan")
    mt = statistics.median(t) if t else float("nan")
    print(f"| {name} ({unit}) | {ms:.1f} | {mt:.1f} | {ms / mt:.2f}x | "
          f"{', '.join('%.1f' % v for v in s)} | {', '.join('%.1f' % v for v in t)} | "
          f"{loads[0]:.1f}-{loads[-1]:.1f} |")
PY
