"""Live sources through PyAV (FFmpeg): a file played at its own rate, a V4L2 camera with an ALSA/PulseAudio
microphone, or a network URL (rtsp, rtp, udp, http(s), srt), into a ``StreamRecognizer``.

One reader thread per opened input decodes it and pushes frames and samples, stamped with their presentation
times, into the stream recogniser; the caller's thread runs the windows (``LiveStream`` iterates their records).
A network source that stalls or drops is reopened with backoff (``reconnect`` times in a row) and the gap becomes
a record; one that never opens is an error naming the URL and FFmpeg's reason.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.features import mono_samples
from ..errors import DataError
from .stream import StreamRecognizer

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtp", "udp", "tcp", "http", "https", "srt", "rtmp")
AUDIO_FORMATS = ("alsa", "pulse")
BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # between reconnection attempts, then the last one repeated


@dataclass(frozen=True)
class Source:
    """What to open: ``kind`` file | device | network; ``audio``: a capture device for a source without sound."""

    uri: str
    kind: str
    audio: str | None = None
    audio_format: str = "alsa"

    @property
    def video_format(self) -> str | None:
        return "v4l2" if self.kind == "device" else None


def parse_source(source: str | Path, audio: str | None = None, audio_format: str | None = None) -> Source:
    """A file path, ``/dev/videoN`` or ``v4l2:///dev/videoN``, or a network URL; ``audio`` an ALSA (``hw:1``,
    ``default``) or PulseAudio device name. Refuses what cannot work before anything is opened."""
    uri = str(source)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if audio_format is not None and audio_format not in AUDIO_FORMATS:
        raise DataError(f"--audio-format {audio_format!r}: expected one of {', '.join(AUDIO_FORMATS)}")
    if audio_format is not None and audio is None:
        raise DataError("--audio-format needs --audio DEVICE (the microphone to capture)")
    if scheme == "v4l2":
        uri, kind = uri.split("://", 1)[1], "device"
    elif scheme in NETWORK_SCHEMES:
        kind = "network"
    elif scheme == "file":
        uri, kind = uri.split("://", 1)[1], "file"
    elif scheme:
        raise DataError(f"{uri}: unknown scheme {scheme}://; expected a file, /dev/videoN (v4l2://) or one of "
                        f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}")
    elif uri.startswith("/dev/video"):
        kind = "device"
    else:
        kind = "file"
    if kind == "file" and not Path(uri).is_file():
        raise DataError(f"{uri}: no such file (a live source is a file, /dev/videoN or a URL)")
    if kind == "device":
        if not Path(uri).exists():
            raise DataError(f"{uri}: no such video device")
        if audio is None:
            raise DataError(f"{uri} is a camera, which has no audio track: pass --audio DEVICE (an ALSA or "
                            "PulseAudio microphone, e.g. --audio default), or use a source with sound")
    return Source(uri, kind, audio, audio_format or "alsa")


def _ffmpeg_has(fmt: str) -> bool:
    import av

    return fmt in av.formats_available


def open_input(uri: str, fmt: str | None = None, timeout: float | None = None, device: bool = False):
    """``av.open`` with a one-line error naming the input and FFmpeg's reason."""
    import av

    if fmt is not None and not _ffmpeg_has(fmt):
        raise DataError(f"cannot open {uri}: the FFmpeg that PyAV bundles has no {fmt} input (its formats: "
                        f"av.formats_available); build PyAV against a system FFmpeg with {fmt}")
    options = {"use_wallclock_as_timestamps": "1"} if device else {}
    try:
        return av.open(uri, format=fmt, options=options, timeout=timeout)
    except av.error.ExitError as e:  # our timeout interrupted FFmpeg
        raise DataError(f"cannot open {uri}: nothing received in {timeout[0]:g} s (FFmpeg: {_reason(e)})") from e
    except av.error.FFmpegError as e:
        raise DataError(f"cannot open {uri}: {_reason(e)}") from e
    except OSError as e:
        raise DataError(f"cannot open {uri}: {e.strerror or e}") from e


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e).split(": '")[0]


def has_audio(container) -> bool:
    return bool(container.streams.audio)


