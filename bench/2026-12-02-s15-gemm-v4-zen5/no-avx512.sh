#!/usr/bin/env bash
# Does a build with gemm's x86-v4 still run on CPUs without AVX-512? qemu-user (Debian's
# qemu-user 7.2, `apt-get install qemu-user`) presents the CPUID of an older CPU: Haswell
# (AVX2 + FMA, no AVX-512) and Westmere (no AVX). qemu 7.2 does not emulate AVX-512, so a
# kernel that used it there would die with SIGILL. Tiny fixture model: greedy text and the
# training bench's final losses, for the build without the feature and the one with it.
#   bash no-avx512.sh BIN_DIR   (soup-head, soup-v4 as in binaries.txt)
set -uo pipefail
BINS="$1"; M=tests/fixtures/reference/tiny-llama
for cpu in native Haswell Westmere; do
    for b in soup-head soup-v4; do
        pre=(); [ "$cpu" = native ] || pre=(qemu-x86_64 -cpu "$cpu")
        text=$("${pre[@]}" "$BINS/$b" generate --data-dir "$(mktemp -d)" --model "$M" \
            --prompt "Once upon a time" --max-new-tokens 24 --json 2>&1 | tail -1 |
            python3 -c 'import json,sys; print(repr(json.load(sys.stdin)["text"]))')
        echo "$cpu $b generate: $text"
        "${pre[@]}" "$BINS/$b" bench --model "$M" --only train --reps 1 2>/dev/null | python3 -c '
import json, sys
print(sys.argv[1], "train final loss (dropout 0, 0.05):",
      [round(json.loads(l)["final_loss"], 6) for l in sys.stdin if l.startswith("{")])
' "$cpu $b"
    done
done
