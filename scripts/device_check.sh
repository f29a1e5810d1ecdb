#!/usr/bin/env bash
# Everything worth running on a lent GPU, in one call (< 8 minutes). Results go under $OUT.
# The device machine has its own torch (CUDA) and no network: cfnsr runs from this checkout via PYTHONPATH,
# and only what needs torch alone runs there (the model, the C++ runtime with CUDA packages, training and
# inference throughput, gpu-marked tests). The C++ build needs nlohmann-json's headers: carry the Debian package
# in .devdeps/ (apt-get download nlohmann-json3-dev); it is unpacked under /tmp, never over /.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{
  echo "== machine"; command -v cmake ninja c++ cc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  if $PY -c "import pytest" 2>/dev/null; then
    echo "== gpu-marked tests"
    timeout 120 $PY -m pytest -q -p no:cacheprovider tests/train/test_gpu.py 2>&1 | tail -15
  else
    echo "== pytest is not installed on this machine: gpu-marked tests not run"
  fi
  echo "== C++ runtime: build against this machine's libtorch, CUDA AOTInductor packages"
  NL=/tmp/cfnsr-devdeps; mkdir -p $NL
  for f in .devdeps/*.deb; do [ -f "$f" ] && dpkg -x "$f" $NL; done
  TORCH_ROOT=$($PY -c "import os, torch; print(os.path.dirname(torch.__file__))")
  if timeout 240 cmake -S cpp -B /tmp/cfnsr-cpp -G Ninja -DCMAKE_BUILD_TYPE=Release -DCFNSR_WITH_AOTI=ON \
       -DCFNSR_TORCH_ROOT="$TORCH_ROOT" -Dnlohmann_json_DIR=$NL/usr/share/cmake/nlohmann_json >/tmp/cfnsr-cmake.log 2>&1 \
     && timeout 180 cmake --build /tmp/cfnsr-cpp -j 16 >>/tmp/cfnsr-cmake.log 2>&1; then
    tail -1 /tmp/cfnsr-cmake.log
    timeout 270 $PY benchmarks/gpu_cpp.py --infer /tmp/cfnsr-cpp/examples/cfnsr_infer --configs cfn-sr-tiny,cfn-sr \
      --json "$OUT/gpu_cpp.json"
  else
    echo "C++ build failed:"; tail -30 /tmp/cfnsr-cmake.log
  fi
  echo "== the real CLI on the GPU: synthetic data, train cfn-sr-tiny 2 epochs, export fp32 + CUDA pt2, bench --device cuda"
  # The GPU image lacks librosa and PyAV: carry them as wheels in .whl/ (see the device README's recipe:
  # pip download --only-binary=:all: --python-version 3.12 ... librosa av soxr soundfile audioread pooch
  # lazy-loader msgpack), named in `carry`.
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
  fi
  if $PY -c "import librosa, av, click" 2>/dev/null; then
    W=/tmp/cfnsr-cli; rm -rf $W; mkdir -p $W
    CLI="$PY -m cfnsr"
    timeout 60 $CLI synth-ravdess $W/raw --actors 4 \
      && timeout 90 $CLI preprocess $W/raw -o $W/cache --config cfn-sr-tiny --workers 8 \
      && timeout 120 $CLI train $W/cache --config cfn-sr-tiny -o $W/run --folds 4 --epochs 2 --device cuda --workers 4 \
      && timeout 60 $CLI export $W/run/fold1/best.pt --precision fp32 --format onnx --calib-data $W/cache \
      && timeout 150 $CLI export $W/run/fold1/best.pt --precision fp32 --format pt2 --device cuda --calib-data $W/cache \
      && timeout 90 $CLI bench $W/run/fold1/best.fp32.pt2 $W/run/fold1/best.fp32.onnx --reference $W/run/fold1/best.pt \
           --device cuda --batch 1,8 --json "$OUT/cli_bench.json" \
      || echo "the CLI chain stopped (exit $?)"
  else
    echo "librosa/PyAV are not importable here and no .whl/ was carried: the CLI chain is skipped"
  fi
  echo "== inference latency, paper configuration (eager fp32 vs autocast vs CUDA graph)"
  timeout 110 $PY benchmarks/gpu_infer.py --config cfn-sr --json "$OUT/gpu_infer.json"
  echo "== training throughput, paper configuration (fp32 vs mixed precision)"
  timeout 110 $PY benchmarks/gpu_train.py --config cfn-sr --batch 16 --steps 20 --json "$OUT/gpu_train.json"
} 2>&1 | tee "$OUT/device_check.log"
