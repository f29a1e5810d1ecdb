"""The C++ media component (cfnsr::media, cfnsr_predict): from an mp4, or from frames + PCM buffers, to an emotion,
compared with `cfnsr predict` on the same media artifact.

Parity bounds asserted (measured on this machine, FFmpeg 5.1 / libsoxr 0.1.3 / OpenCV 4.6 from Debian against
PyAV 18 / python-soxr 1.1 / opencv-python 4.14 wheels): the same crop method; face boxes within 1 px (measured 0);
crops within 1 grey level (measured 0: identical bytes); PCM within 1e-5 (measured 1.2e-7, float32 rounding); the same
top-1 and probabilities within 1e-3 (measured 1.2e-7).

Built by the session fixture in conftest.py; skipped with the reason where FFmpeg, libsoxr or OpenCV are missing,
except under CFNSR_REQUIRE_CPP=1 (CI), where scripts/setup.sh installs them.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cpptools import STATUS, rewrite_pt2, run

BOX_PX, CROP_LEVELS, PCM_ABS, PROB_ABS = 1.0, 1, 1e-5, 1e-3


def predict_cpp(cpp, model, clip, *args, save: Path | None = None) -> tuple[int, dict | None, str]:
    extra = ["--save-inputs", save] if save is not None else []
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    r = run([cpp.predict, model, clip, "--json", *extra, *args])
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else None), r.stderr


def assert_parity(cpp_out: dict, cpp_inputs: Path, py_out: dict, py_inputs: Path) -> dict:
    """The issue's parity bounds; returns the measured differences."""
    assert cpp_out["crop"] == py_out["crop"]
    boxes = np.abs(np.asarray(cpp_out["boxes"]) - np.asarray(py_out["boxes"])).max()
    crops = np.abs(np.load(cpp_inputs / "video.npy").astype(int) - np.load(py_inputs / "video.npy")).max()
    cpp_pcm, py_pcm = np.load(cpp_inputs / "audio.npy"), np.load(py_inputs / "audio.npy")
    assert cpp_pcm.shape == py_pcm.shape and cpp_pcm.dtype == np.float32
    pcm = np.abs(cpp_pcm - py_pcm).max()
    probs = max(abs(cpp_out["probabilities"][k] - v) for k, v in py_out["probabilities"].items())
    measured = {"boxes": float(boxes), "crops": int(crops), "pcm": float(pcm), "probabilities": probs}
    assert boxes <= BOX_PX and crops <= CROP_LEVELS and pcm <= PCM_ABS, measured
    assert cpp_out["emotion"] == py_out["emotion"] and probs <= PROB_ABS, measured
    assert cpp_out["audio_padded"] == py_out["audio_padded"]
    return measured


@pytest.fixture(scope="module")
def recognizer(media_pt2):
    from cfnsr.engines.recognizer import Recognizer

    with Recognizer(media_pt2.path, device="cpu") as rec:
        yield rec


def test_media_component_is_installed_as_its_own_target(media):
    """cfnsr::media is its own library and export set; cfnsr_predict was built from the installed package."""
    prefix = media.prefix
    assert sorted(prefix.glob("lib*/libcfnsr_media.so*")) and (prefix / "include" / "cfnsr" / "media.h").is_file()
    cmake_dir = next(prefix.glob("lib*/cmake/cfnsr_runtime"))
    assert (cmake_dir / "cfnsr_mediaTargets.cmake").is_file()
    runtime_targets = (cmake_dir / "cfnsr_runtimeTargets.cmake").read_text()
    assert "cfnsr::media" not in runtime_targets and "avformat" not in runtime_targets
    assert media.predict.is_file()
    if shutil.which("ldd"):
        assert "libavformat" not in run(["ldd", media.lib]).stdout  # cfnsr::runtime alone needs no FFmpeg
    if shutil.which("nm"):
        lib = sorted(prefix.glob("lib*/libcfnsr_media.so*"))[0]
        names = [line.split(" ", 2)[-1] for line in run(["nm", "-D", "--defined-only", "-C", lib]).stdout.splitlines()]
        assert {"cfnsr_recognize_file", "cfnsr_recognize_frames", "cfnsr_media_crop_faces"} <= set(names)
        leaked = [n for n in names if n.startswith(("cv::", "av_", "avcodec_", "soxr_", "nlohmann::"))]
        assert not leaked, f"implementation symbols exported: {leaked[:5]}"
        # What it takes from cfnsr_runtime is the runtime's public API: each name is in an installed header.
        taken = [line.split(" U ", 1)[-1].strip() for line in
                 run(["nm", "-D", "--undefined-only", "-C", lib]).stdout.splitlines() if " cfnsr" in line]
        headers = "".join(p.read_text() for p in (prefix / "include" / "cfnsr").iterdir())
        private = [n for n in taken if "detail::" in n or n.split("(")[0].split("::")[-1].lstrip("~") not in headers]
        assert taken and not private, f"cfnsr_media uses runtime symbols outside its public headers: {private}"


