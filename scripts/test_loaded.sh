#!/usr/bin/env bash
# The whole suite 3 times in a row while another process keeps every core busy (issue 13):
# no test may depend on how fast the host is. Extra arguments go to pytest.
set -euo pipefail
PY=${PY:-python3}
N=$(nproc)
"$PY" scripts/busy_loop.py --workers "$N" &
BUSY=$!
trap 'kill "$BUSY" 2>/dev/null || true; wait "$BUSY" 2>/dev/null || true' EXIT
for i in 1 2 3; do
  echo "== test-loaded: run $i of 3, $N cores kept busy by busy_loop.py"
  "$PY" -m pytest -p no:cacheprovider "$@"  # -q comes from pyproject (a second -q hides the counts)
done
echo "== test-loaded: 3 of 3 runs passed"
