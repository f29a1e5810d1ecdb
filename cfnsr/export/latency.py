"""Latency from the backend itself: one small probe per backend, the same two questions to each.

* ``layer_times(path)``: the backend's own per-layer profile of one graph, {ONNX node name: ms per call}
  (ONNX Runtime's profiler, OpenVINO's ``get_profiling_info``, TensorRT's ``IProfiler``: ``latency_trt.py``).
  Only the search's *order* comes from these: fused kernels, reorders and Q/DQ steps are attributed to layers by
  name, which is an estimate.
* ``time(paths, runs)``: whole-graph wall time of several graphs, interleaved (run 1 of every graph, then run 2 of
  every graph, ...) so that drift (another process, clocks) hits all of them alike; same batch and threads for all.
  The search decides on the medians of these.

Interleaving has two costs that a single deployed session does not pay, and both are removed here (measured on
cfn-sr-tiny, batch 1, 2 threads, median of 30, on this 2-core machine):

* ONNX Runtime's intra-op workers spin after each run by default (``session.intra_op.allow_spinning``), so the
  session that runs next shares the cores with the previous one's spinning threads: fp32 took 19.8 ms interleaved
  against 5.5 ms alone, and a mix 7% *slower* than fp32 alone measured 27% faster. The probe's sessions do not spin
  (interleaved: 6.9 ms, the mix 2-3% slower, the order a single session sees).
* A graph that last ran several graphs ago starts with cold caches: OpenVINO fp32 took 5.1 ms interleaved against
  2.7 ms alone. A graph faster than ``SWITCH_WARMUP_MS`` gets one untimed run before each timed one (3.0 ms); a
  slower one is timed straight away, where the switch is a negligible share.

A probe never changes what it measures: the graphs are the files the search wrote, run as the runners run them
(with the runners' threads and providers; only the spinning above differs).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnx

from ..errors import CfnsrError
from ..lazy import require

BACKENDS = ("tensorrt", "openvino", "onnxruntime")
SWITCH_WARMUP_MS = 50.0  # graphs faster than this run once untimed before each interleaved timed run


def default_backend() -> tuple[str, str]:
    """(backend, why): the one a user of this machine would run on: TensorRT where it imports (with a GPU), else
    OpenVINO where installed, else ONNX Runtime."""
    import importlib.util

    from .formats import tensorrt_available

    ok, why = tensorrt_available()
    if ok:
        return "tensorrt", "TensorRT imports and a CUDA GPU is visible"
    if importlib.util.find_spec("openvino") is not None:
        return "openvino", f"TensorRT is not usable ({why}); OpenVINO is installed"
    return "onnxruntime", f"TensorRT is not usable ({why}) and OpenVINO is not installed"


def example_inputs(model_path: str | Path, batch: int) -> dict[str, np.ndarray]:
    """Seeded inputs of the graph's input shapes, the batch axis set to ``batch``."""
    model = onnx.load(str(model_path), load_external_data=False)
    rng = np.random.default_rng(0)
    out = {}
    for v in model.graph.input:
        dims = [d.dim_value or batch for d in v.type.tensor_type.shape.dim]
        dims[0] = batch
        out[v.name] = rng.standard_normal(dims, dtype=np.float32)
    return out


class LatencyProbe:
    """Base: ``_open(path) -> run()`` and ``_layer_times(path, runs)`` per backend; the timing loop is shared."""

    backend = "base"

    def __init__(self, batch: int = 1, threads: int | None = None, device: str = "cpu"):
        if batch < 1:
            raise CfnsrError(f"--batch must be at least 1, got {batch}")
        if threads is not None and threads < 1:
            raise CfnsrError(f"--threads must be at least 1, got {threads}")
        self.batch, self.threads, self.device = batch, threads, device

    def describe(self) -> str:
        return f"{self.backend} on {self.device}, batch {self.batch}, threads {self.threads or 'default'}"

    def time(self, paths: list[Path], runs: int = 5, warmup: int = 1) -> dict[str, list[float]]:
        """Whole-graph wall times (ms) of each graph, ``runs`` each, interleaved across the graphs (a graph faster than
        ``SWITCH_WARMUP_MS`` runs once untimed before each timed run: see the module docstring)."""

        def timed(run) -> float:
            t0 = time.perf_counter()
            run()
            return (time.perf_counter() - t0) * 1e3

        with ExitStack() as stack:
            runners = {str(p): stack.enter_context(self._open(Path(p))) for p in paths}
            short = {}
            for p, run in runners.items():
                first = [timed(run) for _ in range(max(warmup, 1))]
                short[p] = first[-1] < SWITCH_WARMUP_MS
            times: dict[str, list[float]] = {p: [] for p in runners}
            for _ in range(runs):
                for p, run in runners.items():
                    if short[p]:
                        run()
                    times[p].append(timed(run))
        return times

    def layer_times(self, path: Path, runs: int = 3) -> dict[str, float]:
        """{ONNX node name (or the backend's own layer name where it matches none): ms per call}."""
        return self._layer_times(Path(path), runs)

    def _open(self, path: Path):
        raise NotImplementedError

    def _layer_times(self, path: Path, runs: int) -> dict[str, float]:
        raise NotImplementedError


class _Session:
    """A context manager around a ``run()`` callable and a ``close()``."""

    def __init__(self, run: Callable[[], object], close: Callable[[], None] = lambda: None):
        self.run, self.close = run, close

    def __enter__(self):
        return self.run

    def __exit__(self, *exc):
        self.close()


