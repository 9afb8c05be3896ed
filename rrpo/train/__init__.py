"""The RRPO trainer (on transformers.Trainer) and its configuration (`RRPOConfig`, on TrainingArguments)."""

from rrpo.train.config import LOSS_TYPES, RRPOConfig, TrainConfig

__all__ = ["LOSS_TYPES", "RRPOConfig", "TrainConfig"]
