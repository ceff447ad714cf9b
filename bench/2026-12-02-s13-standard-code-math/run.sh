#!/bin/bash
# issue 12: the standard code-math recipe from an empty store (the fetched model only), as a
# newcomer types it, with the wall time.
set -u
cd /work/s13/std-cm
export SOUP_HOME=/work/s13/std-cm/home
B=/work/s13/std-cm/soup
: > times
$B model fetch > fetch.log 2>&1
echo "cpu: $(lscpu | grep -m1 'Model name' | cut -d: -f2- | xargs) start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
s=$(date +%s); $B -v recipe code-math --budget standard > code-math.md 2> code-math.err; echo "code-math rc=$? $(( $(date +%s)-s )) s end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)" >> times
