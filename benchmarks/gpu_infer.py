"""Inference latency of a CFN-SR configuration on one GPU: eager fp32, autocast fp16 and bf16, and CUDA-graph
replay of each (TensorRT is not on the lent GPU machine; this is the PyTorch side of the comparison).

    python benchmarks/gpu_infer.py --config cfn-sr --batch 1,8 --json $OUT/gpu_infer.json

GPU time from CUDA events; ratios against eager fp32 at the same batch, measured in the same run. Needs only
torch (and cfnsr on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json

import torch

from cfnsr.model import create_model
from cfnsr.model.summary import example_inputs


def time_fn(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cfn-sr")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", dest="json_path")
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = create_model(a.config).cuda().eval()
    result = {"config": a.config, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    for batch in (int(b) for b in a.batch.split(",")):
        video, audio = (t.cuda() for t in example_inputs(model.config, batch))
        with torch.no_grad():
            ref = model(video, audio).float()
        variants = {}
        for name, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            def run(dtype=dtype):
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    return model(video, audio)

            variants[f"eager {name}"] = run
            # CUDA graph: capture once on a side stream, then replay (static input buffers).
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    run()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = run()
            variants[f"cuda-graph {name}"] = (graph.replay, static_out)
        base = None
        for name, fn in variants.items():
            out = None
            if isinstance(fn, tuple):
                fn, out = fn
            ms = time_fn(fn, a.warmup, a.iters)
            if out is None:
                out = fn()
            agree = float((out.float().argmax(1) == ref.argmax(1)).float().mean())
            base = base or ms
            row = {"batch": batch, "variant": name, "gpu_ms": ms, "clips_per_s": batch * 1e3 / ms,
                   "speedup_vs_eager_fp32": base / ms, "max_abs_logit_vs_fp32": float((out.float() - ref).abs().max()),
                   "agreement_vs_fp32": agree}
            result["runs"].append(row)
            print(f"batch {batch:>3} {name:<18} {ms:8.2f} ms  {row['clips_per_s']:8.1f} clips/s  "
                  f"x{row['speedup_vs_eager_fp32']:.2f}  max|dlogit| {row['max_abs_logit_vs_fp32']:.2e}")
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
