#!/usr/bin/env bash
# Sets up .venv with cfnsr and its test tools. Safe to run again: it only installs what is missing.
# torch is pinned here (not in pyproject.toml) to the CPU-machine wheel this workplace has on disk;
# on a GPU machine or a Jetson, install cfnsr into the environment that already has NVIDIA's torch instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# A Jetson (or any machine whose Python already has a CUDA torch) keeps its own torch and TensorRT: the venv sees
# them (--system-site-packages), no torch is installed, and JetPack's constraints keep numpy and TensorRT in range.
# PyPI's aarch64 torch is a server-ARM CUDA 13 build that gives no working GPU on a Jetson.
extras=dev; constraint=(); torch_req=("torch==${CFNSR_TORCH_VERSION:-2.14.1}"); venv_flags=()
if [ -f /etc/nv_tegra_release ]; then
  l4t=$(sed -n 's/^# R\([0-9]*\).*/\1/p' /etc/nv_tegra_release)
  case "$l4t" in
    36) constraint=(-c constraints/jetpack6.txt) ;;
    38) constraint=(-c constraints/jetpack7.txt) ;;
    *) echo "setup: L4T R$l4t is neither JetPack 6 (R36) nor 7 (R38); no constraints applied" >&2 ;;
  esac
  extras=dev,jetson; torch_req=(); venv_flags=(--system-site-packages)
  "$PY" -c "import torch" 2>/dev/null || echo "setup: install NVIDIA's torch for this JetPack first (not PyPI's)" >&2
elif "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "setup: $PY already has a CUDA torch: keeping it (venv with --system-site-packages, no torch installed)"
  torch_req=(); venv_flags=(--system-site-packages)
fi
[ -x .venv/bin/python ] || "$PY" -m venv "${venv_flags[@]}" .venv
# The C++ runtime's build tools (cpp/): cmake, a C/C++ compiler and nlohmann-json's headers, and its media
# component's libraries, from apt where missing. Without root or apt they are only reported: the C++ tests then skip
# (or fail under CFNSR_REQUIRE_CPP=1).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v cc >/dev/null || need+=(gcc)
[ -f /usr/include/nlohmann/json.hpp ] || [ -f /usr/local/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
command -v espeak-ng >/dev/null || need+=(espeak-ng)  # real speech for the front end's exactness test
# The C++ media component (cfnsr::media): FFmpeg to decode, libsoxr to resample, OpenCV's Haar detector and resize.
command -v pkg-config >/dev/null || need+=(pkg-config)
for pc in libavformat:libavformat-dev libavcodec:libavcodec-dev libswscale:libswscale-dev libavutil:libavutil-dev \
          soxr:libsoxr-dev; do
  pkg-config --exists "${pc%%:*}" 2>/dev/null || need+=("${pc#*:}")
done
[ -f /usr/include/opencv4/opencv2/objdetect.hpp ] || [ -f /usr/local/include/opencv4/opencv2/objdetect.hpp ] \
  || need+=(libopencv-core-dev libopencv-imgproc-dev libopencv-objdetect-dev)
[ -f /usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml ] || need+=(opencv-data)
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
.venv/bin/python -m pip install -q "${constraint[@]}" "${torch_req[@]}" -e ".[$extras]"
.venv/bin/cfnsr --version
