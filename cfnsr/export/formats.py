"""The export formats, as a table: what each writes, whether it needs a GPU, which options apply.

An impossible combination raises; it is never silently changed into another.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CfnsrError, MissingDependencyError


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    needs_gpu: bool
    precisions: tuple[str, ...]
    description: str


FORMATS = {
    "onnx": Format("onnx", ".onnx", False, ("fp32", "fp16", "int8"),
                   "ONNX with the precision in the graph (runs on ONNX Runtime, OpenVINO, TensorRT)"),
    "engine": Format("engine", ".engine", True, ("fp32", "fp16", "int8"),
                     "TensorRT engine built from the ONNX file, plus a .engine.json sidecar (this GPU and TensorRT only)"),
    "pt2": Format("pt2", ".pt2", False, ("fp32",),
                  "AOTInductor package for libtorch: the C++ runtime's CPU backend (or CUDA with --device cuda)"),
}
PRECISIONS = ("fp32", "fp16", "int8")


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT imports and a CUDA GPU is visible."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return False, f"tensorrt does not import ({e})"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible"
    except ImportError:
        pass
    return True, "ok"


def resolve(fmt: str, precision: str) -> list[str]:
    """The formats to produce for ``--format`` (onnx, engine, pt2, auto) and ``--precision``."""
    if precision not in PRECISIONS:
        raise CfnsrError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if fmt == "onnx":
        return ["onnx"]
    if fmt == "pt2":
        if precision not in FORMATS["pt2"].precisions:
            raise CfnsrError(f"--format pt2 is fp32 only (got --precision {precision}): reduced precision is "
                             "decided in the ONNX graph; export --format onnx or engine for fp16/int8")
        return ["pt2"]
    ok, why = tensorrt_available()
    if fmt == "engine":
        if not ok:
            raise MissingDependencyError(
                f"--format engine needs TensorRT on an NVIDIA GPU, but {why}: install it with "
                "pip install 'cfnsr[tensorrt]' (JetPack ships it), or export ONNX here and run "
                "`cfnsr build MODEL.onnx` on the target")
        return ["onnx", "engine"]
    if fmt == "auto":
        return ["onnx", "engine"] if ok else ["onnx"]
    raise CfnsrError(f"unknown --format {fmt!r}; choose onnx, engine, pt2 or auto")
