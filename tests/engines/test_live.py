"""Live streams: the window rule, drops and latency, `cfnsr live` on a file and on a UDP stream sent over loopback,
reconnection, Ctrl-C, and the same windows offline (`cfnsr predict --timeline`) and live."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.engines.stream import StreamRecognizer

CLIPS = ["Actor_01/01-01-05-02-01-01-01.mp4", "Actor_01/01-01-03-02-01-01-01.mp4"]  # those of long_clip


# ------------------------------------------------------------------------------------------------ the window rule
class FakeRecognizer:
    """The surface StreamRecognizer uses: a spec, and predict() that remembers what it was given."""

    def __init__(self, frames=4, duration=1.0, delay=0.0, keep=True):
        self.spec = SimpleNamespace(frames=frames, audio_duration=duration)
        self.delay, self.seen, self.keep = delay, [], keep

    def predict(self, frames, pcm, rate, audio_offset=None):
        assert audio_offset == 0.0  # a window's audio is used whole
        time.sleep(self.delay)
        if self.keep:
            self.seen.append((frames.copy(), pcm.copy(), rate))
        return SimpleNamespace(emotion="calm", probabilities={"calm": 1.0}, boxes=[[1, 2, 3, 4]], crop="haar",
                               audio_padded=False, timings_ms={"detection": 1, "crop": 1, "resample": 0,
                                                               "features": 0, "model": 1})


def _frames(n, start=0):
    """n 8x8 frames whose pixels hold their index (to see which were chosen)."""
    return np.stack([np.full((8, 8, 3), (start + i) % 256, np.uint8) for i in range(n)])


def test_window_rule_by_presentation_time_not_arrival_order():
    """10 fps video, 1 kHz audio whose sample values are their own times; windows of 1 s every 0.5 s. Pushing
    all the audio after all the video, or interleaved, gives the same windows: timestamps align them."""
    rate, fps, seconds = 1000, 10, 3.0
    t_audio = np.arange(int(seconds * rate)) / rate
    ts = np.arange(int(seconds * fps)) / fps + 0.25  # the video starts 0.25 s into the audio

    def run(interleaved):
        rec = FakeRecognizer()
        sr = StreamRecognizer(rec, hop=0.5, queue=100, wait=float("inf"))
        chunks = [(t_audio[i:i + 100].astype(np.float32), t_audio[i], rate) for i in range(0, len(t_audio), 100)]
        if interleaved:
            for i, t in enumerate(ts):
                sr.push_frames(_frames(1, i), [t])
                while chunks and chunks[0][1] <= t:
                    sr.push_audio(*chunks.pop(0))
        else:
            sr.push_frames(_frames(len(ts)), ts)
        for c in chunks:
            sr.push_audio(*c)
        sr.end()
        return sr.poll(), rec.seen

    records, seen = run(interleaved=False)
    again, seen_again = run(interleaved=True)
    assert [r["start_s"] for r in records] == [0.0, 0.5, 1.0, 1.5] == [r["start_s"] for r in again]
    for (f, pcm, r), (f2, pcm2, _) in zip(seen, seen_again):
        assert np.array_equal(f, f2) and np.array_equal(pcm, pcm2) and r == rate
    for k, (frames, pcm, _) in enumerate(seen):
        # the frames in [start, start + 1 s): 10 of them, the spec's 4 chosen as a clip's are (0, 2, 5, 7)
        assert frames[:, 0, 0, 0].tolist() == [5 * k + i for i in (0, 2, 5, 7)]
        start = 0.25 + 0.5 * k
        np.testing.assert_allclose(pcm, start + np.arange(rate) / rate, atol=1e-6)  # exactly the window's audio
    assert not any(r["audio_padded"] for r in records)


def test_audio_gap_is_zeros_and_padded_and_a_stalled_track_waits_bounded():
    rec = FakeRecognizer()
    sr = StreamRecognizer(rec, hop=0.5, queue=100, wait=0.5)
    sr.push_frames(_frames(15), np.arange(15) / 10)  # 1.4 s of video
    assert sr.poll() == []  # no audio yet: the first window waits for it (at most 0.5 s of video)
    sr.push_audio(np.ones(500, np.float32), 0.0, 1000)
    sr.push_audio(np.ones(500, np.float32), 1.0, 1000)  # nothing from 0.5 to 1.0 s
    records = sr.poll()
    assert len(records) == 1 and records[0]["audio_padded"]
    assert np.array_equal(rec.seen[0][1], np.r_[np.ones(500), np.zeros(500)])  # the gap is zeros
    sr.push_frames(_frames(25, 15), np.arange(15, 40) / 10)  # the audio stalls at 1.5 s, the video goes to 3.9 s
    records += sr.poll()
    assert [r["end_s"] for r in records] == [1.0, 1.5, 2.0, 2.5, 3.0]  # 0.5 s of video later, without audio
    assert all(r["audio_padded"] for r in records)
    assert len(sr.windower.video) <= 20  # only what the next window needs is held


def test_slow_model_drops_oldest_and_memory_stays_flat():
    """A model 4x slower than the hop: windows dropped oldest first and counted, the queue bounded, and the memory
    the stream holds the same for a stream three times longer."""

    def run(seconds):
        rec = FakeRecognizer(delay=0.02, keep=False)
        got = []
        sr = StreamRecognizer(rec, hop=0.005, queue=2, callback=lambda r: got.append(r["window"]))
        tracemalloc.start()
        for i in range(int(seconds * 100)):  # 100 fps of 32x32 frames, 8 kHz audio, pushed at 4x real time
            t = i / 100
            sr.push_frames(np.full((1, 32, 32, 3), i % 256, np.uint8), [t])
            sr.push_audio(np.zeros(80, np.float32), t, 8000)
            if i % 4 == 0:
                time.sleep(0.01)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        sr.close()
        return sr.summary(), got, peak

    short, got, peak_short = run(2.0)
    long, got_long, peak_long = run(6.0)
    for s, g in ((short, got), (long, got_long)):
        total = int(round((s["stream_s"] - 1.0) / 0.005)) + 1
        assert s["dropped"] > 0 and s["max_queue"] <= 2
        assert s["windows"] == len(g) and abs(s["windows"] + s["dropped"] - total) <= 2
        assert g == sorted(g) and g[-1] >= total - 3  # the newest windows run; the oldest were dropped
    assert long["dropped"] > 2 * short["dropped"]
    assert peak_long < 1.3 * peak_short + 256 * 1024, (peak_short, peak_long)
    assert short["latency_ms"]["p50"] > 0 and short["realtime_factor"] > 1  # it says it does not keep up


def test_max_latency_drops_late_windows():
    rec = FakeRecognizer()
    sr = StreamRecognizer(rec, hop=0.5, queue=10, max_latency=0.05, wait=float("inf"))
    sr.push_frames(_frames(30), np.arange(30) / 10)
    sr.push_audio(np.zeros(3000, np.float32), 0.0, 1000)
    time.sleep(0.1)
    sr.end()
    assert sr.poll() == [] and sr.summary()["late"] == 5 and sr.summary()["windows"] == 0


def test_a_source_that_restarts_its_clock_is_a_new_segment():
    """A camera rebooted without a stall: its timestamps start again. The segment ends there (a gap record), the
    next windows go on in stream time instead of waiting for the new clock to pass the old one."""
    rec = FakeRecognizer()
    sr = StreamRecognizer(rec, hop=0.5, queue=100, wait=float("inf"))
    for start in (100.0, 0.0):  # 3 s of each clock
        sr.push_frames(_frames(30), start + np.arange(30) / 10)
        sr.push_audio(np.zeros(3000, np.float32), start, 1000)
    sr.end()
    records = sr.poll()
    kinds = [r["type"] for r in records]
    assert kinds.count("gap") == 1
    assert "timestamps jumped from 102.900 to 0.000" in records[kinds.index("gap")]["reason"]
    windows = [r for r in records if r["type"] == "window"]
    assert [w["start_s"] for w in windows] == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert [w["window"] for w in windows] == list(range(10)) and sr.summary()["gaps"] == 1


def test_push_api_refuses_bad_chunks():
    from cfnsr.engines import InputError

    sr = StreamRecognizer(FakeRecognizer(), hop=0.5)
    with pytest.raises(InputError, match="frames: expected uint8"):
        sr.push_frames(np.zeros((2, 8, 8, 3), np.float32), [0, 1])
    with pytest.raises(InputError, match="timestamps: expected 2 finite"):
        sr.push_frames(_frames(2), [0.0])
    with pytest.raises(InputError, match="non-finite"):
        sr.push_audio(np.full(4, np.nan), 0.0, 1000)
    with pytest.raises(InputError, match="positive sample rate"):
        sr.push_audio(np.zeros(4), 0.0, 0)
    # any number of channels, any rate: (N, channels) is averaged to mono
    sr.push_audio(np.stack([np.ones(1000), -np.ones(1000)], axis=1), 0.0, 1000)
    assert np.array_equal(sr.windower.audio.buf, np.zeros(1000, np.float32))


# ------------------------------------------------------------------------------------------------ real media
def _timeline_rows(csv_path):
    return list(csv.DictReader(open(csv_path)))


def test_offline_timeline_and_live_give_the_same_windows(long_clip, media_onnx, tmp_path):
    """The key test: `cfnsr predict --timeline`, `cfnsr live` at the file's own rate, and Recognizer.stream, on the
    same file: the same windows and predictions; the faceless windows are records, in all of them."""
    from cfnsr.data.features import read_video_frames
    from cfnsr.engines.recognizer import Recognizer

    res = CliRunner().invoke(main, ["predict", str(long_clip), "--model", str(media_onnx.path), "--timeline",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    offline = _timeline_rows(tmp_path / "long.timeline.csv")
    assert "without a face" in res.output
    t0 = time.monotonic()
    # a queue that holds every window: on a loaded machine the model may fall behind the clip, and this test is
    # about the windows (test_slow_model_drops_oldest_and_memory_stays_flat is about dropping)
    res = CliRunner().invoke(main, ["live", str(long_clip), "--model", str(media_onnx.path), "--queue", "64",
                                    "--jsonl", str(tmp_path / "live.jsonl"), "--csv", str(tmp_path / "live.csv"),
                                    "--overlay", str(tmp_path / "overlay.mp4")])
    wall = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    assert wall > 10.0  # played at its own rate
    records = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    windows, summary = records[:-1], records[-1]
    live_rows = _timeline_rows(tmp_path / "live.csv")
    assert summary["type"] == "summary" and summary["dropped"] == 0 and summary["ended"] == "end of stream"
    assert len(offline) == len(live_rows) == len(windows) >= 15  # (about 10.5 s - 2.45) / 0.5 + 1
    for a, b in zip(offline, live_rows):
        assert (a["start_s"], a["end_s"], a["emotion"], a["face_lost"]) == \
            (b["start_s"], b["end_s"], b["emotion"], b["face_lost"])
        for k in a:
            if k.startswith("p_") and a[k]:
                assert abs(float(a[k]) - float(b[k])) < 1e-6, k
    lost = [r for r in windows if r["face_lost"]]
    assert 2 <= len(lost) <= 4 and all(r["emotion"] is None for r in lost)  # the faceless middle, not an exit
    assert windows[0]["emotion"] and windows[-1]["emotion"]
    assert summary["face_lost"] == len(lost) and summary["latency_ms"]["p50"] > 0
    assert set(summary["stages_ms"]) == {"decode", "face", "crop", "model"}
    # the overlay: every frame, the face box drawn in green once a window has run
    frames, n = read_video_frames(tmp_path / "overlay.mp4", 12)
    assert n == read_video_frames(long_clip, 1)[1]
    green = [int(((f[..., 1] > 200) & (f[..., 0] < 60)).sum()) for f in frames]
    assert green[0] == 0 and max(green) > 50, green
    with Recognizer(media_onnx.path) as rec:
        api = [r for r in rec.stream(long_clip, hop=0.5, fast=True)]
    assert [(r["start_s"], r["emotion"]) for r in api] == [(r["start_s"], r["emotion"]) for r in windows]


def test_live_refuses_what_cannot_work(video_without_audio, media_onnx, tmp_path):
    run = CliRunner().invoke
    res = run(main, ["live", str(video_without_audio), "--model", str(media_onnx.path)])
    assert res.exit_code == 1 and "no audio track" in res.output and "--audio" in res.output
    assert "source with sound" in res.output
    port = _free_port()
    t0 = time.monotonic()
    res = run(main, ["live", f"udp://127.0.0.1:{port}", "--model", str(media_onnx.path), "--timeout", "1"])
    assert res.exit_code == 1 and time.monotonic() - t0 < 30
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot open udp://127.0.0.1:{port}: "), res.output
    for args, msg in [(["/dev/video99"], "no such video device"), (["nope://x"], "unknown scheme nope://"),
                      ([str(tmp_path / "missing.mp4")], "no such file"),
                      (["udp://127.0.0.1:9", "--fast"], "is a live source"),
                      ([str(video_without_audio), "--audio-format", "pulse"], "--audio-format needs --audio")]:
        res = run(main, ["live", *args, "--model", str(media_onnx.path)])
        assert res.exit_code != 0 and msg in res.output, (args, res.output)


def test_v4l2_camera_argument_handling(tmp_path):
    from cfnsr.engines.live import parse_source

    fake = tmp_path / "video0"
    fake.write_bytes(b"")
    src = parse_source(f"v4l2://{fake}", audio="hw:1")
    assert (src.kind, src.uri, src.audio, src.audio_format, src.video_format) == ("device", str(fake), "hw:1",
                                                                                   "alsa", "v4l2")
    with pytest.raises(Exception, match="camera, which has no audio track: pass --audio DEVICE"):
        parse_source(f"v4l2://{fake}")


def test_v4l2_camera_and_alsa_microphone(request):
    import av

    cams = sorted(Path("/dev").glob("video*"))
    if not cams:
        pytest.skip("no V4L2 camera here (/dev/video* absent)")
    if "v4l2" not in av.formats_available or "alsa" not in av.formats_available:
        pytest.skip("PyAV's FFmpeg has no v4l2 or alsa input")
    from cfnsr.engines.recognizer import Recognizer

    with Recognizer(request.getfixturevalue("media_onnx").path, allow_center_crop=True) as rec:
        stream = rec.stream(str(cams[0]), audio="default")
        got = []
        for r in stream:
            got.append(r)
            if len(got) >= 2:
                break
        stream.stop()
    assert got[0]["type"] in ("window", "gap")


# ------------------------------------------------------------------------------------------------ network
def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SENDER = r"""
import sys, time
from fractions import Fraction
import av
src, url, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
with av.open(url, "w", format="mpegts") as out:
    with av.open(src) as inp:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        rate, length = ain.rate, float(inp.duration) / 1e6
    v = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "tune": "zerolatency", "g": "10"})
    v.width, v.height, v.pix_fmt = vin.width, vin.height, "yuv420p"
    a = out.add_stream("aac", rate=rate, layout="mono")
    t0 = time.monotonic()
    for r in range(repeats):  # the clip again and again, its timestamps going on
        with av.open(src) as inp:
            for frame in inp.decode(inp.streams.video[0], inp.streams.audio[0]):
                if float(frame.time) < 0:
                    continue
                t = r * length + float(frame.time)
                delay = t0 + t - time.monotonic()   # at the clip's own pace
                if delay > 0:
                    time.sleep(delay)
                if isinstance(frame, av.VideoFrame):
                    frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                    frame.pts, frame.time_base = round(t * 30), Fraction(1, 30)
                    packets = v.encode(frame)
                else:
                    frame.pts, frame.time_base = round(t * rate), Fraction(1, rate)
                    packets = a.encode(frame)
                for p in packets:
                    out.mux(p)
