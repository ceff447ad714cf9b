# Each job of a recipe log (stderr of `soup -v recipe ...`): first and last progress second and
# the span between. Usage: python3 phases.py code-math.err
import re,sys
first={};last={};order=[]
for line in open(sys.argv[1], errors='replace'):
    for part in line.split('\r'):
        m=re.match(r'\[\s*(\d+)s\] (\w+) (.+?): ',part.strip())
        if not m: continue
        t=int(m.group(1)); job=m.group(2)+' '+m.group(3)
        if job not in first: first[job]=t; order.append(job)
        last[job]=t
for j in order:
    print(f"{first[j]:6d} {last[j]:6d} {last[j]-first[j]:5d}s  {j}")
