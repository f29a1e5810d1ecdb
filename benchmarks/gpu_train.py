"""Training throughput of a CFN-SR configuration on one GPU: fp32 vs mixed precision (bf16, or fp16 + scaler).

    python benchmarks/gpu_train.py --config cfn-sr --batch 16 --steps 20 --json $OUT/gpu_train.json

Random inputs of the configured shape (the data pipeline is not what is measured). Prints samples/s for each
precision and the ratio to fp32 measured in the same run. Needs only torch (and cfnsr on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from cfnsr.model import create_model
from cfnsr.model.summary import example_inputs


def measure(config: str, batch: int, steps: int, warmup: int, dtype, device: torch.device) -> float:
    torch.manual_seed(0)
    model = create_model(config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    video, audio = (t.to(device) for t in example_inputs(model.config, batch))
    label = torch.randint(0, 8, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(video, audio).float(), label)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cfn-sr")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", dest="json_path")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    runs = {"fp32": None}
    if device.type == "cuda":
        runs["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = (
            torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    result = {"config": a.config, "batch": a.batch, "steps": a.steps, "device": str(device),
              "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None, "torch": torch.__version__,
              "samples_per_s": {}}
    for name, dtype in runs.items():
        result["samples_per_s"][name] = measure(a.config, a.batch, a.steps, a.warmup, dtype, device)
    base = result["samples_per_s"]["fp32"]
    print(f"training throughput, {a.config}, batch {a.batch}, {result['gpu'] or 'CPU'}")
    for name, v in result["samples_per_s"].items():
        print(f"  {name:<5} {v:8.1f} samples/s   x{v / base:.2f} vs fp32")
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
