"""``cfnsr bench``: latency and throughput of artifacts, measured the same way in one run.

Per artifact and batch size: warm-up, then N timed calls; mean, p50, p90, p99, min (ms), throughput (clips/s);
for GPU backends the device time from CUDA events apart from end-to-end time. Ratios are against the first entry
(the PyTorch checkpoint by default), from the same run. The machine is recorded with the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CfnsrError
from ..fileio import write_json, write_text
from ..reports import markdown_table, plot_bars
from ..sysinfo import machine
from . import device_options, load


@dataclass
class Entry:
    label: str
    path: Path
    backend: str | None = None


def stats(times_ms: list[float]) -> dict:
    t = np.asarray(times_ms)
    return {"mean_ms": float(t.mean()), "p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "min_ms": float(t.min()), "runs": int(len(t))}


def _inputs(spec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs by name for ``batch`` clips: uint8 crops and a quiet PCM for media artifacts, else N(0, 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in spec:
        shape = tuple(batch if d is None else d for d in s.shape)
        if s.dtype == "uint8":  # a media artifact's face crops
            out[s.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[s.name] = (0.1 * rng.standard_normal(shape, dtype=np.float32) if s.name == "pcm"
                           else rng.standard_normal(shape, dtype=np.float32))
    return out


def bench(entries: list[Entry], batches=(1,), warmup: int = 3, iters: int = 20, threads: int | None = None,
          log=print, device: str | None = None) -> dict:
    """``device`` (cpu, cuda, auto) places every entry whose backend can run there (see ``device_options``)."""
    from ..sysinfo import jetson_warnings

    host = machine()
    for w in jetson_warnings(host):
        log("warning: " + w)
    results = []
    reference_logits: dict[int, np.ndarray] = {}
    for e in entries:
        is_trt = (e.backend or "") == "tensorrt" or e.path.suffix in (".engine", ".plan")
        # TensorRT: CUDA events where torch has CUDA, else Polygraphy's runner timed by wall clock (the header says)
        options = {"device_timing": None} if is_trt else ({"threads": threads} if threads else {})
        options.update(device_options(e.path, e.backend, device))
        with load(e.path, e.backend, **options) as runner:
            for b in batches:
                inputs = _inputs(runner.input_spec, b)
                for _ in range(warmup):
                    runner(**inputs)
                wall, gpu_ms = [], []
                for _ in range(iters):
                    t0 = time.perf_counter()
                    logits = runner(**inputs)
                    wall.append((time.perf_counter() - t0) * 1e3)
                    if runner.last_device_ms is not None:
                        gpu_ms.append(runner.last_device_ms)
                row = {"label": e.label, "artifact": str(e.path), "backend": runner.backend, "runs_on": runner.device,
                       "precision": runner.metadata.get("precision"), "batch": b, **stats(wall),
                       "threads": threads, "measured_for": runner.metadata.get("auto")}
                row["throughput_clips_s"] = b * 1e3 / row["mean_ms"]
                if gpu_ms:
                    row["device"] = stats(gpu_ms)
                if getattr(runner, "timing", None):
                    row["timing"] = runner.timing
                if b in reference_logits:
                    row["agreement_vs_first"] = float((logits.argmax(1) == reference_logits[b].argmax(1)).mean())
                else:
                    reference_logits[b] = logits
                results.append(row)
                log(f"{e.label:<28} batch {b:>3}: mean {row['mean_ms']:9.2f} ms  p50 {row['p50_ms']:9.2f}  "
                    f"p99 {row['p99_ms']:9.2f}  {row['throughput_clips_s']:8.2f} clips/s")
    for row in results:
        base = next(r for r in results if r["batch"] == row["batch"])
        row["speedup_vs_first"] = base["mean_ms"] / row["mean_ms"]
    for row in results:
        slower = slower_than_float(row, results)
        if slower:
            row["slower_than_float"] = slower
            log(f"note: {row['label']} (batch {row['batch']}) is slower than {slower['float']}: {slower['reason']}")
    devices = sorted({r["runs_on"] for r in results})
    note = None
    if len(devices) > 1:
        note = (f"rows run on different devices ({' and '.join(devices)}): the ratios compare a GPU with a CPU, "
                "not two runtimes on one device (pass --device cuda to put the reference on the GPU too)")
        log("note: " + note)
    return {"machine": host, "warnings": jetson_warnings(host), "threads": threads, "warmup": warmup, "iters": iters,
            "batches": list(batches),
            "baseline": entries[0].label, "devices": devices, "mixed_devices_note": note, "results": results}


REDUCED = ("fp16", "int8", "mixed")


def slower_than_float(row: dict, results: list[dict]) -> dict | None:
    """For a reduced-precision row slower than the fp32 row of the same backend, device and batch: which row, by
    how much, and why, from what the artifact says about itself."""
    if row["precision"] not in REDUCED:
        return None
    base = next((r for r in results if r["precision"] == "fp32" and r["backend"] == row["backend"]
                 and r["runs_on"] == row["runs_on"] and r["batch"] == row["batch"]), None)
    if base is None or row["mean_ms"] <= base["mean_ms"]:
        return None
    backend, device = row["backend"], row["runs_on"]
    auto = f"`cfnsr export --precision auto --backend {backend}` measures, per layer group, where int8 pays here"
    if row["precision"] == "mixed":
        m = row.get("measured_for") or {}
        here = {"backend": backend, "device": device, "batch": row["batch"], "threads": row.get("threads")}
        differs = [f"{k} {m.get(k)} (here {v})" for k, v in here.items() if m and m.get(k) != v]
        if differs:
            reason = (f"its precision map was chosen for other conditions: {', '.join(differs)}; re-run "
                      f"--precision auto for {backend} at this batch and thread count")
        else:
            reason = ("its precision map was measured faster than float on this backend, batch and thread count: "
                      "the gap here is run-to-run noise or other load on the machine (compare several runs)")
    elif row["precision"] == "int8":
        reason = (f"{backend} on this {device} has no faster int8 kernel for some of the quantized layers (3-D and "
                  f"grouped convolutions typically), where the Q/DQ pairs only add work; {auto}")
    else:
        reason = (f"{backend} on this {device} has few fp16 kernels, so the fp16 graph runs with conversions around "
                  "fp32 arithmetic" if device == "cpu" else f"{backend} on {device} runs this fp16 graph slower")
    return {"float": base["label"], "ratio": row["mean_ms"] / base["mean_ms"], "reason": reason}


def markdown(report: dict) -> str:
    m = report["machine"]
    head = ["# cfnsr bench", "", f"Machine: {m['processor']} ({m['cpu_count']} CPUs), {m['platform']}"
            + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; threads {report['threads'] or 'default'}; "
            f"{report['warmup']} warm-up + {report['iters']} timed runs; ratios against {report['baseline']!r}.", ""]
    for w in report.get("warnings") or []:
        head += [f"**Warning: {w}.**", ""]
    if report.get("mixed_devices_note"):
        head += [f"**Note: {report['mixed_devices_note']}.**", ""]
    wall = sorted({r["label"] for r in report["results"] if r.get("timing") == "wall clock"})
    if wall:
        head += [f"**Note: {', '.join(wall)}: no GPU time; timed by wall clock around Polygraphy's TrtRunner.infer "
                 "(host copies included), since torch has no CUDA here for CUDA events.**", ""]
    rows = [[r["label"], f"{r['backend']} ({r.get('runs_on', 'cpu')})", r["precision"], r["batch"], r["mean_ms"],
             r["p50_ms"], r["p90_ms"], r["p99_ms"],
             r["min_ms"], r["throughput_clips_s"], f"x{r['speedup_vs_first']:.2f}",
             r.get("device", {}).get("mean_ms", "-")] for r in report["results"]]
    notes = [f"- **{r['label']}** (batch {r['batch']}) is x{r['slower_than_float']['ratio']:.2f} the time of "
             f"{r['slower_than_float']['float']}: {r['slower_than_float']['reason']}."
             for r in report["results"] if r.get("slower_than_float")]
    return "\n".join(head) + "\n" + markdown_table(
        ["artifact", "backend", "precision", "batch", "mean ms", "p50", "p90", "p99", "min", "clips/s",
         "speed-up", "GPU ms"], rows) + "\n" + "".join(f"\n{n}" for n in notes) + ("\n" if notes else "")


def report_paths(json_path: str | Path) -> dict:
    """The JSON report and its siblings: ``NAME.md`` and ``NAME.png`` beside ``NAME.json`` (only the last suffix is
    replaced: ``notes.v2.json`` -> ``notes.v2.md``, never ``notes.md``). ``-``: the JSON on stdout and no siblings."""
    if str(json_path) == "-":
        return {"json": None, "markdown": None, "png": None}
    json_path = Path(json_path)
    return {"json": json_path, "markdown": json_path.with_suffix(".md"), "png": json_path.with_suffix(".png")}


def write_reports(report: dict, json_path: str | Path) -> dict:
    paths = report_paths(json_path)
    write_json(paths["json"], report)
    if paths["json"] is None:
        return paths
    write_text(paths["markdown"], markdown(report))
    groups: dict[str, dict[str, float]] = {}
    for r in report["results"]:
        groups.setdefault(r["label"], {})[f"batch {r['batch']}"] = r["mean_ms"]
    plot_bars(groups, paths["png"], "Latency per artifact (mean, lower is better)", "ms per call")
    return {k: str(v) for k, v in paths.items()}


def item_bytes(path: Path, backend: str | None = None) -> int:
    """Bytes of one clip's inputs to the artifact at ``path`` (from its metadata, or a checkpoint's config)."""
    import numpy as np

    if path.suffix.lower() in (".pt", ".pth") or backend == "torch":
        from ..model.checkpoint import load_checkpoint
        from ..model.config import ModelConfig

        return ModelConfig.from_dict(load_checkpoint(path)["model_config"]).clip_bytes
    from ..artifact import read_metadata

    total = 0
    for t in read_metadata(path).get("inputs") or []:
        if t.get("kind", "input") == "input":
            dims = [d for d in t["shape"][1:] if isinstance(d, int)]
            total += int(np.prod(dims)) * np.dtype(t.get("dtype", "float32")).itemsize
    return total


def check_batches(entries: list[Entry], batches) -> None:
    """Before any artifact is loaded: every batch size's input buffers fit in this machine's memory."""
    from ..bounds import check_batch_memory

    largest = max(batches)
    for e in entries:
        if e.path.is_file():
            check_batch_memory(largest, item_bytes(e.path, e.backend), f"--batch (for {e.path.name})")


def parse_entries(artifacts: list[str], backends: list[str] | None, reference: str | None) -> list[Entry]:
    if backends and len(backends) not in (1, len(artifacts)):
        raise CfnsrError(f"--backend given {len(backends)} times for {len(artifacts)} artifacts: give one, or one each")
    entries = []
    if reference:
        entries.append(Entry(f"{Path(reference).name} [torch]", Path(reference), "torch"))
    for i, a in enumerate(artifacts):
        b = (backends[i] if len(backends) > 1 else backends[0]) if backends else None
        entries.append(Entry(f"{Path(a).name} [{b or 'auto'}]", Path(a), b))
    if not entries:
        raise CfnsrError("nothing to benchmark: name at least one artifact")
    return entries
