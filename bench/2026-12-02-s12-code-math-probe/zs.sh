#!/bin/bash
export SOUP_HOME=${SOUP_HOME:-$PWD/home}; B=${SOUP:-soup}
for a in code-math-exp-math code-math-exp-code code-math-exp-cat-uniform code-math-exp-linear-cat-scale; do
  for t in "code-math builtin:codemath-test" "math-cot builtin:math-test"; do set -- $t
    echo "$a $1 $($B eval --adapter $a --task $1 --data $2 --limit 60 --shots 0 --max-new-tokens 128 2>&1 | tail -2 | tr '\n' ' ')"
  done
done
