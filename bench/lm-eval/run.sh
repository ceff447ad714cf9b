#!/usr/bin/env bash
# lm-evaluation-harness against `soup serve`, run by hand for RESULTS.md (CI never runs it).
#
# One generative task: the built-in manual-QA questions (seed 0), closed book, greedy, cut at
# the first newline, scored by lm-eval's own exact_match (case and punctuation ignored). The
# prompt is soup's plain closed-book QA prompt, so lm-eval's score can be read beside
# `soup eval --task manual-qa --chat false` on the same model.
#
#   python3 -m venv .venv-lmeval && .venv-lmeval/bin/pip install "lm-eval[api]==0.4.13"
#   soup serve --port 8000 &                       # with the adapters in its data dir
#   bench/lm-eval/run.sh MODEL [PORT] [LIMIT]      # MODEL: a stored/CAT adapter or composition
#
# Needs `soup` and `lm_eval` on PATH (or SOUP=..., LM_EVAL=...). Writes lm-eval's results and
# per-sample files under bench/lm-eval/out/.
set -euo pipefail
model=${1:?usage: run.sh MODEL [PORT] [LIMIT]}
port=${2:-8000}
limit=${3:-100}
soup=${SOUP:-soup}
lm_eval=${LM_EVAL:-lm_eval}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$soup" data generate manual-qa --seed 0 --out "$work/data" >/dev/null
mkdir -p "$work/tasks"
python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
rows = json.loads((work / "data" / "manual_qa_test.json").read_text())
with open(work / "manual_qa.jsonl", "w") as f:
    for i, r in enumerate(rows):
        f.write(json.dumps({"id": i, "question": r["instruction"], "answer": r["answer"]}) + "\n")
(work / "tasks" / "soup_manual_qa.yaml").write_text(f"""task: soup_manual_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {work / 'manual_qa.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "Answer the question in a few words.\\n\\nQuestion: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 24
  do_sample: false
  temperature: 0.0
filter_list:
  - name: strip
    filter:
      - function: regex
        regex_pattern: "^\\\\s*(.*?)\\\\s*$"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
metadata:
  version: 1.0
""")
PY
"$lm_eval" --model local-completions \
  --model_args "model=$model,base_url=http://127.0.0.1:$port/v1/completions,tokenizer_backend=None,tokenized_requests=False,num_concurrent=4,max_retries=3" \
  --tasks soup_manual_qa --include_path "$work/tasks" --limit "$limit" \
  --output_path "$here/out" --log_samples
