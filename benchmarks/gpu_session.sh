#!/usr/bin/env bash
# One GPU session (benchmarks/gpu_session.py; how to run it and commit its results: benchmarks/README.md).
# From the repository root on the GPU machine:   OUT=/path/to/out bash benchmarks/gpu_session.sh
# The same steps on the CPU at tiny sizes:       REHEARSAL=1 OUT=/tmp/out bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.." || exit 2
exec "${PYTHON:-python3}" benchmarks/gpu_session.py "$@"
