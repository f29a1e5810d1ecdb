"""Windows over a stream, and the recogniser that runs them: one rule for files and live sources.

**The window rule** (the same in ``cfnsr predict --timeline``, ``cfnsr live`` and C++ ``cfnsr::media::Stream``):
window k starts ``k * hop`` seconds after the first video frame and lasts the spec's audio duration D (2.45 s).
Its video is the spec's T frames chosen among the frames whose presentation time lies in [start, start + D) the
way a clip's frames are chosen (``cfnsr.data.features.frame_indices``); its audio is the samples of that interval,
placed by their presentation time (a gap in the stream is zeros, an overlap is dropped), used whole: the window is
what the model hears, so no audio offset. Audio and video are aligned by timestamps, never by arrival order.

A window is complete when a frame at or after its end has arrived and the audio reaches its end (or, when one
of the two stalls, ``wait`` seconds of the other later: the window then says its audio was padded, or holds no
frames). At the end of a stream the windows that end within both of its tracks are completed; a stream shorter than one
window gives one window, padded.

**Keeping up**: complete windows wait in a queue of ``queue`` windows; when it is full the oldest is dropped and
counted (``dropped``), so memory stays bounded whatever the stream's length; a window older than ``max_latency``
seconds when the model gets to it is dropped too (``late``). ``block=True`` (a file read as fast as possible)
makes the producer wait instead: nothing is dropped.

Push API for applications that capture themselves::

    sr = StreamRecognizer(recognizer, hop=0.5)
    sr.push_frames(frames, timestamps)        # (N, H, W, 3) RGB uint8, N presentation times in seconds
    sr.push_audio(pcm, timestamp, 48000)      # mono (or (N, channels)) float samples, time of the first one
    for record in sr.poll(): ...              # the windows completed so far, run now in this thread
    # or StreamRecognizer(..., callback=fn): a worker thread runs each window and calls fn(record)
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..data.features import frame_indices
from ..errors import DataError, FaceNotFound
from .base import InputError

STREAM_STAGES = ("decode", "face", "crop", "model")  # reported per window; decode per video frame
CONTIGUOUS_S = 0.002  # audio chunks closer than this to where the last one ended are contiguous (timestamp jitter)
JUMP_BACK_S, JUMP_AHEAD_S = 1.0, 10.0  # a video timestamp this far back or ahead is a new clock: a new segment


@dataclass
class Window:
    index: int
    start: float  # stream seconds (from the first video frame of the segment, plus the segment's offset)
    end: float
    frames: np.ndarray | None  # (T, H, W, 3) uint8 RGB, or None when no frame lies in the window
    pcm: np.ndarray  # float32 mono at `rate`, exactly round(D * rate) samples
    rate: int
    audio_padded: bool
    arrived: float  # time.monotonic() when its last sample arrived


class _Audio:
    """Mono samples placed by presentation time, from the oldest a pending window needs."""

    def __init__(self):
        self.rate = 0
        self.t0 = 0.0  # time of absolute sample 0
        self.base = 0  # absolute index of buf[0]
        self.buf = np.zeros(0, np.float32)
        self.gaps: list[tuple[int, int]] = []  # absolute [start, end) filled with zeros
        self.arrivals: collections.deque = collections.deque()  # (absolute end index, arrival time)

    @property
    def end_index(self) -> int:
        return self.base + len(self.buf)

    def end_time(self) -> float:
        return self.t0 + self.end_index / self.rate if self.rate else -math.inf

    def push(self, pcm: np.ndarray, t: float, rate: int, now: float) -> None:
        if rate != self.rate:  # first chunk, or the source changed its rate: start over at this chunk
            self.rate, self.t0, self.base, self.buf, self.gaps = rate, t, 0, np.zeros(0, np.float32), []
            self.arrivals.clear()
        i = int(round((t - self.t0) * rate))
        end = self.end_index
        if abs(i - end) <= CONTIGUOUS_S * rate:
            i = end
        if i > end:  # a gap: zeros where the stream had nothing
            self.gaps.append((end, i))
            pcm = np.concatenate([np.zeros(i - end, np.float32), pcm])
        elif i < end:  # an overlap: what is already there stays
            pcm = pcm[end - i:]
        if len(pcm):
            self.buf = np.concatenate([self.buf, pcm]) if len(self.buf) else pcm.copy()
            self.arrivals.append((self.end_index, now))

    def cut(self, start: float, n: int) -> tuple[np.ndarray, bool, float]:
        """``n`` samples from time ``start`` (zeros where there are none), whether any were missing, and when the
        last of them arrived."""
        i0 = int(round((start - self.t0) * self.rate)) if self.rate else 0
        out = np.zeros(n, np.float32)
        lo, hi = max(i0, self.base), min(i0 + n, self.end_index)
        if hi > lo:
            out[lo - i0:hi - i0] = self.buf[lo - self.base:hi - self.base]
        padded = not self.rate or lo > i0 or hi < i0 + n or any(a < i0 + n and b > i0 for a, b in self.gaps)
        arrived = next((when for idx, when in self.arrivals if idx >= min(i0 + n, self.end_index)), 0.0)
        return out, padded, arrived

    def trim(self, before: float) -> None:
        if not self.rate:
            return
        i = int(math.floor((before - self.t0) * self.rate)) - 1
        if i > self.base:
            self.buf = self.buf[min(i - self.base, len(self.buf)):]
            self.base = i
            self.gaps = [g for g in self.gaps if g[1] > i]
            while self.arrivals and self.arrivals[0][0] < i:
                self.arrivals.popleft()


class Windower:
    """Frames and audio in, complete windows out (the rule in the module docstring). Not thread-safe."""

    def __init__(self, frames: int, duration: float, hop: float, wait: float = 1.0, offset: float = 0.0,
                 first_index: int = 0):
        if not (hop > 0 and math.isfinite(hop)):
            raise DataError(f"hop must be a positive number of seconds, got {hop}")
        self.frames, self.duration, self.hop, self.wait = frames, duration, hop, wait
        self.offset = offset  # stream time of this segment's first video frame
        self.next_index = first_index
        self._k = 0  # windows of this segment emitted
        self.origin: float | None = None
        self.video: collections.deque = collections.deque()  # (time, frame, arrival)
        self.video_end = -math.inf  # latest frame time
        self.frame_step = 0.0
        self.audio = _Audio()
        self.has_audio = False
        self.last_arrival = 0.0  # time.monotonic() of the latest sample

    def _start(self, k: int) -> float:
        return self.origin + k * self.hop

    def push_frame(self, frame: np.ndarray, t: float, now: float | None = None) -> list[Window]:
        now = time.monotonic() if now is None else now
        if self.origin is None:
            self.origin = t
        if t <= self.video_end:  # out of order or repeated: presentation times only grow in a stream
            return []
        if self.video_end > -math.inf:
            self.frame_step = t - self.video_end
        self.video.append((t, frame, now))
        self.video_end = t
        self.last_arrival = now
        return self._complete()

    def push_audio(self, pcm: np.ndarray, t: float, rate: int, now: float | None = None) -> list[Window]:
        now = time.monotonic() if now is None else now
        self.audio.push(pcm, t, rate, now)
        self.has_audio = True
        self.last_arrival = now
        return self._complete() if self.origin is not None else []

    def end(self) -> list[Window]:
        """The stream ended: the windows that end within it (one padded window for a stream shorter than one)."""
        if self.origin is None:
            return []
        video_end = self.video_end + self.frame_step
        stream_end = min(video_end, self.audio.end_time()) if self.has_audio else video_end  # both tracks in it
        out = []
        while self._start(self._k) + self.duration <= stream_end + 1e-6 or (self._k == 0 and not out):
            out.append(self._emit())
        return out

    def _complete(self) -> list[Window]:
        out = []
        while True:
            end = self._start(self._k) + self.duration
            video_ok = self.video_end >= end
            audio_ok = self.audio.end_time() >= end
            if (video_ok and audio_ok) or (video_ok and self.video_end >= end + self.wait) or \
                    (audio_ok and self.audio.end_time() >= end + self.wait):
                out.append(self._emit())
            else:
                return out

    def _emit(self) -> Window:
        start = self._start(self._k)
        end = start + self.duration
        inside = [(t, f, a) for t, f, a in self.video if start <= t < end]
        frames, arrived = None, 0.0
        if inside:
            idx = frame_indices(len(inside), self.frames)
            frames = np.stack([inside[i][1] for i in idx])
            arrived = inside[-1][2]
        rate = self.audio.rate or 16000
        pcm, padded, audio_arrived = self.audio.cut(start, int(round(self.duration * rate)))
        w = Window(self.next_index, round(self.offset + start - self.origin, 6),
                   round(self.offset + end - self.origin, 6), frames, pcm, rate, padded,
                   max(arrived, audio_arrived) or time.monotonic())
        self._k += 1
        self.next_index += 1
        nxt = self._start(self._k)
        while self.video and self.video[0][0] < nxt:
            self.video.popleft()
        self.audio.trim(nxt)
        return w

    def stream_time(self) -> float:
        """Stream seconds of the latest sample of this segment."""
        if self.origin is None:
            return self.offset
        latest = max(self.video_end + self.frame_step, self.audio.end_time())
        return self.offset + latest - self.origin


class Reservoir:
    """The last ``size`` values of a measure (bounded memory), with their percentiles."""

    def __init__(self, size: int = 4096):
        self.values: collections.deque = collections.deque(maxlen=size)
        self.count = 0

    def add(self, v: float) -> None:
        self.values.append(float(v))
        self.count += 1

    def pct(self, q: float) -> float | None:
        return float(np.percentile(np.asarray(self.values), q)) if self.values else None

    def summary(self) -> dict:
        return {"p50": _r(self.pct(50)), "p99": _r(self.pct(99)), "count": self.count}


def _r(v):
    return None if v is None else round(v, 3)


@dataclass
class Stats:
    stages: dict[str, Reservoir] = field(default_factory=lambda: {s: Reservoir() for s in STREAM_STAGES})
    latency: Reservoir = field(default_factory=Reservoir)  # ms, a window's last sample -> its prediction
    busy: Reservoir = field(default_factory=Reservoir)  # ms of work per window (the whole prediction)
    windows: int = 0  # run through the model (or recorded as faceless)
    dropped: int = 0  # the queue was full: the oldest went
    late: int = 0  # older than max_latency when its turn came
    face_lost: int = 0
    gaps: int = 0
    max_queue: int = 0
    started: float = field(default_factory=time.monotonic)
    stream_s: float = 0.0

    def to_dict(self, hop: float) -> dict:
        wall = time.monotonic() - self.started
        busy = self.busy.pct(50)
        return {"type": "summary", "windows": self.windows, "dropped": self.dropped, "late": self.late,
                "face_lost": self.face_lost, "gaps": self.gaps, "max_queue": self.max_queue,
                "stream_s": round(self.stream_s, 3), "wall_s": round(wall, 3),
                "windows_per_s": round(self.windows / wall, 3) if wall > 0 else None,
                # work per window over the time between windows: under 1 keeps up
                "realtime_factor": None if busy is None else round(busy / (1e3 * hop), 4),
                "latency_ms": self.latency.summary(),
                "stages_ms": {s: r.summary() for s, r in self.stages.items()}}


class StreamRecognizer:
    """A recogniser over a stream: push frames and audio, get one record per window (module docstring).

    ``recognizer``: a ``cfnsr.Recognizer``. ``queue``: windows waiting at most (the oldest dropped beyond it, or
    the producer blocked with ``block``). ``max_latency``: seconds after which a waiting window is dropped.
    ``callback``: run windows on a worker thread and hand each record to it (else ``poll()`` runs them).
    """

    def __init__(self, recognizer, hop: float = 0.5, queue: int = 2, max_latency: float | None = None,
                 callback=None, block: bool = False, wait: float = 1.0):
        if queue < 1:
            raise DataError(f"queue must hold at least one window, got {queue}")
        if max_latency is not None and not max_latency > 0:
            raise DataError(f"max_latency must be positive seconds, got {max_latency}")
        self.rec, self.hop, self.max_latency, self.block = recognizer, float(hop), max_latency, block
        spec = recognizer.spec
        self.windower = Windower(spec.frames, spec.audio_duration, self.hop, wait)
        self.stats = Stats()
        self._queue: collections.deque = collections.deque()
        self._size = queue
        self._notes: collections.deque = collections.deque()  # gap records: never dropped
        self._cond = threading.Condition()
        self._ended = False
        self._callback = callback
        self._worker = None
        self._gap_started: tuple[float, float, str] | None = None
        self.error: BaseException | None = None
        if callback is not None:
            self._worker = threading.Thread(target=self._work, name="cfnsr-stream-model", daemon=True)
            self._worker.start()

    # -- producer side ---------------------------------------------------------------------------------------------
    def push_frames(self, frames, timestamps) -> None:
        """Video frames (N, H, W, 3) RGB uint8 (or one (H, W, 3)) and their N presentation times in seconds."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        ts = np.atleast_1d(np.asarray(timestamps, dtype=np.float64))
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames: expected uint8 (N, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
        if ts.shape != (len(frames),) or not np.isfinite(ts).all():
            raise InputError(f"timestamps: expected {len(frames)} finite seconds, got shape {ts.shape}")
        now = time.monotonic()
        with self._cond:
            windows = []
            for f, t in zip(frames, ts):
                w = self.windower
                if w.origin is not None and not (w.video_end - JUMP_BACK_S <= t <= w.video_end + JUMP_AHEAD_S):
                    windows += self._new_segment(f"timestamps jumped from {w.video_end:.3f} to {t:.3f} s (the "
                                                 "source restarted its clock)")
                windows += self.windower.push_frame(f, float(t), now)
        self._enqueue(windows)

    def _new_segment(self, reason: str) -> list[Window]:
        """A discontinuity without a stall (with the lock held): the segment's last windows, a gap record of no
        length, and a new segment going on from the same stream time."""
        at = self.windower.stream_time()
        windows = self.windower.end()
        self.windower = Windower(self.windower.frames, self.windower.duration, self.hop, self.windower.wait,
                                 offset=at, first_index=self.windower.next_index)
        self.stats.gaps += 1
        self._notes.append({"type": "gap", "start_s": round(at, 3), "end_s": round(at, 3), "reason": reason})
        return windows

    def push_audio(self, pcm, timestamp: float, sample_rate: int) -> None:
        """Samples (N,) mono or (N, channels) float, the presentation time of the first one, their rate."""
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.ndim == 2:
            pcm = pcm.mean(axis=1)
        if pcm.ndim != 1:
            raise InputError(f"pcm: expected (N,) or (N, channels) samples, got shape {pcm.shape}")
        if not np.isfinite(pcm).all():
            raise InputError(f"pcm holds {int((~np.isfinite(pcm)).sum())} non-finite samples")
        if not (sample_rate and sample_rate > 0) or not math.isfinite(float(timestamp)):
            raise InputError(f"push_audio: a positive sample rate and a finite timestamp, got {sample_rate}, "
                             f"{timestamp}")
        with self._cond:
            windows = self.windower.push_audio(pcm, float(timestamp), int(sample_rate), time.monotonic())
        self._enqueue(windows)

    def gap(self, reason: str) -> None:
        """The source was lost (and is being reopened): complete what the segment holds; the gap runs from its last
        sample, and the next segment's stream time continues from the wall clock."""
        with self._cond:
            start = self.windower.stream_time()
            since = self.windower.last_arrival or time.monotonic()
            windows = self.windower.end()
            self._gap_started = (start, since, reason)
        self._enqueue(windows)

    def resumed(self, note: str = "") -> None:
        """The source is back after ``gap()`` (or given up: ``note`` says so): a gap record from where it stopped to
        now."""
        if self._gap_started is None:
            return
        start, since, reason = self._gap_started
        self._gap_started = None
        with self._cond:
            end = start + (time.monotonic() - since)
            self.windower = Windower(self.windower.frames, self.windower.duration, self.hop, self.windower.wait,
                                     offset=end, first_index=self.windower.next_index)
            self.stats.gaps += 1
            self._notes.append({"type": "gap", "start_s": round(start, 3), "end_s": round(end, 3),
                                "reason": reason + note})
            self._cond.notify_all()

    def decoded(self, ms: float) -> None:
        """The time a source took to decode one video frame (for the decode stage's percentiles)."""
        with self._cond:
            self.stats.stages["decode"].add(ms)

    def end(self) -> None:
        """The stream ended: complete the last windows; ``poll``/the worker runs what is queued, then stops."""
        with self._cond:
            windows = self.windower.end()
        self._enqueue(windows)
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _enqueue(self, windows: list[Window]) -> None:
        if not windows:
            return
        with self._cond:
            for w in windows:
                while self.block and len(self._queue) >= self._size and not self._ended:
                    self._cond.wait(0.1)
                if len(self._queue) >= self._size:
                    self._queue.popleft()
                    self.stats.dropped += 1
                self._queue.append(w)
                self.stats.max_queue = max(self.stats.max_queue, len(self._queue))
            self.stats.stream_s = self.windower.stream_time()
            self._cond.notify_all()

    # -- consumer side ---------------------------------------------------------------------------------------------
    def poll(self) -> list[dict]:
        """Run the windows completed so far (in this thread); their records, and gap records, in order."""
        out = []
        while (item := self._take(block=False)) is not None:
            if isinstance(item, dict):
                out.append(item)
            elif (record := self._run(item)) is not None:
                out.append(record)
        return out

    def next(self, timeout: float | None = None) -> dict | None | bool:
        """Block for the next record; None when the stream ended and everything ran; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            item = self._take(block=True, deadline=deadline)
            if item is None or item is False or isinstance(item, dict):
                return item
            if (record := self._run(item)) is not None:
                return record

    def _take(self, block: bool, deadline: float | None = None):
        with self._cond:
            while True:
                if self._notes:
                    return self._notes.popleft()
                if self._queue:
                    w = self._queue.popleft()
                    self._cond.notify_all()
                    return w
                if self._ended or not block:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)

    def _work(self) -> None:
        try:
            while (record := self.next()) is not None:
                if record is not False:
                    self._callback(record)
        except BaseException as e:  # handed to the owner: close() raises it
            self.error = e

    def close(self, timeout: float | None = None) -> None:
        """End the stream and wait for the worker (if any) to run what is queued."""
        self.end()
        if self._worker is not None:
            self._worker.join(timeout)
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop now: what is queued is not run (Ctrl-C)."""
        with self._cond:
            self._queue.clear()
            self._ended = True
            self._cond.notify_all()

    def summary(self) -> dict:
        with self._cond:
            return self.stats.to_dict(self.hop)

    # -- one window ------------------------------------------------------------------------------------------------
    def _run(self, w: Window) -> dict | None:
        if self.max_latency is not None and time.monotonic() - w.arrived > self.max_latency:
            self.stats.late += 1
            return None
        record = {"type": "window", "window": w.index, "start_s": w.start, "end_s": w.end, "emotion": None,
                  "probabilities": None, "face": None, "crop": None, "face_lost": False, "face_fallback": False,
                  "audio_padded": w.audio_padded}
        if w.frames is None:
            record.update(face_lost=True, note="no video frame in the window")
            self.stats.face_lost += 1
        else:
            t0 = time.perf_counter()
            try:
                pred = self.rec.predict(w.frames, w.pcm, w.rate, audio_offset=0.0)
            except FaceNotFound as e:
                record.update(face_lost=True, note=str(e).split(":")[0])
                self.stats.face_lost += 1
            else:
                t = pred.timings_ms
                timings = {"face": t["detection"], "crop": t["crop"],
                           "model": t["resample"] + t["features"] + t["model"]}
                for stage, ms in timings.items():
                    self.stats.stages[stage].add(ms)
                self.stats.busy.add((time.perf_counter() - t0) * 1e3)
                record.update(emotion=pred.emotion, probabilities=pred.probabilities,
                              face=[round(float(v), 1) for v in pred.boxes[-1]], crop=pred.crop,
                              face_fallback=pred.crop == "center", audio_padded=w.audio_padded or pred.audio_padded,
                              timings_ms={k: round(v, 3) for k, v in timings.items()})
        latency = (time.monotonic() - w.arrived) * 1e3
        self.stats.latency.add(latency)
        self.stats.windows += 1
        record["latency_ms"] = round(latency, 3)
        return record
