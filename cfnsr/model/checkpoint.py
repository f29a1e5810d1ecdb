"""cfnsr checkpoints: the state dict plus everything needed to rebuild and feed the network.

A checkpoint is a dict of plain Python values and tensors, so it loads with ``torch.load(weights_only=True)``::

    {"format": "cfnsr-checkpoint", "format_version": 1, "cfnsr_version": ...,
     "model_config": {...}, "state_dict": {...}, "preprocess": {...} | None, ...extra}

``Checkpoint.load(path)`` reads it once and checks it where it is opened: its ``ModelConfig``, ``PreprocessSpec``
and ``Split`` are typed objects from then on (export, validate, evaluate and the torch runner take them), and a
malformed entry fails there, naming the file.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.spec import PreprocessSpec
from ..data.splits import Split
from ..errors import CfnsrError, CheckpointError
from ..fileio import atomic_path, sha256_file
from .config import ModelConfig
from .network import CFNSR

FORMAT = "cfnsr-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    model: CFNSR,
    *,
    preprocess: dict | None = None,
    force: bool = True,
    **extra: Any,
) -> Path:
    """Write ``model`` (and ``extra`` entries: metrics, split, optimizer state, ...) atomically to ``path``."""
    from .. import __version__

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cfnsr_version": __version__,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocess": preprocess,
        **extra,
    }
    with atomic_path(path, force) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full disk as "enforce fail ... unexpected pos"
            import shutil

            free = shutil.disk_usage(Path(tmp).parent).free
            raise CheckpointError(f"cannot write checkpoint {path}: the write failed ({str(e).splitlines()[0][:120]}); "
                                  f"{free / 1e6:.0f} MB free there. Is the disk full?") from e
    return Path(path)


def _torch_load(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or holding objects weights_only refuses
        first = str(e).splitlines()[0] if str(e) else ""
        if "weights_only" in first or "Weights only" in first:
            # Never pass on PyTorch's advice to retry with weights_only=False: that would run code from the file.
            first = "it holds Python objects beyond tensors and plain values, which cfnsr never unpickles"
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:1] == b"\x08":  # a protobuf ModelProto begins with its ir_version field
            first = "it is an ONNX model, not a PyTorch checkpoint (pass the .pt checkpoint here)"
        raise CheckpointError(
            f"cannot read checkpoint {path}: {first} (expected a file written by torch.save holding tensors and plain "
            "values)"
        ) from e


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a cfnsr checkpoint (never executes code from the file)."""
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and any(k.startswith(("msaf.", "module.msaf.", "video_model_blocks")) for k in ckpt):
            hint = "; it looks like a published CFN-SR/MSAF state dict: convert it with `cfnsr import-original --fused`"
        raise CheckpointError(f"{path} is not a cfnsr checkpoint (no 'format': '{FORMAT}' entry){hint}")
    return validate_checkpoint(ckpt, str(path))


def validate_checkpoint(ckpt: dict, source: str) -> dict:
    """The one check of a cfnsr checkpoint's entries, run where it is loaded (every command, every runner; the
    weights against the network in ``load_state_dict_checked``): ``format_version`` an integer this cfnsr reads,
    ``model_config`` a valid configuration, ``state_dict`` a dict of named tensors, ``split`` (when present)
    complete and consistent, ``preprocess`` (when present) a valid spec. Raises CheckpointError naming the entry."""
    version = ckpt.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{source}: format_version is {version!r}, not an integer: the file was not written by "
                              "cfnsr (or was edited)")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{source} has checkpoint format version {version}; this cfnsr reads up to "
                              f"{FORMAT_VERSION}")
    try:
        ModelConfig.from_dict(ckpt["model_config"])
    except KeyError:
        raise CheckpointError(f"{source} has no model_config entry: it cannot be rebuilt") from None
    except (TypeError, ValueError, AttributeError, CfnsrError) as e:
        raise CheckpointError(f"{source}: invalid model_config: {e}") from e
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{source} has no state_dict (the weights): "
                              + ("the entry is missing" if sd is None else f"it is a {type(sd).__name__}"))
    bad = next(((k, v) for k, v in sd.items() if not isinstance(k, str) or not torch.is_tensor(v)), None)
    if bad is not None:
        raise CheckpointError(f"{source}: state_dict entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor")
    if ckpt.get("split"):
        try:
            split = Split.from_dict(ckpt["split"])
            actors = [*split.train, *split.val, *split.test]
            if not (split.train and split.test and all(isinstance(a, int) for a in actors)):
                raise ValueError("its train and test actors must be non-empty lists of actor numbers")
            if set(split.train) & (set(split.val) | set(split.test)):
                raise ValueError("training actors are also validation or test actors")
        except (TypeError, ValueError, KeyError, AttributeError, CfnsrError) as e:
            raise CheckpointError(f"{source}: invalid split: the entry is incomplete or inconsistent ({e}); re-train, "
                                  "or remove the entry to use the checkpoint without a split") from e
    if ckpt.get("preprocess"):
        try:
            PreprocessSpec.from_dict(ckpt["preprocess"])
        except (TypeError, ValueError, AttributeError, CfnsrError) as e:
            raise CheckpointError(f"{source}: invalid preprocess: {e}") from e
    return ckpt


