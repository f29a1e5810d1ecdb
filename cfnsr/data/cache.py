"""The feature cache that ``cfnsr preprocess`` writes and training, calibration and validation read.

Layout::

    CACHE/spec.json          PreprocessSpec (written first; a cache never mixes specs)
    CACHE/frames/<stem>.npy  uint8 (T, H, W, 3) RGB face crops, memory-mapped when read
    CACHE/mfcc/<stem>.npy    float32 (13, 212)
    CACHE/progress.jsonl     one line per finished clip, appended as clips finish (resume reads it)
    CACHE/failures.json      clips that could not be processed, with the reason
    CACHE/manifest.json      written last: every clip sorted by name, counts, and the cache hash

A clip's arrays are written to temporary names and renamed before its progress line is appended, so an
interrupted run never leaves a partial clip that looks complete; a run over the same folder continues where the
last one stopped, and the final manifest does not depend on the order in which clips finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import CfnsrError, DataError
from ..fileio import pid_alive, save_npy, sha256_file, shown, write_json
from .ravdess import find_clips, find_landmarks, parse_name
from .spec import PreprocessSpec

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ClipEntry:
    """One clip of a cache's manifest: where it came from, its label, how its face was found, its arrays' hashes."""

    stem: str
    actor: int
    label: int
    frames_sha256: str
    mfcc_sha256: str
    emotion: str | None = None
    intensity: int | None = None
    statement: int | None = None
    repetition: int | None = None
    vocal_channel: int | None = None
    source: str | None = None  # the raw clip, relative to the cache's raw_dir
    source_sha256: str | None = None
    landmarks: str | None = None
    crop: str | None = None  # landmarks | haar | center
    crop_note: str | None = None
    audio_padded: bool | None = None
    warnings: tuple[str, ...] = ()  # what the clip is not (truncated, silent, short audio): features.audio_warnings

    REQUIRED = ("stem", "actor", "label", "frames_sha256", "mfcc_sha256")

    @classmethod
    def from_dict(cls, d: dict) -> "ClipEntry":
        """A manifest row; KeyError naming the first entry it lacks."""
        missing = [k for k in cls.REQUIRED if k not in d]
        if missing:
            raise KeyError(missing[0])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def _process_job(args) -> dict:
    """Worker: one clip -> arrays on disk; returns its manifest row (a ClipEntry's dict) or its failure.

    What is wrong with the clip (it does not decode, it is not what it seems under ``strict``) is that clip's
    failure; what is wrong with the machine (a full disk, a folder that cannot be written) stops the whole run."""
    clip, raw_dir, cache_dir, spec_dict, use_detector, allow_center_crop, strict = args
    clip, raw_dir, cache_dir = Path(clip), Path(raw_dir), Path(cache_dir)
    spec = PreprocessSpec.from_dict(spec_dict)
    name = parse_name(clip)
    try:
        from .features import extract_clip

        source_sha = sha256_file(clip)
        lm = find_landmarks(raw_dir, name)
        feats = extract_clip(clip, spec, lm, use_detector=use_detector, allow_center_crop=allow_center_crop)
        if strict and feats.warnings:
            raise DataError(f"{'; '.join(feats.warnings)} (--strict)")
    except DataError as e:
        return {"stem": name.stem, "source": str(clip), "error": str(e)}
    except OSError as e:
        return {"stem": name.stem, "source": str(clip), "error": f"cannot read it: {e.strerror or e}"}
    except Exception as e:  # an unexpected decoder failure is reported, never fatal for the whole run
        return {"stem": name.stem, "source": str(clip), "error": f"{type(e).__name__}: {e}"}
    frames_sha = save_npy(cache_dir / "frames" / f"{name.stem}.npy", feats.frames)
    mfcc_sha = save_npy(cache_dir / "mfcc" / f"{name.stem}.npy", feats.mfcc)
    return ClipEntry(
        stem=name.stem, actor=name.actor, label=name.label, frames_sha256=frames_sha, mfcc_sha256=mfcc_sha,
        emotion=name.emotion_name, intensity=name.intensity, statement=name.statement, repetition=name.repetition,
        vocal_channel=name.vocal_channel, source=str(clip.relative_to(raw_dir)), source_sha256=source_sha,
        landmarks=str(lm.relative_to(raw_dir)) if lm else None, crop=feats.crop_method, crop_note=feats.crop_note,
        audio_padded=feats.audio_padded, warnings=tuple(feats.warnings),
    ).to_dict()


ENTRY_KEYS = ("stem", "label", "actor", "source_sha256", "frames_sha256", "mfcc_sha256")


def _read_progress(path: Path) -> dict[str, dict]:
    """The finished clips ``progress.jsonl`` lists. A line torn by an interruption, or one that is not a clip entry,
    is skipped: that clip is simply done again."""
    done = {}
    if path.exists():
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}; remove it to process every clip again") from e
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and all(k in entry for k in ENTRY_KEYS) and isinstance(entry["stem"], str):
                done[entry["stem"]] = entry
    return done


def clips_hash(entries: list[ClipEntry], prefix: bytes = b"") -> str:
    """sha256 over the clips' stems and array hashes, in the given order (the identity of a clip list)."""
    h = hashlib.sha256(prefix)
    for e in entries:
        h.update(f"{e.stem}:{e.frames_sha256}:{e.mfcc_sha256}\n".encode())
    return h.hexdigest()


def cache_hash(entries: list[ClipEntry], spec: PreprocessSpec) -> str:
    return clips_hash(sorted(entries, key=lambda e: e.stem), spec.to_json().encode())


def estimate_bytes(n_clips: int, spec: PreprocessSpec) -> int:
    return n_clips * (spec.frames * spec.image_size**2 * 3 + spec.n_mfcc * spec.mfcc_frames * 4)


def preprocess(
    raw_dir: str | Path,
    cache_dir: str | Path,
    spec: PreprocessSpec,
    workers: int = 1,
    include_song: bool = False,
    use_detector: bool = True,
    allow_center_crop: bool = False,
    limit: int | None = None,
    progress: bool = True,
    log=print,
    force: bool = False,
    strict: bool = False,
) -> dict:
    """Build (or continue) the feature cache of ``raw_dir`` in ``cache_dir``; returns the manifest.

    The face of each clip is found by ``features.find_faces``: a clip where no face is found is reported and skipped,
    unless ``allow_center_crop`` (or ``use_detector=False``) takes the centre of its frames.
    ``limit`` stops after that many new clips (used to test resuming). A folder that holds something else (files
    that are not a cfnsr cache, or the cache of another raw folder) is not written into without ``force``; a second
    preprocess into the same folder while one runs is refused.
    """
    raw_dir, cache_dir = Path(raw_dir).absolute(), Path(cache_dir)
    clips = find_clips(raw_dir, include_song=include_song, log=log)
    if not clips:
        raise DataError(f"no full-AV {'speech or song' if include_song else 'speech'} clips under {raw_dir}/Actor_XX")
    _check_cache_folder(cache_dir, raw_dir, force)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache_dir, log):
        return _preprocess_locked(raw_dir, cache_dir, clips, spec, workers, (use_detector, allow_center_crop), limit,
                                  progress, log, strict)


