"""Parameters per branch and FLOPs at the configured input size."""

from __future__ import annotations

import torch

from .config import ModelConfig
from .network import CFNSR


def example_inputs(cfg: ModelConfig, batch: int = 1, generator: torch.Generator | None = None):
    video = torch.randn(batch, 3, cfg.frames, cfg.image_size, cfg.image_size, generator=generator)
    audio = torch.randn(batch, cfg.mfcc_bins, cfg.mfcc_frames, generator=generator)
    return video, audio


def summarize(model: CFNSR, count_flops: bool = True) -> dict:
    cfg = model.config
    branches = {
        "video (3D ResNeXt)": model.video,
        "audio (MFCCNet)": model.audio,
        "fusion (transformer + attention)": model.fusion,
        "classifier": model.fc,
    }
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in branches.items()}
    out = {
        "config": cfg.name,
        "inputs": {
            "video": [1, 3, cfg.frames, cfg.image_size, cfg.image_size],
            "audio": [1, cfg.mfcc_bins, cfg.mfcc_frames],
        },
        "parameters": params,
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        was_training = model.training
        model.eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*example_inputs(cfg))
        model.train(was_training)
        # FlopCounterMode counts a multiply-add as 2 FLOPs.
        out["gflops"] = counter.get_total_flops() / 1e9
    return out


def format_summary(s: dict) -> str:
    width = max(len(k) for k in s["parameters"]) + 2
    lines = [f"CFN-SR configuration {s['config']!r}",
             f"  inputs: video {tuple(s['inputs']['video'])}, audio {tuple(s['inputs']['audio'])}",
             "  parameters:"]
    for name, n in s["parameters"].items():
        lines.append(f"    {name:<{width}}{n:>14,}")
    lines.append(f"    {'total':<{width}}{s['total_parameters']:>14,}")
    if "gflops" in s:
        lines.append(f"  FLOPs per clip: {s['gflops']:.1f} GFLOPs (multiply-add = 2 FLOPs)")
    return "\n".join(lines)
