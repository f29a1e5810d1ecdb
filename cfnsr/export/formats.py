"""The export formats, as a table: what each writes, whether it needs a GPU, which options apply.

An impossible combination raises; it is never silently changed into another.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CfnsrError, MissingDependencyError
from ..lazy import cuda_available


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    needs_gpu: bool
    precisions: tuple[str, ...]
    options: tuple[str, ...]  # the ExportOptions this format accepts beyond the common ones; others are refused
    description: str


# ExportOptions fields that only some formats or precisions take, and the CLI flag that sets each.
OPTION_FLAGS = {
    "calib_clips": "--calib-clips", "calib_method": "--calib-method", "int8_scope": "--int8-scope",
    "high_precision": "--high-precision", "check_trt": "--no-trt-check", "device": "--device",
    "max_batch": "--max-batch", "inputs": "--inputs",
    "auto_backend": "--backend", "auto_batch": "--batch", "auto_threads": "--threads", "auto_budget": "--budget",
}
INT8_OPTIONS = ("calib_clips", "calib_method", "int8_scope", "high_precision")
# --precision auto takes the calibration options too (not --int8-scope: it chooses the groups itself), and these:
AUTO_OPTIONS = ("auto_backend", "auto_batch", "auto_threads", "auto_budget", "device")
_ONNX_OPTIONS = ("calib_clips", "calib_method", "int8_scope", "high_precision", "check_trt", "inputs")

FORMATS = {
    "onnx": Format("onnx", ".onnx", False, ("fp32", "fp16", "int8", "auto"), _ONNX_OPTIONS,
                   "ONNX with the precision in the graph (runs on ONNX Runtime, OpenVINO, TensorRT)"),
    "engine": Format("engine", ".engine", True, ("fp32", "fp16", "int8", "auto"), _ONNX_OPTIONS,
                     "TensorRT engine built from the ONNX file, plus a .engine.json sidecar "
                     "(this GPU and TensorRT only)"),
    "pt2": Format("pt2", ".pt2", False, ("fp32",), ("device", "max_batch", "inputs"),
                  "AOTInductor package for libtorch: the C++ runtime's CPU backend (or CUDA with --device cuda)"),
}
PRECISIONS = ("fp32", "fp16", "int8", "auto")  # auto: chosen per layer group by measurement (export/auto.py)


def tensorrt_available() -> tuple[bool, str]:
    """(usable, reason): TensorRT imports and a CUDA GPU is visible."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return False, f"tensorrt does not import ({e})"
    if not cuda_available():
        return False, "no CUDA GPU is visible"
    return True, "ok"


def resolve(fmt: str, precision: str) -> list[str]:
    """The formats to produce for ``--format`` (onnx, engine, pt2, auto) and ``--precision``."""
    if precision not in PRECISIONS:
        raise CfnsrError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if fmt == "onnx":
        return ["onnx"]
    if fmt in FORMATS and precision not in FORMATS[fmt].precisions:
        raise CfnsrError(f"--format {fmt} is {'/'.join(FORMATS[fmt].precisions)} only (got --precision {precision}): "
                         "reduced precision is decided in the ONNX graph; export --format onnx or engine for fp16/int8")
    if fmt == "pt2":
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