def _check_cache_folder(cache_dir: Path, raw_dir: Path, force: bool) -> None:
    if not force and (cache_dir / "spec.json").is_file():
        _read_spec(cache_dir / "spec.json")  # an empty or torn one is said before anything is written
    if not cache_dir.exists() or force:
        return
    if not cache_dir.is_dir():
        raise DataError(f"{cache_dir} exists and is not a folder")
    ours = {"spec.json", MANIFEST, "failures.json", "progress.jsonl", "frames", "mfcc", ".lock"}
    others = sorted(p.name for p in cache_dir.iterdir() if p.name not in ours)
    if others:
        raise DataError(f"{cache_dir} holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}), "
                        "not a cfnsr cache: choose an empty or new folder, or pass --force to write into it")
    manifest = cache_dir / MANIFEST
    if manifest.is_file():
        try:
            old_raw = json.loads(manifest.read_text()).get("raw_dir")
        except (OSError, ValueError):
            old_raw = None
        if old_raw and Path(old_raw).resolve() != raw_dir.resolve():
            raise DataError(f"{cache_dir} holds the cache of another data set ({old_raw}); choose a new folder, or "
                            "pass --force to replace it")


@contextlib.contextmanager
def _cache_lock(cache_dir: Path, log=print):
    """One preprocess per cache folder at a time: a second one is refused at once, naming the first's pid.

    The lock is an flock on ``.lock``, which records the owner's pid and is emptied on a clean exit. The kernel
    releases the flock when its owner dies (workers never hold it: see ``workers.pool``), so a lock whose recorded
    owner is gone is taken over, and said so."""
    import fcntl

    path = cache_dir / ".lock"
    with open(path, "a+") as f:
        f.seek(0)
        holder = f.read().strip()
        if not _try_lock(f, wait=0 if _owner_alive(holder) else 5.0):
            if _owner_alive(holder) or not holder.isdigit():
                raise DataError(f"another cfnsr preprocess (pid {holder or '?'}) is writing {cache_dir}: wait for it "
                                "to finish, or use another folder")
            others = _lock_holders(path)
            raise DataError(f"the lock of {cache_dir} is held by process(es) {others or '?'}, left over from "
                            f"preprocess pid {holder}, which is gone: stop them, then run again")
        if holder.isdigit() and int(holder) != os.getpid():
            log(f"note: took over the lock of {cache_dir}: preprocess pid {holder}, which held it, is no longer "
                "running (it was killed?); continuing its work")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_spec(path: Path) -> PreprocessSpec:
    try:
        return PreprocessSpec.from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, CfnsrError) as e:
        what = "empty" if path.stat().st_size == 0 else f"not a preprocessing spec ({str(e).splitlines()[0][:100]})"
        raise DataError(f"{path} is {what}: an earlier preprocess was interrupted while starting; remove it (or "
                        "pass --force) to start the cache over") from e