def test_predict_matches_python_on_synthetic_clips(media, media_pt2, synth_raw, recognizer, tmp_path):
    from cfnsr.engines.predict import landmarks_for, predict_clip

    clips = [sorted((synth_raw / f"Actor_{a:02d}").glob("*.mp4"))[i] for a, i in ((1, 0), (4, 17), (7, 41))]
    for clip in clips:
        csv = landmarks_for(clip)
        assert csv is not None and csv.is_file()
        py = predict_clip(recognizer, clip, save_inputs=tmp_path / clip.stem / "py")
        rc, out, err = predict_cpp(media, media_pt2.path, clip, "--landmarks", csv, "--threads", "2",
                                   save=tmp_path / clip.stem / "cpp")
        assert rc == 0, err
        assert out["crop"] == "landmarks"
        assert_parity(out, tmp_path / clip.stem / "cpp", py, tmp_path / clip.stem / "py")


def test_msaf_compat_crops_match_python(media, media_pt2, synth_raw, tmp_path):
    """A package whose preprocessing says msaf_compat (crop from the frame squashed to the face size first, as
    MSAF did): C++ crops as Python does."""
    import zipfile

    from cfnsr.engines.predict import landmarks_for, predict_clip
    from cfnsr.engines.recognizer import Recognizer

    with zipfile.ZipFile(media_pt2.path) as z:
        meta = json.loads(z.read(next(n for n in z.namelist() if n.endswith("_metadata.json"))))
    pre = json.loads(meta["cfnsr.preprocess"])
    assert pre["msaf_compat"] is False
    msaf = rewrite_pt2(media_pt2.path, tmp_path / "msaf.pt2",
                       **{"cfnsr.preprocess": json.dumps({**pre, "msaf_compat": True}, sort_keys=True)})
    clip = sorted((synth_raw / "Actor_03").glob("*.mp4"))[9]
    with Recognizer(msaf, device="cpu") as rec:
        assert rec.spec.msaf_compat
        py = predict_clip(rec, clip, save_inputs=tmp_path / "py")
    rc, out, err = predict_cpp(media, msaf, clip, "--landmarks", landmarks_for(clip), save=tmp_path / "cpp")
    assert rc == 0, err
    assert_parity(out, tmp_path / "cpp", py, tmp_path / "py")
    with Recognizer(media_pt2.path, device="cpu") as rec:  # and the crops did change
        predict_clip(rec, clip, save_inputs=tmp_path / "plain")
    assert (np.load(tmp_path / "plain" / "video.npy") != np.load(tmp_path / "cpp" / "video.npy")).mean() > 0.1