def _entry(ckpt: dict, key: str, parse, source: str):
    """``parse(ckpt[key])``, None when the entry is absent or empty; a malformed one names the file and the entry."""
    value = ckpt.get(key)
    if not value:
        return None
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError, CfnsrError) as e:
        raise CheckpointError(f"{source}: invalid {key}: {e}") from e


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A cfnsr checkpoint, read once (``Checkpoint.load``) and checked there."""

    path: Path
    config: ModelConfig
    state_dict: dict
    preprocess: PreprocessSpec | None  # how its training clips became inputs (None: imported without one)
    split: Split | None  # the actors it was trained, selected and tested on (None: not from `cfnsr train`)
    metrics: dict | None = None  # {"val": ..., "test": ...} of its epoch
    epoch: int | None = None
    cache_hash: str | None = None  # the feature cache it was trained on
    git_commit: str | None = None
    raw: dict = field(default_factory=dict, repr=False)  # everything the file holds (a last.pt's training state)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Checkpoint":
        path = Path(path)
        ckpt = load_checkpoint(path)
        config = _entry(ckpt, "model_config", ModelConfig.from_dict, str(path))
        if config is None:
            raise CheckpointError(f"{path}: invalid model_config: the entry is missing")
        if not isinstance(ckpt.get("state_dict"), dict):
            raise CheckpointError(f"{path} holds no state_dict")
        return cls(path, config, ckpt["state_dict"], _entry(ckpt, "preprocess", PreprocessSpec.from_dict, str(path)),
                   _entry(ckpt, "split", Split.from_dict, str(path)), ckpt.get("metrics"), ckpt.get("epoch"),
                   ckpt.get("cache_hash"), ckpt.get("git_commit"), ckpt)

    @functools.cached_property
    def sha256(self) -> str:
        """The file's sha256: what exported artifacts record as ``cfnsr.source_sha256``."""
        return sha256_file(self.path)

    def model(self) -> CFNSR:
        """The eval-mode network with these weights (on the CPU), its keys and shapes checked."""
        model = CFNSR(self.config)
        load_state_dict_checked(model, self.state_dict, str(self.path))
        return model.eval()


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> CFNSR:
    """Return the eval-mode CFN-SR network stored in a cfnsr checkpoint (contract)."""
    return Checkpoint.load(path).model().to(map_location)


def describe_mismatch(expected: dict[str, torch.Size], got: dict[str, torch.Tensor], limit: int = 20) -> str:
    """Missing, unexpected and wrongly shaped keys, one block each (empty string when they match)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [
        f"{k}: file {tuple(got[k].shape)}, model {tuple(expected[k])}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k])
    ]
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{title} ({len(items)}): " + ", ".join(items[:limit]) + more)
    return "; ".join(parts)


def load_state_dict_checked(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problem = describe_mismatch(expected, state_dict)
    if problem:
        cfg = getattr(model, "config", None)
        name = f" configuration {cfg.name!r}" if cfg is not None else ""
        raise CheckpointError(f"{source} does not match the model{name}: {problem}")
    own = model.state_dict()
    kind = next((k for k, v in state_dict.items()
                 if not torch.is_tensor(v) or v.is_floating_point() != own[k].is_floating_point()), None)
    if kind is not None:
        v = state_dict[kind]
        raise CheckpointError(f"{source}: {kind} is {getattr(v, 'dtype', type(v).__name__)}, the model's is "
                              f"{own[kind].dtype} (weights must be floating-point tensors): the file was not written "
                              "by training")
    bad = [k for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source} holds non-finite weights (NaN/Inf) in {len(bad)} tensors, e.g. {bad[0]}: "
                              "it came from a diverged training run; use an earlier checkpoint")
    model.load_state_dict(state_dict)
