#!/bin/bash
# issue 12: the standard game-qa recipe (the paper's game manual and QA test set) from an empty
# store (the fetched model only), with the wall time. AMD EPYC family 26 (Zen 5 class), 2 cores.
set -u
cd /work/s14/std-gq
export SOUP_HOME=/work/s14/std-gq/home
B=/work/s14/std-gq/soup
D=/work/shared/data/lora-soups
: > times
$B model fetch > fetch.log 2>&1
echo "cpu: $(lscpu | grep -m1 'Model name' | cut -d: -f2- | xargs) family $(lscpu | grep -m1 'CPU family' | cut -d: -f2- | xargs) model $(lscpu | grep -m1 '^Model:' | cut -d: -f2- | xargs) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
s=$(date +%s); $B -v recipe game-qa --budget standard --data game=$D/skill_datasets_game.txt --data target=$D/test_datasets_qa_test.json > game-qa.md 2> game-qa.err; echo "game-qa rc=$? $(( $(date +%s)-s )) s end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
