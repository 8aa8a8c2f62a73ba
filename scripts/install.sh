#!/usr/bin/env bash
# Create .venv with ROS 2 (PyPI wheels), CPU PyTorch, the pinned ML stack and this package (editable).
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# MuJoCo (the simulated robot) renders headless through OSMesa on the CPU unless MUJOCO_GL=egl.
if ! ldconfig -p | grep -q libOSMesa; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        apt-get install -y -q libosmesa6 > /dev/null 2>&1 \
            || { apt-get update -q > /dev/null && apt-get install -y -q libosmesa6 > /dev/null; }
    else
        echo "install.sh: warning: libOSMesa missing; run 'sudo apt-get install libosmesa6' for the simulator" >&2
    fi
fi
# The default environment is .venv (ROS 2 Kilted); `install.sh --jazzy` makes .venv-jazzy (ROS 2 Jazzy,
# the same ML stack), which the CI's second-distro test runs the ROS-facing tests in.
VENV=.venv REQUIREMENTS=requirements/dev.txt
if [ "${1:-}" = "--jazzy" ]; then
    VENV=.venv-jazzy REQUIREMENTS=requirements/jazzy.txt
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# .venv-jazzy beside a .venv of the same Python uses .venv's ML stack (the same pinned files, linked) and
# installs only the Jazzy wheels: seconds instead of minutes of CI time.
if [ "$VENV" = .venv-jazzy ] && [ -x .venv/bin/python ]; then
    .venv/bin/python scripts/link_ml_stack.py "$VENV" || true
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
# Type stubs of TensorRT 10.13 for the static check of the TensorRT code (TensorRT itself cannot be
# installed here); --no-deps: the stubs declare a dependency on tensorrt, which cannot install.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps tensorrt-stubs==10.13.0.35.1
"$VENV/bin/python" -c "import rclpy, torch, transformers, onnxruntime, mujoco, mobile_vla_ros" \
    || { echo "install.sh: the environment does not import; see the pip output above" >&2; exit 1; }
echo "install.sh: ready ($VENV: $("$VENV/bin/python" --version), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
