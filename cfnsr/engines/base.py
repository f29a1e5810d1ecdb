"""One small Runner per backend, each with the same surface.

``Runner(path)`` -> ``input_spec`` -> ``runner(video=..., audio=...) -> logits`` on numpy arrays, the inputs named
as the artifact names them (``frames=``, ``pcm=`` for a media artifact; positional arguments are taken in
``input_spec`` order); a context manager frees what it holds. Subclasses fill in ``_activate``, ``_infer`` (which
gets the checked inputs as a dict by name) and ``_deactivate``; the base class checks the inputs (names, shapes,
dtypes) with a message that names the tensor, what it got and what it expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import input_kind, input_names
from ..data.spec import PreprocessSpec
from ..errors import ArtifactError, CfnsrError


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
        self.spec: PreprocessSpec | None = None  # the artifact's cfnsr.preprocess, parsed once active
        self.input_spec: tuple[TensorSpec, ...] | None = None
        self.last_device_ms: float | None = None  # GPU time of the last call, where the backend measures it
        self.device = "cpu"  # where the model runs once active: "cpu" or "cuda"

    # -- lifecycle ------------------------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.active:
            self._activate()
            try:  # a malformed cfnsr.preprocess fails here, naming the file, not later in whoever reads it
                self.spec = preprocess_spec(self.metadata.get("preprocess"), self.path)
            except Exception:
                self._deactivate()
                raise
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
    def __call__(self, *arrays, **named) -> np.ndarray:
        if not self.active:  # as Polygraphy's runners: activation is explicit, so freeing is too
            raise CfnsrError(f"the {self.backend} runner of {self.path.name} is not active: use `with load(path) as "
                             "runner:` (or runner.activate() and runner.deactivate())")
        return self._infer(self.check_inputs(self.bind(arrays, named)))

    def bind(self, arrays: tuple, named: dict) -> dict:
        """The inputs by name: positional ones in ``input_spec`` order, then the named ones; every input once."""
        names = [s.name for s in self.input_spec]
        if len(arrays) > len(names):
            raise InputError(f"{len(arrays)} inputs given; the {self.backend} artifact {self.path.name} takes "
                             f"{len(names)}: {', '.join(names)}")
        given = dict(zip(names, arrays))
        twice = sorted(set(given) & set(named))
        if twice:
            raise InputError(f"input {twice[0]!r} given twice (by position and by name)")
        given.update(named)
        unknown, missing = sorted(set(given) - set(names)), [n for n in names if n not in given]
        if unknown or missing:
            raise InputError(f"the {self.backend} artifact {self.path.name} takes inputs {', '.join(names)}"
                             + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                             + (f"; missing: {', '.join(missing)}" if missing else ""))
        return {n: given[n] for n in names}

    def check_inputs(self, inputs: dict) -> dict:
        """Ranks, fixed dimensions, batch agreement and dtype of the inputs by name, checked once per call."""
        arrays = {}
        for spec in self.input_spec:
            value = inputs[spec.name]
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
            arrays[spec.name] = arr
        batches = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(batches.values())) > 1:
            (a, na), (b, nb) = list(batches.items())[:2]
            raise InputError(f"inputs {a!r} and {b!r} have batch sizes {na} and {nb}; they must match")
        return arrays

    # -- hooks ------------------------------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, inputs: dict) -> np.ndarray:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass

    @property
    def kind(self) -> str:
        """"features" or "media", as ``cfnsr.artifact`` reads the artifact's metadata."""
        return input_kind(self.metadata, str(self.path))

    @property
    def preprocess(self) -> dict | None:
        return self.metadata.get("preprocess")

    @property
    def labels(self) -> list[str]:
        from ..artifact import EMOTIONS

        return list(self.metadata.get("labels") or EMOTIONS)


def spec_from_metadata(metadata: dict, source: str = "the artifact") -> tuple[TensorSpec, ...]:
    """The input TensorSpecs from the ``cfnsr.inputs`` metadata entry, for the artifact's input kind: (video, audio)
    features, or (frames, pcm) for a media artifact, whose graph holds its own front end."""
    by_name = {i["name"]: i for i in metadata.get("inputs", []) if i.get("kind", "input") == "input"}
    out = []
    for name in input_names(input_kind(metadata, source)):
        if name not in by_name:
            raise ArtifactError(f"{source}: its cfnsr.inputs metadata lists no input {name!r}")
        i = by_name[name]
        out.append(TensorSpec(name, tuple(d if isinstance(d, int) and d > 0 else None for d in i["shape"]),
                              i.get("dtype", "float32")))
    return tuple(out)


def preprocess_spec(entry: dict | None, source) -> PreprocessSpec | None:
    """The PreprocessSpec of an artifact's ``cfnsr.preprocess`` entry (None when it records none)."""
    if not entry:
        return None
    try:
        return PreprocessSpec.from_dict(entry)
    except (TypeError, ValueError, AttributeError, CfnsrError) as e:
        raise ArtifactError(f"{source}: its cfnsr.preprocess entry is not a valid preprocessing spec ({e})") from e
