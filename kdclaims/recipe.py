"""Every architecture's training recipe (optimiser, learning rate and schedule, weight decay, epochs,
batch size), in one place: read top to bottom.

A ``Recipe`` is an optimiser, its learning-rate schedule, the epochs and the batch size; below it are
the paper's recipes (Appendices E, F, G), which ``kdclaims.models`` registers with each architecture.
Batch 128, no augmentation, scored at the last epoch, as in the paper. The smoke profile shortens a
recipe with ``Recipe.scaled_to`` (its epochs are registered with the architecture's smoke size in
``kdclaims/models.py``).
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
    lr: float  # peak learning rate (step size per optimiser step)
    weight_decay: float  # L2 coefficient (SGD: added to the gradient; AdamW: decoupled, times lr)
    epochs: int  # passes over the training set
    batch_size: int = 128  # examples per step; the last, partial batch of an epoch is kept
    momentum: float = 0.0  # SGD only
    schedule: str = "multistep"  # "multistep" | "warmup_cosine"; stepped once per epoch
    milestones: tuple[int, ...] = ()  # multistep: lr *= gamma after these epochs (counted from 0)
    gamma: float = 1.0  # multistep: the factor at each milestone
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


# ResNet-18, Appendix E: SGD with momentum, 100 epochs, lr x0.2 after epoch 60.
RESNET18 = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=100, batch_size=128,
                  schedule="multistep", milestones=(60,), gamma=0.2)

# VGG-16-BN, Appendix F: as ResNet-18 over 50 epochs, lr x0.2 after epoch 30.
VGG16_BN = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=50, batch_size=128,
                  schedule="multistep", milestones=(30,), gamma=0.2)

# ViT, Appendix G: AdamW, 70 epochs: 10 of linear warm-up to lr 5e-4, then cosine decay to 1e-5 over 60.
VIT = Recipe(optimizer="adamw", lr=5e-4, weight_decay=1e-3, epochs=70, batch_size=128,
             schedule="warmup_cosine", warmup_epochs=10, final_lr=1e-5)
