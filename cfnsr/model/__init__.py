"""The CFN-SR network, its configurations, checkpoints and the published-checkpoint import.

Names are imported on first use: ``cfnsr.model.config`` (the configurations and their registry) imports no torch,
so ``cfnsr --help`` can list the configuration names without it.
"""

from __future__ import annotations

_LAZY = {
    "CFNSR": "network",
    "create_model": "network",
    "ModelConfig": "config",
    "get_config": "config",
    "list_configs": "config",
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
