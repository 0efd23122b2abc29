#!/usr/bin/env bash
# Regenerates serving/protos/*_pb2*.py from the .proto files (grpcio-tools, pinned in the dev
# extra). tests/test_matching_service.py checks the committed files are up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
  serving/protos/matching.proto
