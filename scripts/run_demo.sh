#!/usr/bin/env bash
# Sets up (if needed) and runs the main job on the embedded synthetic default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/tfrrl demo "$@"
