"""Does the --precision auto latency probe time graphs as a deployed session runs them? Ratios to fp32 three ways.

    python benchmarks/interleaved_timing.py --config cfn-sr-tiny --threads 2 --iters 30 --out interleave_out

The search times its candidates interleaved (run 1 of every graph, then run 2, ...) so that drift hits all of
them alike. A deployed model is one session run again and again. This prints, per backend and graph, the median
latency and its ratio to the fp32 graph measured three ways in the same run:

* ``alone``: one session at a time, run ``--iters`` times in a row (what `cfnsr bench` and a deployment see),
  with the backend's default session options;
* ``interleaved, naive``: the sessions interleaved, default options (ONNX Runtime's workers spin after each run),
  no warm-up at a switch: how the probe timed before;
* ``interleaved, probe``: ``LatencyProbe.time``, as the search times now (no spinning ONNX Runtime workers, one
  untimed run before each timed run of a graph faster than ``SWITCH_WARMUP_MS``).

The graphs are the seeded random initialisation exported to fp32, and int8 of the scopes given, with Q/DQ scales
from a fixed range (timing does not depend on the weights' values or on the calibration). Writes
interleave.json and interleave.md under --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cfn-sr-tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--scopes", default="no-stem,all")
    p.add_argument("--backends", default="onnxruntime,openvino")
    p.add_argument("--out", default="interleave_out")
    a = p.parse_args()

    from cfnsr.export import int8 as int8_mod
    from cfnsr.export.latency import OnnxRuntimeProbe, OpenVinoProbe, example_inputs
    from cfnsr.export.onnx_graph import export_fp32
    from cfnsr.fileio import write_json, write_text
    from cfnsr.model import create_model
    from cfnsr.reports import markdown_table
    from cfnsr.sysinfo import machine

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="cfnsr-interleave-"))
    graph = onnx.shape_inference.infer_shapes(export_fp32(create_model(a.config).eval(), work / "fp32.onnx"))
    ranges = {t: (-4.0, 4.0) for n in graph.graph.node for t in list(n.input) + list(n.output)}
    paths = {"fp32": work / "fp32.onnx"}
    for scope in a.scopes.split(","):
        q, _ = int8_mod.quantize(graph, ranges, scope)
        paths[f"int8 {scope}"] = work / f"int8-{scope}.onnx"
        onnx.save(q, str(paths[f"int8 {scope}"]))

    def default_session(backend):
        """A runner with the backend's defaults (ONNX Runtime: spinning workers), the probe's threads."""
        if backend == "onnxruntime":
            import onnxruntime as ort

            def make(path):
                o = ort.SessionOptions()
                o.log_severity_level = 3
                o.intra_op_num_threads, o.inter_op_num_threads = a.threads, 1
                s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
                feeds = example_inputs(path, 1)
                return lambda: s.run(None, feeds)
            return make
        probe = OpenVinoProbe(1, a.threads)

        def make(path):
            request = probe._compiled(path).create_infer_request()
            feeds = example_inputs(path, 1)
            return lambda: request.infer(feeds)
        return make

    def timed(run) -> float:
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1e3

    rows, results = [], []
    for backend in a.backends.split(","):
        make = default_session(backend)
        alone = {}
        for name, path in paths.items():
            run = make(path)
            run()
            alone[name] = float(np.median([timed(run) for _ in range(a.iters)]))
            del run
        runs = {name: make(path) for name, path in paths.items()}
        for run in runs.values():
            run()
        naive = {name: [] for name in runs}
        for _ in range(a.iters):
            for name, run in runs.items():
                naive[name].append(timed(run))
        naive = {k: float(np.median(v)) for k, v in naive.items()}
        del runs
        probe = (OnnxRuntimeProbe if backend == "onnxruntime" else OpenVinoProbe)(1, a.threads)
        times = probe.time(list(paths.values()), runs=a.iters)
        probed = {name: float(np.median(times[str(path)])) for name, path in paths.items()}
        for name in paths:
            r = {"backend": backend, "graph": name, "alone_ms": alone[name], "naive_ms": naive[name],
                 "probe_ms": probed[name], "alone_ratio": alone[name] / alone["fp32"],
                 "naive_ratio": naive[name] / naive["fp32"], "probe_ratio": probed[name] / probed["fp32"]}
            results.append(r)
            rows.append([backend, name, f"{r['alone_ms']:.2f}", f"x{r['alone_ratio']:.3f}", f"{r['naive_ms']:.2f}",
                         f"x{r['naive_ratio']:.3f}", f"{r['probe_ms']:.2f}", f"x{r['probe_ratio']:.3f}"])
    m = machine()
    head = (f"{a.config}, batch 1, {a.threads} threads, median of {a.iters}; {m['processor']} "
            f"({m['cpu_count']} CPUs). Ratios are to the fp32 graph measured the same way.")
    table = markdown_table(["backend", "graph", "alone ms", "alone x fp32", "interleaved naive ms", "naive x fp32",
                            "probe ms", "probe x fp32"], rows)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "interleave.json", {"config": a.config, "threads": a.threads, "iters": a.iters,
                                         "machine": m, "results": results})
    write_text(out / "interleave.md", f"# Interleaved timing against a session alone\n\n{head}\n\n{table}\n")
    print(head)
    print(table)


if __name__ == "__main__":
    main()
