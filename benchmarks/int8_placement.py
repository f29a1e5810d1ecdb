"""int8 placement, before and after, on a trained model: the accuracy gate of each placement in one run.

    python benchmarks/int8_placement.py --checkpoint run/fold1/best.pt --data cache [--calib-clips 48]

Placements compared (same fp32 graph, same calibration ranges, same held-out clips, ONNX Runtime CPU):
* ``legacy``: ONNX Runtime's QDQ defaults, as cfnsr placed Q/DQ before (outputs of Conv/MatMul/Gemm quantized);
* ``legacy-asym``: the same with asymmetric activations (zero points not 0: TensorRT refuses these);
* ``tensorrt``: ``cfnsr.export.int8`` (inputs only, residual Adds fusable, GEMVs and attention high precision);
* ``tensorrt+attention``: the same with the attention MatMuls quantized too (the policy not taken);
* ``tensorrt fp16``: the TensorRT placement with ``--high-precision fp16`` (fp16 Q/DQ scales, opset 19).
Without --checkpoint it makes one: synthetic RAVDESS (8 actors), cfn-sr-tiny trained 10 epochs (a few minutes).
Prints a table (agreement, accuracy drop, max |dlogit|, Q/DQ and Cast counts, fusion-lint problems) and writes
placement.json / placement.md under --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import onnx
import torch

sys.path.insert(0, str(Path(__file__).parent))


def _trained(work: Path) -> tuple[Path, Path]:
    from cfnsr.data.cache import preprocess
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.synth import generate
    from cfnsr.model import get_config
    from cfnsr.train.trainer import TrainConfig, train_fold

    cfg = get_config("cfn-sr-tiny")
    generate(work / "raw", actors=8, seed=0, workers=2, progress=False)
    preprocess(work / "raw", work / "cache", PreprocessSpec.for_model(cfg), workers=2, progress=False,
               log=lambda *x: None)
    from cfnsr.data.cache import FeatureCache

    train_fold(FeatureCache.open(work / "cache"), cfg, work / "run", 1,
               TrainConfig(epochs=10, folds=4, protocol="honest", workers=0, seed=1234), progress=False)
    return work / "run" / "fold1" / "best.pt", work / "cache"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--calib-clips", type=int, default=48)
    p.add_argument("--method", default="percentile")
    p.add_argument("--out", default="bench_out")
    a = p.parse_args()

    from legacy_placement import legacy_quantize

    from cfnsr.artifact import base_metadata
    from cfnsr.data.cache import FeatureCache
    from cfnsr.engines import accuracy as gate_mod
    from cfnsr.engines.runners import OnnxRuntimeRunner
    from cfnsr.export import int8 as int8_mod
    from cfnsr.export import readiness
    from cfnsr.export.calibrate import calibrate, select_clips
    from cfnsr.export.onnx_graph import export_fp32, input_spec, set_metadata
    from cfnsr.fileio import write_json, write_text
    from cfnsr.model.checkpoint import Checkpoint
    from cfnsr.reports import markdown_table

    work = Path(tempfile.mkdtemp(prefix="cfnsr-placement-"))
    if a.checkpoint is None:
        print(f"training cfn-sr-tiny on synthetic RAVDESS in {work} ...", flush=True)
        a.checkpoint, a.data = _trained(work)
    ckpt = Checkpoint.load(a.checkpoint)
    model = ckpt.model()
    cache = FeatureCache.open(a.data)
    split = ckpt.split
    graph = export_fp32(model, work / "fp32.onnx")
    clips = select_clips(cache, split.train, a.calib_clips, forbidden_actors=split.evaluation_actors)
    ranges, _ = calibrate(work / "fp32.onnx", "placement-bench", cache, clips, a.method, work / "calib",
                          progress=False)
    video, audio, labels = gate_mod.held_out_arrays(cache, split, None, lambda *x: None)
    with torch.no_grad():
        ref = gate_mod.batched(lambda v, au: model(torch.from_numpy(v), torch.from_numpy(au)).numpy(), video, audio)

    variants = {
        "legacy": lambda: legacy_quantize(graph, ranges),
        "legacy-asym": lambda: legacy_quantize(graph, ranges, activation_symmetric=False),
        "tensorrt": lambda: int8_mod.quantize(graph, ranges, "all")[0],
        "tensorrt+attention": lambda: int8_mod.quantize(graph, ranges, "all", attention=True)[0],
        "tensorrt fp16": lambda: int8_mod.quantize(graph, ranges, "all", high_precision="fp16")[0],
    }
    rows = []
    for name, make in variants.items():
        q = make()
        meta = base_metadata(input_spec(q), "int8", {}, "placement-bench")
        meta["calibration"] = {"high_precision": "fp16" if "fp16" in name else "fp32"}
        set_metadata(q, **meta)
        path = work / f"{name.replace(' ', '_')}.onnx"
        onnx.save(q, path)
        with OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"]) as r:
            got = gate_mod.batched(r, video, audio)
        g = gate_mod.compare(ref, got, labels, "int8")
        ops = Counter(n.op_type for n in q.graph.node)
        lint = readiness.fusion_lint(q)
        row = {"placement": name, "agreement": g.agreement, "accuracy_drop_points": g.accuracy_drop_points,
               "max_abs_logit": g.max_abs_logit, "passed": g.passed,
               "qdq": ops["QuantizeLinear"] + ops["DequantizeLinear"],
               "casts": ops["Cast"], "lint_problems": len(lint.problems), "fused_int8_layers": len(lint.fused_int8)}
        rows.append(row)
        print(f"{name:<20} agreement {100 * g.agreement:6.2f}%  drop {g.accuracy_drop_points:+.2f} pts  "
              f"max|dlogit| {g.max_abs_logit:.3g}  Q/DQ {row['qdq']}  Casts {row['casts']}  "
              f"lint problems {row['lint_problems']}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "placement.json", {"checkpoint": str(a.checkpoint), "clips": len(labels),
                                        "calib_clips": len(clips), "method": a.method, "results": rows})
    table = markdown_table(
        ["placement", "agreement", "accuracy drop (points)", "max abs dlogit", "Q/DQ nodes", "Casts", "lint problems"],
        [[r["placement"], f"{100 * r['agreement']:.2f}%", f"{r['accuracy_drop_points']:.2f}",
          f"{r['max_abs_logit']:.3g}", r["qdq"], r["casts"], r["lint_problems"]] for r in rows])
    write_text(out / "placement.md", f"# int8 placement on {a.checkpoint} ({len(labels)} held-out clips)\n\n{table}\n")
    print()
    print(table)


if __name__ == "__main__":
    main()
