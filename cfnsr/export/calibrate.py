"""INT8 calibration on RAVDESS clips: which clips, one reader that feeds every quantizer, ranges, and their cache.

* Clips are drawn from the checkpoint's *training* actors only (never its validation or test actors), stratified
  over emotion x actor so every cell is represented before any repeats.
* ``RavdessCalibrationReader`` is an ONNX Runtime ``CalibrationDataReader`` (the interface ORT's and other
  quantizers take), registered as one when ONNX Runtime is first needed: importing this module imports no ONNX
  Runtime.
* Ranges come from ONNX Runtime's calibrators (minmax, entropy, percentile), fed one clip at a time: their
  collectors merge as they go, so memory stays at one clip's activations (a paper-size clip is ~1.3 GB) instead of
  growing with the number of clips.
* The ranges are cached in a JSON file keyed by the sha256 of the fp32 model, the clip list and the method; a
  matching cache is reused, anything else is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data.cache import FeatureCache, clips_hash
from ..data.features import to_model_inputs
from ..errors import CfnsrError, DataError
from ..fileio import temp_dir, write_json
from .formats import check_choice

log = logging.getLogger(__name__)


def select_clips(cache: FeatureCache, train_actors, count: int, seed: int = 0,
                 forbidden_actors=()) -> list[dict]:
    """Up to ``count`` clips of ``train_actors``, round-robin over (emotion, actor) cells in a seeded order."""
    forbidden = set(forbidden_actors)
    leak = forbidden & set(train_actors)
    if leak:
        raise CfnsrError(f"calibration actors {sorted(leak)} are evaluation actors of this checkpoint")
    cells: dict[tuple, list] = defaultdict(list)
    for c in cache.select(train_actors):
        cells[(c.label, c.actor)].append(c)
    if not cells:
        raise DataError(f"the cache {cache.root} has no clips of the training actors {sorted(train_actors)}")
    rng = random.Random(seed)
    keys = sorted(cells)
    rng.shuffle(keys)
    for k in keys:
        cells[k].sort(key=lambda c: c.stem)
        rng.shuffle(cells[k])
    chosen = []
    depth = 0
    while len(chosen) < count and any(len(cells[k]) > depth for k in keys):
        for k in keys:
            if depth < len(cells[k]) and len(chosen) < count:
                chosen.append(cells[k][depth])
        depth += 1
    return chosen


def clip_list_hash(clips: list[dict]) -> str:
    return clips_hash(clips)


class RavdessCalibrationReader:
    """Feeds ``{"video": (1,3,T,H,W), "audio": (1,13,212)}`` per clip; ``set_range`` selects a slice (ORT's
    strided calibration calls it), ``rewind`` starts over."""

    def __init__(self, cache: FeatureCache, clips: list[dict]):
        self.cache, self.clips = cache, clips
        self.start, self.end, self.pos = 0, len(clips), 0

    def __len__(self) -> int:
        return len(self.clips)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.pos = start_index, min(end_index, len(self.clips)), start_index

    def rewind(self) -> None:
        self.pos = self.start

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def get_next(self):
        if self.pos >= self.end:
            return None
        c = self.clips[self.pos]
        self.pos += 1
        video, audio = to_model_inputs(np.asarray(self.cache.frames(c.stem)), self.cache.mfcc(c.stem),
                                       self.cache.spec)
        return {"video": video[None], "audio": audio[None]}


@contextlib.contextmanager
def _quiet(step: str):
    """ONNX Runtime's calibrators print() a line per clip ("Collecting tensor data and making histogram ..."),
    which buries the progress bar: send their stdout to the debug log instead."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    for line in buf.getvalue().splitlines():
        log.debug("onnxruntime calibrator (%s): %s", step, line)


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def compute_ranges(model_path: str | Path, reader: RavdessCalibrationReader, method: str,
                   percentile: float = 99.999, progress: bool = True,
                   entropy_bins: int = 512) -> dict[str, tuple[float, float]]:
    """Symmetric activation ranges {tensor: (low, high)} from ORT's calibrator, one clip per collect call.

    ``entropy_bins``: histogram bins for the KL-divergence search (TensorRT uses 2048; ORT's search costs time
    linear in the bins per tensor, about 2 s per tensor at 2048 on this CPU, so 512 is the default here).
    """
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.calibrate import create_calibrator
    from tqdm import tqdm

    CalibrationDataReader.register(RavdessCalibrationReader)

    check_choice("calib_method", method)
    extra = {"symmetric": True}
    if method == "percentile":
        extra["percentile"] = percentile
    if method == "entropy":
        extra.update(num_bins=entropy_bins, num_quantized_bins=128)
    with temp_dir("calib") as tmp:
        calibrator = create_calibrator(Path(model_path), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_calibration_method(method), extra_options=extra)
        for i in tqdm(range(len(reader)), desc=f"calibrate ({method})", unit="clip", disable=not progress):
            reader.set_range(i, i + 1)
            with _quiet("collect_data"):
                calibrator.collect_data(reader)
        with _quiet("compute_data"):
            data = calibrator.compute_data()
        del calibrator
    ranges = {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
              for name, td in data.data.items()}
    bad = [name for name, r in ranges.items() if not np.isfinite(r).all()]
    if bad:
        raise DataError(f"calibration gave non-finite activation ranges for {len(bad)} tensors (first: {bad[0]}): the "
                        "model produces NaN/Inf on these clips; check the checkpoint and the cache")
    return ranges


def tensors_data(ranges: dict[str, tuple[float, float]]):
    """Ranges as the TensorsData ORT's quantizers take."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData

    return TensorsData(CalibrationMethod.MinMax,
                       {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()})


def cache_key(model_sha256: str, clips: list[dict], method: str, percentile: float, entropy_bins: int) -> str:
    text = json.dumps({"model": model_sha256, "clips": clip_list_hash(clips), "method": method,
                       "percentile": percentile if method == "percentile" else None,
                       "entropy_bins": entropy_bins if method == "entropy" else None}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def calibrate(model_path: str | Path, model_sha256: str, cache: FeatureCache, clips: list[dict], method: str,
              cache_dir: str | Path, percentile: float = 99.999, progress: bool = True,
              entropy_bins: int = 512) -> tuple[dict, dict]:
    """Ranges for ``model_path`` from ``clips``, through the range cache in ``cache_dir``.

    Returns (ranges, info) where info says whether the cache was used and records method, clip count, list hash.
    """
    key = cache_key(model_sha256, clips, method, percentile, entropy_bins)
    path = Path(cache_dir) / f"calib-{key[:16]}.json"
    info = {"method": method, "clips": len(clips), "clip_list_sha256": clip_list_hash(clips),
            "model_sha256": model_sha256, "cache_key": key, "cache_file": str(path),
            "actors": sorted({c.actor for c in clips})}
    if method == "percentile":
        info["percentile"] = percentile
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                cached = {k: tuple(v) for k, v in stored["ranges"].items()}
                if all(np.isfinite(v).all() for v in cached.values()):
                    return cached, {**info, "cache_hit": True}  # a cache with NaN ranges is recomputed
        except (json.JSONDecodeError, KeyError):
            pass  # unreadable cache: recompute and overwrite
    ranges = compute_ranges(model_path, RavdessCalibrationReader(cache, clips), method, percentile, progress,
                            entropy_bins)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, "info": info, "ranges": {k: list(v) for k, v in ranges.items()}})
    return ranges, {**info, "cache_hit": False}
