import json
import shutil

import numpy as np
import pytest
import torch

from cfnsr.data.cache import FeatureCache, preprocess
from cfnsr.data.dataset import CacheDataset, make_loader
from cfnsr.data.spec import PreprocessSpec
from cfnsr.errors import DataError
from cfnsr.model import create_model

SPEC = PreprocessSpec(frames=20, image_size=96)
QUIET = dict(progress=False, log=lambda *a: None)


def _small_raw(synth_raw, dst, n=8):
    """A RAVDESS folder with the first ``n`` clips of actor 1 and their landmarks."""
    (dst / "Actor_01").mkdir(parents=True)
    (dst / "landmarks").mkdir()
    for clip in sorted((synth_raw / "Actor_01").glob("*.mp4"))[:n]:
        shutil.copy(clip, dst / "Actor_01")
        shutil.copy(synth_raw / "landmarks" / f"{clip.stem}.csv", dst / "landmarks")
    return dst


def test_corrupt_clip_is_reported_and_skipped(tmp_path, synth_raw):
    raw = _small_raw(synth_raw, tmp_path / "raw", n=4)
    (raw / "Actor_01" / "01-01-08-02-02-02-01.mp4").write_bytes(b"\x00" * 1000)  # unreadable
    manifest = preprocess(raw, tmp_path / "cache", SPEC, workers=2, **QUIET)
    assert manifest["counts"]["clips"] == 4
    assert [f["stem"] for f in manifest["failures"]] == ["01-01-08-02-02-02-01"]
    assert "cannot open" in manifest["failures"][0]["error"]
    failures = json.loads((tmp_path / "cache" / "failures.json").read_text())
    assert failures[0]["stem"] == "01-01-08-02-02-02-01"


def test_resume_after_interruption_gives_the_same_cache(tmp_path, synth_raw):
    raw = _small_raw(synth_raw, tmp_path / "raw", n=6)
    whole = preprocess(raw, tmp_path / "a", SPEC, **QUIET)

    part = preprocess(raw, tmp_path / "b", SPEC, limit=3, **QUIET)
    assert part == {"complete": False, "done": 3}
    with pytest.raises(DataError, match="not a finished cfnsr feature cache.*run it again"):
        FeatureCache.open(tmp_path / "b")
    # What a kill leaves behind: a torn progress line and a half-written temporary array.
    with open(tmp_path / "b" / "progress.jsonl", "a") as f:
        f.write('{"stem": "01-01-0')
    (tmp_path / "b" / "frames" / ".01-01-02-01-02-01-01.npy.tmp").write_bytes(b"partial")
    resumed = preprocess(raw, tmp_path / "b", SPEC, workers=2, **QUIET)
    assert resumed["hash"] == whole["hash"]
    assert [c["stem"] for c in resumed["clips"]] == [c["stem"] for c in whole["clips"]]
    for c in whole["clips"]:
        a = np.load(tmp_path / "a" / "frames" / f"{c['stem']}.npy")
        b = np.load(tmp_path / "b" / "frames" / f"{c['stem']}.npy")
        assert np.array_equal(a, b)


def test_cache_refuses_another_spec(tmp_path, synth_raw):
    raw = _small_raw(synth_raw, tmp_path / "raw", n=1)
    preprocess(raw, tmp_path / "c", SPEC, **QUIET)
    with pytest.raises(DataError, match="another preprocessing spec"):
        preprocess(raw, tmp_path / "c", SPEC.replace(msaf_compat=True), **QUIET)


def test_dataloader_end_to_end(tiny_cache, tiny_config):
    assert tiny_cache.actors == list(range(1, 9)) and len(tiny_cache.clips) == 480
    assert {c.crop for c in tiny_cache.clips} == {"landmarks"}
    tiny_cache.check_model(tiny_config)
    ds = CacheDataset(tiny_cache, actors=[1, 2], train=True, seed=3)
    assert len(ds) == 120
    video, audio, label = next(iter(make_loader(ds, batch_size=4, shuffle=True)))
    assert video.shape == (4, 3, 20, 64, 64) and video.dtype == torch.float32
    assert audio.shape == (4, 13, 212) and label.shape == (4,)
    with torch.no_grad():
        assert create_model(tiny_config).eval()(video, audio).shape == (4, 8)
    # Augmentation is a function of (seed, epoch, index): reproducible, and different across epochs.
    a1, a2 = ds[5][0], ds[5][0]
    ds.set_epoch(1)
    assert torch.equal(a1, a2) and not torch.equal(a1, ds[5][0])
    # Evaluation items are normalised frames, no augmentation: BGR order, ImageNet mean/std.
    ev = CacheDataset(tiny_cache, actors=[1])
    frames = np.asarray(tiny_cache.frames(ev.clips[0].stem))
    v = ev[0][0]
    expected_blue = (frames[..., 2] / 255.0 - 0.485) / 0.229
    np.testing.assert_allclose(v[0].numpy(), expected_blue, atol=1e-5)


def test_cache_that_does_not_fit_the_model(tiny_cache):
    from cfnsr.model import get_config

    with pytest.raises(DataError, match="preprocess with `cfnsr preprocess --config cfn-sr`"):
        tiny_cache.check_model(get_config("cfn-sr"))


def test_a_disk_that_fills_up_midway_stops_the_run_instead_of_failing_clips(tmp_path, synth_raw, monkeypatch):
    """A clip that cannot be written is the machine's fault, not the clip's: the run stops, naming the disk."""
    import cfnsr.data.cache as cache_mod
    from cfnsr.errors import CfnsrError

    raw = _small_raw(synth_raw, tmp_path / "raw", n=3)
    written = []

    def full(path, array, force=True):
        if written:
            raise CfnsrError(f"cannot write {path}: no space left on the device (the disk is full)")
        written.append(path)
        return "0" * 64

    monkeypatch.setattr(cache_mod, "save_npy", full)
    with pytest.raises(CfnsrError, match="the disk is full"):
        preprocess(raw, tmp_path / "cache", SPEC, workers=1, **QUIET)
    assert not (tmp_path / "cache" / "manifest.json").exists()
    assert not (tmp_path / "cache" / "failures.json").exists()


def test_torn_and_foreign_progress_lines_are_skipped(tmp_path):
    from cfnsr.data.cache import _read_progress

    good = {"stem": "a", "label": 0, "actor": 1, "source_sha256": "s", "frames_sha256": "f", "mfcc_sha256": "m"}
    path = tmp_path / "progress.jsonl"
    path.write_bytes(json.dumps(good).encode() + b'\n{"stem": "b", "lab\n[1, 2]\n{"nostem": 1}\n\xff\xfe\n')
    assert list(_read_progress(path)) == ["a"]
