"""A stand-in for ``polygraphy.backend.trt``, ``polygraphy.cuda`` and the few ``tensorrt`` symbols cfnsr touches, so
the TensorRT paths of cfnsr run in CI through cfnsr's real code. It lives in tests/ only.

It behaves as the real ones are documented to, where cfnsr depends on it (Polygraphy 0.49.13 at NVIDIA/TensorRT
v10.3.0 and 0.53.6 from pip; TensorRT's headers and Python bindings at v10.3.0 and v11.1):

* ``TrtRunner``: ``infer`` before ``activate`` raises (``backend/base/runner.py`` ``infer``: "Must be activated prior
  to calling infer()"); inputs are checked by name, dtype and shape (``backend/base/util.py`` ``check_inputs``); the
  input shape is set on an execution context that refuses shapes outside the engine's profile
  (``IExecutionContext::setInputShape`` returns false, and ``TrtRunner`` raises "failed to set shape");
  ``infer`` returns views of ONE host buffer per output, reused by the next call and cut to the new batch
  (``backend/trt/runner.py`` ``_get_array_on_cpu`` + ``util.array.resize_or_reallocate``; ``backend/base/runner.py``:
  "Runners may reuse these output buffers").
* ``IExecutionContext.profiler``: an ``IProfiler`` set there gets ``report_layer_time(name, ms)`` once per layer for
  each execution (NvInferRuntime.h, 10.x/11.x). The layers are the ONNX nodes as TensorRT names what it builds: a
  Conv/MatMul/Gemm with the ReLU it fuses is ``"conv + relu"``, an activation QuantizeLinear is ``"q input
  reformatter 0"``. Their times are a cost model, not a measurement (the weight's size, halved where the weight comes
  through a DequantizeLinear: int8), so a search on it has a known answer.
* ``EngineFromBytes``: a plan is refused unless this "TensorRT" and "GPU" can run it (TensorRT refuses a plan of
  another version unless it was built version-compatible and this one is newer in the same major; of another
  compute capability unless hardware-compatible, which needs Ampere, 8.0+: NvInfer.h ``kAMPERE_PLUS``); garbage is
  refused with Polygraphy's "Could not deserialize engine".
* ``NetworkFromOnnxPath`` / ``CreateConfig`` / ``Profile`` / ``EngineBytesFromNetwork``: the plan's bytes carry what
  the build had (TensorRT version, GPU, compatibility flags, profiling verbosity, the profile, the ONNX file it was
  built from and its hash), so a sidecar that disagrees with its plan is visible.
* ``polygraphy.cuda.wrapper().handle``: ``cudaDeviceGetAttribute`` (75/76: compute capability) and
  ``cudaGetDeviceProperties`` (``char name[256]`` first), which ``cfnsr.engines.tensorrt.gpu_identity`` calls.
* ``CudaTorch``: torch with a stand-in ``torch.cuda`` for cfnsr's own CUDA session (events, CUDA graphs). Tensors are
  CPU tensors found by their ``data_ptr`` when a context executes; a graph records the enqueues made while it is
  captured and re-runs them on replay with the shapes they were captured with. A context whose input shape changed
  after the capture replays stale kernels (NVIDIA/TensorRT#3798: "when change the input shapes, you have to
  re-capture the graph, because some internal state is changed"): undefined on a GPU, NaN logits here.

It never stands in for a number: an engine's logits come from ONNX Runtime running the ONNX file the plan says it
was built from, so a wrong copy, a stale buffer or a wrong batch order changes them.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PLAN_MAGIC = b"cfnsr-standin-plan\n"


class PolygraphyException(Exception):
    """Polygraphy's ``polygraphy.exception.PolygraphyException`` (what ``G_LOGGER.critical`` raises)."""


@dataclass
class Machine:
    """What the stand-in's machine has: a TensorRT version and GPU 0."""

    trt_version: str = "10.3.0.30"
    gpu: str = "Orin (nvgpu)"
    compute_capability: tuple[int, int] = (8, 7)

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def _release(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


# ---------------------------------------------------------------------------------------------------- tensorrt
MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel", "NONE AMPERE_PLUS SAME_COMPUTE_CAPABILITY")
ProfilingVerbosity = enum.Enum("ProfilingVerbosity", "LAYER_NAMES_ONLY NONE DETAILED")
TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
ExecutionContextAllocationStrategy = enum.Enum("ExecutionContextAllocationStrategy",
                                               "STATIC ON_PROFILE_CHANGE USER_MANAGED")
DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8")
_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
       DataType.BOOL: np.bool_, DataType.UINT8: np.uint8}
