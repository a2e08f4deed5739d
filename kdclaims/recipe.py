"""A training recipe: optimiser, learning-rate schedule and epochs (Appendices E, F, G of the paper).

The recipe is part of an architecture's registration (``kdclaims.models.register_architecture``), so
this module is the small, dependency-free place both ``kdclaims.models`` and ``kdclaims.config`` import
it from, without either importing the other at load time. Batch 128, no augmentation, scored at the
last epoch, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from kdclaims.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "warmup_cosine")


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # "sgd" | "adamw"
    lr: float  # peak learning rate
    weight_decay: float
    epochs: int
    batch_size: int = 128  # examples per step; the last, partial batch of an epoch is kept
    momentum: float = 0.0  # SGD only
    schedule: str = "multistep"  # "multistep" | "warmup_cosine"; stepped once per epoch
    milestones: tuple[int, ...] = ()  # multistep: lr *= gamma after these epochs
    gamma: float = 1.0
    warmup_epochs: int = 0  # warmup_cosine: linear warm-up to lr over these epochs ...
    final_lr: float = 0.0  # ... then cosine decay to final_lr over the remaining epochs

    def scaled_to(self, epochs: int) -> "Recipe":
        """The same recipe over fewer epochs: milestones and warm-up keep their place in the run."""
        if epochs == self.epochs:
            return self
        ratio = epochs / self.epochs
        milestones = tuple(sorted({max(1, round(m * ratio)) for m in self.milestones}))
        warmup = max(1, round(self.warmup_epochs * ratio)) if self.warmup_epochs else 0
        return dataclasses.replace(self, epochs=epochs, milestones=milestones, warmup_epochs=min(warmup, epochs - 1))

    def lr_at_epoch(self, epoch: int) -> float:
        """Learning rate used during ``epoch`` (0-based)."""
        if self.schedule == "multistep":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.schedule == "warmup_cosine":
            if epoch < self.warmup_epochs:
                # Linear warm-up: lr/warmup, 2 lr/warmup, ..., lr (the paper does not give the start).
                return self.lr * (epoch + 1) / self.warmup_epochs
            decay_epochs = max(1, self.epochs - self.warmup_epochs - 1)
            progress = (epoch - self.warmup_epochs) / decay_epochs
            return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1 + math.cos(math.pi * progress))
        raise ConfigError(f"unknown schedule {self.schedule!r}: use 'multistep' or 'warmup_cosine'")
