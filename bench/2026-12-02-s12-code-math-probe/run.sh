#!/bin/bash
# Probe for issue 12 (2026-12-02, twelfth session): the math skill's new equation-style steps
# at the standard budget's training size, evaluated the old way (2 shots, 100 target
# questions) on a copy of the recipe with fewer methods (cm-exp.toml), then zero-shot
# (zs.sh) on the adapters it trained, and two full-scale merges ([1, 1]) zero-shot.
# Binary: commit 303d839's code before the built-in folder was renamed code-math-v2.
set -u
export SOUP_HOME=$PWD/home
B=${SOUP:-soup}
$B model fetch
$B -v recipe cm-exp.toml --budget exp > exp.md 2> exp.err
SOUP=$B ./zs.sh > zs.log
$B merge --method cat --weights 1,1 --name cat11 code-math-exp-math code-math-exp-code
$B merge --method ties --weights 1,1 --density 0.5 --name ties11 code-math-exp-math code-math-exp-code
for a in cat11 ties11; do
  echo "$a $($B eval --adapter $a --task code-math --data builtin:codemath-test --limit 60 --shots 0 --max-new-tokens 128 2>&1 | tail -2 | tr '\n' ' ')"
done >> zs.log
