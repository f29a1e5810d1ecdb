"""The fault corpus, part two: bad input handled by construction (issue 22).

Each case runs the real CLI (or the Python API) as a hostile or careless user would, and asserts the clean outcome:
the exit code, one line naming the problem, the inputs unchanged (hashed before and after), nothing left in TMPDIR,
and no output half-written (no temporary file beside the outputs). Cases grouped by mechanism: the output writer,
the artifact and checkpoint validators, run folders and caches, media that is not what it seems, processes and
machine bounds, the Python API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from faultlib import CLIP, _hash

from cfnsr.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--config", "cfn-sr-tiny"]
CLI = [sys.executable, "-c", "from cfnsr.cli import main; main()"]


def said(message: str, output: str) -> bool:
    """``message`` (alternatives separated by |, each literal) is in ``output``."""
    return any(m in output for m in message.split("|"))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0


def _fill(folder: Path) -> None:
    for name, block in (("filler", 65536), ("filler2", 512)):
        with contextlib.suppress(OSError), open(folder / name, "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * block)


def _clip_variant(src: Path, dst: Path, audio_fn, truncate: float | None = None) -> Path:
    """A copy of clip ``src`` (RAVDESS layout, its landmark CSV beside it) with its audio changed by ``audio_fn``,
    or written with its index first and cut to ``truncate`` of its bytes."""
    from cfnsr.data.features import decode_audio, decode_frames
    from cfnsr.data.synth import write_clip

    got, total = decode_frames(src, set(range(10_000)))
    audio, rate = decode_audio(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_clip(dst, [got[i] for i in range(total)], audio_fn(audio, rate), rate=rate, faststart=truncate is not None)
    if truncate is not None:
        data = dst.read_bytes()
        dst.write_bytes(data[: int(len(data) * truncate)])
    lm = next(src.parent.parent.rglob(src.stem + ".csv"))
    shutil.copy(lm, dst.parent / lm.name)
    return dst


def _onnx_variant(src: Path, dst: Path, **props) -> Path:
    """A copy of the ONNX file ``src`` with metadata entries changed (a value of None removes the entry)."""
    import onnx

    m = onnx.load(str(src))
    entries = {p.key: p.value for p in m.metadata_props}
    for k, v in props.items():
        key = "cfnsr." + k
        if v is None:
            entries.pop(key, None)
        else:
            entries[key] = v if isinstance(v, str) else json.dumps(v)
    del m.metadata_props[:]
    for k, v in entries.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


@pytest.fixture(scope="module")
def bad(tmp_path_factory, trained_tiny, fp32_onnx, tiny_cache, synth_raw):
    """The bad inputs of every mechanism, made once."""
    import onnx
    from onnx import TensorProto, helper

    from cfnsr.data.cache import FeatureCache
    from cfnsr.model import get_config
    from cfnsr.train.trainer import TrainConfig, start_run

    d = tmp_path_factory.mktemp("construction")
    c = {"d": d, "ckpt": trained_tiny, "onnx": fp32_onnx.path, "cache": tiny_cache.root, "raw": synth_raw,
         "clip": synth_raw / CLIP}
    # -- outputs
    (d / "o").mkdir()
    (d / "o" / "notes.md").write_text("my notes")
    (d / "o" / "notes.png").write_bytes(b"my picture")
    c["notes"] = d / "o"
    c["best_pt"] = d / "best.pt"
    shutil.copy(trained_tiny, c["best_pt"])
    c["full"] = d / "full"
    c["has_tmpfs"] = _mount_tmpfs(c["full"], "2m")
    if c["has_tmpfs"]:
        _fill(c["full"])
    # -- ONNX metadata that is not what a cfnsr artifact says about itself
    meta = {p.key: p.value for p in onnx.load(str(fp32_onnx.path), load_external_data=False).metadata_props}
    pre = json.loads(meta["cfnsr.preprocess"])
    inputs = json.loads(meta["cfnsr.inputs"])
    wrong = [dict(t, shape=[t["shape"][0], 3, 20, 63, 64]) if t["name"] == "video" else t for t in inputs]
    for name, props in {"schema99": {"schema": 99}, "labels3": {"labels": ["a", "b", "c"]},
                        "noinputs": {"inputs": None}, "frames0": {"preprocess": {**pre, "frames": 0}},
                        "upper": {"precision": "FP32"}, "mismatch": {"inputs": wrong}}.items():
        c[f"onnx_{name}"] = _onnx_variant(fp32_onnx.path, d / f"{name}.onnx", **props)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    other = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    c["onnx_unrelated"] = d / "unrelated.onnx"
    onnx.save(other, str(c["onnx_unrelated"]))
    # -- pt2 packages that are not whole
    c["pt2_nometa"] = d / "nometa.pt2"
    with zipfile.ZipFile(c["pt2_nometa"], "w") as z:
        z.writestr("model/data/aotinductor/model/m.so", b"\x7fELF")
    c["pt2_nomember"] = d / "nomember.pt2"
    with zipfile.ZipFile(c["pt2_nomember"], "w") as z:
        z.writestr("model/data/aotinductor/model/m_metadata.json", json.dumps(meta))
    # -- checkpoints
    ck = torch.load(trained_tiny, weights_only=True)
    sd = ck["state_dict"]
    first = next(k for k, v in sd.items() if v.is_floating_point())
    for name, value in {"no_sd": {k: v for k, v in ck.items() if k != "state_dict"},
                        "str_sd": {**ck, "state_dict": {**sd, first: "hello"}},
                        "fv_str": {**ck, "format_version": "1"},
                        "split_part": {**ck, "split": {"protocol": "honest", "fold": 1}},
                        "int_sd": {**ck, "state_dict": {k: v.to(torch.int64) if v.is_floating_point() else v
                                                        for k, v in sd.items()}}}.items():
        c[f"ck_{name}"] = d / f"{name}.pt"
        torch.save(value, c[f"ck_{name}"])
    # -- run folders
    tc = TrainConfig(epochs=1, folds=4, workers=0)
    cache = FeatureCache.open(tiny_cache.root)
    c["run_empty"] = d / "run_empty"
    c["run_empty"].mkdir()
    (c["run_empty"] / "run.json").write_text("")
    c["run_last"] = d / "run_last"
    start_run(c["run_last"], cache, get_config("cfn-sr-tiny"), tc, resume=False, force=False)
    (c["run_last"] / "fold1").mkdir()
    shutil.copy(trained_tiny, c["run_last"] / "fold1" / "last.pt")
    c["run_notes"] = d / "run_notes"
    for sub in ("fold1", "folders_of_notes"):
        (c["run_notes"] / sub).mkdir(parents=True)
        (c["run_notes"] / sub / "a.txt").write_text(sub)
    (c["run_notes"] / "run.json").write_text("{}")
    c["nan_pt"] = d / "nan.pt"
    torch.save({**ck, "state_dict": {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                     for k, v in sd.items()}}, c["nan_pt"])
    # -- caches
    c["spec_empty"] = d / "spec_empty"
    c["spec_empty"].mkdir()
    (c["spec_empty"] / "spec.json").write_text("")
    # -- media
    media = d / "media" / "Actor_01"
    c["short_audio"] = _clip_variant(c["clip"], media / "01-01-05-02-01-01-01.mp4", lambda a, r: a[: int(0.1 * r)])
    c["silent"] = _clip_variant(c["clip"], d / "silent" / "Actor_01" / "01-01-05-02-01-01-01.mp4",
                                lambda a, r: np.zeros_like(a))
    c["truncated"] = _clip_variant(c["clip"], d / "trunc" / "Actor_01" / "01-01-05-02-01-01-01.mp4",
                                   lambda a, r: a, truncate=0.6)
    c["upper_raw"] = d / "upper_raw"
    (c["upper_raw"] / "Actor_01").mkdir(parents=True)
    os.link(c["clip"], c["upper_raw"] / "Actor_01" / (Path(CLIP).stem + ".MP4"))
    c["utf8"] = Path(os.fsdecode(os.fsencode(str(d)) + b"/latin/clip-\xe9t\xe9.mp4"))
    c["utf8"].parent.mkdir()
    os.link(c["clip"], c["utf8"])
    c["loops"] = d / "loops"
    c["loops"].mkdir()
    os.symlink("loop.mp4", c["loops"] / "loop.mp4")
    os.link(c["clip"], c["loops"] / "real.mp4")
    c["novideo"] = d / "novideo"
    c["novideo"].mkdir()
    (c["novideo"] / "notes.txt").write_text("no video here")
    yield c
    if c["has_tmpfs"]:
        subprocess.run(["umount", "-l", str(c["full"])], check=False)


@pytest.fixture
def clean_tmp(tmp_path, monkeypatch):
    """A private TMPDIR for one case: whatever is left there at the end is a leftover."""
    t = tmp_path / "TMPDIR"
    t.mkdir()
    monkeypatch.setenv("TMPDIR", str(t))
    monkeypatch.setattr(tempfile, "tempdir", str(t))
    return t


def tmp_leftovers(folder: Path) -> list[str]:
    """What a command left in TMPDIR. Not counted: caches other packages keep there by design, whoever runs them:
    ONNX Runtime's ``.ses`` (written when it is imported) and torch's ``torchinductor_<user>`` compile cache."""
    return sorted(n for n in os.listdir(folder) if n != ".ses" and not n.startswith("torchinductor_"))


def _half_written(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob(".cfnsr-*")] if folder.is_dir() else []


def run_clean(bad, args, message, keep=(), code=None):
    """Run the CLI; assert the clean outcome of a refusal."""
    args = [str(a) for a in args]
    before = {k: _hash(Path(bad[k])) for k in keep}
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 if code is None else res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert said(message, res.output), res.output
    errors = [line for line in res.output.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, res.output
    assert {k: _hash(Path(bad[k])) for k in keep} == before, "an input file changed"
    assert _half_written(bad["d"]) == [], "an output was left half-written"
    return res


def _pred(c, model_key, **kw):
    return ["predict", c["clip"], "--model", c[model_key]]


# (id, args from the corpus, what the message says, the corpus keys whose files must not change)
CASES = [
    # -- 1. the output writer ------------------------------------------------------------------------------------
    ("predict-jsonl-and-csv-one-path", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--jsonl",
                                                  c["d"] / "o" / "x", "--csv", c["d"] / "o" / "x"],
     "--jsonl and --csv both write", ["clip", "onnx", "notes"]),
    ("predict-jsonl-dev-stdout", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--jsonl", "/dev/stdout"],
     "not a regular file", ["clip", "onnx"]),
    ("predict-csv-char-device", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--csv", "/dev/null"],
     "is a special file, not a regular file", ["clip"]),
    ("validate-json-char-device", lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["cache"],
                                             "--json", "/dev/null"], "not a regular file", ["onnx", "ckpt"]),
    ("export-output-under-a-file", lambda c: ["export", c["best_pt"], "-o", c["best_pt"] / "m.onnx"],
     "best.pt is a file, not a folder", ["best_pt"]),
    ("export-251-byte-name", lambda c: ["export", c["ckpt"], "-o", c["d"] / ("n" * 246 + ".onnx")],
     "bytes long and the file system allows 255", ["ckpt"]),
    ("bench-json-under-a-file", lambda c: ["bench", c["onnx"], "--json", c["best_pt"] / "b.json"],
     "is a file, not a folder", ["onnx", "best_pt"]),
    ("bench-json-is-a-folder", lambda c: ["bench", c["onnx"], "--json", c["notes"]], "is a directory|is a folder",
     ["onnx", "notes"]),
    ("evaluate-out-is-a-file", lambda c: ["evaluate", c["ckpt"], c["cache"], "-o", c["best_pt"]],
     "is a file|is not a folder", ["ckpt", "best_pt"]),
    ("import-original-output-char-device", lambda c: ["import-original", "--fused", c["ckpt"], "-o", "/dev/null",
                                                      "--force"], "not a regular file", ["ckpt"]),
    ("predict-save-inputs-is-the-clip", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--save-inputs",
                                                   c["clip"]], "is a file|is not a folder", ["clip"]),
    ("synth-seed-negative", lambda c: ["synth-ravdess", c["d"] / "s1", "--seed", "-1"], "--seed", []),
    ("demo-actors-2", lambda c: ["demo", c["d"] / "demo", "--actors", "2"], "--actors", []),
    ("summary-on-a-folder", lambda c: ["summary", c["d"], "--no-flops"], "is a folder", []),
    # -- 2. validators: artifacts -----------------------------------------------------------------------------------
    ("predict-onnx-schema-99", lambda c: _pred(c, "onnx_schema99"), "cfnsr.schema 99 is newer than this cfnsr reads",
     ["onnx_schema99"]),
    ("predict-onnx-three-labels", lambda c: _pred(c, "onnx_labels3"), "cfnsr.labels names 3 classes and the logits "
     "have 8", ["onnx_labels3"]),
    ("predict-onnx-no-inputs", lambda c: _pred(c, "onnx_noinputs"), "no cfnsr.inputs entry", ["onnx_noinputs"]),
    ("predict-onnx-frames-0", lambda c: _pred(c, "onnx_frames0"), "preprocess frames is 0; expected a positive "
     "integer", ["onnx_frames0"]),
    ("validate-onnx-precision-upper", lambda c: ["validate", c["onnx_upper"], "--reference", c["ckpt"], "--data",
                                                 c["cache"]], "cfnsr.precision 'FP32' is not one of",
     ["onnx_upper"]),
    ("predict-onnx-inputs-not-the-graph", lambda c: _pred(c, "onnx_mismatch"), "input 'video': the graph takes shape",
     ["onnx_mismatch"]),
    ("predict-unrelated-onnx", lambda c: _pred(c, "onnx_unrelated"), "no cfnsr metadata", ["onnx_unrelated"]),
    ("bench-onnx-schema-99", lambda c: ["bench", c["onnx_schema99"], "--json", c["d"] / "b99.json"],
     "newer than this cfnsr reads", ["onnx_schema99"]),
    ("build-onnx-no-inputs", lambda c: ["build", c["onnx_noinputs"], "-o", c["d"] / "x.engine"],
     "no cfnsr.inputs entry", ["onnx_noinputs"]),
    ("predict-pt2-no-metadata", lambda c: _pred(c, "pt2_nometa"), "without AOTInductor metadata", ["pt2_nometa"]),
    ("predict-pt2-missing-member", lambda c: _pred(c, "pt2_nomember"), "lacks its compiled model", ["pt2_nomember"]),
    # -- 2. validators: checkpoints -------------------------------------------------------------------------------
    ("export-ckpt-no-state-dict", lambda c: ["export", c["ck_no_sd"], "-o", c["d"] / "e1.onnx"],
     "has no state_dict", ["ck_no_sd"]),
    ("export-ckpt-string-in-state-dict", lambda c: ["export", c["ck_str_sd"], "-o", c["d"] / "e2.onnx"],
     "is a str, not a tensor", ["ck_str_sd"]),
    ("export-ckpt-format-version-str", lambda c: ["export", c["ck_fv_str"], "-o", c["d"] / "e3.onnx"],
     "format_version is '1', not an integer", ["ck_fv_str"]),
    ("export-ckpt-incomplete-split", lambda c: ["export", c["ck_split_part"], "-o", c["d"] / "e4.onnx"],
     "invalid split: the entry is incomplete", ["ck_split_part"]),
    ("evaluate-ckpt-incomplete-split", lambda c: ["evaluate", c["ck_split_part"], c["cache"]],
     "invalid split: the entry is incomplete", ["ck_split_part"]),
    ("export-ckpt-int64-weights", lambda c: ["export", c["ck_int_sd"], "-o", c["d"] / "e5.onnx"],
     "weights must be floating-point tensors", ["ck_int_sd"]),
    ("predict-ckpt-int64-weights", lambda c: _pred(c, "ck_int_sd"), "weights must be floating-point",
     ["ck_int_sd"]),
    ("validate-reference-format-version-str", lambda c: ["validate", c["onnx"], "--reference", c["ck_fv_str"],
                                                         "--data", c["cache"]], "not an integer", ["ck_fv_str"]),
    ("summary-ckpt-no-state-dict", lambda c: ["summary", c["ck_no_sd"], "--no-flops"], "has no state_dict",
     ["ck_no_sd"]),
    ("train-init-string-in-state-dict", lambda c: ["train", c["cache"], *TINY, "-o", c["d"] / "r_init", "--folds",
                                                   "4", "--epochs", "1", "--init", c["ck_str_sd"]],
     "is a str, not a tensor", ["ck_str_sd"]),
    # -- 2. run folders and caches --------------------------------------------------------------------------------
    ("train-resume-empty-run-json", lambda c: ["train", c["cache"], *TINY, "-o", c["run_empty"], "--folds", "4",
                                               "--epochs", "1", "--workers", "0", "--resume"],
     "run.json is not a readable run record (empty)", ["run_empty"]),
    ("train-resume-best-over-last", lambda c: ["train", c["cache"], *TINY, "-o", c["run_last"], "--folds", "4",
                                               "--epochs", "1", "--workers", "0", "--resume"],
     "last.pt is not a training state", ["run_last"]),
    ("train-force-checks-before-removing", lambda c: ["train", c["cache"], *TINY, "-o", c["run_notes"], "--folds",
                                                      "4", "--epochs", "1", "--force", "--init", c["nan_pt"]],
     "non-finite weights", ["run_notes"]),
    ("preprocess-empty-spec-json", lambda c: ["preprocess", c["raw"], "-o", c["spec_empty"], *TINY],
     "spec.json is empty", ["spec_empty", "raw"]),
    # -- 3. media -------------------------------------------------------------------------------------------------
    ("predict-strict-short-audio", lambda c: ["predict", c["short_audio"], "--model", c["onnx"], "--strict"],
     "shorter than the window", ["short_audio"]),
    ("predict-strict-silent", lambda c: ["predict", c["silent"], "--model", c["onnx"], "--strict"],
     "the audio is silent", ["silent"]),
    ("predict-strict-truncated", lambda c: ["predict", c["truncated"], "--model", c["onnx"], "--strict"],
     "truncated", ["truncated"]),
    ("predict-glob-without-video", lambda c: ["predict", str(c["novideo"] / "*"), "--model", c["onnx"]],
     "matches no video file", ["novideo"]),
    ("predict-a-symlink-loop", lambda c: ["predict", c["loops"] / "loop.mp4", "--model", c["onnx"]],
     "loop.mp4 is a symlink loop", []),
    # -- 4. machine bounds and option combinations ----------------------------------------------------------------
    ("bench-threads-10000", lambda c: ["bench", c["onnx"], "--threads", "10000"], "--threads", ["onnx"]),
    ("bench-batch-1000000", lambda c: ["bench", c["onnx"], "--batch", "1000000", "--json", c["d"] / "bb.json"],
     "the input buffers alone take", ["onnx"]),
    ("train-batch-size-huge", lambda c: ["train", c["cache"], *TINY, "-o", c["d"] / "r_big", "--folds", "4",
                                         "--batch-size", "100000000"], "the input buffers alone take", []),
    ("preprocess-workers-10000", lambda c: ["preprocess", c["raw"], "-o", c["d"] / "pw", *TINY, "--workers",
                                            "10000"], "worker processes", []),
    ("predict-timeline-hop-1e-12", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--timeline", "--hop",
                                              "1e-12", "--out", c["d"] / "tl"], "shorter than one frame", ["clip"]),
    ("predict-timeline-with-jsonl", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--timeline", "--jsonl",
                                               c["d"] / "t.jsonl"], "does not take --jsonl", ["clip"]),
    ("predict-timeline-with-landmarks", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--timeline",
                                                   "--landmarks", c["d"] / "l.csv"], "does not take --landmarks",
     ["clip"]),
    ("predict-hop-without-timeline", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--hop", "1"],
     "apply to --timeline only", ["clip"]),
    ("predict-timeline-with-strict", lambda c: ["predict", c["clip"], "--model", c["onnx"], "--timeline",
                                                "--strict"], "does not take --strict", ["clip"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fault(case, bad, clean_tmp):
    _, build, message, keep = case
    args = [str(a) for a in build(bad)]
    before = {k: _hash(Path(bad[k])) for k in keep}
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert said(message, res.output), res.output
    assert len([line for line in res.output.splitlines() if "rror:" in line]) == 1, res.output
    assert {k: _hash(Path(bad[k])) for k in keep} == before, "an input file changed"
    assert tmp_leftovers(clean_tmp) == [], "leftovers in TMPDIR"
    assert _half_written(bad["d"]) == [], "an output was left half-written"


# ------------------------------------------------------------------------------------------- every command
# What each command writes, aimed at something that is not a regular file (None: it writes no file). The Outputs
# check refuses it before any work, whatever the command.
OUTPUT_PROBES = {
    "info": None,
    "summary": None,
    "import-original": lambda c: ["import-original", "--fused", c["ckpt"], "-o", "/dev/null", "--force"],
    "synth-ravdess": lambda c: ["synth-ravdess", "/dev/null"],
    "preprocess": lambda c: ["preprocess", c["raw"], "-o", "/dev/null", *TINY],
    "train": lambda c: ["train", c["cache"], *TINY, "-o", "/dev/null", "--folds", "4"],
    "evaluate": lambda c: ["evaluate", c["ckpt"], c["cache"], "-o", "/dev/null"],
    "export": lambda c: ["export", c["ckpt"], "-o", c["fifo_onnx"]],
    "build": lambda c: ["build", c["onnx"], "-o", "/dev/null"],
    "validate": lambda c: ["validate", c["onnx"], "--reference", c["ckpt"], "--data", c["cache"], "--json",
                           "/dev/null"],
    "bench": lambda c: ["bench", c["onnx"], "--json", "/dev/null"],
    "predict": lambda c: ["predict", c["clip"], "--model", c["onnx"], "--csv", "/dev/null"],
    "demo": lambda c: ["demo", "/dev/null"],
    "live": lambda c: ["live", c["clip"], "--model", c["onnx"], "--fast", "--jsonl", "/dev/null"],
}

# Every command that opens a checkpoint or an artifact, given one its validator refuses (None: it opens none).
VALIDATOR_PROBES = {
    "info": None,
    "synth-ravdess": None,
    "preprocess": None,
    "demo": None,  # it makes its own
    "import-original": None,  # it reads the published code's checkpoints, which are not cfnsr's
    "summary": lambda c: ["summary", c["ck_fv_str"], "--no-flops"],
    "train": lambda c: ["train", c["cache"], *TINY, "-o", c["d"] / "r_v", "--folds", "4", "--init", c["ck_fv_str"]],
    "evaluate": lambda c: ["evaluate", c["ck_fv_str"], c["cache"]],
    "export": lambda c: ["export", c["ck_fv_str"], "-o", c["d"] / "v.onnx"],
    "build": lambda c: ["build", c["onnx_schema99"], "-o", c["d"] / "v.engine"],
    "validate": lambda c: ["validate", c["onnx_schema99"], "--reference", c["ckpt"], "--data", c["cache"]],
    "bench": lambda c: ["bench", c["onnx"], "--reference", c["ck_fv_str"], "--json", c["d"] / "v.json"],
    "predict": lambda c: ["predict", c["clip"], "--model", c["ck_fv_str"]],
    "live": lambda c: ["live", c["clip"], "--model", c["ck_fv_str"], "--fast"],
}


def test_every_command_is_listed():
    assert set(OUTPUT_PROBES) == set(main.commands) == set(VALIDATOR_PROBES)


@pytest.mark.parametrize("command", sorted(k for k, v in OUTPUT_PROBES.items() if v))
def test_every_command_checks_its_outputs_before_work(command, bad, clean_tmp):
    if "fifo_onnx" not in bad:
        bad["fifo_onnx"] = bad["d"] / "fifo.onnx"
        os.mkfifo(bad["fifo_onnx"])
    run_clean(bad, OUTPUT_PROBES[command](bad), "not a regular file|is not a folder")


@pytest.mark.parametrize("command", sorted(k for k, v in VALIDATOR_PROBES.items() if v))
def test_every_command_validates_what_it_opens(command, bad, clean_tmp):
    run_clean(bad, VALIDATOR_PROBES[command](bad), "format_version is '1', not an integer|cfnsr.schema 99 is newer",
              ["ck_fv_str", "onnx_schema99"])


# ------------------------------------------------------------------------------------------- outcomes that succeed
def test_bench_siblings_keep_the_users_notes(bad, clean_tmp):
    before = _hash(bad["notes"] / "notes.md"), _hash(bad["notes"] / "notes.png")
    res = CliRunner().invoke(main, ["bench", str(bad["onnx"]), "--json", str(bad["notes"] / "notes.v2.json"),
                                    "--iters", "1", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    assert (_hash(bad["notes"] / "notes.md"), _hash(bad["notes"] / "notes.png")) == before
    assert all((bad["notes"] / f"notes.v2.{s}").is_file() for s in ("json", "md", "png"))


def test_train_force_removes_only_the_folds_it_writes(bad, tmp_path):
    from cfnsr.data.cache import FeatureCache
    from cfnsr.model import get_config
    from cfnsr.train.trainer import TrainConfig, start_run

    run = tmp_path / "run"
    for sub in ("fold1", "fold2", "folders_of_notes"):
        (run / sub).mkdir(parents=True)
        (run / sub / "a.txt").write_text(sub)
    (run / "run.json").write_text("{}")
    start_run(run, FeatureCache.open(bad["cache"]), get_config("cfn-sr-tiny"), TrainConfig(folds=4), resume=False,
              force=True, folds_to_write=[1])
    assert not (run / "fold1").exists() and (run / "fold2" / "a.txt").is_file()
    assert (run / "folders_of_notes" / "a.txt").read_text() == "folders_of_notes"
    assert (bad["run_notes"] / "fold1" / "a.txt").is_file()  # the refused --force case removed nothing


def test_train_cuda_on_a_cpu_machine_writes_no_run_folder(bad, clean_tmp):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    out = bad["d"] / "r_cuda"
    res = CliRunner().invoke(main, ["train", str(bad["cache"]), *TINY, "-o", str(out), "--folds", "4",
                                    "--device", "cuda"])
    assert res.exit_code != 0 and "sees no CUDA GPU" in res.output, res.output
    assert not out.exists()


def test_media_that_is_not_what_it_seems_is_said_in_json_and_csv(bad, tmp_path):
    csv_path = tmp_path / "p.csv"
    res = CliRunner().invoke(main, ["predict", str(bad["short_audio"]), str(bad["silent"]), str(bad["truncated"]),
                                    str(bad["clip"]), "--model", str(bad["onnx"]), "--jsonl", str(tmp_path / "p.jsonl"),
                                    "--csv", str(csv_path)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert "shorter than the window" in " ".join(rows[0]["warnings"])
    assert "silent" in " ".join(rows[1]["warnings"])
    assert "truncated" in " ".join(rows[2]["warnings"])
    assert rows[3]["warnings"] == []
    assert res.output.count("warning:") >= 3
    import csv

    table = list(csv.DictReader(csv_path.open()))
    assert "silent" in table[1]["warnings"] and table[3]["warnings"] == ""


def test_preprocess_takes_upper_case_extensions_and_strict_fails_a_silent_clip(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(bad["d"])  # a relative raw folder: the cache records where it is, for any working directory
    res = CliRunner().invoke(main, ["preprocess", "upper_raw", "-o", str(tmp_path / "c1"), *TINY, "--workers", "1",
                                    "--allow-center-crop"])
    assert res.exit_code == 0 and "1 clips cached" in res.output, res.output
    monkeypatch.chdir(tmp_path)
    from cfnsr.data.cache import FeatureCache

    cache = FeatureCache.open(tmp_path / "c1")
    assert cache.raw_dir.is_absolute() and cache.source(cache.clips[0]).is_file()
    res = CliRunner().invoke(main, ["preprocess", str(bad["silent"].parent.parent), "-o", str(tmp_path / "c2"),
                                    *TINY, "--workers", "1", "--strict"])
    assert "silent" in res.output and "1 clips failed" in res.output, res.output


def test_symlink_loops_are_skipped_with_a_note(bad):
    res = CliRunner().invoke(main, ["predict", str(bad["loops"]), "--model", str(bad["onnx"]), "--json"])
    assert res.exit_code == 0, res.output
    assert "note: skipped" in res.output and "loop.mp4" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("lang", ["C.UTF-8", "C"])
def test_names_that_are_not_utf8_are_written_and_echoed(bad, tmp_path, lang):
    out = tmp_path / "p.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANG": lang, "LC_ALL": lang}
    done = subprocess.run([*CLI, "predict", os.fsencode(bad["utf8"]), str(bad["clip"]), "--model", str(bad["onnx"]),
                           "--csv", str(out), "--allow-center-crop"], capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr
    assert b"clip-\xe9t\xe9.mp4" in out.read_bytes()  # the name's own bytes, as the file system has them
    assert b"clip-\\xe9t\\xe9.mp4: " in done.stdout  # echoed, its bytes escaped


def test_an_output_on_a_full_disk_is_refused_before_work(bad, clean_tmp):
    if not bad["has_tmpfs"]:
        pytest.skip("needs root to mount a tmpfs")
    res = run_clean(bad, ["validate", bad["onnx"], "--reference", bad["ckpt"], "--data", bad["cache"], "--json",
                          bad["full"] / "v.json"], "no space left on the device (the disk is full", ["onnx"])
    assert "v.json" in res.output
    run_clean(bad, ["synth-ravdess", bad["full"] / "s", "--actors", "1"], "the disk is full")
    run_clean(bad, ["preprocess", bad["raw"], "-o", bad["full"] / "cache", *TINY], "the disk is full", ["raw"])


def test_a_full_tmpdir_is_said(bad, monkeypatch):
    if not bad["has_tmpfs"]:
        pytest.skip("needs root to mount a tmpfs")
    monkeypatch.setenv("TMPDIR", str(bad["full"]))
    monkeypatch.setattr(tempfile, "tempdir", str(bad["full"]))
    before = set(os.listdir(bad["full"]))
    run_clean(bad, ["export", bad["ckpt"], "-o", bad["d"] / "t.onnx"], "(TMPDIR)", ["ckpt"])
    assert set(os.listdir(bad["full"])) == before and not (bad["d"] / "t.onnx").exists()


# ------------------------------------------------------------------------------------------- the Python API
def test_recognizer_checks_its_arguments_as_the_cli_does(bad):
    from cfnsr.data.features import decode_audio, decode_frames
    from cfnsr.engines import InputError
    from cfnsr.engines.recognizer import Recognizer
    from cfnsr.errors import DataError

    got, total = decode_frames(bad["clip"], set(range(10_000)))
    frames = np.stack([got[i] for i in range(total)])
    audio, rate = decode_audio(bad["clip"])
    pcm16 = np.round(np.clip(audio, -1, 1 - 2 ** -15) * 32768).astype(np.int16)
    with Recognizer(bad["onnx"], allow_center_crop=True) as rec:
        ref = rec.predict(frames, audio, rate)
        scaled = rec.predict(frames, pcm16, rate)  # int16 PCM is scaled as decode_audio scales it
        assert scaled.emotion == ref.emotion
        assert max(abs(scaled.probabilities[k] - ref.probabilities[k]) for k in ref.probabilities) < 1e-2
        for value in ("44100", -1, 0, float("nan"), True, None):
            with pytest.raises(InputError, match="sample_rate: expected a positive number of Hz"):
                rec.predict(frames, audio, value)
        with pytest.raises(InputError, match="pcm: expected float or integer PCM"):
            rec.predict(frames, audio.astype(np.complex64), rate)
        with pytest.raises(DataError, match="path: .* is a folder, not a video file"):
            rec.predict_file(bad["clip"].parent)


# ------------------------------------------------------------------------------------------- processes
def _cfnsr(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})})


def _descendants_alive(marker: str) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                zombie = (p / "stat").read_text().split(")")[1].split()[0] == "Z"
                if marker.encode() in (p / "cmdline").read_bytes() and not zombie:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_preprocess_killed_leaves_no_orphans_and_a_rerun_finishes(bad, tmp_path, sig):
    raw = tmp_path / "raw" / "Actor_01"
    raw.mkdir(parents=True)
    for clip in sorted((bad["raw"] / "Actor_01").glob("*.mp4"))[:12]:
        os.link(clip, raw / clip.name)
    out = tmp_path / "cache-under-test"
    proc = _cfnsr("preprocess", raw.parent, "-o", out, *TINY, "--workers", "2")
    end = time.time() + 240
    while time.time() < end and not ((out / "progress.jsonl").is_file() and (out / "progress.jsonl").read_text()):
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    end = time.time() + 20
    while _descendants_alive(str(out)) and time.time() < end:
        time.sleep(0.1)
    assert _descendants_alive(str(out)) == [], "workers outlived the killed preprocess"
    res = CliRunner().invoke(main, ["preprocess", str(raw.parent), "-o", str(out), *TINY, "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "12 clips cached" in res.output
    if sig == signal.SIGKILL:
        assert "took over the lock" in res.output
    assert _half_written(out) == []


def test_export_killed_midway_leaves_nothing_and_a_rerun_succeeds(bad, tmp_path, monkeypatch):
    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()
    out = tmp_path / "m.onnx"
    proc = _cfnsr("export", bad["ckpt"], "-o", out, "--format", "onnx", env={"TMPDIR": str(tmpdir)})
    lines = []
    for line in iter(proc.stdout.readline, b""):
        lines.append(line)
        if b"exporting" in line:
            time.sleep(3)
            break
    proc.kill()
    proc.wait(timeout=60)
    assert not out.exists() and _half_written(tmp_path) == []
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    res = CliRunner().invoke(main, ["export", str(bad["ckpt"]), "-o", str(out), "--format", "onnx"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and tmp_leftovers(tmpdir) == [], "the killed run's work folder was not swept"


def test_dash_is_stdout_for_text_outputs(bad):
    res = CliRunner().invoke(main, ["predict", str(bad["clip"]), "--model", str(bad["onnx"]), "--jsonl", "-"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["video"] == str(bad["clip"]) and "probabilities" in row
    res = CliRunner().invoke(main, ["predict", str(bad["clip"]), "--model", str(bad["onnx"]), "--jsonl", "-",
                                    "--csv", "-"])
    assert res.exit_code != 0 and "--jsonl and --csv both write to stdout" in res.output
