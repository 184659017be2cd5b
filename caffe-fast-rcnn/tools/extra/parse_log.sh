#!/usr/bin/env bash
# Tables of a Caffe training log, as Caffe's tools/extra/parse_log.sh makes them:
#   parse_log.sh /path/to/caffe.log
# writes, in the current folder,
#   caffe.log.test  with columns  #Iters Seconds TestAccuracy TestLoss
#                   (one row per test pass: Test net outputs #0 and #1)
#   caffe.log.train with columns  #Iters Seconds TrainingLoss LearningRate
# Seconds are counted from the log's "Solving" line (extract_seconds.py beside this script);
# each row gets its own line's time (Caffe's script pairs each row with the line before).
# Both log formats are read: "Iteration N, loss = v" and "Iteration N (... iter/s ...), loss = v".
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "Usage parse_log.sh /path/to/your.log"
    exit 1
fi
here="$(cd "$(dirname "$0")" && pwd -P)"
log="$1"
name="$(basename "$log")"
py="${CAFFE_PYTHON:-}"
if [ -z "$py" ]; then
    root="$(cd "$here/../../.." && pwd -P)"
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The number after "Iteration" on each line read from stdin.
iterations() { sed -n 's/.*Iteration \([0-9][0-9]*\).*/\1/p'; }
# The value after " = " at the end of each line read from stdin.
values() { sed -n 's/.* = *\([^ ]*\).*/\1/p'; }

# ---- test passes: from each "Testing net" line up to the next training loss line --------------
awk '/Iteration [0-9]+.*Testing net/ {inside = 1}
     inside && /Iteration [0-9]+.*, loss = / {inside = 0}
     inside' "$log" | grep -v -e 'Waiting for data' -e 'prefetch queue empty' \
    -e 'Iteration [0-9]*.*, loss = ' -e ', lr = ' -e 'Train net' > "$work/test" || true
grep 'Testing net' "$work/test" | iterations > "$work/test_iters" || true
grep 'Test net output #0' "$work/test" | values > "$work/test_out0" || true
grep 'Test net output #1' "$work/test" | values > "$work/test_out1" || true
{ grep '] Solving ' "$log" || true; grep 'Testing net' "$log" || true; } > "$work/test_times"
"$py" "$here/extract_seconds.py" "$work/test_times" "$work/test_seconds_all"
tail -n +2 "$work/test_seconds_all" > "$work/test_seconds"  # the first is the Solving line
{
    echo '#Iters Seconds TestAccuracy TestLoss'
    paste "$work/test_iters" "$work/test_seconds" "$work/test_out0" "$work/test_out1" | column -t
} > "$name.test"

# ---- training: one row per "loss = " display line ----------------------------------------------
grep -E 'Iteration [0-9]+.*, loss = ' "$log" > "$work/train" || true
iterations < "$work/train" > "$work/train_iters"
values < "$work/train" > "$work/train_loss"
grep -E 'Iteration [0-9]+, lr = ' "$log" | values > "$work/train_lr" || true
{ grep '] Solving ' "$log" || true; cat "$work/train"; } > "$work/train_times"
"$py" "$here/extract_seconds.py" "$work/train_times" "$work/train_seconds_all"
tail -n +2 "$work/train_seconds_all" > "$work/train_seconds"
{
    echo '#Iters Seconds TrainingLoss LearningRate'
    paste "$work/train_iters" "$work/train_seconds" "$work/train_loss" "$work/train_lr" | column -t
} > "$name.train"
