#!/usr/bin/env bash
# Create .venv (Python 3.11) and install nasstudy with its pinned dependencies; a no-op when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.nasstudy-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing nasstudy into .venv (first time: a few minutes)" >&2
  "$PY" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
