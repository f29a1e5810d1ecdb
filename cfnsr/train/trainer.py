"""The CFN-SR training recipe (MSAF/CFN-SR ``main_msaf.py``): per fold, optional unimodal pre-training of the
video ResNeXt and the audio MFCCNet, then the fused network initialised from them; Adam, lr 1e-3, batch 16,
70 epochs, cross-entropy.

Run folder::

    RUN/run.json                    the training configuration and the data cache's hash
    RUN/fold1/pretrain_video/       the unimodal stages (when --unimodal-epochs > 0), same layout as below
    RUN/fold1/last.pt               written atomically every epoch: model, optimizer, scheduler, RNG, history
    RUN/fold1/best.pt               the epoch with the best validation top-1 (a cfnsr checkpoint)
    RUN/fold1/metrics.csv           one row per epoch; rewritten from the checkpoint's history, so it survives resume

All randomness comes from torch's generator (saved in last.pt) or is derived from (seed, epoch, index) — the
shuffling order and the augmentation draws — so ``--resume`` continues a killed run to the same weights.
"""

from __future__ import annotations

import csv
import io
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.cache import FeatureCache
from ..data.dataset import CacheDataset, make_loader
from ..data.splits import Split, make_split
from ..errors import CfnsrError
from ..fileio import write_json, write_text
from ..lazy import bf16_supported
from ..metrics import classification_metrics
from ..model.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint
from ..model.config import ModelConfig
from ..model.network import CFNSR
from .distributed import Dist, distribute, init_distributed, pick_device
from .scoring import predict
from .unimodal import AudioOnly, VideoOnly