_BY_NAME = {"float32": DataType.FLOAT, "float16": DataType.HALF, "uint8": DataType.UINT8, "int8": DataType.INT8,
            "int32": DataType.INT32}


class IProfiler:
    """``tensorrt.IProfiler``: subclassed in Python, its ``__init__`` called, ``report_layer_time`` overridden."""

    def __init__(self):
        pass

    def report_layer_time(self, layer_name, ms):
        raise NotImplementedError("IProfiler.report_layer_time is pure virtual")


def nptype(dt):
    """``tensorrt.nptype``: the NumPy type of a TensorRT DataType."""
    return _NP[dt]


class Engine:
    """``ICudaEngine``: I/O tensors (batch axis -1), the profile, execution contexts; computes with ONNX Runtime."""

    def __init__(self, header: dict, device=None):
        self.header, self.device = header, device  # device: the CudaTorch whose tensors its contexts address
        self.io = header["io"]  # [{name, mode, dtype, shape}] in binding order
        self._session = None
        self.device_memory_size_v2 = 1 << 20
        self.runs: list[int] = []  # the batch of each execution, for tests

    @property
    def num_io_tensors(self) -> int:
        return len(self.io)

    def _io(self, name):
        return next(t for t in self.io if t["name"] == name)

    def get_tensor_name(self, i: int) -> str:
        return self.io[i]["name"]

    def get_tensor_mode(self, name: str):
        return TensorIOMode[self._io(name)["mode"]]

    def get_tensor_shape(self, name: str) -> tuple:
        return tuple(self._io(name)["shape"])

    def get_tensor_dtype(self, name: str):
        return _BY_NAME[self._io(name)["dtype"]]

    def create_execution_context(self, strategy=ExecutionContextAllocationStrategy.STATIC):
        return Context(self, strategy)

    def layers(self) -> list[tuple[str, float]]:
        """[(TensorRT layer name, ms)] of the engine's ONNX graph, from the cost model in the module docstring."""
        if getattr(self, "_layers", None) is None:
            import onnx

            from cfnsr.export.onnx_graph import consumers, producers

            model = onnx.load(self.header["onnx"])
            inits = {i.name: i for i in model.graph.initializer}
            producer, users = producers(model), consumers(model)
            self._layers = []
            for n in model.graph.node:
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
                    self._layers.append((f"{n.name} input reformatter 0", 0.001))
                if n.op_type not in ("Conv", "MatMul", "Gemm") or len(n.input) < 2:
                    continue
                w, int8 = n.input[1], False
                if producer.get(w) is not None and producer[w].op_type == "DequantizeLinear":
                    w, int8 = producer[w].input[0], True
                if w not in inits:
                    continue  # activation x activation: part of an attention layer here
                name = n.name
                after = users.get(n.output[0], [])
                if len(after) == 1 and after[0].op_type == "Relu":
                    name = f"{name} + {after[0].name}"
                self._layers.append((name, float(np.prod(inits[w].dims)) * 1e-5 * (0.5 if int8 else 1.0)))
        return self._layers

    def compute(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        if self._session is None:
            self._session = ort.InferenceSession(self.header["onnx"], providers=["CPUExecutionProvider"])
        names = [t["name"] for t in self.io if t["mode"] == "OUTPUT"]
        self.runs.append(int(next(iter(feed.values())).shape[0]))
        return dict(zip(names, self._session.run(names, feed)))


class Context:
    """``IExecutionContext``: input shapes checked against the profile, tensor addresses, device memory."""

    def __init__(self, engine: Engine, strategy):
        self.engine, self.strategy = engine, strategy
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.device_memory: int | None = None
        self.profiler = None  # IExecutionContext.profiler: an IProfiler, told each layer's time per execution

    def set_input_shape(self, name: str, shape) -> bool:
        prof = self.engine.header["profile"][name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(prof["min"]) or any(not lo <= d <= hi for d, lo, hi in zip(shape, prof["min"],
                                                                                          prof["max"])):
            return False  # IExecutionContext::setInputShape: false for a shape outside the profile
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes.get(name, self.engine.get_tensor_shape(name))

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def set_device_memory(self, ptr: int, size: int) -> None:
        if size < self.engine.device_memory_size_v2:
            raise PolygraphyException(f"device memory of {size} bytes < {self.engine.device_memory_size_v2}")
        self.device_memory = int(ptr)

    def execute_async_v3(self, stream_handle) -> bool:
        if not self.ready():
            return False
        dev = self.engine.device
        if dev.capturing is not None:  # inside torch.cuda.graph(...): recorded, run on replay
            dev.capturing.launches.append((self, dict(self.shapes)))
        else:
            self.run(dict(self.shapes))
            self.executed()
        return True

    def run(self, shapes: dict[str, tuple], stale: bool = False) -> None:
        import torch

        dev = self.engine.device
        feed = {t["name"]: dev.tensors[self.addresses[t["name"]]][:shapes[t["name"]][0]].numpy().copy()
                for t in self.engine.io if t["mode"] == "INPUT"}
        for name, value in self.engine.compute(feed).items():
            out = dev.tensors[self.addresses[name]][:len(value)]
            out.copy_(torch.full_like(out, float("nan")) if stale else torch.from_numpy(value))

    def executed(self) -> None:
        """What an execution tells the context's ``IProfiler``: each layer's time, once."""
        if self.profiler is not None:
            for name, ms in self.engine.layers():
                self.profiler.report_layer_time(name, ms)

    def ready(self) -> bool:
        inputs = [t["name"] for t in self.engine.io if t["mode"] == "INPUT"]
        has_memory = self.strategy != ExecutionContextAllocationStrategy.USER_MANAGED or self.device_memory
        return bool(has_memory) and all(n in self.shapes for n in inputs)


# ---------------------------------------------------------------------------------------- polygraphy.backend.trt
class Profile(OrderedDict):
    """Polygraphy's ``Profile``: name -> (min, opt, max)."""

    def add(self, name, min, opt, max):  # noqa: A002  (Polygraphy's parameter names)
        self[name] = types.SimpleNamespace(min=tuple(min), opt=tuple(opt), max=tuple(max))
        return self


class NetworkFromOnnxPath:
    def __init__(self, path, strongly_typed=False, **kwargs):
        self.path, self.strongly_typed = str(path), strongly_typed

    def __call__(self):
        network = types.SimpleNamespace(onnx=self.path, strongly_typed=self.strongly_typed)
        return object(), network, object()  # (builder, network, parser), as Polygraphy's network loaders return


class _Config:
    """``IBuilderConfig``: what ``CreateConfig`` set, and the timing-cache surface cfnsr uses."""

    def __init__(self, kwargs):
        self.__dict__.update(kwargs)
        self.cache = b""

    def create_timing_cache(self, blob):
        return bytes(blob)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return types.SimpleNamespace(serialize=lambda: self.cache or b"timing")


class CreateConfig:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, builder, network):
        return _Config(self.kwargs)


class StandIn:
    """The three modules, bound to one ``Machine``; ``install(monkeypatch)`` puts them in ``sys.modules``."""

    def __init__(self, machine: Machine | None = None):
        self.machine = machine or Machine()
        self.cuda_torch = CudaTorch(self.machine)
        self.runners: list[TrtRunnerBase] = []
        self.engines: list[Engine] = []
        standin = self

        class EngineBytesFromNetwork:
            def __init__(self, network, config=None, **kwargs):
                self.network, self.config = network, config

            def __call__(self):
                builder, network, _ = self.network if isinstance(self.network, tuple) else self.network()
                if not network.strongly_typed:
                    raise PolygraphyException("the stand-in builds strongly typed networks only, as cfnsr asks")
                # Polygraphy takes an IBuilderConfig or a loader of one (``CreateConfig``), invoked on the network
                config = self.config(builder, network) if callable(self.config) else self.config
                return standin.plan(network.onnx, config)

        class EngineFromBytes:
            def __init__(self, serialized_engine, runtime=None):
                self.blob = serialized_engine

            def __call__(self):
                engine = standin.deserialize(self.blob)
                standin.engines.append(engine)
                return engine

        class TrtRunner(TrtRunnerBase):
            def __init__(self, engine, name=None, **kwargs):
                super().__init__(engine)
                standin.runners.append(self)

        class EngineFromNetwork:  # Polygraphy: EngineFromBytes(EngineBytesFromNetwork(network, config))
            def __init__(self, network, config=None, **kwargs):
                self.bytes = EngineBytesFromNetwork(network, config)

            def __call__(self):
                return EngineFromBytes(self.bytes())()

        self.EngineBytesFromNetwork, self.EngineFromBytes, self.EngineFromNetwork, self.TrtRunner = (
            EngineBytesFromNetwork, EngineFromBytes, EngineFromNetwork, TrtRunner)

    # -- the plan: what the build had, readable back
    def plan(self, onnx_path: str, config: _Config) -> bytes:
        import onnxruntime as ort

        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        dtypes = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}
        io = [{"name": t.name, "mode": mode, "dtype": dtypes[t.type],
               "shape": [-1, *[int(d) for d in t.shape[1:]]]}
              for mode, ts in (("INPUT", sess.get_inputs()), ("OUTPUT", sess.get_outputs())) for t in ts]
        (profile,) = config.profiles
        level = getattr(config, "hardware_compatibility_level", None)
        header = {"tensorrt_version": self.machine.trt_version, "gpu": self.machine.gpu,
                  "compute_capability": self.machine.cc,
                  "hardware_compatible": level is not None and level.name != "NONE",
                  "version_compatible": bool(getattr(config, "version_compatible", False)),
                  "profiling_verbosity": getattr(getattr(config, "profiling_verbosity", None), "name", "DETAILED"),
                  "onnx": str(Path(onnx_path).resolve()),
                  "onnx_sha256": hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
                  "profile": {n: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                              for n, p in profile.items()},
                  "io": io}
        return PLAN_MAGIC + json.dumps(header).encode()

    @staticmethod
    def read_plan(blob: bytes) -> dict | None:
        blob = bytes(blob)
        if not blob.startswith(PLAN_MAGIC):
            return None
        try:
            return json.loads(blob[len(PLAN_MAGIC):])
        except ValueError:
            return None

    def deserialize(self, blob) -> Engine:
        header = self.read_plan(blob)
        if header is None:
            raise PolygraphyException("Could not deserialize engine. See log for details.")
        m = self.machine
        built, here = _release(header["tensorrt_version"]), _release(m.trt_version)
        if header["tensorrt_version"] != m.trt_version and not (
                header["version_compatible"] and built[:1] == here[:1] and here >= built):
            raise PolygraphyException(f"The engine plan file is not compatible with this version of TensorRT, "
                                      f"expecting library version {m.trt_version} got {header['tensorrt_version']}")
        if header["hardware_compatible"]:
            if m.compute_capability < (8, 0):
                raise PolygraphyException("Could not deserialize engine: hardware-compatible engines need Ampere+")
        elif header["compute_capability"] != m.cc:
            raise PolygraphyException(f"The engine plan file is generated on an incompatible device, expecting "
                                      f"compute {m.cc} got compute {header['compute_capability']}")
        return Engine(header, self.cuda_torch)

    # -- polygraphy.cuda.wrapper().handle: the CUDA runtime calls gpu_identity makes
    def _cudart(self):
        machine = self.machine

        class Handle:
            @staticmethod
            def cudaDeviceGetAttribute(ref, attr, device):
                value = {75: machine.compute_capability[0], 76: machine.compute_capability[1]}.get(attr)
                if value is None or device != 0:
                    return 1  # cudaErrorInvalidValue
                ref._obj.value = value
                return 0

            @staticmethod
            def cudaGetDeviceProperties(props, device):
                name = machine.gpu.encode()[:255]
                ctypes.memmove(props, name + b"\0", len(name) + 1)
                return 0

        return types.SimpleNamespace(handle=Handle())

    def modules(self) -> dict[str, types.ModuleType]:
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.machine.trt_version
        for sym in (MemoryPoolType, HardwareCompatibilityLevel, ProfilingVerbosity, TensorIOMode, DataType,
                    ExecutionContextAllocationStrategy):
            setattr(trt, sym.__name__, sym)
        trt.nptype = nptype
        trt.ICudaEngine, trt.IExecutionContext = Engine, Context
        backend = types.ModuleType("polygraphy.backend.trt")
        trt.IProfiler = IProfiler
        for name in ("EngineBytesFromNetwork", "EngineFromBytes", "EngineFromNetwork", "TrtRunner"):
            setattr(backend, name, getattr(self, name))
        backend.NetworkFromOnnxPath, backend.CreateConfig, backend.Profile = NetworkFromOnnxPath, CreateConfig, Profile
        cuda = types.ModuleType("polygraphy.cuda")
        cuda.wrapper = self._cudart
        return {"tensorrt": trt, "polygraphy.backend.trt": backend, "polygraphy.cuda": cuda}

    def install(self, monkeypatch) -> "StandIn":
        import sys

        for name, module in self.modules().items():
            monkeypatch.setitem(sys.modules, name, module)
        return self


