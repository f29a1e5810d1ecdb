#!/usr/bin/env bash
# Sets up .venv with cfnsr and its test tools. Safe to run again: it only installs what is missing.
# torch is pinned here (not in pyproject.toml) to the CPU-machine wheel this workplace has on disk;
# on a GPU machine or a Jetson, install cfnsr into the environment that already has NVIDIA's torch instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# The C++ runtime's build tools (cpp/): cmake, a C/C++ compiler and nlohmann-json's headers, from apt where
# missing. Without root or apt they are only reported: the C++ tests then skip (or fail under CFNSR_REQUIRE_CPP=1).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v cc >/dev/null || need+=(gcc)
[ -f /usr/include/nlohmann/json.hpp ] || [ -f /usr/local/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; } \
      || echo "setup: could not install ${need[*]} with apt; the C++ runtime tests will skip" >&2
  else
    echo "setup: the C++ runtime needs ${need[*]} (apt install ${need[*]}); its tests will skip" >&2
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${CFNSR_TORCH_VERSION:-2.14.1}" -e '.[dev]'
.venv/bin/cfnsr --version
