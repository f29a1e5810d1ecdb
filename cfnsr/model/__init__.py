"""The CFN-SR network, its configurations, checkpoints and the published-checkpoint import."""

from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .config import EMOTIONS, ModelConfig, get_config, list_configs
from .network import CFNSR, create_model

__all__ = [
    "CFNSR",
    "EMOTIONS",
    "ModelConfig",
    "create_model",
    "get_config",
    "list_configs",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
