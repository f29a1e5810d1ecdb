"""The CPU-capable runners: PyTorch checkpoint (the reference), ONNX Runtime, OpenVINO, AOTInductor packages."""

from __future__ import annotations

import numpy as np

from ..errors import ArtifactError, CfnsrError
from ..lazy import cuda_available, require
from .base import InputError, Runner, TensorSpec, spec_from_metadata


class TorchRunner(Runner):
    """A cfnsr checkpoint in PyTorch: the reference every other backend is compared with."""

    backend = "torch"

    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        """``path``: a checkpoint file, or a ``Checkpoint`` already loaded (validate's reference)."""
        from ..model.checkpoint import Checkpoint

        checkpoint = path if isinstance(path, Checkpoint) else None
        super().__init__(checkpoint.path if checkpoint is not None else path)
        self.checkpoint, self.device, self.threads = checkpoint, device, threads

    def _activate(self) -> None:
        import torch

        from ..artifact import EMOTIONS
        from ..model.checkpoint import Checkpoint

        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device.startswith("cuda") and not cuda_available():
            raise CfnsrError(f"--device {self.device}: torch {torch.__version__} sees no CUDA GPU "
                             f"({'a CPU-only build' if torch.version.cuda is None else 'no device visible'})")
        ckpt = self.checkpoint or Checkpoint.load(self.path)
        self.model = ckpt.model().to(self.device)
        cfg = self.model.config
        self.metadata = {"precision": "fp32", "labels": list(EMOTIONS),
                         "preprocess": ckpt.preprocess.to_dict() if ckpt.preprocess else None,
                         "model_config": cfg.to_dict()}
        self.input_spec = (TensorSpec("video", (None, 3, cfg.frames, cfg.image_size, cfg.image_size)),
                           TensorSpec("audio", (None, cfg.mfcc_bins, cfg.mfcc_frames)))

    def _infer(self, inputs: dict) -> np.ndarray:
        import torch

        with torch.no_grad():
            if self.device == "cpu":
                return self.model(**{k: torch.as_tensor(v) for k, v in inputs.items()}).float().numpy()
            # Pinned host buffers, asynchronous copies, and the GPU time of the forward pass from CUDA events.
            on_gpu = {k: torch.as_tensor(v).pin_memory().to(self.device, non_blocking=True) for k, v in inputs.items()}
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            logits = self.model(**on_gpu)
            end.record()
            end.synchronize()
            self.last_device_ms = float(start.elapsed_time(end))
            return logits.float().cpu().numpy()

    def _deactivate(self) -> None:
        del self.model


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime: CPU, plus the CUDA and TensorRT execution providers when onnxruntime-gpu has them."""

    backend = "onnxruntime"

    def __init__(self, path, providers: list[str] | None = None, threads: int | None = None):
        super().__init__(path)
        self.providers, self.threads = providers, threads

    def _activate(self) -> None:
        ort = require("onnxruntime")
        from ..artifact import read_metadata

        self.metadata = read_metadata(self.path, validate=True)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        available = ort.get_available_providers()
        providers = self.providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        missing = [p for p in providers if p not in available]
        if missing:
            raise ArtifactError(f"ONNX Runtime here has no {', '.join(missing)} (available: {', '.join(available)}); "
                                "install onnxruntime-gpu for the CUDA and TensorRT providers")
        # ONNX Runtime's CPU transformer WeightBiasQuantization turns a float bias into an int32 one with scale
        # input_scale * weight_scale; with fp16 Q/DQ scales (int8 + --high-precision fp16) that product underflows
        # fp16 and the logits go wrong (measured: agreement 46% -> 96% with it off). TensorRT has no such pass.
        fp16_qdq = (self.metadata.get("calibration") or {}).get("high_precision") == "fp16"
        disabled = ["WeightBiasQuantization"] if fp16_qdq else None
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers, disabled_optimizers=disabled)
        except Exception as e:
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {str(e).splitlines()[0]}") from e
        self.device = "cuda" if self.session.get_providers()[0] in ("CUDAExecutionProvider",
                                                                     "TensorrtExecutionProvider") else "cpu"
        self.input_spec = spec_from_metadata(self.metadata, str(self.path))

    def _infer(self, inputs: dict) -> np.ndarray:
        return self.session.run(["logits"], {k: np.asarray(v) for k, v in inputs.items()})[0]

    def _deactivate(self) -> None:
        del self.session


class OpenVinoRunner(Runner):
    """OpenVINO on CPU: reads the same ONNX file (Q/DQ included) and compiles it for this processor."""

    backend = "openvino"

    def __init__(self, path, ov_device: str = "CPU", threads: int | None = None, precision_hint: str = "f32"):
        """``precision_hint``: OpenVINO's INFERENCE_PRECISION_HINT for what is not int8. "f32" by default, because
        the precision is decided in the graph (an fp32 file means fp32, fp16 and Q/DQ nodes say the rest);
        "default" leaves OpenVINO's own choice, which is bf16 on CPUs with AVX512_BF16 or AMX."""
        super().__init__(path)
        self.ov_device, self.threads, self.precision_hint = ov_device, threads, precision_hint
        self.device = "cpu" if ov_device.upper() == "CPU" else ov_device.lower()  # OpenVINO's name, e.g. "GPU"

    def _activate(self) -> None:
        ov = require("openvino")
        from ..artifact import read_metadata

        self.metadata = read_metadata(self.path, validate=True)
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.precision_hint and self.precision_hint != "default":
            config["INFERENCE_PRECISION_HINT"] = self.precision_hint
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, self.ov_device, config)
        except Exception as e:
            raise ArtifactError(f"OpenVINO cannot load {self.path}: {str(e).splitlines()[0]}") from e
        self.request = self.compiled.create_infer_request()
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.input_spec = spec_from_metadata(self.metadata, str(self.path))

    def _infer(self, inputs: dict) -> np.ndarray:
        result = self.request.infer({k: np.asarray(v) for k, v in inputs.items()})
        return np.asarray(result[self.compiled.output("logits")])

    def _deactivate(self) -> None:
        del self.request, self.compiled


