"""TensorRT engines at run time: the sidecar, the GPU/TensorRT identity checks, and the runner.

Plain runs go through Polygraphy (NVIDIA's maintained wrapper): ``EngineFromBytes`` and ``TrtRunner``, which bring
their own CUDA wrapper, so no cuda-python is needed. Our own code is only what Polygraphy lacks:

* the sidecar ``MODEL.engine.json`` (TensorRT version, GPU and compute capability, profile, precision, source ONNX
  hash and metadata), checked *before* the plan is deserialised: an engine from another TensorRT or GPU is refused
  with both named. A version-compatible engine runs on the same or a newer TensorRT of the same major version only;
* ``cuda_graph=True`` / ``device_timing=True``: a small session on torch's CUDA (buffers preallocated for the
  profile's largest batch, one stream, CUDA events on that same stream around the enqueue or the graph replay),
  for GPU time apart from host copies and for CUDA-graph replay.

The engine *build* is an export step: ``cfnsr.export.engine``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ..artifact import SIDECAR_FORMAT, read_sidecar, sidecar_path  # noqa: F401  (the runtime's view of them)
from ..errors import ArtifactError, CfnsrError
from ..lazy import cuda_available, require
from ..lazy import gpu_identity as lazy_gpu_identity
from .base import Runner, TensorSpec, spec_from_metadata


def tensorrt_version() -> str:
    return require("tensorrt", purpose="building and running TensorRT engines").__version__


def _cudart():
    """The CUDA runtime Polygraphy loads (ctypes), for the queries Polygraphy's wrapper does not expose."""
    cuda = require("polygraphy.cuda", "tensorrt", "querying the GPU (Polygraphy's CUDA wrapper)")
    return cuda.wrapper().handle


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
    if side.get("device", "gpu") != "gpu" or side.get("dla_core") is not None:
        problems.append("it was built for DLA, which cfnsr does not run")
    if problems:
        raise ArtifactError(f"engine {engine} cannot run here: " + "; ".join(problems)
                            + f". Rebuild it on this machine: cfnsr build {side.get('source_onnx', 'MODEL.onnx')}")


class TensorRTRunner(Runner):
    """A TensorRT engine, dynamic batch within its profile.

    Plain runs use Polygraphy's ``TrtRunner``. ``device_timing=True`` reports the GPU time of each call
    (``last_device_ms``, CUDA events around the enqueue on the runner's own stream), and ``cuda_graph=True``
    replays a CUDA graph per batch size on that same stream; both need torch with CUDA.
    """

    backend = "tensorrt"

    def __init__(self, path, cuda_graph: bool = False, device_timing: bool = False):
        super().__init__(path)
        self.cuda_graph, self.device_timing = cuda_graph, device_timing or cuda_graph
        self.device = "cuda"

    def _activate(self) -> None:
        trt_mod = require("polygraphy.backend.trt", "tensorrt", "running TensorRT engines (Polygraphy)")
        side = read_sidecar(self.path)
        check_compatible(side, self.path, tensorrt_version(), gpu_identity())
        from ..artifact import validate_metadata

        self.metadata = validate_metadata(side["cfnsr"], self.path)
        self.min_batch, _, self.max_batch = side["profile"]["batch"]
        self.input_spec = spec_from_metadata(self.metadata, str(self.path))
        try:
            engine = trt_mod.EngineFromBytes(self.path.read_bytes())()
        except Exception as e:  # Polygraphy raises its own exception type on a failed deserialisation
            raise ArtifactError(f"TensorRT could not deserialise {self.path} (corrupt or truncated file?): {e}") from e
        if self.device_timing:
            self.session = _TorchCudaSession(engine, self.max_batch, tuple(s.name for s in self.input_spec))
        else:
            self.session = trt_mod.TrtRunner(engine)
            self.session.activate()

    def _infer(self, inputs: dict) -> np.ndarray:
        n = next(iter(inputs.values())).shape[0]
        if not self.min_batch <= n <= self.max_batch:
            raise CfnsrError(f"batch {n} is outside the engine's profile {self.min_batch}..{self.max_batch}; "
                             "rebuild with `cfnsr build --batch MIN,OPT,MAX`")
        if isinstance(self.session, _TorchCudaSession):
            logits, self.last_device_ms = self.session.run(inputs, graph=self.cuda_graph)
            return logits
        out = self.session.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return np.asarray(out["logits"], dtype=np.float32)

    def _deactivate(self) -> None:
        if isinstance(self.session, _TorchCudaSession):
            self.session.free()
        else:
            self.session.deactivate()  # TrtRunner frees its device buffers and context here
        del self.session


class _TorchCudaSession:
    """Own execution for what Polygraphy lacks: CUDA-event timing and CUDA-graph replay, on one torch stream."""

    def __init__(self, engine, max_batch: int, inputs: tuple[str, ...] = ("video", "audio")):
        import torch

        if not cuda_available():
            raise CfnsrError("CUDA-graph replay and device timing of TensorRT engines need torch with CUDA "
                             "(NVIDIA's torch on Jetson, a CUDA build on desktops); run without --cuda-graph")
        trt = require("tensorrt")
        self.torch, self.engine = torch, engine
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = list(engine.get_tensor_shape(name))
            shape[0] = max_batch
            dtype = getattr(torch, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
        self.graphs: dict[int, object] = {}
        self.shape_batch: int | None = None
        self.inputs = inputs

    def _set_batch(self, n: int, shapes: dict) -> None:
        if self.shape_batch != n:
            for name in self.inputs:
                self.context.set_input_shape(name, tuple(shapes[name]))
            self.shape_batch = n

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ArtifactError("TensorRT enqueue failed")

    def run(self, inputs: dict, graph: bool) -> tuple[np.ndarray, float]:
        torch = self.torch
        n = next(iter(inputs.values())).shape[0]
        with torch.cuda.stream(self.stream):
            for name in self.inputs:
                self.buffers[name][:n].copy_(torch.as_tensor(inputs[name]), non_blocking=False)
            self._set_batch(n, {name: inputs[name].shape for name in self.inputs})
            if graph and n not in self.graphs:
                self._enqueue()  # warm-up outside the capture (TensorRT's deferred shape updates happen here)
                self.stream.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=self.stream):
                    self._enqueue()
                self.graphs[n] = g
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self.stream)
            if graph:
                self.graphs[n].replay()  # on the current stream: self.stream, where the events are recorded
            else:
                self._enqueue()
            end.record(self.stream)
        end.synchronize()
        logits = self.buffers["logits"][:n].float().cpu().numpy()
        return logits, float(start.elapsed_time(end))

    def free(self) -> None:
        self.stream.synchronize()
        self.graphs.clear()
        self.buffers.clear()
        del self.context, self.engine
        self.torch.cuda.empty_cache()


__all__ = ["SIDECAR_FORMAT", "TensorRTRunner", "TensorSpec", "check_compatible", "gpu_identity", "read_sidecar",
           "sidecar_path", "tensorrt_version"]
