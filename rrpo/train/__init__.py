"""The RRPO trainer (on transformers.Trainer) and its configuration."""

from rrpo.train.config import LOSS_TYPES, TrainConfig

__all__ = ["LOSS_TYPES", "TrainConfig"]
