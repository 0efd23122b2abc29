#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with tfrrl and its pinned dependencies.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
"$PY" -c 'import sys; v=sys.version_info[:2]; assert (3,10) <= v < (3,13), f"Python 3.10-3.12 needed, got {v}"'
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.tfrrl-installed
want=$(cat setup.py requirements-lock.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[bootstrap] .venv up to date"
  exit 0
fi
echo "[bootstrap] installing tfrrl and pinned dependencies (first run: a few minutes)"
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet -c requirements-lock.txt -e ".[dev]"
.venv/bin/python -m pip check
echo "$want" > "$stamp"
echo "[bootstrap] done"
