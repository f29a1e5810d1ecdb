import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cfnsr.data.features import extract_clip, frame_indices, landmark_boxes, mfcc_features, read_audio
from cfnsr.data.ravdess import find_landmarks, parse_name, read_landmarks
from cfnsr.data.spec import PreprocessSpec
from cfnsr.data.synth import AUDIO_RATE, FPS, HEIGHT, WIDTH, write_clip
from cfnsr.errors import DataError

SPEC = PreprocessSpec(frames=20, image_size=96)
CLIP = "Actor_03/01-01-05-02-01-02-03.mp4"


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_features_have_the_spec_shapes(synth_raw):
    path = synth_raw / CLIP
    f = extract_clip(path, SPEC, find_landmarks(synth_raw, parse_name(path)))
    assert f.frames.shape == (20, 96, 96, 3) and f.frames.dtype == np.uint8
    assert f.mfcc.shape == (13, 212) and f.mfcc.dtype == np.float32
    assert f.crop_method == "landmarks" and not f.audio_padded
    paper = PreprocessSpec()
    f = extract_clip(path, paper, find_landmarks(synth_raw, parse_name(path)))
    assert f.frames.shape == (30, 224, 224, 3)


def test_landmark_crop_lands_on_the_face(synth_raw):
    truth = json.loads((synth_raw / "truth.json").read_text())["clips"]["01-01-05-02-01-02-03"]["face_boxes"]
    lm = read_landmarks(find_landmarks(synth_raw, parse_name(CLIP)))
    idx = frame_indices(len(truth), 20)
    boxes = landmark_boxes(lm, idx, len(truth))
    for i, box in zip(idx, boxes):
        assert _iou(box, truth[i]) > 0.95
    # And the pixels: the crop is mostly face (skin), where a centre crop of the frame is mostly backdrop.
    f = extract_clip(synth_raw / CLIP, SPEC, find_landmarks(synth_raw, parse_name(CLIP)))
    centre = extract_clip(synth_raw / CLIP, SPEC, None, use_detector=False)
    assert centre.crop_method == "center"
    from cfnsr.data.synth import make_actor

    skin = np.asarray(make_actor(3, 0).skin, dtype=np.float32)

    def skin_fraction(frames):
        return float((np.abs(frames.astype(np.float32) - skin).max(axis=-1) < 30).mean())

    assert skin_fraction(f.frames) > 0.6 > skin_fraction(centre.frames)


def test_haar_detector_finds_the_face_without_landmarks(synth_raw):
    from cfnsr.data.features import haar_boxes, read_video_frames

    truth = json.loads((synth_raw / "truth.json").read_text())["clips"]["01-01-05-02-01-02-03"]["face_boxes"]
    frames, n = read_video_frames(synth_raw / CLIP, 20)
    boxes = haar_boxes(frames)
    assert boxes is not None
    idx = frame_indices(n, 20)
    assert np.mean([_iou(b, truth[i]) for b, i in zip(boxes, idx)]) > 0.3
    assert extract_clip(synth_raw / CLIP, SPEC, None).crop_method == "haar"


def test_msaf_compat_crops_from_the_squashed_frame(synth_raw):
    lm = find_landmarks(synth_raw, parse_name(CLIP))
    a = extract_clip(synth_raw / CLIP, SPEC, lm)
    b = extract_clip(synth_raw / CLIP, SPEC.replace(msaf_compat=True), lm)
    assert a.frames.shape == b.frames.shape
    # Same region, different resampling path: close but not identical.
    diff = np.abs(a.frames.astype(int) - b.frames.astype(int)).mean()
    assert 0 < diff < 25


