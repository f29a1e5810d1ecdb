"""What this machine has: package versions, the GPU, and which inference backends are usable (and why not)."""

from __future__ import annotations

import importlib
import platform
from dataclasses import asdict, dataclass
from typing import Callable

from .lazy import cuda_available, gpu_identity


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
        gpu = gpu_identity()
        return f"torch {torch.__version__} ({'CUDA ' + gpu['cuda'] + ', ' + gpu['gpu'] if gpu else 'CPU only'})"

    def ort_check(ort) -> str:
        return f"onnxruntime {ort.__version__}, providers: {', '.join(ort.get_available_providers())}"

    def trt_check(trt) -> str:
        if not cuda_available():
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


def machine(root: str = "/", run: Callable | None = None) -> dict:
    """A description of the machine, recorded with every benchmark: processor, torch/CUDA/TensorRT versions, the
    GPU (NVML clocks on desktops), and on a Jetson its model, L4T/JetPack release, power mode and clock state.

    ``root`` and ``run`` (a function running a command, returning its stdout or None) are injectable so the
    parsing is tested from fixture copies of a Jetson's files.
    """
    import os

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_name(root),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        gpu = gpu_identity()
        if gpu:
            info["gpu"], info["cuda"] = gpu["gpu"], gpu["cuda"]
    except ImportError:
        pass
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    jetson = jetson_record(root, run)
    if jetson:
        info["jetson"] = jetson
    else:
        gpu = nvml_record()
        if gpu:
            info["nvml"] = gpu
    return info


# Arm CPU part numbers (/proc/cpuinfo "CPU part") of the processors cfnsr's targets have.
ARM_PARTS = {"0xd42": "Cortex-A78AE", "0xd41": "Cortex-A78", "0xd4f": "Neoverse-V2", "0xd40": "Neoverse-V1",
             "0xd0c": "Neoverse-N1", "0xd08": "Cortex-A72", "0xd07": "Cortex-A57", "0x004": "NVIDIA Carmel"}


