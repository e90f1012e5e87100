#!/usr/bin/env bash
# Every guest test file, FERRY_GUEST_RUNS times (default 10) on each data path, alternating, stopping at the
# first failure: the check that no guest hangs on either path (a rare stall needs many boots to show).
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${FERRY_GUEST_RUNS:-10}
start=$SECONDS
for ((i = 1; i <= runs; i++)); do
  for native in 1 0; do
    label=$([ "$native" = 1 ] && echo native || echo js)
    echo "soak:guest: run $i/$runs, $label data path"
    if ! FERRY_NATIVE=$native npx vitest run test/guest; then
      echo "soak:guest: FAILED at run $i/$runs on the $label data path after $((SECONDS - start)) s" >&2
      exit 1
    fi
  done
done
echo "soak:guest: $runs runs of test/guest on each data path passed in $((SECONDS - start)) s"
