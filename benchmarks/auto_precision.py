"""--precision auto against the plain choices, on the CPU backends: paper-size latency, trained-tiny accuracy.

    python benchmarks/auto_precision.py --threads 2 --out bench_out/auto

Latency half: the paper-size CFN-SR (seeded random weights: no trained paper-size model can be made on a CPU here),
int8 calibrated on synthetic paper-size clips, batch 1, ``--threads`` for every backend, on OpenVINO and on ONNX
Runtime. Accuracy half: the trained tiny model (``cfn-sr-tiny``, trained here on synthetic RAVDESS unless
``--tiny-checkpoint``/``--tiny-cache`` are given): the same layer groups (stages group their blocks, so both sizes
have the same vocabulary), so each candidate's accuracy is that of the tiny model with the same precision map. The
search sees the tiny model's *validation* actors; the table's accuracy drop is on its *test* actors (the export
gate's clips).

Rows: fp32, int8 all, every --int8-scope, and auto, all timed again together at the end, interleaved (median of
``--runs``), each as a ratio to torch eager fp32 measured in the same run. The last line checks point 5 of the
design: auto's latency is at most 3% above the fastest plain row that passes the gate. The search's state files
are kept under --out, so a killed run resumes. Writes auto.json, auto.md, auto.png (and each backend's search
report) under --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _tiny(args, work: Path, log):
    """(checkpoint, cache) of a trained cfn-sr-tiny: given, or trained here on synthetic RAVDESS."""
    from cfnsr.data.cache import FeatureCache, preprocess
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.synth import generate
    from cfnsr.model import get_config
    from cfnsr.train.trainer import TrainConfig, train_fold

    if args.tiny_checkpoint:
        return Path(args.tiny_checkpoint), FeatureCache.open(args.tiny_cache)
    log("training cfn-sr-tiny on synthetic RAVDESS (8 actors, 10 epochs) for the accuracy half ...")
    generate(work / "tiny-raw", actors=8, seed=0, workers=args.threads, progress=False)
    preprocess(work / "tiny-raw", work / "tiny-cache", PreprocessSpec.for_model(get_config("cfn-sr-tiny")),
               workers=args.threads, progress=False, log=lambda *a: None)
    cache = FeatureCache.open(work / "tiny-cache")
    train_fold(cache, get_config("cfn-sr-tiny"), work / "tiny-run", 1,
               TrainConfig(epochs=10, folds=4, protocol="honest", workers=0, seed=1234), progress=False)
    return work / "tiny-run" / "fold1" / "best.pt", cache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5, help="timed runs per graph (median; the export's default)")
    p.add_argument("--budget", type=int, default=8)
    p.add_argument("--backends", default="openvino,onnxruntime")
    p.add_argument("--calib-clips", type=int, default=4, help="paper-size calibration clips")
    p.add_argument("--tiny-checkpoint")
    p.add_argument("--tiny-cache")
    p.add_argument("--out", default="bench_out/auto")
    a = p.parse_args()

    from cfnsr.artifact import base_metadata
    from cfnsr.data.cache import FeatureCache, preprocess
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.synth import generate
    from cfnsr.engines import load
    from cfnsr.engines.accuracy import GateThresholds, batched, compare, held_out_arrays
    from cfnsr.export import auto
    from cfnsr.export.calibrate import calibrate, select_clips
    from cfnsr.export.latency import probe_for
    from cfnsr.export.onnx_graph import export_fp32, input_spec
    from cfnsr.fileio import sha256_file, write_json, write_text
    from cfnsr.model import create_model, save_checkpoint
    from cfnsr.model.checkpoint import Checkpoint
    from cfnsr.reports import markdown_table, plot_bars
    from cfnsr.sysinfo import machine

    def log(*x):
        print(*x, flush=True)

    t_start = time.time()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cfnsr-auto-bench-"))
    th = GateThresholds()

    # ---- accuracy half: the trained tiny model, its calibration (training actors), validation and test clips
    tiny_ckpt, tiny_cache = _tiny(a, work, log)
    ck = Checkpoint.load(tiny_ckpt)
    split = ck.split
    tiny_model = ck.model()
    tiny_fp32 = export_fp32(tiny_model, work / "tiny.fp32.onnx")
    clips = select_clips(tiny_cache, split.train, 32, forbidden_actors=split.evaluation_actors)
    tiny_ranges, _ = calibrate(work / "tiny.fp32.onnx", sha256_file(tiny_ckpt), tiny_cache, clips, "percentile",
                               out / "calibration-cache", progress=False)

    def tiny_meta(int8):
        return base_metadata(input_spec(tiny_fp32), "mixed" if int8 else "fp32", {}, "bench")

    tiny_builder = auto.GraphBuilder(tiny_fp32, tiny_ranges, work / "tiny-graphs", metadata=tiny_meta)
    video, audio, labels, _ = auto.validation_arrays(tiny_cache, split, None, log)
    with torch.no_grad():
        ref_val = batched(lambda v, x: tiny_model(torch.from_numpy(v), torch.from_numpy(x)).numpy(), video, audio)
    tv, ta, tl = held_out_arrays(tiny_cache, split, None, log)
    with torch.no_grad():
        ref_test = batched(lambda v, x: tiny_model(torch.from_numpy(v), torch.from_numpy(x)).numpy(), tv, ta)

    # ---- latency half: the paper-size network, calibrated on synthetic paper-size clips
    spec = PreprocessSpec()
    log("synthetic paper-size clips for calibration ...")
    generate(work / "raw", actors=1, seed=0, workers=a.threads, progress=False)
    preprocess(work / "raw", work / "cache", spec, workers=a.threads, progress=False, log=lambda *x: None)
    torch.manual_seed(0)
    paper = create_model("cfn-sr").eval()
    paper_ckpt = save_checkpoint(work / "paper.pt", paper, preprocess=spec.to_dict())
    paper_fp32 = export_fp32(paper, work / "paper.fp32.onnx")
    pclips = select_clips(FeatureCache.open(work / "cache"), [1], a.calib_clips)
    paper_ranges, _ = calibrate(work / "paper.fp32.onnx", "paper-seed0", FeatureCache.open(work / "cache"), pclips,
                                "percentile", out / "calibration-cache", progress=False)

    def paper_meta(int8):
        return base_metadata(input_spec(paper_fp32), "mixed" if int8 else "fp32", spec.to_dict(), "bench")

    paper_builder = auto.GraphBuilder(paper_fp32, paper_ranges, out / "paper-graphs", metadata=paper_meta,
                                      reuse=True)
    searchable = [g for g in tiny_builder.searchable() if g in set(paper_builder.searchable())]

    # torch eager, the baseline of every ratio, at the same batch and threads
    with load(paper_ckpt, "torch", threads=a.threads) as r:
        v, x = np.zeros((1, 3, 30, 224, 224), np.float32), np.zeros((1, 13, 212), np.float32)
        r(v, x)
        eager = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            r(v, x)
            eager.append((time.perf_counter() - t0) * 1e3)
    eager_ms = float(np.median(eager))
    log(f"torch eager fp32 (paper size, batch 1, {a.threads} threads): {eager_ms:.0f} ms")

    rows, checks = [], []
    for backend in a.backends.split(","):
        probe = probe_for(backend, 1, a.threads, "cpu")
        lat = auto.ProbeLatency(probe, paper_builder, profile_runs=1)
        acc = auto.ValidationAccuracy(tiny_builder, auto.accuracy_runner(backend, a.threads), video, audio, labels,
                                      ref_val, th)
        key = auto.inputs_key(backend=backend, threads=a.threads, runs=a.runs, tiny=sha256_file(tiny_ckpt),
                              calib=a.calib_clips)
        state = auto.State.load(out / f"{backend}.state.json", key, log)
        log(f"== {backend}: search (budget {a.budget}) ...")
        res = auto.search(searchable, lat, acc, state, a.budget, a.runs, 1.0, 0.95, "fp32", True, log)
        rep = auto.report(res, probe.describe())
        auto.write_reports(rep, out / f"{backend}.search")
        plain = auto.plain_configs(searchable)
        configs = {("fp32" if n == "float" else n): c for n, c in plain.items()}
        configs["auto"] = frozenset(res.int8)
        log(f"== {backend}: closing timing of {len(configs)} rows, interleaved ({a.runs} runs) ...")
        times = lat.time(list(configs.values()), a.runs)
        for (name, cfg), t in zip(configs.items(), times):
            with auto.accuracy_runner(backend, a.threads)(tiny_builder.path(cfg)) as r:
                gate = compare(ref_test, batched(r, tv, ta), tl, "mixed" if cfg else "fp32", th)
            searched = next((c for c in res.candidates if set(c.int8) == set(cfg)), None)
            rows.append({"backend": backend, "row": name, "int8_groups": len(cfg), "p50_ms": float(np.median(t)),
                         "vs_torch_eager": eager_ms / float(np.median(t)),
                         "passes_validation_gate": bool(searched.passed) if searched else None,
                         "test_accuracy_drop": gate.accuracy_drop_points, "test_agreement": gate.agreement})
        mine = [r for r in rows if r["backend"] == backend]
        auto_row = next(r for r in mine if r["row"] == "auto")
        passing = [r for r in mine if r["row"] != "auto" and r["passes_validation_gate"]]
        best = min(passing, key=lambda r: r["p50_ms"])
        ok = auto_row["p50_ms"] <= 1.03 * best["p50_ms"]
        checks.append(f"{backend}: auto {auto_row['p50_ms']:.0f} ms vs the fastest passing plain row "
                      f"({best['row']}) {best['p50_ms']:.0f} ms: x{auto_row['p50_ms'] / best['p50_ms']:.3f} "
                      f"-> point 5 {'met' if ok else 'NOT met'}")
        log(checks[-1])

    m = machine()
    note = (f"Paper-size CFN-SR latency (30x224x224, batch 1, {a.threads} threads, median of {a.runs} runs, rows "
            f"timed interleaved per backend; torch eager fp32 {eager_ms:.0f} ms); accuracy of the trained tiny model "
            f"with the same precision map on its test actors; {m['processor']} ({m['cpu_count']} CPUs); "
            f"{(time.time() - t_start) / 60:.0f} min in all.")
    table = markdown_table(["backend", "row", "int8 groups", "p50 ms", "vs torch eager", "passes (validation)",
                            "accuracy drop (test, points)", "agreement (test)"],
                           [[r["backend"], r["row"], r["int8_groups"], f"{r['p50_ms']:.0f}",
                             f"x{r['vs_torch_eager']:.2f}", {True: "yes", False: "no", None: "-"}[
                                 r["passes_validation_gate"]],
                             f"{r['test_accuracy_drop']:.2f}", f"{100 * r['test_agreement']:.1f}%"] for r in rows])
    write_json(out / "auto.json", {"machine": m, "threads": a.threads, "runs": a.runs, "budget": a.budget,
                                   "torch_eager_ms": eager_ms, "rows": rows, "point5": checks})
    write_text(out / "auto.md", f"# --precision auto vs the plain choices\n\n{note}\n\n{table}\n\n"
               + "\n".join(f"- {c}" for c in checks) + "\n")
    plot_bars({f"{r['backend']} {r['row']}": {"x torch eager": r["vs_torch_eager"]} for r in rows},
              out / "auto.png", "Paper-size CFN-SR, batch 1: speed vs torch eager (higher is faster)", "x torch")
    print()
    print(note)
    print(table)
    print("\n".join(checks))
    sys.exit(0 if all("point 5 met" in c for c in checks) else 1)


if __name__ == "__main__":
    main()
