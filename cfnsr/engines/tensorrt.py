"""TensorRT engines at run time: the sidecar, the GPU/TensorRT identity checks, and the runner.

Plain runs go through Polygraphy (NVIDIA's maintained wrapper): ``EngineFromBytes`` and ``TrtRunner``, which bring
their own CUDA wrapper, so no cuda-python is needed. Our own code is only what Polygraphy lacks:

* the sidecar ``MODEL.engine.json`` (TensorRT version, GPU and compute capability, profile, precision, source ONNX
  hash and metadata), checked *before* the plan is deserialised: an engine from another TensorRT or GPU is refused
  with both named. A version-compatible engine runs on the same or a newer TensorRT of the same major version only;
* ``cuda_graph=True`` / ``device_timing``: a small session on torch's CUDA (buffers preallocated for the
  profile's largest batch, one stream, CUDA events on that same stream around the enqueue or the graph replay),
  for GPU time apart from host copies and for CUDA-graph replay. A CUDA graph is captured per batch size, each on
  an execution context of its own whose input shape never changes after the capture (NVIDIA/TensorRT#3798, the
  developer guide's CUDA-graph section: a shape change invalidates a captured graph); the contexts share one
  scratch block, since they only ever run one at a time on the session's stream (``IExecutionContext::
  setDeviceMemoryV2``, NvInferRuntime.h at v10.3.0: sharing is undefined only for contexts "running in parallel").

Polygraphy's ``TrtRunner.infer`` returns views of one host buffer per output, reused (and resized in place) by the
next call (``backend/base/runner.py``: "Runners may reuse these output buffers"; ``backend/trt/runner.py``
``_get_array_on_cpu``, Polygraphy 0.49.13 at NVIDIA/TensorRT v10.3.0 and 0.53.6 from pip), so the logits are copied
before they leave the runner.

The engine *build* is an export step: ``cfnsr.export.engine``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ..artifact import read_sidecar
from ..errors import ArtifactError, CfnsrError
from ..lazy import cuda_available, require
from ..lazy import gpu_identity as lazy_gpu_identity
from .base import Runner, spec_from_metadata


def tensorrt_version() -> str:
    return require("tensorrt", purpose="building and running TensorRT engines").__version__


def _cudart():
    """The CUDA runtime Polygraphy loads (ctypes), for the queries Polygraphy's wrapper does not expose."""
    cuda = require("polygraphy.cuda", "tensorrt", "querying the GPU (Polygraphy's CUDA wrapper)")
    return cuda.wrapper().handle


