"""``cfnsr build``: a cfnsr ONNX file -> a TensorRT engine + its sidecar, through Polygraphy's loaders.

The precision is in the ONNX graph (fp16 tensors, Q/DQ for int8), so the network is parsed STRONGLY_TYPED and no
precision flags or calibrators are set: the same file builds on TensorRT 10.3 (JetPack 6) through 11.x. Each step is
a Polygraphy loader, usable and testable alone (Polygraphy imports TensorRT lazily, on the call):

* ``network_loader``: ``NetworkFromOnnxPath(path, strongly_typed=True)``;
* ``config_loader``: ``CreateConfig(profiles=[batch profile], memory_pool_limits={WORKSPACE: ...},
  profiling_verbosity=LAYER_NAMES_ONLY or DETAILED, version_compatible=..., hardware_compatibility_level=...)``.
  The verbosity is always given: ``CreateConfig`` sets DETAILED when it is not (``backend/trt/config.py``, Polygraphy
  0.49.13 at NVIDIA/TensorRT v10.3.0 and 0.53.6), and TensorRT documents that DETAILED "will generally increase
  latency in enqueueV3()" (NvInferRuntime.h at v10.3.0, line 4305), so only ``--layer-info`` asks for it;
* ``build_engine``: ``EngineBytesFromNetwork`` -> the raw plan (``trtexec`` and C++ load it), and the sidecar
  ``MODEL.engine.json`` that the runtime checks before it deserialises anything.

What Polygraphy does not do is ours: the sidecar, the GPU/TensorRT identity, and a timing cache that is only ever
reused on the device it was measured on (Polygraphy ignores ``set_timing_cache``'s verdict and merges caches with
``ignore_mismatch=True``; here the cache file is keyed by GPU, compute capability and TensorRT version, and a cache
TensorRT still refuses is reported and replaced, never merged).

DLA is refused: DLA needs a static batch profile and does not run the explicit-quantization (Q/DQ) int8 graphs cfnsr
writes, so with GPU fallback every layer would move to the GPU silently while the sidecar said DLA.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from ..artifact import SIDECAR_FORMAT, read_metadata, sidecar_path
from ..engines.tensorrt import gpu_identity, tensorrt_version
from ..errors import ArtifactError, CfnsrError
from ..fileio import atomic_path, check_file, sha256_file, write_json
from ..lazy import require


@dataclass(frozen=True)
class BuildOptions:
    batch: tuple[int, int, int] = (1, 1, 8)  # min, opt, max of the batch axis
    workspace_mb: int = 4096
    timing_cache_dir: Path | None = None  # one cache file per GPU and TensorRT version in this folder
    version_compatible: bool = False
    hardware_compatible: bool = False
    dla_core: int | None = None
    layer_info: bool = False  # profiling verbosity DETAILED (else LAYER_NAMES_ONLY): the inspector's per-layer detail

    def __post_init__(self):
        bmin, bopt, bmax = self.batch
        if not 1 <= bmin <= bopt <= bmax:
            raise CfnsrError(f"--batch {bmin},{bopt},{bmax}: need 1 <= min <= opt <= max")
        if self.workspace_mb < 1:
            raise CfnsrError(f"--workspace-mb must be at least 1, got {self.workspace_mb}")
        if self.dla_core is not None:
            raise CfnsrError(
                "cfnsr does not build DLA engines: DLA needs a static batch profile and cannot run the explicit "
                "(Q/DQ) int8 graphs cfnsr exports, so with GPU fallback every layer would silently run on the GPU. "
                "Build for the GPU (leave out --dla-core)")


def _polygraphy_trt():
    return require("polygraphy.backend.trt", "tensorrt", "building TensorRT engines (Polygraphy)")


def network_loader(onnx_path: str | Path):
    """Polygraphy's ONNX parser loader, strongly typed (the precision comes from the graph)."""
    return _polygraphy_trt().NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)


def batch_profile(input_shapes: dict[str, tuple], batch: tuple[int, int, int]):
    """One Polygraphy ``Profile`` over the batch axis of every input; ``input_shapes`` without the batch axis."""
    trt_mod = _polygraphy_trt()
    bmin, bopt, bmax = batch
    profile = trt_mod.Profile()
    for name, rest in input_shapes.items():
        if any(not isinstance(d, int) or d < 1 for d in rest):
            raise ArtifactError(f"input {name} has dynamic axes besides the batch: {rest}")
        profile.add(name, min=(bmin, *rest), opt=(bopt, *rest), max=(bmax, *rest))
    return profile


def config_loader(input_shapes: dict[str, tuple], opts: BuildOptions):
    """Polygraphy's ``CreateConfig``: batch profile, workspace, compatibility; no precision flags."""
    trt_mod = _polygraphy_trt()
    kwargs = {}
    if opts.version_compatible:
        kwargs["version_compatible"] = True
    if opts.hardware_compatible:
        kwargs["hardware_compatibility_level"] = require("tensorrt").HardwareCompatibilityLevel.AMPERE_PLUS
    verbosity = require("tensorrt").ProfilingVerbosity
    kwargs["profiling_verbosity"] = verbosity.DETAILED if opts.layer_info else verbosity.LAYER_NAMES_ONLY
    workspace = {require("tensorrt").MemoryPoolType.WORKSPACE: opts.workspace_mb << 20}
    return trt_mod.CreateConfig(profiles=[batch_profile(input_shapes, opts.batch)], memory_pool_limits=workspace,
                                **kwargs)


