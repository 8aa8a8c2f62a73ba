#!/usr/bin/env bash
# Create .venv with ROS 2 (PyPI wheels), CPU PyTorch, the pinned ML stack and this package (editable).
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
.venv/bin/python -c "import rclpy, torch, transformers, onnxruntime, mobile_vla_ros" \
    || { echo "install.sh: the environment does not import; see the pip output above" >&2; exit 1; }
echo "install.sh: ready (.venv: $(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
