#!/usr/bin/env python3
"""Scores and wall time per evaluation, counted from a recipe's progress lines (stderr of
`soup -v recipe ...`), for a run that has not printed its table yet."""
import re, sys, collections
score = collections.OrderedDict()
done_at = {}
start = {}
prev = 0
for line in open(sys.argv[1] if len(sys.argv) > 1 else "code-math.err"):
    m = re.match(r"\[\s*(\d+)s\] (eval (\S+) on (\S+)): (\d+)/(\d+) question \S+ (correct|not correct)", line)
    if m:
        key = (m.group(3), m.group(4))
        s = score.setdefault(key, [0, 0])
        s[1] += 1
        s[0] += m.group(7) == "correct"
        start.setdefault(key, prev)
        continue
    m = re.match(r"\[\s*(\d+)s\] eval (\S+) on (\S+): done", line)
    if m:
        done_at[(m.group(2), m.group(3))] = int(m.group(1))
    m = re.match(r"\[\s*(\d+)s\]", line)
    if m:
        prev = int(m.group(1))
for (cfg, col), (right, n) in score.items():
    took = done_at.get((cfg, col))
    t = f"{took - start[(cfg, col)]} s" if took else "running"
    print(f"{cfg:45s} {col:10s} {right:4d}/{n:<4d} {100 * right / n:5.1f} %  done at {took or '-'} s ({t})")