def timing_cache_file(cache_dir: Path, identity: dict, trt_version: str) -> Path:
    """``timing-<gpu>-sm<cc>-trt<version>.cache``: a cache is only ever read back on the device that measured it."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", identity["gpu"]).strip("-").lower()
    cc = identity["compute_capability"].replace(".", "")
    return Path(cache_dir) / f"timing-{gpu}-sm{cc}-trt{trt_version}.cache"


def _apply_timing_cache(config, path: Path | None, log) -> None:
    """Load ``path`` into ``config`` and check TensorRT took it; a refused cache is reported and left unused."""
    if path is None or not path.is_file():
        return
    cache = config.create_timing_cache(path.read_bytes())
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"TensorRT refused the timing cache {path} (another device or version?): building without it; "
            "it will be replaced by this build's cache")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def input_shapes_from_metadata(meta: dict) -> dict[str, tuple]:
    if "inputs" not in meta:
        raise ArtifactError("the ONNX file has no cfnsr.inputs metadata: export it with `cfnsr export`")
    return {i["name"]: tuple(i["shape"][1:]) for i in meta["inputs"] if i.get("kind", "input") == "input"}


def engine_path(onnx_path: str | Path) -> Path:
    """``m.int8.engine`` for ``m.int8.onnx`` (only the last suffix is replaced)."""
    return Path(onnx_path).with_suffix(".engine")


def build_engine(onnx_path: str | Path, output: str | Path | None = None, opts: BuildOptions | None = None,
                 force: bool = False, log=print) -> Path:
    """ONNX -> raw engine + sidecar JSON, on this GPU."""
    from ..artifact import read_metadata as read_checked

    read_checked(onnx_path, validate=True)  # a file that is not a cfnsr artifact is refused before TensorRT loads
    require("tensorrt", purpose="building TensorRT engines")
    trt_mod = _polygraphy_trt()
    onnx_path = Path(onnx_path)
    opts = opts or BuildOptions()
    out = Path(output) if output else engine_path(onnx_path)
    check_file(out, force, "-o")
    meta = read_metadata(onnx_path)
    identity = gpu_identity()
    version = tensorrt_version()
    cache_path = timing_cache_file(opts.timing_cache_dir, identity, version) if opts.timing_cache_dir else None
    log(f"building a TensorRT {version} engine for {identity['gpu']} from {onnx_path} (batch {opts.batch}) ...")
    builder, network, parser = network_loader(onnx_path)()
    config = config_loader(input_shapes_from_metadata(meta), opts)(builder, network)
    _apply_timing_cache(config, cache_path, log)
    plan = trt_mod.EngineBytesFromNetwork((builder, network, parser), config=config)()
    with atomic_path(out, force) as tmp:
        tmp.write_bytes(bytes(plan))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path, force=True) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": version,
        **identity,
        "profile": {"batch": list(opts.batch)},
        "precision": meta.get("precision"),
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": sha256_file(onnx_path),
        "version_compatible": opts.version_compatible,
        "hardware_compatible": opts.hardware_compatible,
        "device": "gpu",
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cfnsr": meta,
    }
    write_json(sidecar_path(out), sidecar)
    log(f"wrote {out} and {sidecar_path(out).name}")
    return out


def engine_layers(engine_path: str | Path) -> dict:
    """The engine inspector's per-layer JSON of a built engine (detailed when it was built with ``layer_info``)."""
    import json

    trt = require("tensorrt", purpose="inspecting TensorRT engines")
    trt_mod = _polygraphy_trt()
    engine = trt_mod.EngineFromBytes(Path(engine_path).read_bytes())()
    inspector = engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def summarize_layers(info: dict) -> dict:
    """Counts from the inspector's JSON: layers, convolutions, and how many convolutions run as int8 kernels and
    with other ops fused in (TensorRT names a fused layer ``a + b + ...``)."""
    layers = info.get("Layers", [])
    layers = [layer if isinstance(layer, dict) else {"Name": str(layer)} for layer in layers]

    def is_int8(layer) -> bool:
        return any("int8" in str(t.get("Format/Datatype", "")).lower() for t in layer.get("Inputs", []))

    convs = [la for la in layers if "conv" in str(la.get("LayerType", "")).lower()
             or "conv" in str(la.get("Name", "")).lower()]
    int8_convs = [la for la in convs if is_int8(la)]
    return {
        "layers": len(layers),
        "detailed": any("Inputs" in la for la in layers),
        "convolutions": len(convs),
        "int8_convolutions": len(int8_convs),
        "fused_int8_convolutions": sum(" + " in str(la.get("Name", "")) for la in int8_convs),
        "int8_layers": sum(is_int8(la) for la in layers),
        "reformat_layers": sum("reformat" in str(la.get("LayerType", "") or la.get("Name", "")).lower()
                               for la in layers),
    }
