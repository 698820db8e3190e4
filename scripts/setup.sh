#!/usr/bin/env bash
# Create .venv (Python 3.11) and install nasstudy with its pinned dependencies; a no-op when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.nasstudy-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch/torchvision (CUDA build, from this machine's disk) make the venv about 6.5 GB.
  free_kb="$(df -Pk . | awk 'NR==2 {print $4}')"
  if [ "${free_kb:-0}" -lt $((7 * 1024 * 1024)) ]; then
    echo "setup: only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}');" \
      "the .venv needs about 7 GB (torch + torchvision). Free some space and rerun." >&2
    exit 1
  fi
  echo "setup: installing nasstudy into .venv (first time: a few minutes)" >&2
  "$PY" -m venv .venv
  # -qq: errors only (this machine's pip config names index folders that do not exist, a warning per package)
  .venv/bin/pip install -qq --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
