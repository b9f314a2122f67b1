#!/usr/bin/env bash
# Creates .venv (once) and installs the pinned environment. Idempotent: a second run is a no-op check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.dynatree-installed
if [ ! -f "$stamp" ] || [ requirements-lock.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  # torch first and pinned, so that nothing resolves a CUDA build.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -r requirements-lock.txt
  python -m pip install -q --no-deps -e .
  touch "$stamp"
fi
