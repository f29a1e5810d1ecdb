"""cfnsr::media::Stream (C++) against cfnsr.engines.stream (Python) on the same recorded file and the same pushed
buffers: the same windows, the same emotions, probabilities within 1e-4 on the .pt2 path; and its C interface.

Built by the session fixture in conftest.py; skipped with the reason where FFmpeg, libsoxr or OpenCV are missing,
except under CFNSR_REQUIRE_CPP=1 (CI)."""

import ctypes
import json

import numpy as np
import pytest
from cpptools import run

PROB_ABS = 1e-4


@pytest.fixture(scope="module")
def python_windows(media_pt2, long_clip):
    from cfnsr.engines.live import file_windows
    from cfnsr.engines.recognizer import Recognizer

    with Recognizer(media_pt2.path, device="cpu") as rec:
        return file_windows(rec, long_clip, 0.5, progress=False)


def assert_same_windows(cpp: list[dict], py: list[dict]) -> float:
    assert len(cpp) == len(py) >= 15
    worst = 0.0
    for c, p in zip(cpp, py):
        assert c["window"] == p["window"] and abs(c["start_s"] - p["start_s"]) < 1e-6
        assert (c["emotion"], c["face_lost"], c["audio_padded"]) == (p["emotion"], p["face_lost"], p["audio_padded"])
        if p["probabilities"]:
            worst = max(worst, max(abs(c["probabilities"][k] - v) for k, v in p["probabilities"].items()))
            assert np.abs(np.subtract(c["face"], p["face"])).max() <= 1.0
    assert worst <= PROB_ABS, worst
    assert any(p["face_lost"] for p in py) and any(p["emotion"] for p in py)
    return worst


def test_live_file_matches_python(media, media_pt2, long_clip, python_windows):
    """`cfnsr_predict MODEL FILE --live --fast` gives the windows `cfnsr live --fast` / `cfnsr predict --timeline`
    give: the same window rule, frames chosen by timestamp, audio placed by timestamp, the same face policy."""
    r = run([media.predict, media_pt2.path, long_clip, "--live", "--fast", "--threads", "2"])
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    windows, summary = [x for x in lines if x["type"] == "window"], lines[-1]
    assert summary["type"] == "summary" and summary["dropped"] == 0 and summary["windows"] == len(windows)
    assert_same_windows(windows, python_windows)


class CWindow(ctypes.Structure):
    _fields_ = [("index", ctypes.c_int64), ("start_s", ctypes.c_double), ("end_s", ctypes.c_double),
                ("label_id", ctypes.c_int64), ("emotion", ctypes.c_char_p), ("num_classes", ctypes.c_size_t),
                ("probabilities", ctypes.POINTER(ctypes.c_float)), ("crop", ctypes.c_char_p),
                ("face", ctypes.c_float * 4), ("face_lost", ctypes.c_int), ("face_fallback", ctypes.c_int),
                ("audio_padded", ctypes.c_int), ("latency_ms", ctypes.c_double)]


class CStreamOptions(ctypes.Structure):
    _fields_ = [("hop", ctypes.c_double), ("queue", ctypes.c_size_t), ("max_latency", ctypes.c_double),
                ("wait", ctypes.c_double), ("block", ctypes.c_int)]


class CStats(ctypes.Structure):
    _fields_ = [("windows", ctypes.c_int64), ("dropped", ctypes.c_int64), ("late", ctypes.c_int64),
                ("face_lost", ctypes.c_int64), ("max_queue", ctypes.c_size_t), ("latency_p50_ms", ctypes.c_double),
                ("latency_p99_ms", ctypes.c_double), ("busy_p50_ms", ctypes.c_double),
                ("busy_p99_ms", ctypes.c_double)]