@dataclass
class TrainConfig:
    epochs: int = 70
    unimodal_epochs: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "none"  # none (the published recipe) | cosine
    protocol: str = "honest"
    folds: int = 6
    seed: int = 1234
    workers: int = 0
    amp: str = "auto"  # auto | bf16 | fp16 | off
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.scheduler not in ("none", "cosine"):
            raise CfnsrError(f"--scheduler must be none or cosine, got {self.scheduler!r}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise CfnsrError(f"--amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise CfnsrError("--epochs and --batch-size must be at least 1")


def amp_dtype(setting: str, device: torch.device):
    """bf16 where the GPU supports it, else fp16 (with a grad scaler); no autocast on CPU unless asked."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "bf16" or (setting == "auto" and bf16_supported()):
        return torch.bfloat16
    return torch.float16


# ------------------------------------------------------------------------------------------- one stage
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


HISTORY_FIELDS = ["epoch", "train_loss", "train_top1", "val_top1", "val_top2", "val_top4", "test_top1", "lr"]


def _write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_FIELDS)
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in HISTORY_FIELDS})
    write_text(path, buf.getvalue())


@dataclass
class Stage:
    name: str  # video | audio | fused
    model: nn.Module
    out_dir: Path
    epochs: int


@dataclass
class StageContext:
    cache: FeatureCache
    split: Split
    tc: TrainConfig
    dist: Dist
    device: torch.device
    meta: dict = field(default_factory=dict)
    progress: bool = True
    # Called on every rank after each finished (saved) epoch as on_epoch_end(stage_name, epoch); an application
    # stops the run cleanly by raising from it, and ``--resume`` continues where it stopped.
    on_epoch_end: Callable[[str, int], None] | None = None


def _restore(last: Path, model: nn.Module, opt, sched, device: torch.device) -> tuple[list, dict, int]:
    """(history, best, epochs done) from ``last.pt`` when a killed or stopped stage left one; a fresh start else."""
    if not last.exists():
        return [], {"val_top1": -1.0, "epoch": 0}, 0
    state = load_checkpoint(last)
    missing = [k for k in ("optimizer", "rng", "history", "best", "epoch") if k not in state]
    if missing:
        raise CfnsrError(f"{last} is not a training state (it lacks {', '.join(missing)}; a best.pt copied over it?): "
                         f"delete it to train that stage again from the start, or pass --force to start the run over")
    load_state_dict_checked(model, state["state_dict"], str(last))
    opt.load_state_dict(state["optimizer"])
    if sched is not None and state.get("scheduler"):
        sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return state["history"], state["best"], state["epoch"]


def _train_epoch(net, loader, opt, scaler, dtype, device: torch.device, bar_desc: str, show: bool) -> dict:
    """One pass over ``loader``; returns the epoch's mean loss and train top-1."""
    from tqdm import tqdm

    net.train()
    losses, correct, seen = [], 0, 0
    bar = tqdm(loader, desc=bar_desc, unit="batch", disable=not show, leave=False)
    for video, audio, label in bar:
        video, audio, label = (t.to(device, non_blocking=True) for t in (video, audio, label))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(video, audio)
            loss = F.cross_entropy(logits.float(), label)
        if not torch.isfinite(loss):  # stop before the step: no NaN weights reach a checkpoint
            raise CfnsrError(f"{bar_desc}: the loss became {loss.item()} after {len(losses)} batches; the weights were "
                             "left as they were (lower --lr, or --amp off; the last good epoch is in last.pt)")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        correct += (logits.argmax(1) == label).sum().item()
        seen += len(label)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", acc=f"{correct / seen:.3f}")
    return {"train_loss": float(np.mean(losses)), "train_top1": correct / max(seen, 1)}


def run_stage(stage: Stage, ctx: StageContext) -> dict:
    """Train one stage to its last epoch (continuing from ``last.pt`` when present); returns its best record.

    Per epoch: train (DDP under torchrun), then on rank 0 evaluate, keep ``best.pt``, write ``last.pt`` and
    ``metrics.csv``; then every rank meets at a barrier and ``ctx.on_epoch_end`` runs.
    """
    from tqdm import tqdm

    tc, d, device = ctx.tc, ctx.dist, ctx.device
    out = stage.out_dir
    out.mkdir(parents=True, exist_ok=True)
    model = stage.model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=stage.epochs) if tc.scheduler == "cosine" else None
    last = out / "last.pt"
    history, best, start = _restore(last, model, opt, sched, device)
    if start >= stage.epochs:
        return best

    dtype = amp_dtype(tc.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_ds = CacheDataset(ctx.cache, ctx.split.train, train=True, seed=tc.seed)
    val_ds = CacheDataset(ctx.cache, ctx.split.val)
    test_ds = CacheDataset(ctx.cache, ctx.split.test) if ctx.split.test != ctx.split.val else None
    net, sampler = distribute(model, train_ds, d, device, tc.seed)
    per_rank_batch = max(1, tc.batch_size // d.world)

    for epoch in range(start + 1, stage.epochs + 1):
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = make_loader(train_ds, per_rank_batch, shuffle=True, sampler=sampler, workers=tc.workers,
                             pin_memory=device.type == "cuda", seed=tc.seed * 1000 + epoch)
        row = {"epoch": epoch, **_train_epoch(net, loader, opt, scaler, dtype, device,
                                              f"{stage.name} epoch {epoch}/{stage.epochs}", ctx.progress and d.main),
               "lr": opt.param_groups[0]["lr"]}
        if sched is not None:
            sched.step()
        if d.main:
            val = classification_metrics(*predict(model, val_ds, device=device, autocast=dtype))
            row.update(val_top1=val["top1"], val_top2=val["top2"], val_top4=val["top4"])
            test = None
            if test_ds is not None:
                test = classification_metrics(*predict(model, test_ds, device=device, autocast=dtype))
                row["test_top1"] = test["top1"]
            history.append(row)
            improved = val["top1"] > best["val_top1"]
            if improved:
                best = {"epoch": epoch, "val_top1": val["top1"], "val": val, "test": test}
                save_checkpoint(out / "best.pt", model, preprocess=ctx.cache.spec.to_dict(), stage=stage.name,
                                epoch=epoch, metrics={"val": val, "test": test}, **ctx.meta)
            rng = {"torch": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
            save_checkpoint(last, model, preprocess=ctx.cache.spec.to_dict(), stage=stage.name, epoch=epoch,
                            optimizer=opt.state_dict(), scheduler=sched.state_dict() if sched else None, rng=rng,
                            history=history, best=best, **ctx.meta)
            _write_history(out / "metrics.csv", history)
            msg = (f"{stage.name} epoch {epoch}/{stage.epochs}: loss {row['train_loss']:.4f} "
                   f"train {100 * row['train_top1']:.1f}% val {100 * val['top1']:.1f}%")
            if test is not None:
                msg += f" test {100 * test['top1']:.1f}%"
            tqdm.write(msg + (" (best)" if improved else ""))
        d.barrier()
        if ctx.on_epoch_end is not None:
            ctx.on_epoch_end(stage.name, epoch)
    if d.world > 1:  # every rank needs the best record; rank 0 has it on disk
        best = load_checkpoint(last)["best"]
    return best


# ------------------------------------------------------------------------------------------- one fold
def train_fold(cache: FeatureCache, model_config: ModelConfig, run_dir: str | Path, fold: int, tc: TrainConfig,
               progress: bool = True, init: Callable[[CFNSR], None] | None = None,
               on_epoch_end: Callable[[str, int], None] | None = None) -> dict:
    """Train fold ``fold`` (1-based) into ``run_dir/fold{fold}``; returns the best record of the fused stage.

    ``on_epoch_end(stage, epoch)`` runs after every saved epoch (see ``StageContext``)."""
    cache.check_model(model_config)
    cache.verify()  # a missing, truncated or NaN clip stops here, named, before any epoch
    d = init_distributed()
    device = pick_device(tc.device, d)
    split = make_split(cache.actors, tc.protocol, fold, tc.folds)
    fold_dir = Path(run_dir) / f"fold{fold}"
    meta = {"split": split.to_dict(), "cache_hash": cache.hash, "train_config": asdict(tc), "git_commit": _git_commit()}
    ctx = StageContext(cache, split, tc, d, device, meta, progress, on_epoch_end)

    torch.manual_seed(tc.seed + fold)
    model = CFNSR(model_config)
    if init is not None:
        init(model)
    if tc.unimodal_epochs > 0:
        pretrain_unimodal(model, fold_dir, ctx)
    return run_stage(Stage("fused", model, fold_dir, tc.epochs), ctx)


def pretrain_unimodal(model: CFNSR, fold_dir: Path, ctx: StageContext) -> None:
    """The published recipe's first stages: the video ResNeXt and the audio MFCCNet trained alone, each with its
    own classifier; their best weights initialise the fused network's branches."""
    for name, cls in (("video", VideoOnly), ("audio", AudioOnly)):
        run_stage(Stage(name, cls(model.config), fold_dir / f"pretrain_{name}", ctx.tc.unimodal_epochs), ctx)
        best = load_checkpoint(fold_dir / f"pretrain_{name}" / "best.pt")["state_dict"]
        branch = {k[len(name) + 1:]: v for k, v in best.items() if k.startswith(name + ".")}
        getattr(model, name).load_state_dict(branch)


def read_run_record(path: Path) -> dict:
    """``run.json`` of a run folder, or a CfnsrError naming it and the way out (empty, torn, or not a run's)."""
    import json

    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CfnsrError(f"{path} is not a readable run record ({'empty' if not path.stat().st_size else e}): "
                         "the run cannot be resumed; pass --force to start it over") from e
    if not isinstance(record, dict) or not isinstance(record.get("train_config"), dict):
        raise CfnsrError(f"{path} is not the record of a cfnsr training run (no train_config): pass --force to start "
                         "over, or choose another folder")
    return record


def start_run(run_dir: str | Path, cache: FeatureCache, model_config: ModelConfig, tc: TrainConfig, resume: bool,
              force: bool, folds_to_write=None) -> None:
    """Check and record the run folder: a new run refuses a used folder; a resumed one must match it.

    ``force`` starts over: it removes only the folders of ``folds_to_write`` (all ``fold1..foldN`` of ``tc.folds``
    when None), and only once every check has passed; nothing else in the folder is touched."""
    run_dir = Path(run_dir)
    record = {"model_config": model_config.to_dict(), "train_config": asdict(tc), "cache": str(cache.root),
              "cache_hash": cache.hash}
    path = run_dir / "run.json"
    if path.exists():
        if resume:
            old = read_run_record(path)
            diffs = [k for k in ("model_config", "train_config", "cache_hash") if old.get(k) != record[k]]
            if diffs:
                raise CfnsrError(f"cannot resume {run_dir}: {', '.join(diffs)} differ from the run recorded there")
            return
        if not force:
            raise CfnsrError(f"{run_dir} already holds a run; pass --resume to continue it or --force to start over")
        import shutil

        folds = folds_to_write if folds_to_write is not None else range(1, tc.folds + 1)
        for k in folds:
            child = run_dir / f"fold{k}"
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
    elif resume:
        raise CfnsrError(f"nothing to resume: {path} does not exist")
    write_json(path, record)
