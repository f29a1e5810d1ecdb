"""Optional and GPU-only packages are imported on first use, with a message naming the extra that installs them;
and the one probe of the GPU (is there one, what it is) that everything shares."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module -> (pip extra, what it is for)
EXTRAS = {
    "tensorrt": ("tensorrt", "building and running TensorRT engines"),
    "polygraphy": ("tensorrt", "building and running TensorRT engines (Polygraphy)"),
    "openvino": ("openvino", "the OpenVINO CPU backend"),
    "onnxruntime": ("cpu", "ONNX Runtime (export, calibration and the onnxruntime backend; cfnsr[gpu] installs "
                            "onnxruntime-gpu instead)"),
    "matplotlib": ("", "PNG plots (a core dependency)"),
}


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        default_extra, default_purpose = EXTRAS.get(top, ("", f"the {top} package"))
        extra = default_extra if extra is None else extra
        purpose = purpose or default_purpose
        fix = f"pip install 'cfnsr[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(f"{module} is needed for {purpose} but cannot be imported ({e}); {fix}") from e


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU: the one probe of it everything shares."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_identity(index: int = 0) -> dict | None:
    """Name, compute capability and CUDA version of GPU ``index`` as torch sees it; None without a CUDA GPU."""
    if not cuda_available():
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}",
            "cuda": torch.version.cuda}


def bf16_supported() -> bool:
    """Whether the CUDA GPU torch sees computes in bfloat16 (False without one)."""
    if not cuda_available():
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())