class SourceLost(Exception):
    """A network source stopped delivering (read timeout, I/O error, end of stream)."""


def read_container(container, push_frame, push_audio, stop: threading.Event, paced: bool, clock: list,
                   want_audio: bool = True, on_decode=None) -> None:
    """Decode ``container`` (its first video and audio tracks) in presentation order per track, handing each RGB
    frame and each mono audio chunk, with its time in seconds, to the callbacks. ``paced``: no sooner than its
    time says (a file played at its own rate); ``clock``: [wall time, media time] of the first sample, shared by
    the inputs of one source. Raises SourceLost when the input fails."""
    import av

    streams = [*container.streams.video[:1], *(container.streams.audio[:1] if want_audio else [])]
    for s in streams:
        s.thread_type = "AUTO"
    try:
        for packet in container.demux(*streams):
            if stop.is_set():
                return
            t = time.perf_counter()
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue  # a damaged packet (a stream joined mid-GOP): the decoder resynchronises
            for frame in frames:
                if frame.time is None:
                    continue
                if packet.stream.type == "video":
                    rgb = frame.to_ndarray(format="rgb24")
                    if on_decode is not None:
                        on_decode((time.perf_counter() - t) * 1e3)
                    _pace(paced, clock, float(frame.time), stop)
                    push_frame(rgb, float(frame.time))
                else:
                    pcm = mono_samples(frame)
                    _pace(paced, clock, float(frame.time), stop)
                    push_audio(pcm, float(frame.time), int(frame.sample_rate))
                t = time.perf_counter()
    except av.error.ExitError as e:
        raise SourceLost(f"no data for the timeout ({_reason(e)})") from e
    except av.error.FFmpegError as e:
        raise SourceLost(_reason(e)) from e
    except OSError as e:
        raise SourceLost(e.strerror or str(e)) from e


def _pace(paced: bool, clock: list, t: float, stop: threading.Event) -> None:
    if not clock:
        clock.extend([time.monotonic(), t])
    if paced:
        due = clock[0] + (t - clock[1])
        while (left := due - time.monotonic()) > 0 and not stop.is_set():
            time.sleep(min(left, 0.1))


