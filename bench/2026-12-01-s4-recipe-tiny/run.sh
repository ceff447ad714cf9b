#!/bin/bash
# Reproduce RESULTS.md's tiny tables from an empty store (the fetched model only).
set -u
cd /work/tinyrun
rm -rf repro-home && mkdir repro-home && cp -a home/models repro-home/
export SOUP_HOME=/work/tinyrun/repro-home
B=/work/tinyrun/soup-new
: > times
s=$(date +%s); $B recipe code-math --budget tiny > code-math.md 2> code-math.err; echo "code-math rc=$? $(( $(date +%s)-s ))" >> times
s=$(date +%s); $B recipe manual-qa --budget tiny > manual-qa.md 2> manual-qa.err; echo "manual-qa rc=$? $(( $(date +%s)-s ))" >> times
