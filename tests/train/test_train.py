import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.data.cache import FeatureCache
from cfnsr.errors import CfnsrError
from cfnsr.model import load_checkpoint, load_model
from cfnsr.train.evaluate import evaluate_checkpoint
from cfnsr.train.trainer import TrainConfig, start_run, train_fold


def subset_cache(cache: FeatureCache, root: Path, per_actor: int) -> FeatureCache:
    """A smaller cache on disk: the first ``per_actor`` clips of each actor, sharing the arrays."""
    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for a in cache.actors:
        clips += [c for c in cache.clips if c.actor == a][:per_actor]
    manifest = json.loads((cache.root / "manifest.json").read_text())
    manifest.update(clips=[c.to_dict() for c in clips], hash=f"subset-{per_actor}-{cache.hash}")
    (root / "manifest.json").write_text(json.dumps(manifest))
    for sub in ("frames", "mfcc"):
        (root / sub).symlink_to(cache.root / sub)
    return FeatureCache.open(root)


@pytest.fixture(scope="session")
def small_cache(tiny_cache, tmp_path_factory):
    return subset_cache(tiny_cache, tmp_path_factory.mktemp("small") / "cache", per_actor=8)


TINY = dict(folds=4, protocol="honest", workers=0, batch_size=8, seed=5)


def test_training_learns_from_both_modalities(trained_tiny, tiny_cache):
    """The Done-when run: synthetic 8 actors, cfn-sr-tiny, 10 epochs, honest protocol (test actors unseen)."""
    ckpt = load_checkpoint(trained_tiny)
    assert ckpt["split"]["test"] == [1, 2] and ckpt["split"]["val"] == [3, 4]
    assert ckpt["cache_hash"] == tiny_cache.hash and ckpt["preprocess"] == tiny_cache.spec.to_dict()
    both = evaluate_checkpoint(trained_tiny, tiny_cache)
    assert both["clips"] == 120
    assert both["top1"] >= 0.80, both["top1"]
    # Taking either modality away costs accuracy: the model uses both.
    for zero in ("video", "audio"):
        ablated = evaluate_checkpoint(trained_tiny, tiny_cache, zero=zero)
        assert ablated["top1"] < both["top1"] - 0.15, (zero, ablated["top1"], both["top1"])


def test_evaluate_cli_writes_reports(trained_tiny, tiny_cache, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(trained_tiny.parent.parent), str(tiny_cache.root), "-o",
                                    str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    assert result["protocol"] == "honest" and "Honest protocol" in result["note"]
    fold = result["folds"][0]
    assert set(fold) >= {"top1", "top2", "top4", "per_class", "confusion", "macro_f1"}
    assert sum(map(sum, fold["confusion"])) == 120
    for name in ("eval_fold1.json", "eval_fold1.md", "eval_fold1_confusion.png", "eval_summary_confusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "eval_fold1_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_log_and_checkpoints(trained_tiny):
    fold = trained_tiny.parent
    rows = (fold / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss") and len(rows) == 11
    last = load_checkpoint(fold / "last.pt")
    assert last["epoch"] == 10 and len(last["history"]) == 10 and "optimizer" in last
    best = load_checkpoint(trained_tiny)
    assert best["epoch"] == last["best"]["epoch"]
    assert best["metrics"]["val"]["top1"] == max(r["val_top1"] for r in last["history"])


def test_resume_reproduces_the_uninterrupted_run(small_cache, tiny_config, tmp_path):
    tc = TrainConfig(epochs=3, **TINY)
    train_fold(small_cache, tiny_config, tmp_path / "a", 1, tc, progress=False)
    def stop(stage, epoch):  # what an application's Ctrl-C handler would do, through the public callback
        raise KeyboardInterrupt(f"stopped after {stage} epoch {epoch}")

    with pytest.raises(KeyboardInterrupt):
        train_fold(small_cache, tiny_config, tmp_path / "b", 1, tc, progress=False, on_epoch_end=stop)
    assert load_checkpoint(tmp_path / "b" / "fold1" / "last.pt")["epoch"] == 1
    train_fold(small_cache, tiny_config, tmp_path / "b", 1, tc, progress=False)
    a = load_checkpoint(tmp_path / "a" / "fold1" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "fold1" / "last.pt")
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0, msg=k)
    assert a["history"] == b["history"]
    metrics_csv = [(tmp_path / run / "fold1" / "metrics.csv").read_text() for run in ("a", "b")]
    assert metrics_csv[0] == metrics_csv[1]


def test_unimodal_pretraining_initialises_the_fused_model(small_cache, tiny_config, tmp_path):
    tc = TrainConfig(epochs=1, unimodal_epochs=1, **TINY)
    train_fold(small_cache, tiny_config, tmp_path, 1, tc, progress=False)
    video = load_checkpoint(tmp_path / "fold1" / "pretrain_video" / "best.pt")
    audio = load_checkpoint(tmp_path / "fold1" / "pretrain_audio" / "best.pt")
    assert "fc.weight" in video["state_dict"] and "fc1.weight" in audio["state_dict"]
    assert load_model(tmp_path / "fold1" / "best.pt").config == tiny_config


def test_run_folder_is_not_overwritten_by_accident(small_cache, tiny_config, tmp_path):
    tc = TrainConfig(epochs=1, **TINY)
    start_run(tmp_path, small_cache, tiny_config, tc, resume=False, force=False)
    with pytest.raises(CfnsrError, match="already holds a run; pass --resume"):
        start_run(tmp_path, small_cache, tiny_config, tc, resume=False, force=False)
    with pytest.raises(CfnsrError, match="train_config differ"):
        start_run(tmp_path, small_cache, tiny_config, replace(tc, lr=0.1), resume=True, force=False)
    with pytest.raises(CfnsrError, match="nothing to resume"):
        start_run(tmp_path / "new", small_cache, tiny_config, tc, resume=True, force=False)


def test_ddp_two_processes_gloo(small_cache, tmp_path):
    """torchrun, 2 CPU processes, gloo: trains, and the checkpoint loads with cfnsr.load_model."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "cfnsr", "train", str(small_cache.root), "--config", "cfn-sr-tiny", "-o", str(tmp_path / "run"),
           "--folds", "4", "--epochs", "2", "--workers", "0", "--batch-size", "8"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    model = load_model(tmp_path / "run" / "fold1" / "best.pt")
    assert not model.training
    assert load_checkpoint(tmp_path / "run" / "fold1" / "last.pt")["epoch"] == 2
    assert res.stdout.count("fold 1: best validation") == 1  # rank 0 reports, rank 1 does not