"""


def _send(clip, port, repeats=1):
    return subprocess.Popen([sys.executable, "-c", SENDER, str(clip), f"udp://127.0.0.1:{port}?pkt_size=1316",
                             str(repeats)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_udp_stream_sent_over_loopback_then_killed_and_restarted(long_clip, media_onnx):
    """An MPEG-TS stream to udp://127.0.0.1 at the clip's pace, by a sender this test starts; killed mid-stream
    (SIGKILL) and started again: the receiver reopens the stream, and the gap is a record between windows."""
    from cfnsr.engines.recognizer import Recognizer

    port = _free_port()
    url = f"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=100000"
    sender = _send(long_clip, port)
    records, restarted, joined = [], [], threading.Event()
    deadline = time.monotonic() + 90
    try:
        with Recognizer(media_onnx.path, allow_center_crop=True) as rec:
            stream = rec.stream(url, hop=0.5, reconnect=6, timeout=2.0)

            def kill_and_restart():  # once the receiver has windows of the first sender
                joined.wait(60)
                sender.kill()
                sender.wait()
                time.sleep(1.0)
                # a new process, sending until the test ends (a loaded receiver may lag the stream by seconds; when
                # the silence is lost in its backlog, the sender's new clock is the discontinuity it sees)
                restarted.append(_send(long_clip, port, repeats=6))

            threading.Thread(target=kill_and_restart, daemon=True).start()
            for r in stream:
                records.append(r)
                if sum(x["type"] == "window" for x in records) >= 2:
                    joined.set()
                gap_at = next((i for i, x in enumerate(records) if x["type"] == "gap"), len(records))
                if sum(x["type"] == "window" for x in records[gap_at:]) >= 3 or time.monotonic() > deadline:
                    break
            stream.stop()
            summary = stream.summary()
    finally:
        for p in [sender, *restarted]:
            p.kill()
            p.wait()
    kinds = [r["type"] for r in records]
    assert "gap" in kinds, kinds
    gap = records[kinds.index("gap")]
    before = [r for r in records[:kinds.index("gap")] if r["type"] == "window"]
    after = [r for r in records[kinds.index("gap"):] if r["type"] == "window"]
    assert before and len(after) >= 3, (gap, stream.ended_by)
    assert "source lost" in gap["reason"] or "timestamps jumped" in gap["reason"], gap
    # from the last sample before the loss to the first after it (the receiver may lag the sender: not exact)
    assert gap["end_s"] >= gap["start_s"] >= before[-1]["start_s"]
    assert after[0]["start_s"] >= gap["end_s"] - 1e-3  # stream time goes on across the gap (a record rounds to ms)
    assert all(r["emotion"] for r in before + after if not r["face_lost"])
    assert [r["window"] for r in before + after] == sorted(r["window"] for r in before + after)
    assert summary["gaps"] == 1 and summary["windows"] >= len(before) + len(after)


def test_ctrl_c_mid_stream_writes_the_summary_and_valid_jsonl(long_clip, media_onnx, tmp_path):
    out = tmp_path / "w.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "cfnsr", "live", str(long_clip), "--model", str(media_onnx.path),
                             "--jsonl", str(out), "--status-every", "0.2"], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        for line in proc.stderr:
            if " windows 2 " in line or " windows 3 " in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert records[-1]["type"] == "summary" and records[-1]["ended"] == "interrupted"
    assert 2 <= records[-1]["windows"] == len(records) - 1 < 10
    assert "summary:" in rest and "ended: interrupted" in rest