class TrtRunnerBase:
    """Polygraphy's ``TrtRunner`` as cfnsr uses it: activate, infer(feed_dict) -> OrderedDict, deactivate."""

    def __init__(self, engine):
        self._engine_or_context = engine
        self.is_active = False
        self.calls = 0

    def activate(self):
        if self.is_active:
            return  # Polygraphy warns and does nothing
        engine = self._engine_or_context() if callable(self._engine_or_context) else self._engine_or_context
        self.engine, self.context = engine, engine.create_execution_context()
        self.host_output_buffers: dict[str, np.ndarray] = OrderedDict()
        self.is_active = True

    def deactivate(self):
        if self.is_active:
            del self.engine, self.context, self.host_output_buffers
            self.is_active = False

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc):
        self.deactivate()

    def infer(self, feed_dict, check_inputs=True):
        if not self.is_active:
            raise PolygraphyException("trt-runner | Must be activated prior to calling infer()")
        engine = self.engine
        inputs = [t for t in engine.io if t["mode"] == "INPUT"]
        if check_inputs:
            missing = [t["name"] for t in inputs if t["name"] not in feed_dict]
            if missing:
                raise PolygraphyException(f"input data is missing inputs: {missing}")
            for t in inputs:
                arr = feed_dict[t["name"]]
                if str(arr.dtype) != t["dtype"]:
                    raise PolygraphyException(f"Input tensor: {t['name']} | Received unexpected dtype: {arr.dtype}."
                                              f"\nNote: Expected type: {t['dtype']}")
                if len(arr.shape) != len(t["shape"]) or any(e not in (-1, g) for e, g in zip(t["shape"], arr.shape)):
                    raise PolygraphyException(f"Input tensor: {t['name']} | Received incompatible shape: {arr.shape}")
        for t in inputs:
            shape = tuple(feed_dict[t["name"]].shape)
            if self.context.get_tensor_shape(t["name"]) != shape and not self.context.set_input_shape(t["name"],
                                                                                                       shape):
                raise PolygraphyException(f"For input: {t['name']}, failed to set shape to: {shape}")
        outputs = engine.compute({t["name"]: np.ascontiguousarray(feed_dict[t["name"]]) for t in inputs})
        self.context.executed()
        self.calls += 1
        result = OrderedDict()
        for name, value in outputs.items():
            # One host buffer per output, reused: cut (or grown) to this call's size, then a view of it returned.
            nbytes = value.nbytes
            buf = self.host_output_buffers.get(name)
            if buf is None or buf.size < nbytes:
                buf = self.host_output_buffers[name] = np.empty(nbytes, np.uint8)
            buf[:nbytes] = np.frombuffer(np.ascontiguousarray(value).tobytes(), np.uint8)
            result[name] = buf[:nbytes].view(value.dtype).reshape(value.shape)
        return result


