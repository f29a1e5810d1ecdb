"""Every export choice, in one place: the formats table and the values each option takes.

The single source of ``cfnsr export``'s choices: click's choice lists, the option checks, the export's routing and
the README's table of formats all read this module. It imports neither torch nor onnx, so ``cfnsr --help`` reads
it for free. An impossible combination raises; it is never silently changed into another.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..artifact import INPUT_KINDS
from ..errors import CfnsrError, MissingDependencyError
from ..lazy import cuda_available

PRECISIONS = ("fp32", "fp16", "int8")
HIGH_PRECISIONS = ("fp32", "fp16")  # what int8 leaves unquantized runs in one of these (--high-precision)
CALIB_METHODS = ("minmax", "entropy", "percentile")

# --int8-scope: what is quantized (the rest stays in --high-precision), and the narrower scope to try when its gate
# fails (None: nothing narrower is left but fp16).
INT8_SCOPES = {
    "all": "every Conv, MatMul and Gemm that int8 can speed up",
    "no-stem": "everything but the 7x7x7 video stem",
    "no-grouped": "everything but the grouped 3x3x3 convolutions of the ResNeXt",
    "no-stem-grouped": "everything but the stem and the grouped convolutions",
    "audio-fusion": "the audio branch, the fusion block and the classifier "
                    "(the whole video branch stays high precision)",
}
NARROWER_SCOPE = {"all": "no-stem", "no-stem": "no-stem-grouped", "no-grouped": "no-stem-grouped",
                  "no-stem-grouped": "audio-fusion", "audio-fusion": None}


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    precisions: tuple[str, ...]
    options: tuple[str, ...]  # the ExportOptions this format accepts beyond the common ones; others are refused
    route: str  # the FORMATS row whose export route writes the file (its suffix and its route in export.pipeline)
    builds_engine: bool  # the route's ONNX file then goes on to `cfnsr build` (needs TensorRT and a GPU)
    description: str


# ExportOptions fields that only some formats or precisions take, and the CLI flag that sets each.
OPTION_FLAGS = {
    "calib_clips": "--calib-clips", "calib_method": "--calib-method", "int8_scope": "--int8-scope",
    "high_precision": "--high-precision", "check_trt": "--no-trt-check", "device": "--device",
    "max_batch": "--max-batch", "inputs": "--inputs",
}
INT8_OPTIONS = ("calib_clips", "calib_method", "int8_scope", "high_precision")
_ONNX_OPTIONS = (*INT8_OPTIONS, "check_trt", "inputs")

FORMATS = {
    "onnx": Format("onnx", ".onnx", PRECISIONS, _ONNX_OPTIONS, "onnx", False,
                   "ONNX with the precision in the graph (runs on ONNX Runtime, OpenVINO, TensorRT)"),
    "engine": Format("engine", ".engine", PRECISIONS, _ONNX_OPTIONS, "onnx", True,
                     "the ONNX file, then the TensorRT engine built from it and its sidecar (this GPU and TensorRT "
                     "only)"),
    "pt2": Format("pt2", ".pt2", ("fp32",), ("device", "max_batch", "inputs"), "pt2", False,
                  "AOTInductor package for libtorch: the C++ runtime's CPU backend (or CUDA with --device cuda)"),
}
AUTO = "auto"  # --format auto: engine where TensorRT and a GPU are usable, else onnx
FORMAT_CHOICES = (*FORMATS, AUTO)

# The choice list of each ExportOptions field that takes one (click's choices and check_options read these).
CHOICES = {"precision": PRECISIONS, "fmt": FORMAT_CHOICES, "calib_method": CALIB_METHODS,
           "int8_scope": tuple(INT8_SCOPES), "high_precision": HIGH_PRECISIONS, "inputs": INPUT_KINDS}
CHOICE_FLAGS = {"precision": "--precision", "fmt": "--format", "calib_method": "--calib-method",
                "int8_scope": "--int8-scope", "high_precision": "--high-precision", "inputs": "--inputs"}


def check_choice(field: str, value) -> None:
    """Refuse a value of an ExportOptions field that is not one of its choices, naming the flag and the choices."""
    if value not in CHOICES[field]:
        raise CfnsrError(f"unknown {CHOICE_FLAGS[field]} {value!r}; choose one of: {', '.join(CHOICES[field])}")


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
    """The formats to produce for ``--format`` (a FORMATS name or auto) and ``--precision``, in order: the route's
    own file first, then the engine where the format builds one."""
    check_choice("precision", precision)
    check_choice("fmt", fmt)
    if fmt == AUTO:
        fmt = "engine" if tensorrt_available()[0] else "onnx"
    f = FORMATS[fmt]
    if precision not in f.precisions:
        raise CfnsrError(f"--format {fmt} is {'/'.join(f.precisions)} only (got --precision {precision}): "
                         "reduced precision is decided in the ONNX graph; export --format onnx or engine for fp16/int8")
    if not f.builds_engine:
        return [f.route]
    ok, why = tensorrt_available()
    if not ok:
        raise MissingDependencyError(
            f"--format {fmt} needs TensorRT on an NVIDIA GPU, but {why}: install it with "
            "pip install 'cfnsr[tensorrt]' (JetPack ships it), or export ONNX here and run "
            "`cfnsr build MODEL.onnx` on the target")
    return [f.route, "engine"]


def markdown_table() -> str:
    """The README's table of formats, from FORMATS (tests/export/test_formats.py holds the README to it)."""
    rows = ["| `--format` | writes | precisions | options beyond the common ones |", "|---|---|---|---|"]
    for f in FORMATS.values():
        writes = f"`{FORMATS[f.route].suffix}`" + (f" + `{f.suffix}` + `{f.suffix}.json`" if f.builds_engine else "")
        rows.append(f"| `{f.name}` | {writes}: {f.description} | {', '.join(f.precisions)} | "
                    f"{', '.join(f'`{OPTION_FLAGS[o]}`' for o in f.options)} |")
    rows.append(f"| `{AUTO}` | `engine` where TensorRT and a GPU are usable, else `onnx` | | |")
    return "\n".join(rows)