def test_predict_matches_cfnsr_predict_on_real_media(media, media_pt2, face_clip, tmp_path):
    """Real speech over a photograph: the Haar detector, stereo 48 kHz AAC averaged and resampled; the Python side
    is the `cfnsr predict` command itself."""
    from click.testing import CliRunner

    from cfnsr.cli import main

    res = CliRunner().invoke(main, ["predict", str(face_clip), "--model", str(media_pt2.path), "--json",
                                    "--device", "cpu", "--save-inputs", str(tmp_path / "py")])
    assert res.exit_code == 0, res.output
    py = json.loads(res.output[res.output.index("{"):])
    rc, out, err = predict_cpp(media, media_pt2.path, face_clip, "--repeat", "2", save=tmp_path / "cpp")
    assert rc == 0, err
    assert out["crop"] == "haar" and len(out["boxes"]) == 20
    measured = assert_parity(out, tmp_path / "cpp", py, tmp_path / "py")
    print("real-media parity:", measured)
    stages = ["decode", "detection", "crop", "resample", "model", "total"]
    assert list(out["timings_ms"]) == stages and list(out["warm_median_ms"]) == stages
    assert out["timings_ms"]["total"] >= out["timings_ms"]["model"] > 0

    # Python's saved inputs through the runtime alone (cfnsr_infer takes the uint8 crops + PCM of a media artifact).
    r = run([media.infer, media_pt2.path, "--video", tmp_path / "py" / "video.npy", "--audio",
             tmp_path / "py" / "audio.npy"])
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout)["probabilities"][0], list(py["probabilities"].values()),
                               atol=1e-5)

    human = run([media.predict, media_pt2.path, face_clip])
    assert human.returncode == 0 and f"{out['emotion']}  (" in human.stdout and "face: haar" in human.stdout
    assert "ms: decode" in human.stdout


def test_frames_and_pcm_buffers_match_python(media, media_pt2, face_clip, recognizer, tmp_path):
    """The camera path through the C interface (cfnsr_recognize_frames, and the building blocks with
    cfnsr_run_media), against Recognizer.predict on the same buffers; its error checks run too."""
    from cfnsr.data.features import decode_audio, decode_frames

    got, total = decode_frames(face_clip, set(range(10**6)))
    frames = np.stack([got[i] for i in range(total)])
    pcm, rate = decode_audio(face_clip)
    (tmp_path / "frames.u8").write_bytes(frames.tobytes())
    (tmp_path / "pcm.f32").write_bytes(pcm.astype(np.float32).tobytes())
    t, h, w = frames.shape[:3]
    r = run([media.media_check, media_pt2.path, tmp_path / "frames.u8", t, h, w, tmp_path / "pcm.f32", rate])
    assert r.returncode == 0 and "0 failed" in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("\nok ") >= 25
    line = next(x for x in r.stdout.splitlines() if x.startswith("{"))
    cpp = json.loads(line)
    py = recognizer.predict(frames, pcm, rate)
    assert cpp["crop"] == py.crop == "haar" and cpp["emotion"] == py.emotion
    np.testing.assert_allclose(cpp["probabilities"], list(py.probabilities.values()), atol=PROB_ABS)


@pytest.fixture(scope="module")
def faceless_clip(speech_wav, tmp_path_factory):
    """A clip with speech and no face: a grey gradient drifting."""
    from cfnsr.data.features import decode_audio
    from cfnsr.data.synth import write_clip

    speech, rate = decode_audio(speech_wav)
    ramp = np.linspace(60, 180, 160, dtype=np.float32)
    frames = [np.repeat(np.clip(ramp[None, :, None] + t, 0, 255).astype(np.uint8).repeat(120, 0), 3, 2)
              for t in range(60)]
    path = tmp_path_factory.mktemp("noface") / "wall.mp4"
    write_clip(path, frames, speech, rate=rate)
    return path


def test_no_face_same_policy_as_python(media, media_pt2, faceless_clip, recognizer, tmp_path):
    from cfnsr.engines.predict import predict_clip
    from cfnsr.engines.recognizer import Recognizer
    from cfnsr.errors import DataError

    with pytest.raises(DataError, match="no face found in") as py_err:
        recognizer.predict_file(faceless_clip)
    rc, _, err = predict_cpp(media, media_pt2.path, faceless_clip)
    assert rc == STATUS["media"] and "no face found in" in err and "--allow-center-crop" in err
    assert "--allow-center-crop" in str(py_err.value)

    with Recognizer(media_pt2.path, device="cpu", allow_center_crop=True) as rec:
        py = predict_clip(rec, faceless_clip, save_inputs=tmp_path / "py")
    rc, out, err = predict_cpp(media, media_pt2.path, faceless_clip, "--allow-center-crop", save=tmp_path / "cpp")
    assert rc == 0, err
    assert out["crop"] == "center"
    assert_parity(out, tmp_path / "cpp", py, tmp_path / "py")


