"""One small Runner per backend, each with the same surface.

``Runner(path)`` -> ``input_spec`` -> ``runner(video, audio) -> logits`` on numpy arrays; a context manager frees
what it holds. Subclasses fill in ``_activate``, ``_infer`` and ``_deactivate``; the base class checks the inputs
(names, shapes, dtypes) with a message that names the tensor, what it got and what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CfnsrError


class InputError(CfnsrError):
    """An input does not match what the artifact takes."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints, or None for a dynamic axis
    dtype: str = "float32"

    def describe(self) -> str:
        return f"{self.dtype}[{', '.join('N' if d is None else str(d) for d in self.shape)}]"


class Runner:
    backend = "base"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.active = False
        self.metadata: dict = {}
        self.input_spec: tuple[TensorSpec, TensorSpec] | None = None
        self.last_device_ms: float | None = None  # GPU time of the last call, where the backend measures it
        self.device = "cpu"  # where the model runs once active: "cpu" or "cuda"

    # -- lifecycle ------------------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- inference --------------------------------------------------------------------------------------------
    def __call__(self, video, audio) -> np.ndarray:
        if not self.active:  # as Polygraphy's runners: activation is explicit, so freeing is too
            raise CfnsrError(f"the {self.backend} runner of {self.path.name} is not active: use `with load(path) as "
                             "runner:` (or runner.activate() and runner.deactivate())")
        video, audio = self.check_inputs(video, audio)
        return self._infer(video, audio)

    def check_inputs(self, video, audio):
        """Names, ranks, fixed dimensions, batch agreement and dtype, checked once per call."""
        arrays = []
        for spec, value in zip(self.input_spec, (video, audio)):
            arr = value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)
            shape = tuple(arr.shape)
            ok = len(shape) == len(spec.shape) and all(e is None or e == g for e, g in zip(spec.shape, shape))
            if not ok:
                raise InputError(f"input {spec.name!r}: got shape {shape}, expected {spec.describe()} "
                                 f"({self.backend} artifact {self.path.name})")
            dtype = str(arr.dtype).replace("torch.", "")
            if dtype != spec.dtype:
                raise InputError(f"input {spec.name!r}: got dtype {dtype}, expected {spec.dtype}")
            if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = ~np.isfinite(arr)
                rows = np.nonzero(bad.reshape(len(arr), -1).any(1))[0] if arr.ndim else []
                raise InputError(f"input {spec.name!r} holds {int(bad.sum())} non-finite values (NaN/Inf) in batch "
                                 f"item(s) {[int(r) for r in rows[:5]]}: a model cannot be trusted on them")
            arrays.append(arr)
        if arrays[0].shape[0] != arrays[1].shape[0]:
            a, b = (s.name for s in self.input_spec)
            raise InputError(f"inputs {a!r} and {b!r} have batch sizes {arrays[0].shape[0]} and "
                             f"{arrays[1].shape[0]}; they must match")
        return arrays

    # -- hooks ------------------------------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, video, audio) -> np.ndarray:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass

    @property
    def preprocess(self) -> dict | None:
        return self.metadata.get("preprocess")

    @property
    def labels(self) -> list[str]:
        from ..artifact import EMOTIONS

        return list(self.metadata.get("labels") or EMOTIONS)


def spec_from_metadata(inputs: list[dict]) -> tuple[TensorSpec, TensorSpec]:
    """The two input TensorSpecs from the ``cfnsr.inputs`` metadata entry: (video, audio) features, or (frames,
    pcm) for a media artifact, whose graph holds its own front end."""
    ins = [i for i in inputs if i.get("kind", "input") == "input"]
    by_name = {i["name"]: i for i in ins}
    names = ("frames", "pcm") if "frames" in by_name else ("video", "audio")
    out = []
    for name in names:
        i = by_name[name]
        out.append(TensorSpec(name, tuple(d if isinstance(d, int) and d > 0 else None for d in i["shape"]),
                              i.get("dtype", "float32")))
    return tuple(out)


def input_kind(metadata: dict) -> str:
    """"media" (uint8 crops + PCM in, the front end in the graph) or "features" (normalised video + MFCC)."""
    names = {i["name"] for i in metadata.get("inputs", []) if i.get("kind", "input") == "input"}
    return "media" if "frames" in names else "features"
