"""A map-style dataset (what torch's DataLoader takes) over a feature cache, with the published recipe's training
augmentation.

Training: random resized crop (area 0.8-1.4 of the frame, aspect 3/4-4/3, as MSAF's torchvision transform) and a
horizontal flip, then ImageNet normalisation; evaluation: normalisation only. One difference from MSAF, on
purpose: the crop and flip are drawn once per clip and applied to all its frames (MSAF drew them per frame, which
makes the face jump from frame to frame).
"""

from __future__ import annotations

import math
import random

import numpy as np

from .cache import FeatureCache
from .features import to_model_inputs


def random_resized_box(height: int, width: int, rng: random.Random, scale=(0.8, 1.4), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop box sampling: (top, left, h, w); falls back to the whole frame."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return 0, 0, height, width


class CacheDataset:
    """Items are torch tensors ``(video float32 (3,T,H,W), audio float32 (13,212), label int64)``.

    A plain class with ``__len__``/``__getitem__`` (what torch's map-style datasets are): ``cfnsr.data`` imports no
    torch until an item is asked for.
    """

    def __init__(self, cache: FeatureCache, actors=None, train: bool = False, seed: int = 0):
        self.cache = cache
        self.spec = cache.spec
        self.clips = cache.select(actors)
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index) only, so a resumed run sees the same crops."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def labels(self) -> list[int]:
        return [c.label for c in self.clips]

    def __getitem__(self, i: int):
        import torch

        entry = self.clips[i]
        frames = np.asarray(self.cache.frames(entry.stem))
        video, audio = to_model_inputs(frames, self.cache.mfcc(entry.stem), self.spec)
        video = torch.from_numpy(video)
        if self.train:
            video = self.augment(video, random.Random(hash((self.seed, self.epoch, i))))
        return video, torch.from_numpy(audio), torch.tensor(entry.label, dtype=torch.long)

    def augment(self, video, rng: random.Random):
        import torch.nn.functional as F

        _, t, h, w = video.shape
        top, left, ch, cw = random_resized_box(h, w, rng)
        crop = video[:, :, top:top + ch, left:left + cw].permute(1, 0, 2, 3)  # (T, 3, ch, cw)
        out = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).permute(1, 0, 2, 3)
        if rng.random() < 0.5:
            out = out.flip(-1)
        return out.contiguous()


def make_loader(dataset: CacheDataset, batch_size: int, shuffle: bool, workers: int = 0, sampler=None,
                pin_memory: bool = False, seed: int = 0):
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=pin_memory, generator=g, drop_last=False,
                      persistent_workers=workers > 0)
