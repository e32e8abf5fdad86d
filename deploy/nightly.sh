#!/usr/bin/env bash
# Process every scene in INBOX that has no complete result in OUTBOX yet.
#   deploy/nightly.sh INBOX OUTBOX [SCHEDULER]
# A result counts as done only when `roadnet.open_result` accepts it (the store's completion
# record); an interrupted store is resumed by `roadnet run`, which recomputes only missing
# chunks. Exits non-zero if any scene failed, after trying all of them.
# ROADNET_ARGS adds options to every `roadnet run` (e.g. "--model /models/x.keras").
set -uo pipefail
inbox=${1:?usage: nightly.sh INBOX OUTBOX [SCHEDULER]}
outbox=${2:?usage: nightly.sh INBOX OUTBOX [SCHEDULER]}
scheduler=${3:-${DASK_SCHEDULER_ADDRESS:-}}
roadnet=${ROADNET:-roadnet}
python=${PYTHON:-python3}
mkdir -p "$outbox"
failed=0
shopt -s nullglob
for scene in "$inbox"/*.tif "$inbox"/*.tiff; do
  name=$(basename "${scene%.*}")
  result="$outbox/$name.zarr"
  if "$python" -c "import sys, roadnet; roadnet.open_result(sys.argv[1])" "$result" 2>/dev/null; then
    echo "skip $name: complete result exists"
    continue
  fi
  args=(run "$scene" --out "$result")
  [ -n "$scheduler" ] && args+=(--scheduler "$scheduler")
  # shellcheck disable=SC2206  # word splitting of ROADNET_ARGS is intended
  [ -n "${ROADNET_ARGS:-}" ] && args+=(${ROADNET_ARGS})
  if "$roadnet" "${args[@]}"; then
    echo "done $name"
  else
    echo "FAILED $name" >&2
    failed=1
  fi
done
exit $failed