class LiveStream:
    """Records of a live source, one per window, as they come (``for record in LiveStream(...)``); ``summary()``
    afterwards (or at any time), ``stop()`` from anywhere (Ctrl-C: the CLI calls it).

    ``fast``: a file as fast as it decodes (no window dropped: the reader waits for the model). ``reconnect``: how
    many times in a row a network source is reopened before giving up; ``timeout``: seconds without data that
    count as a stall. ``on_frame(rgb, t)``: every video frame as it arrives (the overlay writer).
    """

    def __init__(self, recognizer, source: str | Path | Source, hop: float = 0.5, fast: bool = False,
                 audio: str | None = None, audio_format: str | None = None, reconnect: int = 3,
                 timeout: float = 5.0, queue: int = 2, max_latency: float | None = None, on_frame=None,
                 open_now: bool = True):
        self.source = source if isinstance(source, Source) else parse_source(source, audio, audio_format)
        if reconnect < 0 or not timeout > 0:
            raise DataError(f"reconnect must be >= 0 and timeout > 0, got {reconnect}, {timeout}")
        self.fast = fast and self.source.kind == "file"
        if fast and self.source.kind != "file":
            raise DataError(f"--fast plays a file as fast as it decodes; {self.source.uri} is a live source")
        self.reconnect, self.timeout, self.on_frame = reconnect, timeout, on_frame
        # a file's two tracks both reach its end: a window waits for both, however the file interleaves them
        wait = math.inf if self.source.kind == "file" else 1.0
        self.sr = StreamRecognizer(recognizer, hop, queue=queue, max_latency=max_latency, block=self.fast, wait=wait)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.error: BaseException | None = None
        self.ended_by = None
        self._first = None
        if open_now:
            self._first = self._open_main()  # errors now, in the caller's thread: nothing has started

    # -- opening ---------------------------------------------------------------------------------------------------
    def _open_main(self):
        s = self.source
        timeout = (self.timeout, self.timeout) if s.kind == "network" else None
        # a microphone of its own: both inputs stamped by the wall clock, the one clock they share
        container = open_input(s.uri, s.video_format, timeout, device=s.kind == "device" or s.audio is not None)
        if not container.streams.video:
            container.close()
            raise DataError(f"{s.uri} has no video track")
        if s.audio is None and not has_audio(container):
            container.close()
            raise DataError(f"{s.uri} has no audio track and no --audio was given: pass --audio DEVICE (an ALSA "
                            "or PulseAudio microphone), or use a source with sound")
        return container

    def _open_audio(self):
        s = self.source
        container = open_input(s.audio, s.audio_format, None, device=True)
        if not container.streams.audio:
            container.close()
            raise DataError(f"{s.audio} ({s.audio_format}) has no audio stream")
        return container

    # -- running ---------------------------------------------------------------------------------------------------
    def _push_frame(self, rgb, t):
        if self.on_frame is not None:
            self.on_frame(rgb, t)
        self.sr.push_frames(rgb, [t])

    def _read_main(self) -> None:
        s, attempts, container = self.source, 0, self._first
        self._first = None
        try:
            while not self._stop.is_set():
                if container is None:
                    try:
                        container = self._open_main()
                    except DataError as e:
                        attempts += 1
                        if attempts > self.reconnect:
                            self.sr.resumed(f"; gave up after {self.reconnect} reconnection attempts ({e})")
                            self.ended_by = f"lost: {e}"
                            return
                        self._stop.wait(BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1])
                        continue
                    self.sr.resumed()
                    attempts = 0
                clock: list = []
                try:
                    with container:
                        read_container(container, self._push_frame, self.sr.push_audio, self._stop,
                                       paced=s.kind == "file" and not self.fast, clock=clock,
                                       want_audio=s.audio is None, on_decode=self.sr.decoded)
                    if s.kind != "network" or self._stop.is_set():
                        self.ended_by = self.ended_by or "end of stream"
                        return
                    reason = "end of stream"
                except SourceLost as e:
                    if s.kind != "network":
                        raise DataError(f"{s.uri}: {e}") from e
                    reason = str(e)
                container = None
                if self.reconnect == 0:
                    self.ended_by = f"lost: {reason}"
                    return
                self.sr.gap(f"source lost ({reason})")
        except BaseException as e:  # the caller's thread raises it
            self.error = e
        finally:
            self._stop.set()
            self.sr.end()

    def _read_audio(self, container) -> None:
        try:
            with container:
                read_container(container, lambda *a: None, self.sr.push_audio, self._stop, paced=False, clock=[])
        except BaseException as e:
            self.error = self.error or e
            self._stop.set()

    def start(self) -> None:
        if self._threads:
            return
        if self._first is None and not self._stop.is_set():
            self._first = self._open_main()
        if self.source.audio is not None:
            mic = self._open_audio()
            self._threads.append(threading.Thread(target=self._read_audio, args=(mic,), daemon=True,
                                                  name="cfnsr-live-audio"))
        self._threads.insert(0, threading.Thread(target=self._read_main, daemon=True, name="cfnsr-live-source"))
        for t in self._threads:
            t.start()

    def __iter__(self):
        self.start()
        while (record := self.sr.next(timeout=0.5)) is not None:
            if record is not False:
                yield record
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop reading; the windows already queued are not run. Safe from a signal handler's thread."""
        self._stop.set()
        self.ended_by = self.ended_by or "stopped"
        self.sr.abort()
        for t in self._threads:
            t.join(self.timeout + 1)

    def summary(self) -> dict:
        return {**self.sr.summary(), "source": self.source.uri, "ended": self.ended_by}


