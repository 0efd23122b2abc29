#!/usr/bin/env bash
# Regenerates tfrrl_serving/protos/*_pb2*.py from the .proto files with grpcio-tools (pinned in the
# dev extra; its protoc matches the pinned protobuf runtime). Usage:
#   scripts/gen_protos.sh            # in place (commit the result)
#   scripts/gen_protos.sh OUT_DIR    # into OUT_DIR/serving/protos (the staleness test)
# tests/test_matching_service.py checks that the committed files are what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-.}
mkdir -p "$OUT"
"$PY" -m grpc_tools.protoc -I. --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  tfrrl_serving/protos/matching.proto