def _owner_alive(holder: str) -> bool:
    return not holder.isdigit() or pid_alive(int(holder))  # an unknown owner is assumed to run


def _try_lock(f, wait: float) -> bool:
    """flock ``f``; when its recorded owner is dead, wait up to ``wait`` s for its dying workers to let go."""
    import fcntl
    import time

    end = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= end:
                return False
            time.sleep(0.1)


def _lock_holders(path: Path) -> list[int]:
    """Pids holding an flock on ``path`` (Linux /proc/locks), for a message."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            return sorted({int(line.split()[4]) for line in f if line.split()[5].endswith(f":{inode}")})
    except (OSError, ValueError, IndexError):
        return []


def _preprocess_locked(raw_dir, cache_dir, clips, spec, workers, face_policy, limit, progress, log,
                       strict=False) -> dict:
    from tqdm import tqdm

    from ..workers import pool as worker_pool

    spec_path = cache_dir / "spec.json"
    if spec_path.exists():
        old = _read_spec(spec_path)
        if old != spec:
            raise DataError(
                f"{cache_dir} holds features made with another preprocessing spec ({old.to_json()}); "
                "use a new output folder"
            )
    else:
        write_json(spec_path, spec.to_dict())
    (cache_dir / "frames").mkdir(exist_ok=True)
    (cache_dir / "mfcc").mkdir(exist_ok=True)
    manifest_path = cache_dir / MANIFEST
    progress_path = cache_dir / "progress.jsonl"
    done = _read_progress(progress_path)
    # A clip counts as done only if its arrays exist and its source file has not changed.
    todo = []
    for clip, name in clips:
        entry = done.get(name.stem)
        ok = (
            entry is not None
            and (cache_dir / "frames" / f"{name.stem}.npy").exists()
            and (cache_dir / "mfcc" / f"{name.stem}.npy").exists()
            and entry["source_sha256"] == sha256_file(clip)
        )
        if not ok:
            done.pop(name.stem, None)
            todo.append(clip)
    if limit is not None:
        todo = todo[:limit]
    size_gb = estimate_bytes(len(clips), spec) / 1e9
    log(f"{len(clips)} clips in {raw_dir} ({len(done)} already cached, {len(todo)} to process); "
        f"the cache will take about {size_gb:.2f} GB in {cache_dir}")
    import shutil

    need, free = estimate_bytes(len(todo), spec), shutil.disk_usage(cache_dir).free
    if need > free:
        raise CfnsrError(f"cannot write the cache {cache_dir}: its {len(todo)} clips need about {need / 1e9:.2f} GB "
                         f"and the disk has {free / 1e9:.2f} GB free")
    manifest_path.unlink(missing_ok=True)  # the cache is incomplete until the manifest is written again
    failures = {}
    jobs = [(str(c), str(raw_dir), str(cache_dir), spec.to_dict(), *face_policy, strict) for c in todo]
    bar = tqdm(total=len(jobs), desc="preprocess", unit="clip", disable=not progress)
    with open(progress_path, "a") as plog:
        def record(result: dict) -> None:
            if "error" in result:
                failures[result["stem"]] = result
                bar.write(f"skipped {shown(result['source'])}: {shown(result['error'])}")
            else:
                for w in result.get("warnings") or []:
                    bar.write(f"warning: {shown(result['source'])}: {w}")
                done[result["stem"]] = result
                plog.write(json.dumps(result) + "\n")
                plog.flush()
            bar.update()

        if workers > 1 and len(jobs) > 1:
            with worker_pool(workers) as pool:
                for result in pool.map(_process_job, jobs, chunksize=2):
                    record(result)
        else:
            for job in jobs:
                record(_process_job(job))
    bar.close()
    if limit is not None and len(done) + len(failures) < len(clips):
        return {"complete": False, "done": len(done)}
    write_json(cache_dir / "failures.json", sorted(failures.values(), key=lambda e: e["stem"]))
    entries = sorted(done.values(), key=lambda e: e["stem"])
    manifest = {
        "format": "cfnsr-feature-cache",
        "spec": spec.to_dict(),
        "raw_dir": str(raw_dir),
        "clips": entries,
        "failures": sorted(failures.values(), key=lambda e: e["stem"]),
        "counts": {
            "clips": len(entries),
            "per_emotion": dict(sorted(Counter(e["emotion"] for e in entries).items())),
            "per_actor": {str(k): v for k, v in sorted(Counter(e["actor"] for e in entries).items())},
            "per_crop": dict(sorted(Counter(e["crop"] for e in entries).items())),
        },
        "hash": cache_hash([ClipEntry.from_dict(e) for e in entries], spec),
    }
    write_json(manifest_path, manifest)
    return manifest


def format_summary(manifest: dict) -> str:
    c = manifest["counts"]
    lines = [f"{c['clips']} clips cached (hash {manifest['hash'][:12]})",
             "  per emotion: " + ", ".join(f"{k} {v}" for k, v in c["per_emotion"].items()),
             "  per actor:   " + ", ".join(f"{int(k):02d}:{v}" for k, v in c["per_actor"].items()),
             "  face crop:   " + ", ".join(f"{k} {v}" for k, v in c["per_crop"].items())]
    if manifest["failures"]:
        lines.append(f"  {len(manifest['failures'])} clips failed:")
        lines += [f"    {f['source']}: {f['error']}" for f in manifest["failures"]]
    return "\n".join(lines)


@dataclass
class FeatureCache:
    """A finished cache: its spec, its clips, and memory-mapped access to their arrays."""

    root: Path
    spec: PreprocessSpec
    clips: list[ClipEntry]
    hash: str
    raw_dir: Path | None = None  # the RAVDESS folder the clips were decoded from (their "source" is relative to it)

    @classmethod
    def open(cls, root: str | Path) -> "FeatureCache":
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            hint = (" (an interrupted `cfnsr preprocess`? run it again to finish)"
                    if (root / "spec.json").exists() else "")
            raise DataError(f"{root} is not a finished cfnsr feature cache: no {MANIFEST}{hint}")
        try:
            m = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path} is not a readable cfnsr cache manifest: {e}") from e
        if not isinstance(m, dict) or m.get("format") != "cfnsr-feature-cache":
            raise DataError(f"{path} is not a cfnsr feature cache manifest")
        try:
            spec = PreprocessSpec.from_dict(m["spec"])
        except (KeyError, TypeError, ValueError, CfnsrError) as e:
            raise DataError(f"{path} has no valid preprocessing spec: {e}") from e
        clips = m.get("clips")
        if not isinstance(clips, list) or not clips:
            raise DataError(f"{path} lists no clips: preprocess the data again (cfnsr preprocess)")
        need = ClipEntry.REQUIRED
        broken = [c.get("stem", f"#{i}") if isinstance(c, dict) else f"#{i}" for i, c in enumerate(clips)
                  if not isinstance(c, dict) or any(k not in c for k in need)]
        if broken:
            raise DataError(f"{path}: {len(broken)} clip entries lack {'/'.join(need)} (first: {broken[0]})")
        if "hash" not in m:
            raise DataError(f"{path} has no hash entry: preprocess the data again")
        try:
            entries = [ClipEntry.from_dict(c) for c in clips]
        except TypeError as e:
            raise DataError(f"{path}: a clip entry is malformed ({e})") from e
        return cls(root, spec, entries, m["hash"], Path(m["raw_dir"]) if m.get("raw_dir") else None)

    @property
    def actors(self) -> list[int]:
        return sorted({c.actor for c in self.clips})

    def select(self, actors=None) -> list[ClipEntry]:
        if actors is None:
            return list(self.clips)
        actors = set(actors)
        return [c for c in self.clips if c.actor in actors]

    def frames(self, stem: str) -> np.ndarray:
        """uint8 (T, S, S, 3) face crops of a clip, memory-mapped; its shape is checked against the spec."""
        s = self.spec
        return self._array("frames", stem, (s.frames, s.image_size, s.image_size, 3), mmap=True)

    def mfcc(self, stem: str) -> np.ndarray:
        """float32 (n_mfcc, frames) MFCC of a clip; its shape and finiteness are checked."""
        a = self._array("mfcc", stem, (self.spec.n_mfcc, self.spec.mfcc_frames))
        if not np.isfinite(a).all():
            raise DataError(f"clip {stem} in the cache {self.root} has {int((~np.isfinite(a)).sum())} non-finite MFCC "
                            "values (NaN/Inf): preprocess it again")
        return a

    def check_checkpoint(self, model_config, preprocess: PreprocessSpec | None) -> None:
        """Refuse a cache that does not fit a checkpoint: other shapes, or another preprocessing than it was trained
        with (export and validate both ask this)."""
        self.check_model(model_config)
        if preprocess is not None and self.spec != preprocess:
            raise DataError(f"the cache {self.root} was preprocessed differently from the checkpoint's training data "
                            f"(cache {self.spec.to_json()}, checkpoint {preprocess.to_json()})")

    def source(self, entry: ClipEntry) -> Path:
        """The raw clip a cache entry was made from (a media artifact's PCM is decoded from it)."""
        src = Path(entry.source or "")
        path = src if src.is_absolute() or self.raw_dir is None else self.raw_dir / src
        if not path.is_file():
            raise DataError(f"clip {entry.stem}: its raw file {path} is not there; a media artifact is checked on "
                            "the clips' audio, so the RAVDESS folder the cache was made from must be present")
        return path

    def verify(self, actors=None) -> None:
        """Every selected clip's arrays exist, have the spec's shapes and finite values; else a DataError naming the
        clip. Cheap (the MFCCs are small, the frames are memory-mapped), so training checks before it starts."""
        for c in self.select(actors):
            self.frames(c.stem)
            self.mfcc(c.stem)

    def _array(self, kind: str, stem: str, shape: tuple, mmap: bool = False) -> np.ndarray:
        path = self.root / kind / f"{stem}.npy"
        try:
            a = np.load(path, mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            raise DataError(f"clip {stem}: {path} is missing from the cache (preprocess again)") from None
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"clip {stem}: {path} is unreadable or truncated ({e}); preprocess again") from e
        if tuple(a.shape) != tuple(shape):
            raise DataError(f"clip {stem}: {path} has shape {tuple(a.shape)}, the cache's spec says {tuple(shape)}")
        return a

    def check_model(self, model_config) -> None:
        """Refuse a cache whose shapes do not fit the model."""
        s, m = self.spec, model_config
        if (s.frames, s.image_size, s.n_mfcc, s.mfcc_frames) != (m.frames, m.image_size, m.mfcc_bins, m.mfcc_frames):
            raise DataError(
                f"cache {self.root} holds {s.frames} frames of {s.image_size}x{s.image_size} and MFCC "
                f"({s.n_mfcc},{s.mfcc_frames}); model configuration {m.name!r} expects {m.frames} frames of "
                f"{m.image_size}x{m.image_size} and ({m.mfcc_bins},{m.mfcc_frames}): preprocess with "
                f"`cfnsr preprocess --config {m.name}`"
            )

