#!/usr/bin/env bash
# Regenerate the Sparkplug B protobuf module (and its type stub) from sparkplug_b.proto.
# Needs grpcio-tools (its bundled protoc) in the venv: .venv/bin/pip install grpcio-tools
# The generated files are committed, so running shopfloor needs only the protobuf runtime; its version
# must be at least the one this protoc generates for (see the check at the top of sparkplug_b_pb2.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
DIR="src/shopfloor/connectors/sparkplug"
cd "$ROOT/$DIR"
"$PY" -m grpc_tools.protoc --proto_path=. --python_out=. --pyi_out=. sparkplug_b.proto
echo "generated $DIR/sparkplug_b_pb2.py and sparkplug_b_pb2.pyi with $("$PY" -m grpc_tools.protoc --version)"
