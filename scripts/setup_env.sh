#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install fokker into it.
#
# * torch goes in first, pinned to the CPU build that lies on local disk here,
#   so pip never pulls a multi-GB CUDA build; a torch already importable in the
#   venv (or in the system Python, which the venv then sees) is kept.
# * idempotent: a stamp holding the hash of pyproject.toml skips pip when
#   nothing changed, so a second run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
TORCH_VERSION=${FOKKER_TORCH_VERSION:-2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    if "$PY" -c "import torch" >/dev/null 2>&1; then
        echo "[setup] reusing the system torch build via --system-site-packages"
        "$PY" -m venv --system-site-packages "$VENV"
    else
        "$PY" -m venv "$VENV"
    fi
fi

stamp="$VENV/.fokker-install-stamp"
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import fokker, torch" >/dev/null 2>&1; then
    exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==$TORCH_VERSION (CPU build) first"
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
fi
echo "[setup] installing fokker (editable) with test, plot and bench extras"
"$VENV/bin/pip" install -q -e ".[test,plot,bench]"
echo "$want" > "$stamp"
