"""What this machine has: package versions, the GPU, and which inference backends are usable (and why not)."""

from __future__ import annotations

import importlib
import platform
from dataclasses import asdict, dataclass
from typing import Callable


@dataclass
class Backend:
    name: str
    usable: bool
    detail: str  # version and devices when usable; the reason and the fix when not


def _version(mod) -> str:
    return getattr(mod, "__version__", None) or getattr(mod, "version", "unknown")


def probe_backends(import_module: Callable = importlib.import_module) -> list[Backend]:
    """Try each backend's import; ``import_module`` is injectable so tests can simulate a missing package."""
    out: list[Backend] = []

    def attempt(name: str, module: str, fix: str, check: Callable | None = None) -> None:
        try:
            mod = import_module(module)
        except Exception as e:
            out.append(Backend(name, False, f"cannot import {module} ({type(e).__name__}: {e}); {fix}"))
            return
        try:
            detail = check(mod) if check else _version(mod)
        except Exception as e:
            out.append(Backend(name, False, f"{module} {_version(mod)} imports but is not usable here: {e}"))
            return
        out.append(Backend(name, True, detail))

    def torch_check(torch) -> str:
        cuda = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"
        return f"torch {torch.__version__} ({cuda})"

    def ort_check(ort) -> str:
        return f"onnxruntime {ort.__version__}, providers: {', '.join(ort.get_available_providers())}"

    def trt_check(trt) -> str:
        cuda = import_module("torch").cuda if _has(import_module, "torch") else None
        if cuda is None or not cuda.is_available():
            raise RuntimeError("no CUDA GPU is visible (TensorRT engines run on NVIDIA GPUs only)")
        return f"tensorrt {trt.__version__}"

    def ov_check(ov) -> str:
        core = ov.Core()
        return f"openvino {ov.get_version()}, devices: {', '.join(core.available_devices)}"

    def aoti_check(_inductor) -> str:
        import shutil

        cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        if cxx is None:
            raise RuntimeError("no C++ compiler on PATH: AOTInductor compiles .pt2 packages with one (apt install g++)")
        import logging

        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPU machines
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        isa = str(pick_vec_isa()).upper() or "no vector ISA"
        return f"AOTInductor .pt2 packages for the C++ runtime (compiler {cxx}, CPU packages target {isa})"

    attempt("torch", "torch", "pip install torch", torch_check)
    attempt("onnxruntime", "onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)", ort_check)
    attempt("tensorrt", "tensorrt", "pip install 'cfnsr[tensorrt]' on a machine with an NVIDIA GPU, "
            "or use the TensorRT that JetPack ships", trt_check)
    attempt("openvino", "openvino", "pip install 'cfnsr[openvino]'", ov_check)
    attempt("aoti", "torch._inductor", "pip install torch", aoti_check)
    return out


def _has(import_module: Callable, name: str) -> bool:
    try:
        import_module(name)
        return True
    except Exception:
        return False


def machine() -> dict:
    """A short description of the machine, recorded with every benchmark."""
    import os

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def as_dicts(backends: list[Backend]) -> list[dict]:
    return [asdict(b) for b in backends]
