"""The fault corpus: what a hostile or unlucky user feeds every command.

Each case runs the real CLI and asserts: a non-zero exit, no traceback, a one-line message naming the problem, and
every input file unchanged (hashed before and after). The few cases where the right answer is to carry on (an
impossible landmark file beside a clip) assert that the result says why instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from faultlib import _hash, _replace, _small_cache

from cfnsr.cli import main

CLIP = "Actor_01/01-01-05-02-01-01-01.mp4"  # angry, held-out actor 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, trained_tiny, fp32_onnx, tiny_cache, synth_raw):
    """Bad inputs of every kind, made once (small, next to hard links of the real ones)."""
    d = tmp_path_factory.mktemp("faults")
    c = {"d": d, "ckpt": trained_tiny, "onnx": fp32_onnx.path, "cache": tiny_cache.root, "raw": synth_raw,
         "clip": synth_raw / CLIP}
    # checkpoints
    c["empty_pt"] = d / "empty.pt"
    c["empty_pt"].write_bytes(b"")
    c["trunc_pt"] = d / "truncated.pt"
    c["trunc_pt"].write_bytes(trained_tiny.read_bytes()[:4096])
    c["onnx_as_pt"] = d / "model.pt"
    shutil.copy(fp32_onnx.path, c["onnx_as_pt"])
    c["evil_pt"] = d / "evil.pt"
    c["evil_pt"].write_bytes(pickle.dumps({"format": "cfnsr-checkpoint", "x": os.getcwd}))  # refers to code
    ck = torch.load(trained_tiny, weights_only=True)
    nan = {**ck, "state_dict": {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                                for k, v in ck["state_dict"].items()}}
    c["nan_pt"] = d / "nan.pt"
    torch.save(nan, c["nan_pt"])
    c["json_pt"] = d / "notes.pt"
    c["json_pt"].write_text('{"format": "cfnsr-checkpoint"}')
    # ONNX files
    c["trunc_onnx"] = d / "truncated.onnx"
    c["trunc_onnx"].write_bytes(fp32_onnx.path.read_bytes()[:2048])
    c["text_onnx"] = d / "text.onnx"
    c["text_onnx"].write_text("not a model")
    c["pt_as_onnx"] = d / "ckpt.onnx"
    shutil.copy(trained_tiny, c["pt_as_onnx"])
    # caches
    c["cache_ok"] = _small_cache(tiny_cache, d / "cache_ok")
    c["no_manifest"] = _small_cache(tiny_cache, d / "no_manifest")
    (c["no_manifest"] / "manifest.json").unlink()
    c["bad_manifest"] = _small_cache(tiny_cache, d / "bad_manifest")
    (c["bad_manifest"] / "manifest.json").write_text("{ not json")
    c["no_clips"] = _small_cache(tiny_cache, d / "no_clips", clips=[])
    m = json.loads((tiny_cache.root / "manifest.json").read_text())
    held = [x for x in m["clips"] if x["actor"] in (1, 2)]
    c["no_labels"] = _small_cache(tiny_cache, d / "no_labels",
                                  clips=[{k: v for k, v in x.items() if k != "label"} for x in held])
    stem = held[0]["stem"]
    c["missing_npy"] = _small_cache(tiny_cache, d / "missing_npy")
    (c["missing_npy"] / "mfcc" / f"{stem}.npy").unlink()
    c["trunc_npy"] = _small_cache(tiny_cache, d / "trunc_npy")
    _replace(c["trunc_npy"] / "frames" / f"{stem}.npy", data=(tiny_cache.root / "frames" / f"{stem}.npy")
             .read_bytes()[:300])
    c["shape_npy"] = _small_cache(tiny_cache, d / "shape_npy")
    _replace(c["shape_npy"] / "mfcc" / f"{stem}.npy", array=np.zeros((13, 100), np.float32))
    c["nan_npy"] = _small_cache(tiny_cache, d / "nan_npy")
    mf = np.load(tiny_cache.root / "mfcc" / f"{stem}.npy").copy()
    mf[3, 7] = np.nan
    _replace(c["nan_npy"] / "mfcc" / f"{stem}.npy", array=mf)
    c["nan_stem"] = stem
    other_spec = json.loads((tiny_cache.root / "spec.json").read_text())
    c["other_spec"] = _small_cache(tiny_cache, d / "other_spec", spec={**other_spec, "n_mfcc": 20})
    # training caches (all actors, hard links) with one NaN clip
    c["train_nan"] = _small_cache(tiny_cache, d / "train_nan", actors=tuple(range(1, 9)))
    train_stem = next(x["stem"] for x in m["clips"] if x["actor"] == 5)
    mt = np.load(tiny_cache.root / "mfcc" / f"{train_stem}.npy").copy()
    mt[0, 0] = np.inf
    _replace(c["train_nan"] / "mfcc" / f"{train_stem}.npy", array=mt)
    c["train_nan_stem"] = train_stem
    # media
    c["corrupt_mp4"] = d / "corrupt.mp4"
    c["corrupt_mp4"].write_bytes(os.urandom(20000))
    c["empty_mp4"] = d / "empty.mp4"
    c["empty_mp4"].write_bytes(b"")
    # landmark files beside a copy of a clip (as RAVDESS lays them out)
    lm_src = next(synth_raw.rglob(Path(CLIP).stem + ".csv"))
    header, *rows = lm_src.read_text().splitlines()
    cols = header.split(",")

    def lm_variant(name, fn):
        root = d / f"lm_{name}" / "Actor_01"
        root.mkdir(parents=True)
        os.link(c["clip"], root / Path(CLIP).name)
        out = []
        for row in rows:
            vals = row.split(",")
            out.append(",".join(fn(cols[i].strip(), v) for i, v in enumerate(vals)))
        (root / (Path(CLIP).stem + ".csv")).write_text("\n".join([header, *out]) + "\n")
        return root / Path(CLIP).name

    c["lm_offframe"] = lm_variant("offframe", lambda k, v: str(float(v) + 10000) if k.startswith(("x_", "y_")) else v)
    c["lm_negated"] = lm_variant("negated", lambda k, v: str(-float(v)) if k.startswith(("x_", "y_")) else v)
    c["lm_inf"] = lm_variant("inf", lambda k, v: "inf" if k.startswith("x_") else v)
    c["lm_tiny"] = lm_variant("tiny", lambda k, v: "10.0" if k.startswith(("x_", "y_")) else v)
    c["lm_nan_col"] = lm_variant("nancol", lambda k, v: "nan" if k == "x_3" else v)
    c["lm_binary"] = d / "lm_binary" / "Actor_01" / Path(CLIP).name
    c["lm_binary"].parent.mkdir(parents=True)
    os.link(c["clip"], c["lm_binary"])
    (c["lm_binary"].parent / (Path(CLIP).stem + ".csv")).write_bytes(bytes(range(256)) * 40)
    # folders
    c["other_cache"] = d / "other_cache"
    c["other_cache"].mkdir()
    (c["other_cache"] / "manifest.json").write_text(json.dumps({"format": "cfnsr-feature-cache",
                                                                "raw_dir": "/somewhere/else"}))
    (c["other_cache"] / "spec.json").write_text((tiny_cache.root / "spec.json").read_text())
    c["not_a_cache"] = d / "not_a_cache"
    c["not_a_cache"].mkdir()
    (c["not_a_cache"] / "thesis.tex").write_text("precious")
    c["run_used"] = d / "run_used"
    c["run_used"].mkdir()
    (c["run_used"] / "run.json").write_text("{}")
    return c


# (case id, CLI args built from the corpus, what the message must say, the corpus keys whose files must not change)
CASES = [
    # -- checkpoints ---------------------------------------------------------------------------------------------
    ("export-missing-ckpt", lambda c: ["export", c["d"] / "nope.pt"], "nope.pt does not exist", []),
    ("export-empty-ckpt", lambda c: ["export", c["empty_pt"]], "cannot read checkpoint", ["empty_pt"]),
    ("export-truncated-ckpt", lambda c: ["export", c["trunc_pt"]], "cannot read checkpoint", ["trunc_pt"]),
    ("export-onnx-as-ckpt", lambda c: ["export", c["onnx_as_pt"]], "is an ONNX model, not a PyTorch checkpoint",
     ["onnx_as_pt"]),
    ("export-pickled-code", lambda c: ["export", c["evil_pt"]], "never unpickles", ["evil_pt"]),
    ("export-json-as-ckpt", lambda c: ["export", c["json_pt"]], "cannot read checkpoint", ["json_pt"]),
    ("export-nan-weights", lambda c: ["export", c["nan_pt"], "-o", c["d"] / "n.onnx"], "non-finite weights",
     ["nan_pt"]),
    ("validate-nan-reference", lambda c: ["validate", c["onnx"], "--reference", c["nan_pt"], "--data", c["cache_ok"]],
     "non-finite weights", ["nan_pt", "onnx"]),
    ("predict-nan-checkpoint", lambda c: ["predict", c["clip"], "--model", c["nan_pt"]], "non-finite weights",
     ["nan_pt", "clip"]),
    ("summary-truncated", lambda c: ["summary", c["trunc_pt"], "--no-flops"], "cannot read checkpoint",
     ["trunc_pt"]),
    ("import-original-garbage", lambda c: ["import-original", "--fused", c["json_pt"], "-o", c["d"] / "imp.pt"],
     "cannot read checkpoint", ["json_pt"]),
    # -- artifacts -----------------------------------------------------------------------------------------------
    ("validate-truncated-onnx", lambda c: ["validate", c["trunc_onnx"], "--reference", c["ckpt"], "--data",
                                           c["cache_ok"]], "truncated.onnx", ["trunc_onnx", "ckpt"]),
    ("validate-text-onnx", lambda c: ["validate", c["text_onnx"], "--reference", c["ckpt"], "--data", c["cache_ok"]],
     "text.onnx", ["text_onnx"]),
    ("predict-ckpt-as-onnx", lambda c: ["predict", c["clip"], "--model", c["pt_as_onnx"]],
     "does not look like a .onnx file", ["pt_as_onnx"]),
    ("bench-missing-artifact", lambda c: ["bench", c["d"] / "gone.onnx", "--json", c["d"] / "b1.json"],
     "gone.onnx does not exist", []),
    ("build-no-tensorrt-or-dla", lambda c: ["build", c["onnx"], "--dla-core", "0"], "does not build DLA engines",
     ["onnx"]),
    # -- caches --------------------------------------------------------------------------------------------------
    ("validate-no-manifest", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["no_manifest"]],
     "not a finished cfnsr feature cache", ["no_manifest"]),
    ("validate-bad-manifest", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data",
                                         c["bad_manifest"]], "not a readable cfnsr cache manifest", ["bad_manifest"]),
    ("validate-no-clips", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["no_clips"]],
     "lists no clips", ["no_clips"]),
    ("validate-no-labels", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["no_labels"]],
     "clip entries lack", ["no_labels"]),
    ("validate-missing-npy", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["missing_npy"]],
     "is missing from the cache", ["missing_npy"]),
    ("validate-truncated-npy", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["trunc_npy"]],
     "unreadable or truncated", ["trunc_npy"]),
    ("validate-wrong-shape-npy", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data",
                                            c["shape_npy"]], "has shape (13, 100)", ["shape_npy"]),
    ("validate-nan-mfcc", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["nan_npy"]],
     "non-finite MFCC", ["nan_npy"]),
    ("validate-other-spec", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["other_spec"]],
     "MFCC (20,212)", ["other_spec"]),
    ("export-other-spec", lambda c: ["export", c["ckpt"], "--calib-data", c["other_spec"], "-o", c["d"] / "o.onnx"],
     "MFCC (20,212)", ["other_spec", "ckpt"]),
    ("export-int8-nan-cache", lambda c: ["export", c["ckpt"], "--precision", "int8", "--calib-data", c["train_nan"],
                                         "--calib-clips", "1000", "-o", c["d"] / "q.onnx"], "non-finite MFCC",
     ["train_nan"]),
    ("train-nan-clip", lambda c: ["train", c["train_nan"], "--config", "cfn-sr-tiny", "-o", c["d"] / "run_nan",
                                  "--folds", "4", "--epochs", "1", "--workers", "0"], "non-finite MFCC", ["train_nan"]),
    ("evaluate-no-manifest", lambda c: ["evaluate", c["ckpt"], c["no_manifest"]], "not a finished cfnsr feature cache",
     ["no_manifest", "ckpt"]),
    # -- media ---------------------------------------------------------------------------------------------------
    ("predict-missing-video", lambda c: ["predict", c["d"] / "none.mp4", "--model", c["onnx"]], "none.mp4", []),
    ("predict-corrupt-video", lambda c: ["predict", c["corrupt_mp4"], "--model", c["onnx"]], "corrupt.mp4",
     ["corrupt_mp4"]),
    ("predict-empty-video", lambda c: ["predict", c["empty_mp4"], "--model", c["onnx"]], "empty.mp4",
     ["empty_mp4"]),
    ("predict-nan-landmark-column", lambda c: ["predict", c["lm_nan_col"], "--model", c["onnx"]],
     "no row has all 68 landmarks", ["lm_nan_col"]),
    ("predict-binary-landmarks", lambda c: ["predict", c["lm_binary"], "--model", c["onnx"]],
     "cannot read landmark file", ["lm_binary"]),
    ("predict-missing-landmarks-arg", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--landmarks",
                                                 c["d"] / "no.csv"], "no.csv", ["clip"]),
    # -- options -------------------------------------------------------------------------------------------------
    ("bench-batch-zero", lambda c: ["bench", c["onnx"], "--batch", "0"], "positive integer", ["onnx"]),
    ("bench-batch-words", lambda c: ["bench", c["onnx"], "--batch", "a,b"], "comma-separated list", ["onnx"]),
    ("bench-batch-negative", lambda c: ["bench", c["onnx"], "--batch", "-2"], "positive integer", ["onnx"]),
    ("bench-iters-zero", lambda c: ["bench", c["onnx"], "--iters", "0"], "--iters", ["onnx"]),
    ("bench-iters-negative", lambda c: ["bench", c["onnx"], "--iters", "-3"], "--iters", ["onnx"]),
    ("bench-warmup-negative", lambda c: ["bench", c["onnx"], "--warmup", "-1"], "--warmup", ["onnx"]),
    ("bench-threads-negative", lambda c: ["bench", c["onnx"], "--threads", "-1"], "--threads", ["onnx"]),
    ("bench-device-bogus", lambda c: ["bench", c["onnx"], "--device", "gpu"], "--device", ["onnx"]),
    ("export-calib-clips-zero", lambda c: ["export", c["ckpt"], "--precision", "int8", "--calib-data", c["cache"],
                                           "--calib-clips", "0"], "--calib-clips", ["ckpt"]),
    ("export-gate-clips-zero", lambda c: ["export", c["ckpt"], "--gate-clips", "0"], "--gate-clips", ["ckpt"]),
    ("export-min-agreement-nan", lambda c: ["export", c["ckpt"], "--min-agreement", "nan"], "not a finite number",
     ["ckpt"]),
    ("export-max-drop-nan", lambda c: ["export", c["ckpt"], "--max-accuracy-drop", "nan"], "not a finite number",
     ["ckpt"]),
    ("export-min-agreement-2", lambda c: ["export", c["ckpt"], "--min-agreement", "2"], "--min-agreement",
     ["ckpt"]),
    ("export-max-batch-1", lambda c: ["export", c["ckpt"], "--format", "pt2", "--max-batch", "1"], "--max-batch",
     ["ckpt"]),
    ("export-scope-on-fp16", lambda c: ["export", c["ckpt"], "--precision", "fp16", "--int8-scope", "no-stem",
                                        "-o", c["d"] / "s.onnx"], "applies to --precision int8 only", ["ckpt"]),
    ("export-pt2-int8", lambda c: ["export", c["ckpt"], "--format", "pt2", "--precision", "int8"],
     "pt2 is fp32 only", ["ckpt"]),
    ("validate-clips-zero", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["cache_ok"],
                                       "--clips", "0"], "--clips", ["onnx"]),
    ("validate-max-abs-logit-negative", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data",
                                                   c["cache_ok"], "--max-abs-logit", "-1"], "--max-abs-logit",
     ["onnx"]),
    ("train-fold-word", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["d"] / "r1", "--fold",
                                   "abc", "--folds", "4"], "give a fold number 1..4", []),
    ("train-fold-99", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["d"] / "r2", "--fold", "99",
                                 "--folds", "4"], "give a fold number 1..4", []),
    ("train-device-bogus", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["d"] / "r3",
                                      "--device", "bogus"], "use auto, cpu, cuda or cuda:N", []),
    ("train-config-bogus", lambda c: ["train", c["cache"], "--config", "bogus", "-o", c["d"] / "r4"],
     "unknown configuration 'bogus'", []),
    ("train-resume-and-force", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["run_used"],
                                          "--resume", "--force"], "give one of them", ["run_used"]),
    ("train-used-run-folder", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["run_used"],
                                         "--folds", "4", "--epochs", "1"], "already holds a run", ["run_used"]),
    ("train-epochs-zero", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["d"] / "r5",
                                     "--epochs", "0"], "--epochs", []),
    ("train-lr-nan", lambda c: ["train", c["cache"], "--config", "cfn-sr-tiny", "-o", c["d"] / "r6", "--lr", "nan"],
     "not a finite number", []),
    ("preprocess-config-bogus", lambda c: ["preprocess", c["raw"], "-o", c["d"] / "pc", "--config", "nope"],
     "unknown configuration 'nope'", []),
    ("preprocess-workers-zero", lambda c: ["preprocess", c["raw"], "-o", c["d"] / "pw", "--workers", "0"],
     "--workers", []),
    ("synth-actors-zero", lambda c: ["synth-ravdess", c["d"] / "s0", "--actors", "0"], "--actors", []),
    ("synth-actors-99", lambda c: ["synth-ravdess", c["d"] / "s99", "--actors", "99"], "--actors", []),
    ("build-batch-order", lambda c: ["build", c["onnx"], "--batch", "4,2,8"], "--batch", ["onnx"]),
    ("build-workspace-zero", lambda c: ["build", c["onnx"], "--workspace-mb", "0"], "--workspace-mb", ["onnx"]),
    # -- outputs that are inputs, folders that hold something else, places that cannot be written -----------------
    ("validate-json-is-artifact", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["cache_ok"],
                                             "--json", c["onnx"]], "would overwrite the input", ["onnx", "ckpt"]),
    ("validate-json-is-reference", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data",
                                              c["cache_ok"], "--json", c["ckpt"]], "would overwrite the input",
     ["onnx", "ckpt"]),
    ("bench-json-is-artifact", lambda c: ["bench", c["onnx"], "--json", c["onnx"]], "would overwrite the input",
     ["onnx"]),
    ("export-output-is-checkpoint", lambda c: ["export", c["pt_as_onnx"], "-o", c["pt_as_onnx"], "--force"],
     "would overwrite the input", ["pt_as_onnx"]),
    ("build-output-is-onnx", lambda c: ["build", c["onnx"], "-o", c["onnx"], "--force"], "would overwrite the input",
     ["onnx"]),
    ("preprocess-into-raw", lambda c: ["preprocess", c["raw"], "-o", c["raw"], "--config", "cfn-sr-tiny"],
     "would overwrite the input", ["raw"]),
    ("preprocess-into-other-cache", lambda c: ["preprocess", c["raw"], "-o", c["other_cache"], "--config",
                                               "cfn-sr-tiny"], "holds the cache of another data set", ["other_cache"]),
    ("preprocess-into-other-files", lambda c: ["preprocess", c["raw"], "-o", c["not_a_cache"], "--config",
                                               "cfn-sr-tiny"], "holds other files (thesis.tex)", ["not_a_cache"]),
    ("validate-json-unwritable", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["cache_ok"],
                                            "--json", "/proc/cfnsr/v.json"], "cannot write /proc/cfnsr/v.json",
     ["onnx"]),
    ("bench-json-unwritable", lambda c: ["bench", c["onnx"], "--json", "/proc/cfnsr.json"], "cannot write",
     ["onnx"]),
    ("export-output-unwritable", lambda c: ["export", c["ckpt"], "-o", "/proc/cfnsr/m.onnx"], "cannot write",
     ["ckpt"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fault(case, corpus):
    _, build, message, keep = case
    args = [str(a) for a in build(corpus)]
    before = {k: _hash(Path(corpus[k])) for k in keep}
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert message in res.output, res.output
    assert {k: _hash(Path(corpus[k])) for k in keep} == before, "an input file changed"


@pytest.mark.parametrize("name", ["lm_offframe", "lm_negated", "lm_inf", "lm_tiny"])
def test_impossible_landmarks_are_not_used_and_the_result_says_why(name, corpus):
    before = _hash(corpus[name].parent)
    res = CliRunner().invoke(main, ["predict", str(corpus[name]), "--model", str(corpus["onnx"]), "--json",
                                    "--allow-center-crop"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["crop"] != "landmarks" and "not used" in r["crop_note"]
    assert _hash(corpus[name].parent) == before


def test_a_second_preprocess_into_the_same_cache_is_refused(corpus, tmp_path):
    out = tmp_path / "cache"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # another preprocess holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write(str(os.getpid()))  # a running owner (a dead one's lock is taken over: tests/test_workers.py)
        held.flush()
        res = CliRunner().invoke(main, ["preprocess", str(corpus["raw"]), "-o", str(out), "--config", "cfn-sr-tiny"])
    assert res.exit_code != 0 and f"another cfnsr preprocess (pid {os.getpid()}) is writing" in res.output
    assert not (out / "manifest.json").exists()


def test_runners_refuse_non_finite_inputs(corpus):
    from cfnsr.engines import InputError, load

    video = np.zeros((1, 3, 20, 64, 64), np.float32)
    audio = np.zeros((1, 13, 212), np.float32)
    audio[0, 2, 5] = np.nan
    with load(corpus["onnx"]) as r:
        with pytest.raises(InputError, match=r"input 'audio' holds 1 non-finite values .* batch item\(s\) \[0\]"):
            r(video, audio)


def test_calibration_cache_with_nan_ranges_is_recomputed(corpus, tmp_path):
    from cfnsr.data.cache import FeatureCache
    from cfnsr.export.calibrate import calibrate, select_clips

    cache = FeatureCache.open(corpus["cache"])
    clips = select_clips(cache, [5, 6], 2)
    ranges, info = calibrate(corpus["onnx"], "sha", cache, clips, "minmax", tmp_path, progress=False)
    stored = json.loads(Path(info["cache_file"]).read_text())
    stored["ranges"][next(iter(stored["ranges"]))] = [float("nan"), 1.0]
    Path(info["cache_file"]).write_text(json.dumps(stored))
    again, info2 = calibrate(corpus["onnx"], "sha", cache, clips, "minmax", tmp_path, progress=False)
    assert not info2["cache_hit"] and again == ranges
