#!/usr/bin/env bash
# gemm's AVX-512 micro-kernels (its `x86-v4` feature) against the default build, with PyTorch
# beside both: three sides per round, interleaved, ROUNDS rounds, each side's figures the median
# of 3 repetitions inside its run (`soup bench --reps 3`, torch_reference.py --reps 3).
#   bash run.sh MODEL_DIR BIN_DIR [ROUNDS]
# BIN_DIR holds soup-head (the release build of the commit) and soup-v4 (the same tree with
# `gemm = { version = "0.19", features = ["x86-v4"] }` in the workspace Cargo.toml).
set -euo pipefail
MODEL="$1"; BINS="$2"; ROUNDS="${3:-3}"; HERE="$(cd "$(dirname "$0")" && pwd)"
TORCH_PY="${TORCH_PY:-/work/torch-venv/bin/python}"
REF="${REF:-../shared/bench/torch_reference.py}"
lscpu > "$HERE/lscpu.txt"
tag() {
    python3 -c '
import json, sys
side, rnd, load = sys.argv[1:4]
for l in sys.stdin:
    if l.startswith("{"):
        d = json.loads(l); d.update(side=side, round=int(rnd), load_at_start=float(load))
        print(json.dumps(d), flush=True)
' "$@"
}
for r in $(seq 1 "$ROUNDS"); do
    for side in soup-head soup-v4 torch; do
        load="$(cut -d' ' -f1 /proc/loadavg)"
        echo "round $r $side start $(date -u +%FT%TZ) load $load" >> "$HERE/times.txt"
        if [ "$side" = torch ]; then
            "$TORCH_PY" "$REF" --model "$MODEL" --only gen,train --reps 3 2>>"$HERE/stderr.log"
        else
            "$BINS/$side" bench --model "$MODEL" --only gen,train --reps 3 2>>"$HERE/stderr.log"
        fi | tag "$side" "$r" "$load" | tee -a "$HERE/lines.jsonl"
    done
done
python3 - "$HERE/lines.jsonl" <<'PY' | tee "$HERE/summary.txt"
import json, statistics, sys
figs = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["figure"] == "generate_greedy":
        k, v = "greedy generation, batch %d (new tokens/s)" % d["batch"], d["new_tokens_per_s"]
    elif d["figure"] == "lora_train_step":
        k, v = "LoRA training, dropout %g (tokens/s)" % d.get("dropout", 0.0), d["tokens_per_s"]
    else:
        continue
    figs.setdefault(k, {}).setdefault(d["side"], []).append(v)
print("| figure | default | x86-v4 | PyTorch | v4 / default | default / PyTorch | v4 / PyTorch | rounds (default; v4; PyTorch) |")
print("|---|---|---|---|---|---|---|---|")
for k, s in figs.items():
    m = {side: statistics.median(v) if v else float("nan") for side, v in s.items()}
    h, v4, t = m.get("soup-head", float("nan")), m.get("soup-v4", float("nan")), m.get("torch", float("nan"))
    runs = "; ".join(", ".join("%.1f" % x for x in s.get(side, [])) for side in ("soup-head", "soup-v4", "torch"))
    print(f"| {k} | {h:.1f} | {v4:.1f} | {t:.1f} | {v4 / h:.2f}x | {h / t:.2f}x | {v4 / t:.2f}x | {runs} |")
PY
