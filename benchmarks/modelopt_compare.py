"""cfnsr's int8 graph against NVIDIA ModelOpt's, made from the same fp32 ONNX and the same calibration clips.

    python benchmarks/modelopt_compare.py [--checkpoint run/fold1/best.pt --data cache] [--venv DIR]

ModelOpt (``nvidia-modelopt[onnx]==0.47``) runs in a venv of its own, made here on first use under ``--venv``
(default ``$CFNSR_MODELOPT_VENV`` or ``~/.cache/cfnsr/modelopt-venv``; nothing is installed into this environment).
That venv sees this interpreter's site-packages through a ``.pth`` file, so that ModelOpt's ``torch>=2.8`` is the
torch already here rather than a second 3 GB download; everything else ModelOpt pins (onnx 1.21, onnxruntime-gpu
1.24, ...) installs into the venv and shadows this environment's. It is then run as NVIDIA documents it:

    python -m modelopt.onnx.quantization --onnx_path fp32.onnx --quantize_mode int8 --calibration_eps cpu
        --calibration_data_path calib.npz --calibration_method max --high_precision_dtype fp32 --output_path ...

(``--high_precision_dtype fp32``: ModelOpt's default, fp16, would also convert everything else to fp16, which is a
different comparison; cfnsr's int8 keeps fp32 outside the Q/DQ as well. ``max`` is ModelOpt's default method; cfnsr
uses its default, percentile.) Compared per graph (fp32, cfnsr int8, ModelOpt int8): Q/DQ counts, the TensorRT
readiness check and fusion lint (every problem, by rule), top-1 agreement with the fp32 graph and accuracy on the
held-out (test-actor) clips, and CPU latency on ONNX Runtime and OpenVINO (batch 1, median of ``--iters`` after a
warm-up, ratios against the fp32 graph measured in the same run). Without --checkpoint it trains cfn-sr-tiny on
synthetic RAVDESS (8 actors, 10 epochs; a few minutes on 2 cores). Writes modelopt_compare.{json,md,png} under --out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
MODELOPT = "nvidia-modelopt[onnx]==0.47.0"


def modelopt_python(venv: Path) -> Path:
    """The venv's python with ModelOpt importable, made (once) if it is not there yet."""
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import modelopt.onnx.quantization"],
                                        capture_output=True).returncode == 0
    if ok:
        return py
    print(f"making the ModelOpt venv {venv} ({MODELOPT}; minutes, once) ...", flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_cfnsr_host_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", MODELOPT], check=True)
    return py


def _trained(work: Path) -> tuple[Path, Path]:
    from int8_placement import _trained as train_tiny

    return train_tiny(work)


def _latency(make_runner, video, audio, iters: int) -> float:
    with make_runner() as r:
        for _ in range(3):
            r(video, audio)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            r(video, audio)
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _lint_rules(problems: list[str]) -> dict[str, int]:
    """Problems grouped by rule (the text after the node name, numbers and names dropped)."""
    import re

    out: Counter = Counter()
    for p in problems:
        head = p.split(": ", 1)[1] if ": " in p else p
        out[re.sub(r"'[^']*'|\([^)]*\)|[A-Za-z_]+[/.][\w/.:]+|\d+", "_", head)[:90]] += 1
    return dict(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--data", type=Path)
    p.add_argument("--calib-clips", type=int, default=48)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--venv", type=Path, default=Path(os.environ.get(
        "CFNSR_MODELOPT_VENV", Path.home() / ".cache" / "cfnsr" / "modelopt-venv")))
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    a = p.parse_args()

    import onnx

    from cfnsr.artifact import base_metadata
    from cfnsr.data.cache import FeatureCache
    from cfnsr.data.features import to_model_inputs
    from cfnsr.engines import accuracy as gate_mod
    from cfnsr.engines.runners import OnnxRuntimeRunner, OpenVinoRunner
    from cfnsr.export import int8 as int8_mod
    from cfnsr.export import readiness
    from cfnsr.export.calibrate import calibrate, select_clips
    from cfnsr.export.onnx_graph import export_fp32, input_spec, set_metadata
    from cfnsr.fileio import write_json, write_text
    from cfnsr.model.checkpoint import Checkpoint
    from cfnsr.reports import markdown_table, plot_bars

    py = modelopt_python(a.venv)
    work = Path(tempfile.mkdtemp(prefix="cfnsr-modelopt-"))
    trained_here = a.checkpoint is None
    if trained_here:
        print(f"training cfn-sr-tiny on synthetic RAVDESS in {work} ...", flush=True)
        a.checkpoint, a.data = _trained(work)
    ckpt = Checkpoint.load(a.checkpoint)
    model = ckpt.model()
    cache = FeatureCache.open(a.data)
    split = ckpt.split
    fp32_path = work / "fp32.onnx"
    graph = export_fp32(model, fp32_path)
    tagged = onnx.load(str(fp32_path))  # a copy with cfnsr's metadata, for cfnsr's runners
    set_metadata(tagged, **base_metadata(input_spec(tagged), "fp32", {}, "modelopt-compare"))
    onnx.save(tagged, work / "fp32.tagged.onnx")

    # The same calibration clips for both quantizers: training actors only, stratified (cfnsr's selection).
    clips = select_clips(cache, split.train, a.calib_clips, forbidden_actors=split.evaluation_actors)
    pairs = [to_model_inputs(np.asarray(cache.frames(c.stem)), cache.mfcc(c.stem), cache.spec) for c in clips]
    names = [i.name for i in graph.graph.input]
    np.savez(work / "calib.npz", **{names[0]: np.stack([v for v, _ in pairs]),
                                    names[1]: np.stack([x for _, x in pairs])})

    ranges, _ = calibrate(fp32_path, "modelopt-compare", cache, clips, "percentile", work / "calib", progress=False)
    ours = int8_mod.quantize(graph, ranges, "all")[0]
    meta = base_metadata(input_spec(ours), "int8", {}, "modelopt-compare")
    set_metadata(ours, **meta)
    ours_path = work / "cfnsr.int8.onnx"
    onnx.save(ours, ours_path)

    mo_path = work / "modelopt.int8.onnx"
    cmd = [str(py), "-m", "modelopt.onnx.quantization", "--onnx_path", str(fp32_path), "--quantize_mode", "int8",
           "--calibration_eps", "cpu", "--calibration_data_path", str(work / "calib.npz"), "--calibration_method",
           "max", "--high_precision_dtype", "fp32", "--output_path", str(mo_path)]
    print("running " + " ".join(cmd), flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if res.returncode != 0 or not mo_path.exists():
        sys.exit(f"ModelOpt failed (exit {res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}")
    modelopt_seconds = time.time() - t0
    mo = onnx.load(str(mo_path))  # ModelOpt's graph as it wrote it, plus cfnsr's metadata for cfnsr's runners
    set_metadata(mo, **base_metadata(input_spec(mo), "int8", {}, "modelopt-compare"))
    onnx.save(mo, work / "modelopt.int8.tagged.onnx")

    video, audio, labels = gate_mod.held_out_arrays(cache, split, None, lambda *x: None)
    graphs = {"fp32": work / "fp32.tagged.onnx", "cfnsr int8": ours_path,
              "ModelOpt int8": work / "modelopt.int8.tagged.onnx"}
    logits, rows = {}, []
    v1, a1 = video[:1], audio[:1]
    for name, path in graphs.items():
        m = onnx.load(str(path))
        ops = Counter(n.op_type for n in m.graph.node)
        ready = readiness.check(m)
        lint = readiness.fusion_lint(m)
        with OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"], threads=a.threads) as r:
            logits[name] = gate_mod.batched(r, video=video, audio=audio)
        ort_ms = _latency(lambda: OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"], threads=a.threads),
                          v1, a1, a.iters)
        ov_ms = _latency(lambda: OpenVinoRunner(path, threads=a.threads), v1, a1, a.iters)
        rows.append({"graph": name, "path": str(path), "quantize_linear": ops["QuantizeLinear"],
                     "dequantize_linear": ops["DequantizeLinear"], "casts": ops["Cast"],
                     "readiness_ok": ready.ok, "problems": ready.problems,
                     "problems_by_rule": _lint_rules(ready.problems),
                     "quantized_layers_fused": len(lint.fused_int8), "high_precision_layers": len(lint.high_precision),
                     "ort_ms": ort_ms, "openvino_ms": ov_ms})
        print(f"{name:<14} Q {ops['QuantizeLinear']:>3} DQ {ops['DequantizeLinear']:>3}  lint problems "
              f"{len(ready.problems):>2}  ORT {ort_ms:7.2f} ms  OpenVINO {ov_ms:7.2f} ms", flush=True)
    for row in rows:
        g = gate_mod.compare(logits["fp32"], logits[row["graph"]], labels, "int8")
        row.update(agreement_vs_fp32=g.agreement, accuracy=g.artifact_accuracy,
                   accuracy_drop_points=g.accuracy_drop_points, max_abs_logit_vs_fp32=g.max_abs_logit,
                   ort_speedup_vs_fp32=rows[0]["ort_ms"] / row["ort_ms"],
                   openvino_speedup_vs_fp32=rows[0]["openvino_ms"] / row["openvino_ms"])

    a.out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(a.checkpoint), "trained_here": trained_here, "model": ckpt.config.name,
              "held_out_clips": int(len(labels)), "calib_clips": len(clips), "threads": a.threads, "iters": a.iters,
              "modelopt": MODELOPT, "modelopt_command": cmd, "modelopt_seconds": modelopt_seconds,
              "cpu": _cpu(), "results": rows}
    write_json(a.out / "modelopt_compare.json", report)
    table = markdown_table(
        ["graph", "Q / DQ", "lint problems", "agreement vs fp32", "accuracy", "ORT ms (x fp32)",
         "OpenVINO ms (x fp32)"],
        [[r["graph"], f"{r['quantize_linear']} / {r['dequantize_linear']}", len(r["problems"]),
          f"{100 * r['agreement_vs_fp32']:.1f}%", f"{100 * r['accuracy']:.1f}%",
          f"{r['ort_ms']:.2f} (x{r['ort_speedup_vs_fp32']:.2f})",
          f"{r['openvino_ms']:.2f} (x{r['openvino_speedup_vs_fp32']:.2f})"] for r in rows])
    rules = "\n".join(f"- {r['graph']}: " + ("; ".join(f"{k} x{v}" for k, v in r["problems_by_rule"].items())
                                              or "no problems") for r in rows)
    write_text(a.out / "modelopt_compare.md",
               f"# cfnsr int8 vs ModelOpt int8 ({report['model']}, {len(labels)} held-out clips, "
               f"{len(clips)} calibration clips)\n\n{table}\n\nLint problems by rule:\n{rules}\n")
    plot_bars({r["graph"]: {"ONNX Runtime": r["ort_ms"], "OpenVINO": r["openvino_ms"]} for r in rows},
              a.out / "modelopt_compare.png", "CPU latency, batch 1 (median, lower is better)", "ms per call")
    print()
    print(table)
    print(rules)


def _cpu() -> str:
    from cfnsr.sysinfo import cpu_name

    return f"{cpu_name()} ({os.cpu_count()} CPUs)"


if __name__ == "__main__":
    main()
