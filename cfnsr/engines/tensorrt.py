"""TensorRT: build a strongly typed engine from a cfnsr ONNX file, and run it.

Written against TensorRT's official Python API, for TensorRT 10.3 (JetPack 6) through 11.x. The precision comes
from the ONNX graph (fp16 tensors, Q/DQ for int8): the network is created STRONGLY_TYPED (implied on 11.x, where
the flag is gone), and no FP16/INT8 builder flags or implicit calibrators are used.

Steps, each usable alone: ``parse`` (ONNX -> network), ``make_config`` (profile, workspace, timing cache,
compatibility, DLA), ``build`` (-> serialized plan). The plan is written raw, so ``trtexec`` and C++ load it, with a
sidecar ``MODEL.engine.json`` (TensorRT version, GPU and compute capability, profile, precision, the source ONNX's
sha256 and its cfnsr metadata) that the runner checks before it deserialises anything.

Device memory comes from torch CUDA tensors when torch with CUDA is installed, else from cuda-python (NVIDIA's
replacement for pycuda in its samples).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, CfnsrError
from ..fileio import atomic_path, check_writable, sha256_file, write_json
from ..lazy import require
from .base import Runner, TensorSpec, spec_from_metadata

SIDECAR_FORMAT = "cfnsr-engine"


def _trt():
    return require("tensorrt", purpose="building and running TensorRT engines")


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(str(engine) + ".json")


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0, from torch or cuda-python."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    cudart = require("cuda.bindings.runtime", "tensorrt", "querying the GPU (cuda-python)")
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise CfnsrError(f"no CUDA GPU is usable (cudaGetDeviceProperties: {err})")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}"}


# ------------------------------------------------------------------------------------------------- build steps
@dataclass
class BuildOptions:
    batch: tuple[int, int, int] = (1, 1, 8)  # min, opt, max of the batch axis
    workspace_mb: int = 4096
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    dla_core: int | None = None


def parse(onnx_path: Path, logger):
    """ONNX -> (builder, network, parser); parser errors are reported with their node names."""
    trt = _trt()
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10.x; 11.x networks are always strongly typed
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            node = e.node_name() if hasattr(e, "node_name") else f"node #{e.node()}"
            errors.append(f"{node} ({e.node_operator() if hasattr(e, 'node_operator') else ''}): {e.desc()}")
        raise ArtifactError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  " + "\n  ".join(errors))
    return builder, network, parser


def make_config(builder, network, opts: BuildOptions):
    trt = _trt()
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    bmin, bopt, bmax = opts.batch
    if not 1 <= bmin <= bopt <= bmax:
        raise CfnsrError(f"--batch {bmin},{bopt},{bmax}: need 1 <= min <= opt <= max")
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = tuple(t.shape)[1:]
        if any(d < 0 for d in rest):
            raise ArtifactError(f"input {t.name} has dynamic axes besides the batch: {tuple(t.shape)}")
        profile.set_shape(t.name, (bmin, *rest), (bopt, *rest), (bmax, *rest))
    config.add_optimization_profile(profile)
    cache = None
    if opts.timing_cache is not None:
        blob = opts.timing_cache.read_bytes() if opts.timing_cache.exists() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if opts.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if opts.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if opts.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise CfnsrError("--dla-core: this device has no DLA (DLA cores exist on Jetson AGX/NX Orin and Xavier)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config, cache


def build(builder, network, config) -> bytes:
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ArtifactError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)


def build_engine(onnx_path: str | Path, output: str | Path | None = None, opts: BuildOptions | None = None,
                 force: bool = False, log=print) -> Path:
    """``cfnsr build``: ONNX -> raw engine + sidecar JSON."""
    from ..export.onnx_graph import read_metadata

    trt = _trt()
    onnx_path = Path(onnx_path)
    opts = opts or BuildOptions()
    out = Path(output) if output else onnx_path.with_suffix(".engine")
    check_writable(out, force)
    meta = read_metadata(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    log(f"building a TensorRT {trt.__version__} engine from {onnx_path} (batch {opts.batch}) ...")
    builder, network, _parser = parse(onnx_path, logger)
    config, cache = make_config(builder, network, opts)
    plan = build(builder, network, config)
    with atomic_path(out, force) as tmp:
        tmp.write_bytes(plan)
    if cache is not None:
        with atomic_path(opts.timing_cache) as tmp:
            tmp.write_bytes(bytes(cache.serialize()))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": trt.__version__,
        **gpu_identity(),
        "profile": {"batch": list(opts.batch)},
        "precision": meta.get("precision"),
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": sha256_file(onnx_path),
        "version_compatible": opts.version_compatible,
        "hardware_compatible": opts.hardware_compatible,
        "dla_core": opts.dla_core,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cfnsr": meta,
    }
    write_json(sidecar_path(out), sidecar)
    log(f"wrote {out} and {sidecar_path(out).name}")
    return out


# ------------------------------------------------------------------------------------------------- runtime
def read_sidecar(engine: Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise ArtifactError(f"{engine} has no sidecar {path.name}: build it with `cfnsr build` (the sidecar records "
                            "the TensorRT version and GPU it was built for)")
    try:
        side = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from e
    if side.get("format") != SIDECAR_FORMAT:
        raise ArtifactError(f"{path} is not a cfnsr engine sidecar")
    return side


def check_compatible(side: dict, engine: Path, trt_version: str, gpu: dict) -> None:
    """Refuse an engine built for another TensorRT or GPU, naming both."""
    problems = []
    if side["tensorrt_version"] != trt_version and not side.get("version_compatible"):
        problems.append(f"it was built with TensorRT {side['tensorrt_version']}, this is TensorRT {trt_version}")
    if (side["gpu"], side["compute_capability"]) != (gpu["gpu"], gpu["compute_capability"]) and not side.get(
            "hardware_compatible"):
        problems.append(f"it was built for {side['gpu']} (compute {side['compute_capability']}), this GPU is "
                        f"{gpu['gpu']} (compute {gpu['compute_capability']})")
    if problems:
        raise ArtifactError(f"engine {engine} cannot run here: " + "; ".join(problems)
                            + f". Rebuild it on this machine: cfnsr build {side.get('source_onnx', 'MODEL.onnx')}")


class TensorRTRunner(Runner):
    """A TensorRT engine: preallocated device buffers for the profile's largest batch, dynamic batch within the
    profile, optional CUDA-graph replay per batch size, and GPU time from CUDA events (``last_device_ms``)."""

    backend = "tensorrt"

    def __init__(self, path, cuda_graph: bool = False):
        super().__init__(path)
        self.cuda_graph = cuda_graph

    def _activate(self) -> None:
        trt = _trt()
        side = read_sidecar(self.path)
        check_compatible(side, self.path, trt.__version__, gpu_identity())
        self.metadata = side.get("cfnsr", {})
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if side.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"TensorRT could not deserialise {self.path} (corrupt or truncated file?)")
        self.context = self.engine.create_execution_context()
        self.max_batch = side["profile"]["batch"][2]
        self.min_batch = side["profile"]["batch"][0]
        self.input_spec = spec_from_metadata(self.metadata["inputs"])
        self.mem = _DeviceMemory.create()
        self.buffers = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = list(self.engine.get_tensor_shape(name))
            shape[0] = self.max_batch
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.buffers[name] = self.mem.alloc(tuple(shape), dtype)
            self.context.set_tensor_address(name, self.mem.ptr(self.buffers[name]))
        self.graphs: dict[int, object] = {}

    def _infer(self, video, audio) -> np.ndarray:
        n = video.shape[0]
        if not self.min_batch <= n <= self.max_batch:
            raise CfnsrError(f"batch {n} is outside the engine's profile {self.min_batch}..{self.max_batch}; "
                             "rebuild with `cfnsr build --batch MIN,OPT,MAX`")
        self.mem.upload(self.buffers["video"], video)
        self.mem.upload(self.buffers["audio"], audio)
        self.context.set_input_shape("video", tuple(video.shape))
        self.context.set_input_shape("audio", tuple(audio.shape))
        self.last_device_ms = self.mem.timed(lambda stream: self._enqueue(n, stream))
        return self.mem.download(self.buffers["logits"], n)

    def _enqueue(self, n: int, stream) -> None:
        if self.cuda_graph and self.mem.kind == "torch":
            graph = self.graphs.get(n)
            if graph is None:
                graph = self.mem.capture(lambda s: self.context.execute_async_v3(s))
                self.graphs[n] = graph
            graph.replay()
        elif not self.context.execute_async_v3(stream):
            raise ArtifactError("TensorRT enqueue failed")

    def _deactivate(self) -> None:
        self.graphs.clear()
        del self.context, self.engine, self.runtime
        self.mem.free_all()


class _DeviceMemory:
    """Device buffers, a stream and events: torch when it has CUDA, else cuda-python."""

    kind = "base"

    @staticmethod
    def create() -> "_DeviceMemory":
        try:
            import torch

            if torch.cuda.is_available():
                return _TorchMemory()
        except ImportError:
            pass
        return _CudaPythonMemory()


class _TorchMemory(_DeviceMemory):
    kind = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()

    def alloc(self, shape, dtype):
        return self.torch.empty(shape, dtype=getattr(self.torch, np.dtype(dtype).name), device="cuda")

    @staticmethod
    def ptr(buf) -> int:
        return buf.data_ptr()

    def upload(self, buf, array) -> None:
        src = self.torch.as_tensor(array)
        with self.torch.cuda.stream(self.stream):
            buf[: src.shape[0]].copy_(src, non_blocking=False)

    def download(self, buf, n) -> np.ndarray:
        self.stream.synchronize()
        return buf[:n].float().cpu().numpy()

    def timed(self, fn) -> float:
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        start.record(self.stream)
        fn(self.stream.cuda_stream)
        end.record(self.stream)
        end.synchronize()
        return start.elapsed_time(end)

    def capture(self, enqueue):
        graph = self.torch.cuda.CUDAGraph()
        enqueue(self.stream.cuda_stream)  # warm-up outside capture
        self.stream.synchronize()
        with self.torch.cuda.graph(graph, stream=self.stream):
            enqueue(self.stream.cuda_stream)
        return graph

    def free_all(self) -> None:
        self.torch.cuda.synchronize()


class _CudaPythonMemory(_DeviceMemory):
    kind = "cuda-python"

    def __init__(self):
        self.rt = require("cuda.bindings.runtime", "tensorrt", "device buffers without torch (cuda-python)")
        self.stream = self._ok(self.rt.cudaStreamCreate())
        self.allocs: list[tuple[int, tuple, np.dtype]] = []

    def _ok(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise CfnsrError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def alloc(self, shape, dtype):
        ptr = self._ok(self.rt.cudaMalloc(int(np.prod(shape)) * np.dtype(dtype).itemsize))
        buf = (int(ptr), tuple(shape), np.dtype(dtype))
        self.allocs.append(buf)
        return buf

    @staticmethod
    def ptr(buf) -> int:
        return buf[0]

    def upload(self, buf, array) -> None:
        a = np.ascontiguousarray(array, dtype=buf[2])
        self._ok(self.rt.cudaMemcpyAsync(buf[0], a.ctypes.data, a.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def download(self, buf, n) -> np.ndarray:
        out = np.empty((n, *buf[1][1:]), dtype=buf[2])
        self._ok(self.rt.cudaMemcpyAsync(out.ctypes.data, buf[0], out.nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        self._ok(self.rt.cudaStreamSynchronize(self.stream))
        return out.astype(np.float32)

    def timed(self, fn) -> float:
        start, end = self._ok(self.rt.cudaEventCreate()), self._ok(self.rt.cudaEventCreate())
        self._ok(self.rt.cudaEventRecord(start, self.stream))
        fn(int(self.stream))
        self._ok(self.rt.cudaEventRecord(end, self.stream))
        self._ok(self.rt.cudaEventSynchronize(end))
        ms = self._ok(self.rt.cudaEventElapsedTime(start, end))
        self.rt.cudaEventDestroy(start)
        self.rt.cudaEventDestroy(end)
        return float(ms)

    def free_all(self) -> None:
        for ptr, _, _ in self.allocs:
            self.rt.cudaFree(ptr)
        self.allocs.clear()
        self.rt.cudaStreamDestroy(self.stream)


__all__ = ["BuildOptions", "TensorRTRunner", "build_engine", "check_compatible", "parse", "make_config", "build",
           "read_sidecar", "sidecar_path", "TensorSpec"]