def _cuda_torch():
    """torch when it is installed and sees a CUDA GPU (CUDA events, CUDA graphs), else None."""
    if not cuda_available():
        return None
    import torch

    return torch


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0: from torch when it has CUDA, else from the CUDA runtime directly."""
    seen = lazy_gpu_identity()
    if seen:
        return {"gpu": seen["gpu"], "compute_capability": seen["compute_capability"]}
    rt = _cudart()
    major, minor = ctypes.c_int(), ctypes.c_int()
    # cudaDevAttrComputeCapabilityMajor = 75, ...Minor = 76 (stable since CUDA 5)
    if rt.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0) or rt.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0):
        raise CfnsrError("no CUDA GPU is usable (cudaDeviceGetAttribute failed)")
    props = ctypes.create_string_buffer(8192)  # cudaDeviceProp: ``char name[256]`` is its first member
    if rt.cudaGetDeviceProperties(props, 0):
        raise CfnsrError("no CUDA GPU is usable (cudaGetDeviceProperties failed)")
    name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
    return {"gpu": name, "compute_capability": f"{major.value}.{minor.value}"}


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_compatible(side: dict, engine: Path, trt_version: str, gpu: dict) -> None:
    """Refuse an engine built for another TensorRT or GPU, naming both.

    A plain engine needs the exact TensorRT it was built with. A version-compatible one runs on that TensorRT or a
    newer one of the same major version (TensorRT's forward compatibility), never on an older one.
    """
    problems = []
    built, here = _version_tuple(side["tensorrt_version"]), _version_tuple(trt_version)
    cc = _version_tuple(gpu["compute_capability"])
    if side.get("version_compatible"):
        if not (built[:1] == here[:1] and here >= built):
            problems.append(f"it was built version-compatible with TensorRT {side['tensorrt_version']}, which runs "
                            f"on that or a newer TensorRT {built[0] if built else '?'}.x only; this is TensorRT "
                            f"{trt_version}")
    elif side["tensorrt_version"] != trt_version:
        problems.append(f"it was built with TensorRT {side['tensorrt_version']}, this is TensorRT {trt_version}")
    if (side["gpu"], side["compute_capability"]) != (gpu["gpu"], gpu["compute_capability"]) and not side.get(
            "hardware_compatible"):
        problems.append(f"it was built for {side['gpu']} (compute {side['compute_capability']}), this GPU is "
                        f"{gpu['gpu']} (compute {gpu['compute_capability']})")
    elif side.get("hardware_compatible") and cc[:1] < (8,):
        # NvInfer.h (v10.3.0, v11.1) HardwareCompatibilityLevel::kAMPERE_PLUS: "compatible with Ampere and newer GPUs"
        problems.append(f"it was built hardware-compatible, which runs on Ampere and newer GPUs only (compute "
                        f"capability 8.0 and up); this GPU is {gpu['gpu']} (compute {gpu['compute_capability']})")
    if side.get("device", "gpu") != "gpu" or side.get("dla_core") is not None:
        problems.append("it was built for DLA, which cfnsr does not run")
    if problems:
        flag = " (without --hardware-compatible)" if side.get("hardware_compatible") and cc[:1] < (8,) else ""
        source = side.get("source_onnx", "MODEL.onnx")
        raise ArtifactError(f"engine {engine} cannot run here: " + "; ".join(problems)
                            + f". Rebuild it on this machine{flag}: cfnsr build {source}")


class TensorRTRunner(Runner):
    """A TensorRT engine, dynamic batch within its profile.

    Plain runs use Polygraphy's ``TrtRunner``. With torch's CUDA, ``device_timing`` reports the GPU time of each call
    (``last_device_ms``, CUDA events around the enqueue on the runner's own stream), and ``cuda_graph=True`` replays
    a CUDA graph per batch size on that same stream. ``device_timing=None`` (what ``cfnsr bench`` asks) times on the
    device where torch has CUDA and leaves ``last_device_ms`` None elsewhere (``timing`` says which); ``True`` or
    ``cuda_graph=True`` without a CUDA torch is refused; ``False`` (the default) is Polygraphy's runner alone.
    """

    backend = "tensorrt"

    def __init__(self, path, cuda_graph: bool = False, device_timing: bool | None = False):
        super().__init__(path)
        self.cuda_graph = cuda_graph
        self.device_timing = True if cuda_graph else device_timing
        self.device = "cuda"
        self.timing = "wall clock"  # or "CUDA events", once active

    def _activate(self) -> None:
        trt_mod = require("polygraphy.backend.trt", "tensorrt", "running TensorRT engines (Polygraphy)")
        side = read_sidecar(self.path)
        check_compatible(side, self.path, tensorrt_version(), gpu_identity())
        from ..artifact import validate_metadata

        self.metadata = validate_metadata(side["cfnsr"], self.path)
        self.min_batch, _, self.max_batch = side["profile"]["batch"]
        self.input_spec = spec_from_metadata(self.metadata, str(self.path))
        torch = _cuda_torch() if self.device_timing in (None, True) else None
        if torch is None and self.device_timing:
            what = "CUDA-graph replay" if self.cuda_graph else "device timing (CUDA events)"
            raise CfnsrError(f"{what} of TensorRT engines needs torch with CUDA (NVIDIA's torch on Jetson, a CUDA "
                             "build on desktops), and this torch has none; install one, or run the engine without "
                             f"it ({'cuda_graph=False' if self.cuda_graph else 'device_timing=False'}: Polygraphy's "
                             "runner, timed by wall clock)")
        try:
            engine = trt_mod.EngineFromBytes(self.path.read_bytes())()
        except Exception as e:  # Polygraphy raises its own exception type on a failed deserialisation
            raise ArtifactError(f"TensorRT could not deserialise {self.path} (corrupt or truncated file?): {e}") from e
        if torch is not None:
            self.session = _TorchCudaSession(torch, engine, self.max_batch, tuple(s.name for s in self.input_spec))
            self.timing = "CUDA events"
        else:
            self.session = trt_mod.TrtRunner(engine)
            self.session.activate()
            self.timing = "wall clock"

    def _infer(self, inputs: dict) -> np.ndarray:
        n = next(iter(inputs.values())).shape[0]
        if not self.min_batch <= n <= self.max_batch:
            raise CfnsrError(f"batch {n} is outside the engine's profile {self.min_batch}..{self.max_batch}; "
                             "rebuild with `cfnsr build --batch MIN,OPT,MAX`")
        if isinstance(self.session, _TorchCudaSession):
            logits, self.last_device_ms = self.session.run(inputs, graph=self.cuda_graph)
            return logits
        out = self.session.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()})
        # A copy: the runner's host buffer for "logits" is overwritten (and resized) by the next call.
        return np.array(out["logits"], dtype=np.float32, copy=True)

    def _deactivate(self) -> None:
        if isinstance(self.session, _TorchCudaSession):
            self.session.free()
        else:
            self.session.deactivate()  # TrtRunner frees its device buffers and context here
        del self.session


class _TorchCudaSession:
    """Own execution for what Polygraphy lacks: CUDA-event timing and CUDA-graph replay, on one torch stream.

    I/O buffers are allocated once for the profile's largest batch and bound to every context. Plain calls share one
    context whose input shape follows the batch. Graph calls get one context per batch size: its shape is set once,
    before the warm-up enqueue and the capture, and never changed, so a replay always matches what was captured.
    All contexts are ``USER_MANAGED`` and share one scratch block of ``device_memory_size_v2`` bytes (the maximum
    over all profiles; pyCore.cpp at v10.3.0 binds ``create_execution_context(strategy)``, ``set_device_memory``
    and ``device_memory_size_v2``), safe because they run one at a time on this session's stream.
    """

    def __init__(self, torch, engine, max_batch: int, inputs: tuple[str, ...] = ("video", "audio")):
        trt = require("tensorrt")
        self.torch, self.engine, self.trt = torch, engine, trt
        self.stream = torch.cuda.Stream()
        self.inputs = inputs
        self.buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = list(engine.get_tensor_shape(name))
            shape[0] = max_batch
            dtype = getattr(torch, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
        self.scratch = torch.empty(max(int(engine.device_memory_size_v2), 1), dtype=torch.uint8, device="cuda")
        self.context = self._new_context()
        self.shape_batch: int | None = None
        self.graphs: dict[int, tuple[object, object]] = {}  # batch -> (its own context, the graph captured on it)

    def _new_context(self):
        ctx = self.engine.create_execution_context(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if ctx is None:
            raise ArtifactError("TensorRT could not create an execution context (out of GPU memory?)")
        ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
        for name, buf in self.buffers.items():
            ctx.set_tensor_address(name, buf.data_ptr())
        return ctx

    def _set_shapes(self, ctx, shapes: dict) -> None:
        for name in self.inputs:
            shape = tuple(shapes[name])
            if not ctx.set_input_shape(name, shape):
                raise ArtifactError(f"TensorRT refused input shape {tuple(shape)} for {name}")

    def _enqueue(self, ctx) -> None:
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise ArtifactError("TensorRT enqueue failed")

    def _graph_for(self, n: int, shapes: dict):
        if n not in self.graphs:
            torch = self.torch
            ctx = self._new_context()
            self._set_shapes(ctx, shapes)
            self._enqueue(ctx)  # warm-up outside the capture (TensorRT's deferred shape updates happen here)
            self.stream.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=self.stream):
                self._enqueue(ctx)
            self.graphs[n] = (ctx, g)
        return self.graphs[n][1]

    def run(self, inputs: dict, graph: bool) -> tuple[np.ndarray, float]:
        torch = self.torch
        n = next(iter(inputs.values())).shape[0]
        shapes = {name: inputs[name].shape for name in self.inputs}
        with torch.cuda.stream(self.stream):
            for name in self.inputs:
                self.buffers[name][:n].copy_(torch.as_tensor(inputs[name]), non_blocking=False)
            if graph:
                g = self._graph_for(n, shapes)
            elif self.shape_batch != n:
                self._set_shapes(self.context, shapes)
                self.shape_batch = n
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            if graph:
                g.replay()  # on the current stream: self.stream, where the events are recorded
            else:
                self._enqueue(self.context)
            end.record(self.stream)
        end.synchronize()
        logits = self.buffers["logits"][:n].float().cpu().numpy()  # .cpu() copies: not a view of the buffer
        return logits, float(start.elapsed_time(end))

    def free(self) -> None:
        self.stream.synchronize()
        self.graphs.clear()
        self.buffers.clear()
        del self.context, self.engine, self.scratch
        self.torch.cuda.empty_cache()