def test_mfcc_of_a_known_tone_matches_librosa(tmp_path):
    import librosa

    spec = PreprocessSpec()
    tone = librosa.tone(440.0, sr=spec.sample_rate, duration=3.3).astype(np.float32) * 0.5
    ours, padded = mfcc_features(tone, spec)
    start, n = int(0.5 * spec.sample_rate), int(round(2.45 * spec.sample_rate))
    direct = librosa.feature.mfcc(y=tone[start:start + n], sr=spec.sample_rate, n_mfcc=13)
    assert not padded and direct.shape == (13, 212)
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-3)

    # Through a real mp4 (AAC at 48 kHz, resampled to 44.1 kHz): the same features up to codec loss.
    t = np.arange(int(3.3 * AUDIO_RATE)) / AUDIO_RATE
    blank = [np.zeros((HEIGHT, WIDTH, 3), np.uint8)] * int(3.3 * FPS)
    write_clip(tmp_path / "tone.mp4", blank, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    decoded, _ = mfcc_features(read_audio(tmp_path / "tone.mp4", spec.sample_rate), spec)
    # AAC's noise floor lifts the near-silent bands, which moves c0 (overall log energy) by a few percent;
    # the spectral shape (c1..c4) agrees closely.
    np.testing.assert_allclose(decoded[0].mean(), direct[0].mean(), rtol=0.1)
    np.testing.assert_allclose(decoded[1:5].mean(axis=1), direct[1:5].mean(axis=1), rtol=0.05, atol=1.0)
    assert np.corrcoef(decoded.mean(axis=1), direct.mean(axis=1))[0, 1] > 0.99


def test_short_audio_is_padded():
    spec = PreprocessSpec()
    m, padded = mfcc_features(np.zeros(spec.sample_rate, np.float32), spec)
    assert padded and m.shape == (13, 212)


def test_clear_errors_for_bad_clips(tmp_path, video_without_audio):
    with pytest.raises(DataError, match="does not exist"):
        extract_clip(tmp_path / "none.mp4", SPEC)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(DataError, match="cannot open .*bad.mp4 as a video"):
        extract_clip(bad, SPEC)
    with pytest.raises(DataError, match="has no audio track"):
        extract_clip(video_without_audio, SPEC)
    csv = tmp_path / "lm.csv"
    csv.write_text("frame, x_0\n1, 2\n")
    with pytest.raises(DataError, match="lacks OpenFace column 'x_1'"):
        read_landmarks(csv)


def test_truncated_clip_uses_the_frames_that_decode(tmp_path, synth_raw):
    src = synth_raw / CLIP
    cut = tmp_path / "01-01-05-02-01-02-03.mp4"
    shutil.copy(src, cut)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    try:
        f = extract_clip(cut, SPEC, None, use_detector=False)
    except DataError as e:  # acceptable: a clear error naming the file
        assert "01-01-05-02-01-02-03.mp4" in str(e)
    else:
        assert f.frames.shape == (20, 96, 96, 3)


def test_integer_pcm_is_scaled_to_unit_range(speech_wav):
    """A 16-bit track decodes to samples / 32768 (as librosa and soundfile read it), not to raw integers."""
    import wave

    from cfnsr.data.features import decode_audio

    with wave.open(str(speech_wav)) as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    audio, got_rate = decode_audio(speech_wav)
    assert got_rate == rate and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, raw.astype(np.float32) / 32768)
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_audio_warnings_say_silent_near_silent_and_short():
    from cfnsr.data.features import audio_warnings

    rate = 16000
    t = np.arange(int(3.3 * rate)) / rate
    speech = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    assert audio_warnings(speech, rate, SPEC) == []
    assert any("silent in the window" in w for w in audio_warnings(np.zeros_like(speech), rate, SPEC))
    quiet = audio_warnings(speech * 1e-2, rate, SPEC)
    assert len(quiet) == 1 and "near-silent" in quiet[0] and "-63 dBFS" in quiet[0]
    short = audio_warnings(speech[: int(0.1 * rate)], rate, SPEC)
    assert "lasts 0.10 s, shorter than the window" in short[0] and "silent" in short[1]


def test_a_truncated_clip_is_said_not_guessed(tmp_path, synth_raw):
    from cfnsr.data.features import decode_audio, decode_frames
    from cfnsr.data.synth import write_clip

    got, total = decode_frames(synth_raw / CLIP, set(range(10_000)))
    audio, rate = decode_audio(synth_raw / CLIP)
    clip = tmp_path / "c.mp4"
    write_clip(clip, [got[i] for i in range(total)], audio, rate=rate, faststart=True)
    assert extract_clip(clip, SPEC, None, use_detector=False).warnings == []
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size * 6 // 10])
    f = extract_clip(clip, SPEC, None, use_detector=False)
    assert f.frames.shape == (20, 96, 96, 3)
    assert any("truncated" in w for w in f.warnings), f.warnings


def test_clips_are_found_whatever_the_case_of_their_extension(tmp_path, synth_raw):
    from cfnsr.data.ravdess import find_clips

    (tmp_path / "Actor_03").mkdir()
    os.link(synth_raw / CLIP, tmp_path / "Actor_03" / (Path(CLIP).stem + ".MP4"))
    os.symlink("loop.mp4", tmp_path / "Actor_03" / "loop.mp4")
    notes = []
    assert [f.name for f, _ in find_clips(tmp_path, log=notes.append)] == [Path(CLIP).stem + ".MP4"]
    assert len(notes) == 1 and "symlink loop" in notes[0]
