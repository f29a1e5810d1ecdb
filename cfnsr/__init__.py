"""cfnsr: train, export (fp32/fp16/int8 ONNX), build, validate and benchmark CFN-SR emotion recognisers.

Heavy modules are imported on first use, so ``import cfnsr`` and ``cfnsr --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("cfnsr.model", "load_model"),
    "create_model": ("cfnsr.model", "create_model"),
    "ModelConfig": ("cfnsr.model", "ModelConfig"),
    "get_config": ("cfnsr.model", "get_config"),
    "EMOTIONS": ("cfnsr.artifact", "EMOTIONS"),
    "Recognizer": ("cfnsr.engines.recognizer", "Recognizer"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cfnsr' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
