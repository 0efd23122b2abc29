#!/usr/bin/env bash
# Sets up (if needed) and runs the test suite. Extra arguments go to pytest.
# The files are shared out to TFRRL_TEST_WORKERS processes (pytest-xdist, default 2: most tests
# are single-threaded graph building and gRPC round trips, so two workers keep two cores busy);
# each file stays in one worker, so module fixtures are built once. `-n 0` runs in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -n "${TFRRL_TEST_WORKERS:-2}" --dist loadfile "$@"
