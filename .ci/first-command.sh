#!/usr/bin/env bash
# The README's first command, as a newcomer types it: `cargo run --release` must open the
# dashboard (its first frame appears) and `q` must quit it with status 0. Run in tmux, a real
# pseudo-terminal, on an empty data dir.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
home=$(mktemp -d)
session="soup-first-command-$$"
status_file="$home/exit-status"
cleanup() { tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$home"; }
trap cleanup EXIT
tmux new-session -d -s "$session" -x 160 -y 45 \
  "SOUP_HOME='$home/data' cargo run --release; echo \$? > '$status_file'; sleep 5"
for _ in $(seq 1 120); do
  if tmux capture-pane -p -t "$session" | grep -q "1 Adapters"; then
    break
  fi
  sleep 1
done
if ! tmux capture-pane -p -t "$session" | grep -q "1 Adapters"; then
  echo "first command: the dashboard's first frame did not appear; the screen was:"
  tmux capture-pane -p -t "$session"
  exit 1
fi
tmux send-keys -t "$session" q
for _ in $(seq 1 30); do
  [ -s "$status_file" ] && break
  sleep 1
done
status=$(cat "$status_file" 2>/dev/null || echo "none")
if [ "$status" != "0" ]; then
  echo "first command: q did not quit with status 0 (status: $status)"
  exit 1
fi
echo "first command: dashboard opened and q quit with status 0"
