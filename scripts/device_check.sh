#!/usr/bin/env bash
# Everything worth running on a lent GPU, in one call (< 8 minutes). Results go under $OUT.
# The device machine has its own torch (CUDA) and no network: cfnsr runs from this checkout via PYTHONPATH,
# and only what needs torch alone runs there (the model, training and inference throughput, gpu-marked tests
# when pytest is present).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
  echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  echo "== training throughput, paper configuration (fp32 vs mixed precision)"
  timeout 240 python benchmarks/gpu_train.py --config cfn-sr --batch 16 --steps 20 --json "$OUT/gpu_train.json"
  if [ -f benchmarks/gpu_infer.py ]; then
    echo "== inference latency, paper configuration (eager fp32 vs autocast vs CUDA graph)"
    timeout 200 python benchmarks/gpu_infer.py --config cfn-sr --json "$OUT/gpu_infer.json"
  fi
  if python -c "import pytest" 2>/dev/null; then
    echo "== gpu-marked tests"
    timeout 120 python -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tail -15
  else
    echo "== pytest is not installed on this machine: gpu-marked tests not run"
  fi
} 2>&1 | tee "$OUT/device_check.log"
