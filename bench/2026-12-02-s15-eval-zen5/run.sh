#!/usr/bin/env bash
# Evaluation-throughput sitting on one machine: the build before issue 14's decoder work
# (52abf14, whose fixed batches are the path before the issue) and the current build, one after
# the other, the same command. Lines go to eval.jsonl, tagged with the binary.
#   bash run.sh MODEL_DIR BIN_DIR [BINARY...]   (default: soup-52abf14 soup-head)
set -euo pipefail
MODEL="$1"; BINS="$2"; shift 2; HERE="$(cd "$(dirname "$0")" && pwd)"
lscpu > "$HERE/lscpu.txt"
[ $# -gt 0 ] || set -- soup-52abf14 soup-head
for b in "$@"; do
    echo "$b start $(date -u +%FT%TZ) load $(cut -d' ' -f1 /proc/loadavg)" >> "$HERE/times.txt"
    "$BINS/$b" bench --model "$MODEL" --only eval --eval-questions 64 --reps 2 2>>"$HERE/stderr.log" \
        | python3 -c '
import json, sys
for l in sys.stdin:
    if l.startswith("{"):
        d = json.loads(l); d["binary"] = sys.argv[1]; print(json.dumps(d), flush=True)
' "$b" | tee -a "$HERE/eval.jsonl"
    echo "$b end $(date -u +%FT%TZ)" >> "$HERE/times.txt"
done