class _Graph:
    def __init__(self):
        self.launches: list[tuple[Context, dict]] = []

    def replay(self) -> None:
        for ctx, shapes in self.launches:
            ctx.run(shapes, stale=ctx.shapes != shapes)


class CudaTorch:
    """torch, with a stand-in ``torch.cuda`` (see the module docstring); everything else is the real torch."""

    def __init__(self, machine: Machine):
        import contextlib
        import time

        import torch

        self._torch, self.tensors, self.capturing = torch, {}, None
        dev = self

        class Stream:
            cuda_stream = 0x5EED

            def synchronize(self):
                pass

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self, stream=None):
                self.t = time.perf_counter()

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3

        @contextlib.contextmanager
        def graph(g, stream=None):
            dev.capturing = g
            try:
                yield
            finally:
                dev.capturing = None

        self.graphs_captured = 0

        def new_graph():
            dev.graphs_captured += 1
            return _Graph()

        self.cuda = types.SimpleNamespace(
            Stream=Stream, Event=Event, CUDAGraph=new_graph, graph=graph,
            stream=lambda s: contextlib.nullcontext(), empty_cache=lambda: None, is_available=lambda: True,
            get_device_capability=lambda i=0: machine.compute_capability, get_device_name=lambda i=0: machine.gpu)

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def empty(self, shape, dtype=None, device=None):
        t = self._torch.empty(shape, dtype=dtype)
        self.tensors[t.data_ptr()] = t
        return t
