#!/bin/bash
export SOUP_HOME=/work/tinyrun/home
B=/work/main/target/release/soup
cd /work/tinyrun
s=$(date +%s); $B model fetch > fetch.log 2>&1; echo "fetch $(( $(date +%s)-s ))" >> times
s=$(date +%s); $B recipe code-math --budget tiny > code-math.md 2> code-math.err; echo "code-math rc=$? $(( $(date +%s)-s ))" >> times
s=$(date +%s); $B recipe manual-qa --budget tiny > manual-qa.md 2> manual-qa.err; echo "manual-qa rc=$? $(( $(date +%s)-s ))" >> times
