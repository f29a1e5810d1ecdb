"""cfnsr.Recognizer and `cfnsr predict` on many clips and on a timeline."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.engines import InputError
from cfnsr.engines.recognizer import STAGES, Recognizer

HELD_OUT = [f"Actor_0{a}/01-01-0{e}-0{1 if e == 1 else 2}-01-01-0{a}.mp4" for a in (1, 2) for e in range(1, 9)]


def test_media_and_features_artifacts_agree(synth_raw, media_onnx, fp32_onnx):
    """The same clips through a features artifact (MFCC in Python) and a media artifact (MFCC in the graph)."""
    clips = [synth_raw / c for c in HELD_OUT]
    with Recognizer(media_onnx.path) as media, Recognizer(fp32_onnx.path) as feats:
        assert media.kind == "media" and feats.kind == "features"
        for clip in clips:
            a, b = media.predict_file(clip), feats.predict_file(clip)
            assert a.emotion == b.emotion, clip
            assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-3
            assert set(a.timings_ms) == {*STAGES, "total"}
            # features: the PCM cut for a media artifact; librosa's MFCC, in Python, for a features artifact
            assert a.timings_ms["features"] < b.timings_ms["features"]


def test_predict_from_frames_and_audio_at_any_rate(synth_raw, media_onnx):
    from cfnsr.data.features import decode_audio, decode_frames, resample

    clip = synth_raw / HELD_OUT[4]
    got, total = decode_frames(clip, set(range(10_000)))
    frames = np.stack([got[i] for i in range(total)])
    audio, rate = decode_audio(clip)
    with Recognizer(media_onnx.path) as rec:
        ref = rec.predict_file(clip)
        at_16k = rec.predict(frames, resample(audio, rate, 16000), 16000)
        same = rec.predict(frames, audio, rate)
        assert same.emotion == ref.emotion and at_16k.emotion == ref.emotion
        boxes = np.tile([[10, 10, 50, 60]], (total, 1))
        assert rec.predict(frames, audio, rate, boxes=boxes).crop == "landmarks"
        bad = [(frames.astype(np.float32), audio, rate, "expected uint8"), (frames[0], audio, rate, "expected uint8"),
               (frames, audio[:0], rate, "expected mono samples"),
               (frames, audio, 0, "sample_rate: expected a positive number"),
               (frames, np.full_like(audio, np.nan), rate, "non-finite"),
               (frames, audio, rate, "boxes: expected")]
        for f, a, r, msg in bad:
            with pytest.raises(InputError, match=msg):
                rec.predict(f, a, r, boxes=np.zeros((2, 4)) if msg.startswith("boxes") else None)


def test_artifacts_refuse_the_other_kind_of_input(media_onnx, fp32_onnx):
    from cfnsr.engines import load

    video, audio = np.zeros((1, 3, 20, 64, 64), np.float32), np.zeros((1, 13, 212), np.float32)
    frames, pcm = np.zeros((1, 20, 64, 64, 3), np.uint8), np.zeros((1, 108045), np.float32)
    with load(media_onnx.path) as media, load(fp32_onnx.path) as feats:
        with pytest.raises(InputError, match=r"input 'frames': got shape \(1, 3, 20, 64, 64\)"):
            media(video, audio)
        with pytest.raises(InputError, match=r"input 'video': got shape \(1, 20, 64, 64, 3\)"):
            feats(frames, pcm)
        frames_bad = frames.copy().astype(np.float32)
        with pytest.raises(InputError, match="got dtype float32, expected uint8"):
            media(frames_bad, pcm)


def test_predict_many_clips_writes_jsonl_and_csv(synth_raw, media_onnx, tmp_path):
    res = CliRunner().invoke(main, ["predict", str(synth_raw / "Actor_01"), str(synth_raw / "Actor_02" / "*-01-02.mp4"),
                                    "--model", str(media_onnx.path), "--jsonl", str(tmp_path / "p.jsonl"),
                                    "--csv", str(tmp_path / "p.csv"), "--timings"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 60 + 30 and all("emotion" in r for r in rows)  # a folder and a glob
    assert (tmp_path / "p.csv").read_text().count("\n") == len(rows) + 1
    assert "timings (ms): decode" in res.output


def test_timeline_writes_csv_and_png(synth_raw, media_onnx, tmp_path):
    clip = synth_raw / HELD_OUT[4]
    res = CliRunner().invoke(main, ["predict", str(clip), "--model", str(media_onnx.path), "--timeline",
                                    "--hop", "0.25", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    csv_text = (tmp_path / f"{clip.stem}.timeline.csv").read_text().splitlines()
    assert csv_text[0].startswith("window,start_s,end_s,emotion,crop,face_lost,") and "p_neutral" in csv_text[0]
    assert len(csv_text) >= 4  # a 3.3 s clip: windows of 2.45 s every 0.25 s
    png = (tmp_path / f"{clip.stem}.timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_media_prediction_needs_no_librosa_or_numba(synth_raw, media_onnx):
    code = ("import sys; from cfnsr.engines.recognizer import Recognizer; "
            f"r = Recognizer({str(media_onnx.path)!r}); p = r.predict_file({str(synth_raw / HELD_OUT[4])!r}); "
            "print(p.emotion, 'librosa' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1:] == ["False", "False"], out.stdout


def test_pcm_and_sample_rate_are_checked_before_any_model_runs():
    from cfnsr.engines.recognizer import as_pcm, check_rate

    pcm16 = np.array([-32768, 0, 16384, 32767], np.int16)
    assert np.allclose(as_pcm(pcm16), [-1.0, 0.0, 0.5, 32767 / 32768])
    assert np.allclose(as_pcm(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128])
    assert as_pcm([0.5, -0.5]).dtype == np.float32
    for bad, msg in ((np.zeros(4, np.uint16), "unsigned uint16"), (np.array(["a"]), "dtype <U1"),
                     (np.zeros((2, 4), np.float32), "mono samples"), (np.zeros(0, np.float32), "mono samples")):
        with pytest.raises(InputError, match=msg):
            as_pcm(bad)
    assert check_rate(16000) == 16000 and check_rate(22050.0) == 22050.0 and check_rate(np.int64(8000)) == 8000
    for bad in ("44100", 0, -1, float("inf"), float("nan"), True, None, [44100]):
        with pytest.raises(InputError, match="sample_rate: expected a positive number of Hz"):
            check_rate(bad)


def test_preprocess_and_the_recognizer_follow_one_face_policy(tmp_path, fp32_onnx):
    """``find_faces``: landmarks, else OpenCV's Haar detector, else the frame centre only when the caller allows it.
    A faceless clip is refused by preprocessing (reported and skipped) and by the Recognizer alike, with the same
    account of what was tried; both take its centre when allowed, and say so."""
    from cfnsr.data.cache import preprocess
    from cfnsr.data.features import extract_clip
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.synth import AUDIO_RATE, FPS, HEIGHT, WIDTH, write_clip
    from cfnsr.errors import DataError

    clip = tmp_path / "raw" / "Actor_01" / "01-01-03-02-01-01-01.mp4"  # RAVDESS layout, no landmark file, no face
    clip.parent.mkdir(parents=True)
    t = np.arange(int(3.3 * AUDIO_RATE)) / AUDIO_RATE
    write_clip(clip, [np.full((HEIGHT, WIDTH, 3), 90, np.uint8)] * int(3.3 * FPS),
               (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    tried = r"no face found in .*01-01-03-02-01-01-01.mp4: tried a landmark file \(none found\) and OpenCV's Haar"
    with Recognizer(fp32_onnx.path, device="cpu") as rec:
        spec = rec.spec
        with pytest.raises(DataError, match=tried + ".*--allow-center-crop"):
            rec.predict_file(clip)
    with Recognizer(fp32_onnx.path, device="cpu", allow_center_crop=True) as rec:
        assert rec.predict_file(clip).crop == "center"

    spec = PreprocessSpec.from_dict(spec.to_dict())
    with pytest.raises(DataError, match=tried + ".*--allow-center-crop"):
        extract_clip(clip, spec)
    assert extract_clip(clip, spec, allow_center_crop=True).crop_method == "center"
    assert extract_clip(clip, spec, use_detector=False).crop_method == "center"  # --no-detector asks for the centre
    quiet = {"progress": False, "log": lambda *a: None}
    refused = preprocess(tmp_path / "raw", tmp_path / "refused", spec, **quiet)
    assert refused["counts"]["clips"] == 0 and "--allow-center-crop" in refused["failures"][0]["error"]
    allowed = preprocess(tmp_path / "raw", tmp_path / "allowed", spec, allow_center_crop=True, **quiet)
    assert allowed["counts"]["per_crop"] == {"center": 1} and not allowed["failures"]