def file_windows(recognizer, path: str | Path, hop: float = 0.5, progress: bool = True) -> list[dict]:
    """The windows of a whole file, decoded as fast as possible in this thread: what ``cfnsr predict --timeline``
    gives, and what ``cfnsr live`` on the same file must give (the same reader, the same window rule)."""
    from tqdm import tqdm

    path = Path(path)
    with open_input(str(path)) as container:
        if not container.streams.video:
            raise DataError(f"{path} has no video track")
        if not has_audio(container):
            raise DataError(f"{path} has no audio track (CFN-SR needs the clip's speech)")
        duration = float(container.duration or 0) / 1e6
        sr = StreamRecognizer(recognizer, hop, queue=1 << 30, wait=math.inf)
        expected = max(1, int(math.floor((duration - recognizer.spec.audio_duration) / hop + 1e-6)) + 1)
        rows: list[dict] = []
        with tqdm(total=expected, desc="timeline", unit="window", disable=not progress) as bar:
            def push_frame(rgb, t):
                sr.push_frames(rgb, [t])
                bar.update(len(done := sr.poll()))
                rows.extend(done)

            read_container(container, push_frame, sr.push_audio, threading.Event(), paced=False, clock=[])
            sr.end()
            rows.extend(done := sr.poll())
            bar.update(len(done))
    return rows


# ------------------------------------------------------------------------------------------------ outputs
def flat_row(record: dict, labels: list[str]) -> dict:
    """A window record as one CSV row (probabilities and the face box spread over columns)."""
    p = record.get("probabilities") or {}
    box = record.get("face") or [None] * 4
    row = {k: record.get(k) for k in ("window", "start_s", "end_s", "emotion", "crop", "face_lost",
                                      "face_fallback", "audio_padded", "latency_ms")}
    row.update({f"face_{k}": v for k, v in zip(("left", "top", "right", "bottom"), box)})
    row.update({f"p_{k}": p.get(k) for k in labels})
    return row


def csv_columns(labels: list[str]) -> list[str]:
    return list(flat_row({}, labels))


