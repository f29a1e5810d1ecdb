"""AOTInductor packages (``.pt2``): the model compiled ahead of time to a shared library plus its weights.

This is the artifact of the C++ runtime's CPU backend (``cpp/``): libtorch's ``AOTIModelPackageLoader`` opens it
without Python, and ``torch._inductor.aoti_load_package`` opens it from Python (the ``aoti`` runner). The package is
compiled for one device type (``cpu``, or ``cuda`` on a GPU machine); on CPU the generated code targets the
instruction set of the machine that compiled it (recorded by torch as ``AOTI_CPU_ISA``).

The cfnsr metadata travels inside the package (``aot_inductor.metadata``) under the same ``cfnsr.*`` keys as ONNX
``metadata_props``, JSON-encoded, so every runtime reads one contract.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from ..artifact import OUTPUT_NAME, encode_metadata, tensor_entry
from ..errors import ArtifactError, CfnsrError
from ..fileio import atomic_path, temp_dir
from ..lazy import cuda_available

DEVICES = ("cpu", "cuda")
DEFAULT_MAX_BATCH = 64


def input_spec(example: dict[str, torch.Tensor], num_classes: int) -> list[dict]:
    """The ``inputs`` metadata entry ONNX files carry (``onnx_graph.input_spec``) for a package traced on the named
    ``example`` inputs, with ``batch`` as the dynamic axis."""
    return [*(tensor_entry(name, "input", ["batch", *t.shape[1:]], str(t.dtype).replace("torch.", ""))
              for name, t in example.items()),
            tensor_entry(OUTPUT_NAME, "output", ["batch", num_classes])]


def export_pt2(model: torch.nn.Module, path: str | os.PathLike, metadata: dict, example: dict[str, torch.Tensor],
               device: str = "cpu", max_batch: int = DEFAULT_MAX_BATCH, force: bool = False) -> Path:
    """Compile ``model`` (fp32, batch 1..max_batch), traced on the named ``example`` inputs (a batch of 2 or more,
    named as ``model.forward`` names them), into an AOTInductor package at ``path``, atomically."""
    if device not in DEVICES:
        raise CfnsrError(f"--device must be one of {DEVICES} for a pt2 package, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise CfnsrError("a cuda pt2 package is compiled on the GPU it targets, and no CUDA GPU is visible here")
    if max_batch < 2:
        raise CfnsrError(f"max_batch must be at least 2 (got {max_batch}); the batch axis is dynamic")
    path = Path(path)
    if path.suffix != ".pt2":
        raise CfnsrError(f"output {path} must end in .pt2")
    model = model.eval().to(device)
    names = list(inspect.signature(model.forward).parameters)
    if list(example) != names:
        raise CfnsrError(f"example inputs {list(example)} are not the model's inputs {names}")
    args = tuple(t.to(device) for t in example.values())
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    meta = encode_metadata({**metadata, "device": device, "max_batch": max_batch, "torch_version": torch.__version__})
    for name in ("torch._inductor", "torch.utils.cpp_extension"):  # the latter warns "No CUDA runtime" on CPUs
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), temp_dir("pt2") as tmp:
        warnings.simplefilter("ignore")
        with torch.no_grad():
            program = torch.export.export(model, args, dynamic_shapes={n: {0: batch} for n in names})
            built = torch._inductor.aoti_compile_and_package(
                program, package_path=str(Path(tmp) / "model.pt2"),
                inductor_configs={"aot_inductor.metadata": meta})
        with atomic_path(path, force) as dst:
            shutil.copyfile(built, dst)
    return path


def run_isolated(package: str | os.PathLike, inputs: dict, batch: int = 8, timeout: float = 1800):
    """Logits of ``package`` on numpy ``inputs`` (by name, dtypes kept), computed in a fresh Python process.

    A crash of torch's Python loader (seen with torch 2.11 on CUDA packages: SIGSEGV in ``aoti_load_package``)
    then becomes an error message instead of killing the export. Arrays travel as one .npz file.
    """
    import subprocess
    import sys

    import numpy as np

    with temp_dir("aoti") as tmp:
        given, logits = Path(tmp) / "inputs.npz", Path(tmp) / "logits.npy"
        np.savez(given, **{k: np.ascontiguousarray(v) for k, v in inputs.items()})
        code = ("import sys, numpy as np; from cfnsr.engines.runners import AotiRunner; "
                "from cfnsr.engines.accuracy import batched; inputs = dict(np.load(sys.argv[2])); "
                "r = AotiRunner(sys.argv[1]).activate(); "
                "np.save(sys.argv[3], batched(r, batch=int(sys.argv[4]), **inputs))")
        done = subprocess.run([sys.executable, "-c", code, str(package), str(given), str(logits), str(batch)],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode < 0:
            raise ArtifactError(
                f"loading {package} in a fresh process failed: Python's AOTInductor loader crashed (signal "
                f"{-done.returncode}). torch 2.11's loader was seen crashing on CUDA packages on an H100 whose C++ "
                "loader ran them; check the package with the C++ runtime (cfnsr_infer), or export --device cpu")
        if done.returncode != 0:
            raise ArtifactError(f"loading {package} in a fresh process failed (exit {done.returncode}): "
                                f"{done.stderr.strip()[-2000:]}")
        return np.load(logits)
