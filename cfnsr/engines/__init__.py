"""Runtimes: one Runner per backend, and ``load(path)`` that picks the backend from the file (contract).

=================  ======================  ==========================================
file               default backend          others
=================  ======================  ==========================================
``*.pt``           torch (the reference)
``*.onnx``         onnxruntime              openvino
``*.engine``       tensorrt
``*.pt2``          aoti (AOTInductor)
=================  ======================  ==========================================
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError, CfnsrError
from ..lazy import cuda_available
from .base import InputError, Runner, TensorSpec

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "aoti")
_BY_SUFFIX = {".pt": ("torch",), ".pth": ("torch",), ".onnx": ("onnxruntime", "openvino"),
              ".engine": ("tensorrt",), ".plan": ("tensorrt",),
              ".pt2": ("aoti",)}


def _sniff(path: Path) -> str | None:
    """Content check, so a renamed or truncated file gets a clear error rather than a backend's crash."""
    head = path.read_bytes()[:8]
    if head[:2] == b"PK":
        return ".pt"  # zip archive: torch.save checkpoint or AOTInductor package
    if head[:1] == b"\x08":
        return ".onnx"  # protobuf ModelProto starts with ir_version (field 1, varint)
    return None


DEVICES = ("cpu", "cuda", "auto")


def device_options(path: str | Path, backend: str | None, device: str | None) -> dict:
    """Runner options that put ``backend`` (or the file's default backend) on ``device`` (cpu, cuda, auto).

    torch runs where asked; ONNX Runtime uses its CUDA provider (onnxruntime-gpu) for cuda; OpenVINO runs on the
    CPU and TensorRT on the GPU only, so asking otherwise is an error, never silently changed.
    """
    if device is None:
        return {}
    if device not in DEVICES:
        raise CfnsrError(f"unknown --device {device!r}; choose one of {', '.join(DEVICES)}")
    suffix = Path(path).suffix.lower()
    backend = backend or _BY_SUFFIX.get(suffix, ("",))[0]
    if backend == "torch":
        return {"device": ("cuda" if cuda_available() else "cpu") if device == "auto" else device}
    if backend == "onnxruntime":
        from ..lazy import require

        ort = require("onnxruntime")
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cuda" and not has_cuda:
            raise CfnsrError("--device cuda: this ONNX Runtime has no CUDAExecutionProvider; install onnxruntime-gpu "
                             "(see the README's GPU install) or use --device cpu")
        use_cuda = device == "cuda" or (device == "auto" and has_cuda)
        return {"providers": (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]}
    if backend == "openvino" and device == "cuda":
        raise CfnsrError("--device cuda: the OpenVINO backend runs on the CPU here; use onnxruntime or tensorrt")
    if backend == "tensorrt" and device == "cpu":
        raise CfnsrError("--device cpu: TensorRT engines run on NVIDIA GPUs only")
    return {}


def load(path: str | Path, backend: str | None = None, **options) -> Runner:
    """The runner for ``path``: by its suffix, or ``backend`` when given. Not yet activated (use ``with``)."""
    from .runners import AotiRunner, OnnxRuntimeRunner, OpenVinoRunner, TorchRunner

    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder, not a model file (a checkpoint, .onnx, .engine or .pt2)")
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    suffix = path.suffix.lower()
    allowed = _BY_SUFFIX.get(suffix)
    if allowed is None:
        raise ArtifactError(f"{path}: unknown artifact type {suffix!r}; expected one of {', '.join(_BY_SUFFIX)}")
    if suffix in (".pt", ".pth", ".pt2", ".onnx"):
        sniffed = _sniff(path)
        if sniffed is None or (sniffed == ".pt") != (suffix in (".pt", ".pth", ".pt2")):
            raise ArtifactError(f"{path} does not look like a {suffix} file (corrupt, truncated or misnamed)")
    backend = backend or allowed[0]
    if backend not in BACKENDS:
        raise CfnsrError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend not in allowed:
        runs = ", ".join(s for s, b in _BY_SUFFIX.items() if backend in b)
        raise CfnsrError(f"backend {backend} cannot run a {suffix} file (it runs {runs})")
    if backend == "torch":
        return TorchRunner(path, **options)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, **options)
    if backend == "openvino":
        return OpenVinoRunner(path, **options)
    if backend == "aoti":
        return AotiRunner(path, **options)
    from .tensorrt import TensorRTRunner

    return TensorRTRunner(path, **options)


__all__ = ["BACKENDS", "DEVICES", "InputError", "Runner", "TensorSpec", "cuda_available", "device_options", "load"]
