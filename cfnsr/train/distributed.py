"""Training on several processes with PyTorch's own DistributedDataParallel under ``torchrun`` (NCCL on GPUs, gloo
on CPUs); one process without it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from ..lazy import cuda_available


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed() -> Dist:
    """Under ``torchrun`` (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{d.local_rank}") if cuda_available() else torch.device("cpu")
    return torch.device(name)


def distribute(model: nn.Module, train_ds, d: Dist, device: torch.device, seed: int):
    """(the module to train, the sampler): DistributedDataParallel and a DistributedSampler under torchrun."""
    if d.world <= 1:
        return model, None
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return net, DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed)