def test_bad_media_errors(media, media_pt2, tiny_pt2, face_clip, speech_wav, video_without_audio, synth_raw,
                          tmp_path):
    """Each refused with its cfnsr_status as exit code and a message naming the file and what was expected."""
    def refused(clip, *args, status="media"):
        rc, _, err = predict_cpp(media, media_pt2.path, clip, *args)
        assert rc == STATUS[status], (rc, err)
        assert err.startswith("cfnsr_predict: ") and err.count("\n") == 1
        return err

    assert "has no audio track" in refused(video_without_audio)
    assert "has no video track" in refused(speech_wav)
    assert "does not exist" in refused(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert "cannot open" in refused(corrupt) and "corrupt.mp4" in refused(corrupt)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(face_clip.read_bytes()[:40_000])  # the index (moov) is at the end: nothing to read
    assert "truncated.mp4" in refused(truncated)

    clip = sorted((synth_raw / "Actor_01").glob("*.mp4"))[0]
    broken = tmp_path / "broken.csv"
    broken.write_text("frame, confidence\n1, 0.9\n")
    assert "lacks OpenFace column 'x_0'" in refused(clip, "--landmarks", broken)
    assert "Haar cascade /nonexistent.xml does not exist" in refused(face_clip, "--cascade", "/nonexistent.xml",
                                                                     status="file_not_found")
    rc, _, err = predict_cpp(media, tiny_pt2.path, clip)
    assert rc == STATUS["invalid_argument"] and "features artifact" in err and "--inputs media" in err
    assert run([media.predict, media_pt2.path]).returncode == 64


def test_integer_pcm_and_truncated_clips_match_python(media, media_pt2, faceless_clip, speech_wav, synth_raw,
                                                      tmp_path):
    """16-bit stereo PCM in a Matroska file (integer samples scaled and averaged the same way on both sides), and
    a clip cut at two thirds (both decode the frames that remain, or both refuse it)."""
    import av

    from cfnsr.data.features import decode_audio
    from cfnsr.engines.predict import predict_clip
    from cfnsr.engines.recognizer import Recognizer
    from cfnsr.errors import DataError

    pcm, rate = decode_audio(speech_wav)
    speech = np.round(pcm * 32768).astype(np.int16)  # the wav's own 16-bit samples
    stereo = np.stack([speech, (speech // 2)]).T.reshape(1, -1).astype(np.int16)  # interleaved L R
    mkv = tmp_path / "s16.mkv"
    with av.open(str(faceless_clip)) as src, av.open(str(mkv), "w") as out:
        v = out.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 160, 120, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        for frame in src.decode(video=0):
            for pkt in v.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = rate
        for pkt in [*a.encode(frame), *a.encode()]:
            out.mux(pkt)

    clip = sorted((synth_raw / "Actor_02").glob("*.mp4"))[5]
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with Recognizer(media_pt2.path, device="cpu", allow_center_crop=True) as rec:
        for path in (mkv, cut):
            try:
                py = predict_clip(rec, path, save_inputs=tmp_path / path.stem / "py")
            except DataError as e:
                rc, _, err = predict_cpp(media, media_pt2.path, path, "--allow-center-crop")
                assert rc == STATUS["media"] and path.name in err and path.name in str(e)
                continue
            rc, out, err = predict_cpp(media, media_pt2.path, path, "--allow-center-crop",
                                       save=tmp_path / path.stem / "cpp")
            assert rc == 0, err
            assert_parity(out, tmp_path / path.stem / "cpp", py, tmp_path / path.stem / "py")