class OnnxRuntimeProbe(LatencyProbe):
    """ONNX Runtime (CPU; ``device="cuda"`` uses the CUDA provider of onnxruntime-gpu)."""

    backend = "onnxruntime"

    def _options(self, profile_dir: str | None = None):
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        # interleaved sessions must not share the cores with each other's spinning workers (module docstring)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if profile_dir:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(profile_dir) / "ort")
        return opts

    def _providers(self) -> list[str]:
        return (["CUDAExecutionProvider"] if self.device == "cuda" else []) + ["CPUExecutionProvider"]

    def _session(self, path: Path, profile_dir: str | None = None):
        ort = require("onnxruntime")
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        fp16_qdq = '"high_precision": "fp16"' in meta.get("cfnsr.calibration", "")
        return ort.InferenceSession(str(path), self._options(profile_dir), providers=self._providers(),
                                    disabled_optimizers=["WeightBiasQuantization"] if fp16_qdq else None)

    def _open(self, path: Path):
        sess = self._session(path)
        feeds = example_inputs(path, self.batch)
        return _Session(lambda: sess.run(None, feeds))

    def _layer_times(self, path: Path, runs: int) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="cfnsr-ortprof-") as tmp:
            sess = self._session(path, tmp)
            feeds = example_inputs(path, self.batch)
            sess.run(None, feeds)  # warm-up, excluded below by counting the last ``runs`` calls only
            for _ in range(runs):
                sess.run(None, feeds)
            events = json.loads(Path(sess.end_profiling()).read_text())
        totals: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
                totals.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"] / 1e3)
        # each node ran runs + 1 times; drop the warm-up call
        return {name: float(np.sum(d[-runs:]) / runs) for name, d in totals.items()}


class OpenVinoProbe(LatencyProbe):
    """OpenVINO on the CPU, configured as ``OpenVinoRunner`` is (latency hint, f32 for what is not int8)."""

    backend = "openvino"

    def __init__(self, batch: int = 1, threads: int | None = None, device: str = "cpu", precision_hint: str = "f32"):
        if device != "cpu":
            raise CfnsrError("--device cuda: the OpenVINO backend runs on the CPU here; use onnxruntime or tensorrt")
        super().__init__(batch, threads, device)
        self.precision_hint = precision_hint

    def _compiled(self, path: Path, perf_count: bool = False):
        ov = require("openvino")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision_hint}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if perf_count:
            config["PERF_COUNT"] = True
        core = ov.Core()
        return core.compile_model(core.read_model(str(path)), "CPU", config)

    def _open(self, path: Path):
        request = self._compiled(path).create_infer_request()
        feeds = example_inputs(path, self.batch)
        return _Session(lambda: request.infer(feeds))

    def _layer_times(self, path: Path, runs: int) -> dict[str, float]:
        request = self._compiled(path, perf_count=True).create_infer_request()
        feeds = example_inputs(path, self.batch)
        request.infer(feeds)
        totals: dict[str, float] = {}
        for _ in range(runs):  # the counters describe the last inference only
            request.infer(feeds)
            for info in request.get_profiling_info():
                ms = info.real_time.total_seconds() * 1e3
                if ms > 0:
                    totals[info.node_name] = totals.get(info.node_name, 0.0) + ms / runs
        return totals


def probe_for(backend: str, batch: int = 1, threads: int | None = None, device: str = "cpu") -> LatencyProbe:
    """The latency probe of ``backend`` (one of BACKENDS)."""
    if backend == "onnxruntime":
        return OnnxRuntimeProbe(batch, threads, device)
    if backend == "openvino":
        return OpenVinoProbe(batch, threads, device)
    if backend == "tensorrt":
        from .latency_trt import TensorRTProbe

        return TensorRTProbe(batch, threads, device)
    raise CfnsrError(f"unknown --backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def attribute_to_layers(model: onnx.ModelProto, times: dict[str, float], layers: set[str]) -> dict[str, float]:
    """Per-layer ms from a backend profile of ``model``: each profiled name is matched to an ONNX node (by node
    name, by output tensor name, or as a prefix of a fused name such as TensorRT's ``a + b`` or ONNX Runtime's
    ``node_Conv_3_token_5``), and each node's time goes to the layer (one of ``layers``) it feeds: a Q/DQ step or a
    Relu/BatchNorm counts towards the quantized layer next to it. Time that reaches no layer is left out."""
    from .onnx_graph import consumers as consumers_of
    from .onnx_graph import producers

    by_name = {n.name: n for n in model.graph.node}
    by_output, consumers = producers(model), consumers_of(model)

    def layer_of(node, depth: int = 0) -> str | None:
        """The layer ``node`` belongs to: itself, the layer its output feeds (Q -> DQ -> Conv), or the layer it
        follows (Conv -> Relu)."""
        if node.name in layers:
            return node.name
        if depth > 3:
            return None
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast"):
            for c in consumers.get(node.output[0], []):
                hit = layer_of(c, depth + 1)
                if hit:
                    return hit
        for i in node.input:
            p = by_output.get(i)
            if p is not None and p.name in layers:
                return p.name
        return None

    def match(name: str):
        for part in str(name).split(" + "):
            part = part.strip()
            node = by_name.get(part) or by_output.get(part)
            if node is None:
                for cand in sorted(by_name, key=len, reverse=True):
                    if part.startswith(cand + "_") or part.startswith(cand + "/"):
                        node = by_name[cand]
                        break
            if node is not None:
                hit = layer_of(node)
                if hit:
                    return hit
        return None

    out: dict[str, float] = {}
    for name, ms in times.items():
        hit = match(name)
        if hit is not None:
            out[hit] = out.get(hit, 0.0) + float(ms)
    return out