def test_c_interface_push_api_matches_python_push_api(media, media_pt2, long_clip):
    """The C interface's push API (frames with timestamps, PCM chunks at 16 kHz with theirs, poll per window) and
    Python's StreamRecognizer fed the same chunks: the same windows and emotions. Then a queue of one with the
    chunks pushed before any poll: the oldest windows dropped and counted, the newest kept."""
    from cfnsr.data.features import decode_audio, decode_frames, resample
    from cfnsr.engines.recognizer import Recognizer
    from cfnsr.engines.stream import StreamRecognizer

    for name in ("libcfnsr_runtime.so*", "libcfnsr_media.so*"):  # the runtime first: the media library needs it
        lib = ctypes.CDLL(str(sorted(media.prefix.glob(f"lib*/{name}"))[0]), mode=ctypes.RTLD_GLOBAL)
    lib.cfnsr_stream_default_options.restype = CStreamOptions
    lib.cfnsr_last_error.restype = ctypes.c_char_p
    got, total = decode_frames(long_clip, set(range(10_000)))
    frames = np.stack([got[i] for i in range(total)])
    audio, rate = decode_audio(long_clip)
    pcm16 = resample(audio, rate, 16000)
    ts = np.arange(total) / 30.0
    chunks = [(pcm16[i:i + 512], i / 16000) for i in range(0, len(pcm16), 512)]

    def c_windows(queue):
        opts = lib.cfnsr_stream_default_options()
        assert (opts.hop, opts.queue, opts.max_latency, opts.block) == (0.5, 2, 0.0, 0)
        opts.queue, opts.wait = queue, float("inf")
        s = ctypes.c_void_p()
        status = lib.cfnsr_stream_open(str(media_pt2.path).encode(), None, ctypes.byref(opts), None, None,
                                       ctypes.byref(s))
        assert status == 0, lib.cfnsr_last_error()
        out, w, flag = [], CWindow(), ctypes.c_int()
        try:
            c = 0
            for i in range(total):
                f = np.ascontiguousarray(frames[i:i + 1])
                t = (ctypes.c_double * 1)(ts[i])
                assert lib.cfnsr_stream_push_frames(s, f.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(1),
                                                    f.shape[1], f.shape[2], ctypes.c_size_t(0), t) == 0
                while c < len(chunks) and chunks[c][1] <= ts[i]:
                    p = np.ascontiguousarray(chunks[c][0], dtype=np.float32)
                    assert lib.cfnsr_stream_push_audio(s, p.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(len(p)),
                                                       ctypes.c_double(chunks[c][1]), ctypes.c_double(16000)) == 0
                    c += 1
                if queue > 1:  # poll as it goes: nothing dropped
                    out += _drain(lib, s, w, flag)
            for p, t0 in chunks[c:]:
                p = np.ascontiguousarray(p, dtype=np.float32)
                lib.cfnsr_stream_push_audio(s, p.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(len(p)),
                                            ctypes.c_double(t0), ctypes.c_double(16000))
            assert lib.cfnsr_stream_end(s) == 0
            out += _drain(lib, s, w, flag)
            stats = CStats()
            assert lib.cfnsr_stream_stats_get(s, ctypes.byref(stats)) == 0
            bad = np.zeros((2, 8, 8, 3), np.float32)
            assert lib.cfnsr_stream_push_frames(s, None, ctypes.c_size_t(1), 8, 8, ctypes.c_size_t(0), t) == 1
            assert lib.cfnsr_stream_push_audio(s, bad.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(4),
                                               ctypes.c_double(0), ctypes.c_double(0)) == 1
            assert b"positive sample rate" in lib.cfnsr_last_error()
        finally:
            lib.cfnsr_stream_close(s)
        return out, stats

    with Recognizer(media_pt2.path, device="cpu") as rec:
        sr = StreamRecognizer(rec, 0.5, queue=100, wait=float("inf"))
        c = 0
        for i in range(total):
            sr.push_frames(frames[i:i + 1], ts[i:i + 1])
            while c < len(chunks) and chunks[c][1] <= ts[i]:
                sr.push_audio(*chunks[c], 16000)
                c += 1
        for p, t0 in chunks[c:]:
            sr.push_audio(p, t0, 16000)
        sr.end()
        py = sr.poll()
    cpp, stats = c_windows(queue=100)
    assert_same_windows(cpp, py)
    assert (stats.windows, stats.dropped, stats.face_lost) == (len(py), 0, sum(r["face_lost"] for r in py))
    kept, stats = c_windows(queue=1)  # no poll until the end: only the newest window waits
    last = len(py) - 1
    assert stats.dropped == last and [w["window"] for w in kept] == [last] and stats.max_queue == 1


def _drain(lib, s, w, flag) -> list[dict]:
    from cfnsr.artifact import EMOTIONS

    out = []
    while True:
        assert lib.cfnsr_stream_poll(s, ctypes.byref(w), ctypes.byref(flag)) == 0
        if not flag.value:
            return out
        probs = {}
        if w.num_classes:
            probs = {EMOTIONS[i]: float(w.probabilities[i]) for i in range(w.num_classes)}
        out.append({"window": w.index, "start_s": w.start_s, "emotion": w.emotion.decode() or None,
                    "probabilities": probs or None, "face": list(w.face), "face_lost": bool(w.face_lost),
                    "audio_padded": bool(w.audio_padded)})
