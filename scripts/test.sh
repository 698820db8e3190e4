#!/usr/bin/env bash
# Set up (once) and run the tests: bash scripts/test.sh [pytest options, e.g. -m "not slow"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true PATH="$PWD/.venv/bin:$PATH"
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
