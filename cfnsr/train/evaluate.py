"""``cfnsr evaluate``: a checkpoint (or every fold of a run) on the actors its split held out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.cache import FeatureCache
from ..data.dataset import CacheDataset
from ..errors import CfnsrError
from ..metrics import classification_metrics
from ..model.checkpoint import Checkpoint
from ..reports import write_metrics_report
from .scoring import predict

MSAF_NOTE = ("MSAF protocol: the epoch was chosen on these same held-out actors, as the published 74.86% / 75.76% "
             "were; comparable to the papers, but optimistic.")
HONEST_NOTE = "Honest protocol: the epoch was chosen on separate validation actors; these test actors were not seen."


def evaluate_checkpoint(path: str | Path, cache: FeatureCache, actors=None, zero: str | None = None) -> dict:
    """Metrics of one checkpoint on ``actors`` (default: its split's test actors).

    ``zero`` ("video" or "audio") replaces that modality's input with zeros: an ablation that shows the model uses
    both.
    """
    ckpt = Checkpoint.load(path)
    model = ckpt.model()
    cache.check_model(model.config)
    split = ckpt.split
    if actors is None:
        if split is None:
            raise CfnsrError(f"{path} records no split; name the actors to evaluate on")
        actors = split.test
    ds = CacheDataset(cache, actors)
    if not len(ds):
        raise CfnsrError(f"the cache {cache.root} has no clips of actors {list(actors)}")
    if zero is not None:
        ds = _Zeroed(ds, zero)
    logits, labels = predict(model, ds)
    m = classification_metrics(logits, labels)
    m.update(checkpoint=str(path), actors=list(actors), protocol=split.protocol if split else None,
             fold=split.fold if split else None, epoch=ckpt.epoch, zeroed=zero)
    return m


class _Zeroed:
    def __init__(self, ds, which: str):
        if which not in ("video", "audio"):
            raise CfnsrError(f"can zero 'video' or 'audio', not {which!r}")
        self.ds, self.which = ds, which

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        video, audio, label = self.ds[i]
        return (video * 0, audio, label) if self.which == "video" else (video, audio * 0, label)


def evaluate(target: str | Path, cache: FeatureCache, out_dir: str | Path | None = None) -> dict:
    """A checkpoint, or a run folder (every ``fold*/best.pt``, then the average)."""
    target = Path(target)
    if target.is_dir():
        ckpts = sorted(target.glob("fold*/best.pt"), key=lambda p: int(p.parent.name[4:]))
        if not ckpts:
            raise CfnsrError(f"{target} has no fold*/best.pt: is it a `cfnsr train` run folder?")
    elif target.is_file():
        ckpts = [target]
    else:
        raise CfnsrError(f"{target} does not exist")
    folds = [evaluate_checkpoint(p, cache) for p in ckpts]
    protocol = folds[0]["protocol"]
    note = MSAF_NOTE if protocol == "msaf" else HONEST_NOTE
    result = {"protocol": protocol, "note": note, "folds": folds,
              "mean_top1": float(np.mean([f["top1"] for f in folds])),
              "std_top1": float(np.std([f["top1"] for f in folds]))}
    if out_dir is not None:
        out_dir = Path(out_dir)
        for f in folds:
            label = f"fold{f['fold']}" if f["fold"] else Path(f["checkpoint"]).stem
            f["report"] = write_metrics_report(out_dir, f"eval_{label}", f"CFN-SR {label} (actors {f['actors']})", f,
                                               note)
        total = np.sum([np.asarray(f["confusion"]) for f in folds], axis=0)
        labels = folds[0]["labels"]
        from ..fileio import write_json
        from ..reports import plot_confusion

        write_json(out_dir / "eval_summary.json", {k: v for k, v in result.items()})
        plot_confusion(total, labels, out_dir / "eval_summary_confusion.png",
                       f"all folds: mean top-1 {100 * result['mean_top1']:.2f}%")
    return result


def format_result(result: dict) -> str:
    lines = [result["note"]]
    for f in result["folds"]:
        lines.append(f"  fold {f['fold']}: top-1 {100 * f['top1']:.2f}%  top-2 {100 * f['top2']:.2f}%  "
                     f"top-4 {100 * f['top4']:.2f}%  ({f['clips']} clips of actors {f['actors']})")
    lines.append(f"mean top-1 over {len(result['folds'])} fold(s): {100 * result['mean_top1']:.2f}% "
                 f"(std {100 * result['std_top1']:.2f})")
    return "\n".join(lines)
