#!/usr/bin/env bash
# Sets up .venv with cfnsr and its test tools. Safe to run again: it only installs what is missing.
# torch is pinned here (not in pyproject.toml) to the CPU-machine wheel this workplace has on disk;
# on a GPU machine or a Jetson, install cfnsr into the environment that already has NVIDIA's torch instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${CFNSR_TORCH_VERSION:-2.14.1}" -e '.[dev]'
.venv/bin/cfnsr --version