class AotiRunner(Runner):
    """An AOTInductor package (``.pt2``, from ``cfnsr export --format pt2``): the same file the C++ runtime's
    libtorch backend runs, loaded here through ``torch._inductor.aoti_load_package``."""

    backend = "aoti"

    def __init__(self, path, threads: int | None = None):
        super().__init__(path)
        self.threads = threads

    def _activate(self) -> None:
        import contextlib
        import os

        import torch

        from ..artifact import package_metadata, read_metadata, validate_metadata
        from ..fileio import temp_dir

        read_metadata(self.path, validate=True)  # the archive whole and its metadata valid, before torch unpacks it
        if self.threads:
            torch.set_num_threads(self.threads)
        # libtorch unpacks the package under TMPDIR: point it at a folder of ours, removed on every exit path
        self._tmp = contextlib.ExitStack()
        tmp = self._tmp.enter_context(temp_dir("aoti"))
        old = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(tmp)
        try:
            self.package = torch._inductor.aoti_load_package(str(self.path))
        except Exception as e:
            self._tmp.close()
            raise ArtifactError(f"libtorch cannot load the AOTInductor package {self.path}: "
                                f"{str(e).strip().splitlines()[0]}") from e
        finally:
            if old is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old
        self.metadata = validate_metadata(package_metadata(self.package.get_metadata()), self.path)
        self.device = self.metadata.get("device", "cpu")
        self.max_batch = int(self.metadata.get("max_batch", 1))
        self.input_spec = spec_from_metadata(self.metadata, str(self.path))

    def _infer(self, inputs: dict) -> np.ndarray:
        import torch

        n = next(iter(inputs.values())).shape[0]
        if n > self.max_batch:
            raise InputError(f"batch {n} exceeds the package's maximum batch {self.max_batch} "
                             f"(re-export with a larger --max-batch)")
        with torch.no_grad():  # the package takes its inputs in the order of its graph: input_spec's
            args = [torch.as_tensor(inputs[s.name]).to(self.device) for s in self.input_spec]
            return self.package(*args).float().cpu().numpy()

    def _deactivate(self) -> None:
        del self.package
        self._tmp.close()
