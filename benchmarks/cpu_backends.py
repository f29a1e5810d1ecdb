"""Paper-size CFN-SR on this CPU: torch eager fp32 vs ONNX Runtime and OpenVINO, fp32 and int8 of every scope.

    python benchmarks/cpu_backends.py --threads 2 --iters 5 --out bench_out
    python benchmarks/cpu_backends.py --scopes all --placements legacy,tensorrt --ov-precision default,f32

``--placements``: ``tensorrt`` is cfnsr's int8 placement; ``legacy`` the ONNX Runtime defaults cfnsr used before
(Q/DQ on layer outputs too; benchmarks/legacy_placement.py), for a before/after in one run. ``--ov-precision``:
OpenVINO's INFERENCE_PRECISION_HINT for what is not int8 (cfnsr's runner pins ``f32``; ``default`` lets OpenVINO
choose: bf16 on CPUs with AVX512_BF16 or AMX, so its "fp32" row is then really bf16).

Everything is measured in this one run: batch 1, the given threads for every backend, each latency printed as a
ratio to torch eager fp32, with the top-1 agreement of each artifact with torch on held-out synthetic clips.
The weights are the seeded random initialisation of ``cfn-sr`` (no trained paper-size model can be made on a
CPU here); int8 is calibrated (percentile) on synthetic RAVDESS clips of one actor and checked on another's.
Writes bench.json, bench.md and bench.png under --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--calib-clips", type=int, default=8)
    p.add_argument("--agree-clips", type=int, default=6)
    p.add_argument("--scopes", default="all,no-stem,no-grouped,no-stem-grouped,audio-fusion")
    p.add_argument("--placements", default="tensorrt")
    p.add_argument("--ov-precision", default="f32")
    p.add_argument("--out", default="bench_out")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from legacy_placement import legacy_quantize

    from cfnsr.artifact import base_metadata
    from cfnsr.data.cache import FeatureCache, preprocess
    from cfnsr.data.features import to_model_inputs
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.synth import generate
    from cfnsr.engines import load
    from cfnsr.export import int8 as int8_mod
    from cfnsr.export.calibrate import calibrate, select_clips
    from cfnsr.export.onnx_graph import export_fp32, input_spec, set_metadata
    from cfnsr.fileio import write_json, write_text
    from cfnsr.model import create_model, save_checkpoint
    from cfnsr.reports import markdown_table, plot_bars
    from cfnsr.sysinfo import machine

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cfnsr-bench-"))
    spec = PreprocessSpec()
    print(f"synthetic data and paper-size features in {work} ...")
    generate(work / "raw", actors=2, seed=0, workers=a.threads, progress=False)
    preprocess(work / "raw", work / "cache", spec, workers=a.threads, progress=False, log=lambda *x: None)
    cache = FeatureCache.open(work / "cache")

    torch.manual_seed(0)
    model = create_model("cfn-sr").eval()
    ckpt = save_checkpoint(work / "paper.pt", model, preprocess=spec.to_dict())
    t0 = time.time()
    graph = export_fp32(model, work / "fp32.onnx")
    set_metadata(graph, **base_metadata(input_spec(graph), "fp32", spec.to_dict(), "bench"))
    onnx.save(graph, work / "fp32.onnx")
    print(f"fp32 export {time.time() - t0:.0f} s")
    clips = select_clips(cache, [1], a.calib_clips)
    ranges, _ = calibrate(work / "fp32.onnx", "bench", cache, clips, "percentile", work / "calib", progress=True)
    ov_hints = a.ov_precision.split(",")

    def ov_rows(label, path):
        return [(f"openvino {label}" + (f" [{h}]" if len(ov_hints) > 1 else ""), path, "openvino",
                 {"precision_hint": h}) for h in ov_hints]

    artifacts = [("torch eager fp32", ckpt, "torch", {}), ("onnxruntime fp32", work / "fp32.onnx", "onnxruntime", {}),
                 *ov_rows("fp32", work / "fp32.onnx")]
    for scope in a.scopes.split(","):
        for placement in a.placements.split(","):
            if placement == "legacy":
                q = legacy_quantize(graph, ranges, scope)
            else:
                q, _ = int8_mod.quantize(graph, ranges, scope)
            set_metadata(q, precision="int8")
            path = work / f"int8.{scope}.{placement}.onnx"
            onnx.save(q, path)
            label = f"int8 {scope}" + (f" ({placement})" if len(a.placements.split(",")) > 1 else "")
            artifacts += [(f"onnxruntime {label}", path, "onnxruntime", {}), *ov_rows(label, path)]

    held = [c for c in cache.clips if c.actor == 2][:: max(1, 60 // a.agree_clips)][: a.agree_clips]
    inputs = [to_model_inputs(np.asarray(cache.frames(c.stem)), cache.mfcc(c.stem), spec) for c in held]
    rows, ref_pred = [], None
    for label, path, backend, options in artifacts:
        with load(path, backend, threads=a.threads, **options) as r:
            v, au = inputs[0][0][None], inputs[0][1][None]
            for _ in range(a.warmup):
                r(v, au)
            times = []
            for _ in range(a.iters):
                t = time.perf_counter()
                r(v, au)
                times.append((time.perf_counter() - t) * 1e3)
            pred = np.array([r(x[None], y[None]).argmax() for x, y in inputs])
        ref_pred = pred if ref_pred is None else ref_pred
        row = {"artifact": label, "backend": backend, "mean_ms": float(np.mean(times)),
               "p50_ms": float(np.median(times)), "min_ms": float(np.min(times)),
               "agreement": float((pred == ref_pred).mean())}
        if backend == "openvino":
            row["openvino_inference_precision"] = r.inference_precision
        rows.append(row)
        print(f"{label:<34} {row['mean_ms']:9.1f} ms  agreement {100 * row['agreement']:.0f}%", flush=True)
    base = rows[0]["mean_ms"]
    for r in rows:
        r["speedup_vs_torch"] = base / r["mean_ms"]
    m = machine()
    report = {"machine": m, "threads": a.threads, "iters": a.iters, "batch": 1, "agree_clips": len(inputs),
              "results": rows}
    write_json(out / "bench.json", report)
    table = markdown_table(["artifact", "mean ms", "p50 ms", "vs torch eager", "top-1 agreement"],
                           [[r["artifact"], f"{r['mean_ms']:.0f}", f"{r['p50_ms']:.0f}",
                             f"x{r['speedup_vs_torch']:.2f}",
                             f"{100 * r['agreement']:.0f}%"] for r in rows])
    note = (f"Paper-size CFN-SR (30x224x224), batch 1, {a.threads} threads, {a.iters} timed runs after {a.warmup} "
            f"warm-up; {m['processor']} ({m['cpu_count']} CPUs); agreement with torch on {len(inputs)} clips.")
    write_text(out / "bench.md", f"# CPU backends\n\n{note}\n\n{table}\n")
    plot_bars({r["artifact"]: {"latency": r["mean_ms"]} for r in rows}, out / "bench.png",
              "Paper-size CFN-SR, batch 1 (lower is better)", "ms per clip")
    print()
    print(note)
    print(table)


if __name__ == "__main__":
    main()
