"""Training one member: loss (1) of the paper, the recipe's optimiser and schedule, scored at the last epoch.

The data lives on the device as uint8 and is normalised per batch; each epoch draws a permutation
from the member's own generator, so a seed fixes the data order and nothing else does. Dropout
(the ViT's) draws from the global generator, seeded with the member's seed as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdclaims import metrics
from kdclaims.config import NOISE_SEED, noise_generator
from kdclaims.data import Dataset
from kdclaims.errors import ConfigError
from kdclaims.recipe import Recipe

EVAL_BATCH = 1000  # examples per forward pass when scoring; does not change the result


def kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, soft_logits: torch.Tensor | None,
            alpha: float, temperature: float = 1.0) -> torch.Tensor:
    """Loss (1): ``(1 - α)·H(y, σ(z_s)) + α·H(σ(z_t / T), σ(z_s / T))``.

    As in the paper, α weights the *teacher* term (α = 0.9 leans mostly on the teacher), H is the
    cross-entropy, and the hard term always uses T = 1. The paper's equation has no T² factor on
    the soft term (Hinton et al. add one); we follow the paper, which makes no difference at T = 1.
    ``soft_logits`` are the teacher's logits, or the noise standing in for them.
    """
    hard = F.cross_entropy(student_logits, labels)
    if soft_logits is None or alpha == 0.0:
        return hard
    soft_targets = F.softmax(soft_logits / temperature, dim=-1)
    soft = -(soft_targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(dim=-1).mean()
    return (1.0 - alpha) * hard + alpha * soft


def noise_teacher_logits(kind: str, num_examples: int, num_classes: int, seed: int = NOISE_SEED) -> torch.Tensor:
    """The noise "teachers": one fixed row per training example, generated once (Section 2).

    ``kind`` is a noise setup's ``noise_name`` (``uniform``: U(0, 1); ``gaussian``: N(0, 1); or any
    registered with ``register_setup``). Drawn on the CPU from a dedicated generator so every member of
    a population, on any device, distils from the very same tensor.
    """
    generate = noise_generator(kind)
    logits = generate(num_examples, num_classes, torch.Generator().manual_seed(seed))
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (num_examples, num_classes) \
            or not logits.is_floating_point():
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"noise teacher {kind!r} must return a float tensor of shape "
                          f"({num_examples}, {num_classes}), got {got}")
    return logits


@dataclass
class PreparedData:
    """A dataset resident on the training device, as uint8, with the normalisation to apply per batch."""

    train_images: torch.Tensor  # uint8 (N, 3, 32, 32) on device
    train_labels: torch.Tensor  # int64 (N,) on device
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor  # (1, 3, 1, 1) float32, per-channel mean of the training images, in [0, 1]
    std: torch.Tensor
    image_size: int
    num_classes: int
    fingerprint: str

    @classmethod
    def from_dataset(cls, dataset: Dataset, image_size: int, device: torch.device | str) -> "PreparedData":
        stored = dataset.train_images.shape[-1]
        if image_size > stored or stored % image_size:
            raise ConfigError(f"image_size {image_size} must divide the stored size {stored}")
        pixels = dataset.train_images.to(torch.float64) / 255.0
        mean = pixels.mean(dim=(0, 2, 3)).view(1, 3, 1, 1).float()
        std = pixels.std(dim=(0, 2, 3)).view(1, 3, 1, 1).float()
        return cls(
            train_images=dataset.train_images.to(device),
            train_labels=dataset.train_labels.to(device),
            test_images=dataset.test_images.to(device),
            test_labels=dataset.test_labels.to(device),
            mean=mean.to(device), std=std.to(device),
            image_size=image_size, num_classes=dataset.num_classes, fingerprint=dataset.fingerprint,
        )

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalised float32, average-pooled down to ``image_size`` (no augmentation)."""
        x = (images.float() / 255.0 - self.mean) / self.std
        factor = x.shape[-1] // self.image_size
        return F.avg_pool2d(x, factor) if factor > 1 else x

    @property
    def device(self) -> torch.device:
        return self.train_images.device


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ConfigError(f"unknown optimizer {recipe.optimizer!r}: use 'sgd' or 'adamw'")


def train_model(model: torch.nn.Module, data: PreparedData, recipe: Recipe, seed: int,
                soft_logits: torch.Tensor | None = None, alpha: float = 0.0, temperature: float = 1.0,
                on_epoch=None) -> torch.nn.Module:
    """Train ``model`` in place with loss (1). ``soft_logits`` is (N_train, C) on the data's device, or None."""
    device = data.device
    order = torch.Generator().manual_seed(seed)  # the data order: the only thing a seed changes ...
    torch.manual_seed(seed)  # ... besides dropout, which draws from the global generators
    optimizer = make_optimizer(model, recipe)
    n = data.train_images.shape[0]
    model.train()
    for epoch in range(recipe.epochs):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr_at_epoch(epoch)
        permutation = torch.randperm(n, generator=order).to(device)
        for start in range(0, n, recipe.batch_size):
            index = permutation[start:start + recipe.batch_size]
            logits = model(data.batch(data.train_images[index]))
            targets = soft_logits[index] if soft_logits is not None else None
            loss = kd_loss(logits, data.train_labels[index], targets, alpha, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, recipe.epochs)
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, data: PreparedData, images: torch.Tensor) -> torch.Tensor:
    """Logits (N, C) in eval mode, on the CPU as float32."""
    model.eval()
    chunks = [model(data.batch(images[i:i + EVAL_BATCH])).float().cpu() for i in range(0, images.shape[0], EVAL_BATCH)]
    return torch.cat(chunks)


@dataclass
class TrainedMember:
    test_logits: torch.Tensor  # (N_test, C) float32
    train_logits: torch.Tensor | None  # (N_train, C) float32, kept for teachers: they are KD's soft targets
    test_accuracy: float
    test_loss: float
    wall_time_s: float


def train_member(model: torch.nn.Module, data: PreparedData, recipe: Recipe, seed: int,
                 soft_logits: torch.Tensor | None, alpha: float, temperature: float,
                 keep_train_logits: bool = False, on_epoch=None) -> TrainedMember:
    started = time.perf_counter()
    if soft_logits is not None:
        soft_logits = soft_logits.to(data.device)
    train_model(model, data, recipe, seed, soft_logits, alpha or 0.0, temperature, on_epoch=on_epoch)
    test_logits = predict(model, data, data.test_images)
    labels = data.test_labels.cpu()
    accuracy = metrics.test_accuracy(test_logits, labels).item()
    loss = metrics.test_loss(test_logits, labels).item()
    train_logits = predict(model, data, data.train_images) if keep_train_logits else None
    return TrainedMember(test_logits, train_logits, accuracy, loss, time.perf_counter() - started)