def _read(root: str, path: str) -> str | None:
    import os

    try:
        with open(os.path.join(root, path.lstrip("/")), "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def cpu_name(root: str = "/") -> str:
    """The processor's name: x86 "model name", or on Arm the core type from "CPU part" (Jetsons have no name)."""
    text = _read(root, "/proc/cpuinfo") or ""
    parts = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and value:
            return value
        if key == "CPU part":
            parts.append(value.lower())
    if parts:
        counts: dict[str, int] = {}
        for part in parts:
            counts[part] = counts.get(part, 0) + 1
        return ", ".join(f"{n}x {ARM_PARTS.get(part, 'Arm core ' + part)}" for part, n in counts.items())
    return platform.processor() or platform.machine() or "unknown"


# L4T major.minor -> JetPack (NVIDIA's JetPack archive).
L4T_TO_JETPACK = {"36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1/6.2", "38.1": "7.0", "38.2": "7.0", "35.": "5.1"}


def jetson_record(root: str = "/", run: Callable | None = None) -> dict | None:
    """Model, L4T/JetPack, power mode and clock state of a Jetson; None elsewhere."""
    release = _read(root, "/etc/nv_tegra_release")
    model = _read(root, "/proc/device-tree/model")
    if release is None and (model is None or "jetson" not in model.lower()):
        return None
    rec: dict = {"model": (model or "unknown").replace("\x00", "").strip("\x00 \n")}
    if release:
        import re

        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        if m:
            l4t = f"{m.group(1)}.{m.group(2)}"
            rec["l4t"] = l4t
            major_minor = ".".join(l4t.split(".")[:2])
            rec["jetpack"] = L4T_TO_JETPACK.get(major_minor) or next(
                (jp for k, jp in L4T_TO_JETPACK.items() if k.endswith(".") and l4t.startswith(k)), "unknown")
    run = run or _run
    q = run(["nvpmodel", "-q"])
    if q:
        import re

        name = re.search(r"NV Power Mode:\s*(\S+)", q)
        ids = [line.strip() for line in q.splitlines() if line.strip().isdigit()]
        rec["power_mode"] = name.group(1) if name else None
        rec["power_mode_id"] = int(ids[-1]) if ids else None
        rec["max_power_mode"] = bool(name and name.group(1).upper().startswith("MAXN")) or rec["power_mode_id"] == 0
    rec["clocks_locked"] = _clocks_locked(root)
    return rec


def _clocks_locked(root: str) -> bool | None:
    """jetson_clocks pins every CPU's and the GPU's minimum frequency to its maximum; check that from sysfs."""
    import glob
    import os

    pairs = []
    for cpu in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        pairs.append((_read(cpu, "scaling_min_freq"), _read(cpu, "scaling_max_freq")))
    for dev in sorted(glob.glob(os.path.join(root, "sys/devices/**/devfreq/*gpu*"), recursive=True)):
        pairs.append((_read(dev, "min_freq"), _read(dev, "max_freq")))
    pairs = [(a.strip(), b.strip()) for a, b in pairs if a and b]
    if not pairs:
        return None
    return all(a == b for a, b in pairs)


def nvml_record() -> dict | None:
    """Desktop GPU state from NVML (nvidia-ml-py), if installed: name, driver, SM clock now and at most."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        rec = {"gpu": name.decode() if isinstance(name, bytes) else name,
               "driver": str(pynvml.nvmlSystemGetDriverVersion()),
               "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
               "sm_clock_max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
               "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000}
        pynvml.nvmlShutdown()
        return rec
    except Exception:  # NVML present but no usable driver: nothing to record
        return None


def _run(cmd: list[str]) -> str | None:
    import shutil
    import subprocess

    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def jetson_warnings(m: dict) -> list[str]:
    """What makes Jetson latency figures misleading, one line each."""
    j = m.get("jetson")
    if not j:
        return []
    out = []
    if j.get("max_power_mode") is False:
        out.append(f"this Jetson is in power mode {j.get('power_mode')} (not MAXN): latency is not the device's "
                   "best; set it with `sudo nvpmodel -m 0`")
    if j.get("clocks_locked") is False:
        out.append("the clocks are not locked: latency varies with DVFS; lock them with `sudo jetson_clocks`")
    return out


# JetPack major -> the TensorRT it ships (NVIDIA's JetPack release notes).
JETPACK_TENSORRT = {"6": ("10.3",), "7": ("10.13", "10.14", "10.15", "10.16")}


def diagnose(facts: dict) -> list[str]:
    """Known-bad combinations on a target, one line each with the fix. ``facts``: what ``target_facts`` gathers
    (injectable for tests): jetpack, tensorrt, numpy, torch, torch_cuda, torch_numpy_ok, gpu_present, dists."""
    out = []
    jp, trt = facts.get("jetpack"), facts.get("tensorrt")
    if jp and trt:
        ships = JETPACK_TENSORRT.get(jp.split(".")[0])
        if ships and not any(trt == v or trt.startswith(v + ".") for v in ships):
            out.append(f"TensorRT {trt} is not the one JetPack {jp} ships ({'/'.join(ships)}): uninstall pip's "
                       "tensorrt from this venv (pip uninstall tensorrt tensorrt-cu12 tensorrt-cu13) and use JetPack's "
                       "through a venv made with --system-site-packages")
    numpy = facts.get("numpy")
    if numpy and int(numpy.split(".")[0]) >= 2 and facts.get("torch_numpy_ok") is False:
        out.append(f"numpy {numpy} with a torch built for NumPy 1.x (torch {facts.get('torch')}): "
                   "pip install 'numpy<2' (constraints/jetpack6.txt pins it)")
    dists = {d.lower() for d in facts.get("dists", ())}
    if "onnxruntime" in dists and any(d.startswith(("onnxruntime-gpu", "onnxruntime_gpu")) for d in dists):
        out.append("both onnxruntime and onnxruntime-gpu are installed and share one module, so which one imports is "
                   "arbitrary: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    if facts.get("gpu_present") and facts.get("torch") and not facts.get("torch_cuda"):
        out.append(f"this machine has an NVIDIA GPU but torch {facts['torch']} is a CPU-only build: install a CUDA "
                   "torch (NVIDIA's wheel on Jetson, the CUDA index on desktops) before cfnsr")
    return out


def target_facts(root: str = "/") -> dict:
    """The facts ``diagnose`` judges, gathered from this machine."""
    import importlib.metadata as md
    import os
    import shutil

    facts: dict = {"dists": [d.metadata["Name"] for d in md.distributions() if d.metadata["Name"]]}
    j = jetson_record(root, run=lambda cmd: None)
    if j:
        facts["jetpack"] = j.get("jetpack")
    try:
        import tensorrt

        facts["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    try:
        import numpy

        facts["numpy"] = numpy.__version__
    except ImportError:
        pass
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda is not None
        try:
            import numpy

            torch.from_numpy(numpy.zeros(2)).numpy()
            facts["torch_numpy_ok"] = True
        except Exception:  # "Numpy is not available" / compiled against NumPy 1.x
            facts["torch_numpy_ok"] = False
    except ImportError:
        pass
    facts["gpu_present"] = bool(j) or os.path.exists(os.path.join(root, "dev/nvidia0")) or bool(
        shutil.which("nvidia-smi"))
    return facts


def as_dicts(backends: list[Backend]) -> list[dict]:
    return [asdict(b) for b in backends]
