#!/usr/bin/env bash
# What a Jetson or desktop-GPU user runs first (and the prepared script for a lent GPU): builds fp16 and int8
# engines from the demo artifacts, validates them against the checkpoint, benchmarks them and summarises each
# engine's layers. Where TensorRT is absent it says so in one line and runs the rest. See scripts/target_check.py.
#   bash scripts/target_check.sh [DEMO_DIR] [--skip-cpp]   (report under $OUT, default target_out/)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" scripts/target_check.py "$@"
