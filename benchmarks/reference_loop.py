"""The yardstick: a naive trainer written the way a typical paper codebase writes one.

A ``torch.utils.data.Dataset`` over float32 images normalised once on the CPU, a ``DataLoader``
(``shuffle=True``, ``num_workers=0``) that collates every batch item by item, each batch copied to the
device, one model at a time, fp32 (on CUDA with TF32 off, as the fast path's fp32), no compilation. The teacher's soft targets are looked up per batch
by the index the dataset returns with each example.

It computes the same recipe as the fast path (``kdclaims.training.train_model``): the same model, the
same loss (``kdclaims.training.kd_loss``), the same optimiser (``kdclaims.training.make_optimizer``),
the same per-epoch learning rate (``Recipe.lr_at_epoch``), the same batch size and number of steps
(the last, partial batch of an epoch is kept), the same normalisation (the training set's per-channel
mean and std, then average pooling down to ``image_size``). Only the data order differs: the
DataLoader's shuffle draws its own permutation. Pass ``sampler=SeedPermutationSampler(n, seed)`` to
replay the fast path's order exactly; on the CPU in fp32 the two then end with identical weights
(``tests/test_benchmarks.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from kdclaims import training
from kdclaims.data import Dataset
from kdclaims.recipe import Recipe
from kdclaims.training import PreparedData


@dataclass
class ReferenceData:
    """The training split as a typical codebase keeps it: normalised float32 images on the CPU."""

    images: torch.Tensor  # float32 (N, 3, image_size, image_size), normalised
    labels: torch.Tensor  # int64 (N,)
    image_size: int

    @classmethod
    def from_dataset(cls, dataset: Dataset, image_size: int = 32) -> "ReferenceData":
        # The same statistics and arithmetic as the fast path (kdclaims.training.PreparedData), done once here.
        prepared = PreparedData.from_dataset(dataset, image_size, "cpu")
        x = prepared.batch(prepared.train_images)
        return cls(images=x.contiguous(), labels=dataset.train_labels.clone(), image_size=image_size)


class IndexedImages(torch.utils.data.Dataset):
    """``(image, label, index)`` per example: the index finds the example's teacher logits."""

    def __init__(self, data: ReferenceData):
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i], i


class SeedPermutationSampler(Sampler[int]):
    """The fast path's data order: each epoch ``torch.randperm(n)`` from ``Generator().manual_seed(seed)``.

    One instance serves a whole run (it keeps its generator between epochs), as ``train_model`` does.
    """

    def __init__(self, n: int, seed: int):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.n, generator=self.generator).tolist()


def train_reference(model: torch.nn.Module, dataset: Dataset | ReferenceData, recipe: Recipe, seed: int,
                    soft_logits: torch.Tensor | None = None, alpha: float = 0.0, temperature: float = 1.0,
                    image_size: int = 32, device: torch.device | str = "cpu",
                    sampler: Sampler | None = None) -> torch.nn.Module:
    """Train ``model`` in place on ``device`` with loss (1), the naive way; returns the model.

    ``dataset``: a ``kdclaims.data.Dataset`` (prepared here) or an already prepared ``ReferenceData``
    (so a benchmark can leave the one-off preparation out of its timing, as it does for the fast path).
    ``soft_logits``: (N_train, C) teacher logits (any device), or None. ``sampler``: None shuffles with
    the DataLoader (``generator`` seeded with ``seed``); a ``SeedPermutationSampler`` replays the fast
    path's order.
    """
    device = torch.device(device)
    data = dataset if isinstance(dataset, ReferenceData) else ReferenceData.from_dataset(dataset, image_size)
    torch.manual_seed(seed)  # dropout draws from the global generator, as in the fast path
    loader = DataLoader(
        IndexedImages(data),
        batch_size=recipe.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        # Always a generator of its own: the DataLoader draws a base seed from it every epoch, which
        # would otherwise come from the global generator and shift the dropout masks.
        generator=torch.Generator().manual_seed(seed),
        num_workers=0,
        drop_last=False,
        pin_memory=device.type == "cuda",
    )
    if soft_logits is not None:
        soft_logits = soft_logits.to(device)
    model.to(device)
    optimizer = training.make_optimizer(model, recipe)
    model.train()
    with _true_fp32(device):
        _epochs(model, loader, optimizer, recipe, soft_logits, alpha, temperature, device)
    return model


@contextmanager
def _true_fp32(device: torch.device):
    """fp32 arithmetic on CUDA: TF32 off for matmuls and for cuDNN convolutions (which PyTorch allows by
    default), as the fast path's fp32 does; restored afterwards. Nothing to do on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _epochs(model, loader, optimizer, recipe, soft_logits, alpha, temperature, device) -> None:
    for epoch in range(recipe.epochs):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr_at_epoch(epoch)
        for images, labels, index in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            targets = soft_logits[index.to(device)] if soft_logits is not None else None
            logits = model(images)
            loss = training.kd_loss(logits, labels, targets, alpha, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
