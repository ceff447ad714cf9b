#!/bin/bash
# issue 12: the standard manual-qa recipe from an empty store (the fetched model only), as a
# newcomer types it, with the wall time. AMD EPYC family 26 (Zen 5 class), 2 cores.
set -u
cd /work/s14/std-mq
export SOUP_HOME=/work/s14/std-mq/home
B=/work/s14/std-mq/soup
: > times
$B model fetch > fetch.log 2>&1
echo "cpu: $(lscpu | grep -m1 'Model name' | cut -d: -f2- | xargs) family $(lscpu | grep -m1 'CPU family' | cut -d: -f2- | xargs) model $(lscpu | grep -m1 '^Model:' | cut -d: -f2- | xargs) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
s=$(date +%s); $B -v recipe manual-qa --budget standard > manual-qa.md 2> manual-qa.err; echo "manual-qa rc=$? $(( $(date +%s)-s )) s end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
