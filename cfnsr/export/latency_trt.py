"""The TensorRT latency probe, on Polygraphy: each candidate graph is built into an engine on this GPU (the same
loaders as ``cfnsr build``: strongly typed, the precision from the graph), then run with Polygraphy's ``TrtRunner``.

It runs only where TensorRT imports, on the target. What it calls, and where each is documented:

* ``polygraphy.backend.trt``: ``NetworkFromOnnxPath(path, strongly_typed=True)``, ``CreateConfig(profiles=...,
  profiling_verbosity=...)``, ``EngineFromNetwork``, ``TrtRunner`` (``activate``/``infer``/``deactivate``, and its
  ``context``: the ``IExecutionContext``); Polygraphy 0.49+ (the versions the constraints/ files pin for JetPack 6
  and 7 and for desktops).
* ``tensorrt.IProfiler`` subclassed with ``report_layer_time(layer_name, ms)`` and set as
  ``IExecutionContext.profiler``: NvInferRuntime.h of TensorRT 10.x ("called once per layer for each invocation of
  executeV2()/enqueueV3()"; Polygraphy's ``TrtRunner.infer`` enqueues with ``execute_async_v3`` and synchronises the
  stream), the same interface in TensorRT 10.3 (JetPack 6), 10.13+ (JetPack 7) and 11.x.
* ``tensorrt.ProfilingVerbosity.DETAILED`` (TensorRT 8.2+): layer names are the network's (ONNX node names, ``a + b``
  for a fused layer) instead of decimal indices.

Timing a whole graph uses ``TrtRunner.infer`` without a profiler (a profiler slows execution and disables CUDA-graph
capture), wall clock around the synchronous call, as the other probes do.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CfnsrError
from ..lazy import require
from .latency import LatencyProbe, _Session, example_inputs


def _build(path: Path, batch: int, detailed: bool):
    """The engine of ``path`` for a fixed batch (min = opt = max), through ``cfnsr build``'s loaders."""
    from ..artifact import read_metadata
    from .engine import BuildOptions, config_loader, input_shapes_from_metadata, network_loader

    trt_mod = require("polygraphy.backend.trt", "tensorrt", "the TensorRT latency probe (Polygraphy)")
    opts = BuildOptions(batch=(batch, batch, batch), layer_info=detailed)
    shapes = input_shapes_from_metadata(read_metadata(path))
    return trt_mod.EngineFromNetwork(network_loader(path), config=config_loader(shapes, opts))()


class TensorRTProbe(LatencyProbe):
    backend = "tensorrt"

    def __init__(self, batch: int = 1, threads: int | None = None, device: str = "cuda"):
        if device != "cuda":
            raise CfnsrError("--device cpu: TensorRT runs on NVIDIA GPUs only")
        require("tensorrt", purpose="the TensorRT latency probe")
        super().__init__(batch, threads, "cuda")

    def _runner(self, path: Path, detailed: bool = False):
        trt_mod = require("polygraphy.backend.trt", "tensorrt", "the TensorRT latency probe (Polygraphy)")
        return trt_mod.TrtRunner(_build(path, self.batch, detailed))

    def _open(self, path: Path):
        runner = self._runner(path)
        runner.activate()
        feeds = example_inputs(path, self.batch)
        return _Session(lambda: runner.infer(feeds), runner.deactivate)

    def _layer_times(self, path: Path, runs: int) -> dict[str, float]:
        trt = require("tensorrt")

        class Profiler(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)
                self.ms: dict[str, float] = {}
                self.counting = False

            def report_layer_time(self, layer_name, ms):
                if self.counting:
                    self.ms[layer_name] = self.ms.get(layer_name, 0.0) + float(ms)

        runner = self._runner(path, detailed=True)
        feeds = example_inputs(path, self.batch)
        profiler = Profiler()
        runner.activate()
        try:
            runner.context.profiler = profiler
            runner.infer(feeds)  # warm-up, not counted
            profiler.counting = True
            for _ in range(runs):
                runner.infer(feeds)
        finally:
            runner.deactivate()
        return {name: ms / runs for name, ms in profiler.ms.items()}
