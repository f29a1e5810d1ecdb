"""The evaluation loop: a model's logits over a dataset, shared by training (validation each epoch) and
``cfnsr evaluate``, which imports no trainer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.dataset import make_loader


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 16, device: torch.device | None = None,
            autocast=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of every item of ``dataset`` (eval mode, in order)."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    logits, labels = [], []
    for video, audio, label in make_loader(dataset, batch_size, shuffle=False):
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            out = model(video.to(device, non_blocking=True), audio.to(device, non_blocking=True))
        logits.append(out.float().cpu().numpy())
        labels.append(label.numpy())
    model.train(was)
    return np.concatenate(logits), np.concatenate(labels)
