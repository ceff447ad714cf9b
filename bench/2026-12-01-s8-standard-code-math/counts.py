# Correct answers per evaluation, counted from a recipe log's progress lines (a check while the
# run goes on; the recipe's own table is the result). Usage: python3 counts.py code-math.err
import re,sys
res={}
for line in open(sys.argv[1], errors='replace'):
    for part in line.split('\r'):
        m=re.match(r'\[\s*(\d+)s\] eval (.+?): (\d+)/(\d+) question (\S+) (.*)$',part.strip())
        if not m: continue
        job=m.group(2); q=m.group(5); v=m.group(6)
        res.setdefault(job,{})[q]=v
for j,d in res.items():
    c=sum(1 for v in d.values() if v.startswith('correct'))
    print(f"{j}: {c}/{len(d)} correct; verdict kinds: {sorted(set(v.split()[0] for v in d.values()))[:5]}")
