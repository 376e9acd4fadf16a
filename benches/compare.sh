#!/usr/bin/env bash
# Back-to-back load comparison of two checkouts on this machine (figures taken at different
# times or on another machine prove nothing here). Builds each once, then runs the load
# benchmark alternately, ROUNDS times each, and prints the per-run lines and the JSON paths.
# Usage: benches/compare.sh OLD_CHECKOUT NEW_CHECKOUT [SCENARIO ...]   (default: accept e2e sync)
set -euo pipefail
old=$1 new=$2; shift 2
scenarios=("${@:-accept e2e sync}")
rounds=${ROUNDS:-3}
for dir in "$old" "$new"; do (cd "$dir" && cargo bench --bench load --no-run); done
for round in $(seq "$rounds"); do
  for dir in "$old" "$new"; do
    echo "=== round $round $(git -C "$dir" rev-parse --short HEAD) load $(cut -d' ' -f1 /proc/loadavg)"
    # shellcheck disable=SC2068
    (cd "$dir" && cargo bench --bench load -- ${scenarios[@]})
  done
done