class Overlay:
    """The video with the face box and the running emotion drawn on it, encoded as frames arrive (H.264 in an
    mp4 written to ``path``, a temporary file renamed when closed)."""

    def __init__(self, path: Path, fps: float = 30.0):
        self.path, self.fps = Path(path), fps
        self.latest: dict | None = None
        self._out = self._stream = None
        self._ctx = None
        self._n = 0
        self._lock = threading.Lock()

    def show(self, record: dict) -> None:
        if record.get("type") == "window":
            self.latest = record

    def __call__(self, rgb: np.ndarray, t: float) -> None:
        import av
        import cv2

        with self._lock:
            if self._out is None:
                from ..fileio import atomic_path

                self._ctx = atomic_path(self.path)
                tmp = self._ctx.__enter__()
                self._out = av.open(str(tmp), "w", format="mp4")
                self._stream = self._out.add_stream("libx264", rate=int(round(self.fps)),
                                                    options={"preset": "veryfast", "tune": "zerolatency"})
                self._stream.width, self._stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                self._stream.pix_fmt = "yuv420p"
            img = rgb[:self._stream.height, :self._stream.width].copy()  # the stream keeps the frame as it came
            r = self.latest
            if r is not None:
                if r.get("face"):
                    left, top, right, bottom = (int(v) for v in r["face"])
                    cv2.rectangle(img, (left, top), (right, bottom), (0, 255, 0), 2)
                text = (f"{r['emotion']} {100 * r['probabilities'][r['emotion']]:.0f}%" if r.get("emotion")
                        else "no face")
                cv2.putText(img, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = self._n
            self._n += 1
            for packet in self._stream.encode(frame):
                self._out.mux(packet)

    def close(self, ok: bool = True) -> None:
        with self._lock:
            if self._out is None:
                return
            for packet in self._stream.encode():
                self._out.mux(packet)
            self._out.close()
            self._ctx.__exit__(None if ok else RuntimeError, None, None)
            self._out = None


def status_line(summary: dict, record: dict | None) -> str:
    lat, model = summary["latency_ms"], summary["stages_ms"]["model"]
    last = ""
    if record and record.get("emotion"):
        last = f"  {record['emotion']} {100 * record['probabilities'][record['emotion']]:.0f}%"
    elif record and record.get("face_lost"):
        last = "  no face"

    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    return (f"{summary['stream_s']:7.1f} s  windows {summary['windows']}  dropped {summary['dropped']}  late "
            f"{summary['late']}  face lost {summary['face_lost']}  gaps {summary['gaps']}  latency p50/p99 "
            f"{ms(lat['p50'])}/{ms(lat['p99'])} ms  model p50 {ms(model['p50'])} ms  "
            f"{summary['windows_per_s'] or 0:.2f} win/s{last}")


# ------------------------------------------------------------------------------------------------ `cfnsr live`
@dataclass(frozen=True)
class LiveOptions:
    source: str
    model: str
    backend: str | None = None
    device: str | None = "auto"
    hop: float = 0.5
    fast: bool = False
    audio: str | None = None
    audio_format: str | None = None
    jsonl: str | None = None  # "-": stdout (the default without --csv)
    csv: str | None = None
    overlay: str | None = None
    max_latency: float | None = None
    queue: int = 2
    reconnect: int = 3
    timeout: float = 5.0
    allow_center_crop: bool = False
    threads: int | None = None
    status_every: float = 10.0


def run_live(opts: LiveOptions, out=None, err=None) -> dict:
    """``cfnsr live``: records to JSON Lines / CSV as they come, a status line (a redrawn line on a terminal, a
    log line every ``status_every`` s otherwise), the summary at the end, on Ctrl-C or SIGTERM (the last JSON
    line, and on stderr). Files are written beside their path and renamed into place when the stream ends."""
    import contextlib
    import csv as csvlib
    import json
    import signal
    import sys

    from ..fileio import atomic_path
    from .recognizer import Recognizer

    out, err = out or sys.stdout, err or sys.stderr
    source = parse_source(opts.source, opts.audio, opts.audio_format)
    jsonl = opts.jsonl if opts.jsonl is not None else (None if opts.csv else "-")
    tty = err.isatty()
    with contextlib.ExitStack() as stack:
        threads = {"threads": opts.threads} if opts.threads else {}
        rec = stack.enter_context(Recognizer(opts.model, opts.backend, opts.device, opts.allow_center_crop, **threads))
        overlay = Overlay(Path(opts.overlay)) if opts.overlay else None
        stream = LiveStream(rec, source, opts.hop, opts.fast, reconnect=opts.reconnect, timeout=opts.timeout,
                            queue=opts.queue, max_latency=opts.max_latency, on_frame=overlay)
        if overlay is not None:
            rate = stream._first.streams.video[0].average_rate if stream._first is not None else None
            overlay.fps = float(rate) if rate else 30.0
        sinks = []
        if jsonl == "-":
            sinks.append(("jsonl", out))
        elif jsonl:
            sinks.append(("jsonl", stack.enter_context(open(stack.enter_context(atomic_path(jsonl)), "w"))))
        writer = None
        if opts.csv:
            f = stack.enter_context(open(stack.enter_context(atomic_path(opts.csv)), "w", newline=""))
            writer = csvlib.DictWriter(f, csv_columns(rec.labels))
            writer.writeheader()

        def emit(record: dict) -> None:
            for _, f in sinks:
                f.write(json.dumps(record) + "\n")
                f.flush()
            if writer is not None and record.get("type") == "window":
                writer.writerow(flat_row(record, rec.labels))

        def on_term(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() \
            else None
        interrupted, last_log, record = False, time.monotonic(), None
        try:
            for record in stream:
                emit(record)
                if overlay is not None:
                    overlay.show(record)
                if tty:
                    err.write("\r\033[K" + status_line(stream.summary(), record))
                    err.flush()
                elif time.monotonic() - last_log >= opts.status_every:
                    last_log = time.monotonic()
                    err.write(status_line(stream.summary(), record) + "\n")
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stream.stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        summary = {**stream.summary(), **({"ended": "interrupted"} if interrupted else {})}
        emit(summary)
        if overlay is not None:
            overlay.close()
        if tty:
            err.write("\n")
        err.write(f"summary: {status_line(summary, None)}; ended: {summary['ended']}; real-time factor "
                  f"{summary['realtime_factor']} (model work per window / hop: under 1 keeps up)\n")
        err.flush()
    if stream.error is not None and not interrupted:
        raise stream.error
    return summary
