#!/bin/bash
# issue 12: the standard code-math recipe from an empty store (the fetched model only), as a
# newcomer types it, with the wall time.
set -u
cd /work/stdrun
export SOUP_HOME=/work/stdrun/home
B=/work/stdrun/soup-std
: > times
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2-) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
s=$(date +%s); $B -v recipe code-math --budget standard > code-math.md 2> code-math.err; echo "code-math rc=$? $(( $(date +%s)-s )) s end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
