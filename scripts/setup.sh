#!/usr/bin/env bash
# Create .venv (if missing) and install manytask into it with its test tools.
#
# torch: TORCH_SPEC (default "torch==2.13.0") is installed first, so that pip never resolves a
# bare `torch` requirement by itself. Where that version is not on the local disk, pick the
# build with TORCH_INDEX_URL, e.g.
#   CPU only:  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
#   CUDA 12.x: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "${PIP[@]}" install "$TORCH_SPEC"
  fi
fi
"${PIP[@]}" install -e ".[dev]"
echo "manytask installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
