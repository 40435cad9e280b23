#!/usr/bin/env bash
# One table of GPU figures (training step, evaluation, caption engines) within 10 minutes; installs
# nothing. Without a CUDA device it says so and exits 0. Options: --help (python -m benchmarks.gpu_check).
# Interpreter: $PYTHON, else the project's .venv, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
exec "$py" -m benchmarks.gpu_check "$@"
