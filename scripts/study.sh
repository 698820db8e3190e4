#!/usr/bin/env bash
# Set up (once) and run the default study end to end: bash scripts/study.sh [nasstudy run options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true
exec .venv/bin/nasstudy run "$@"
