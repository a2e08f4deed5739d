"""Training one member: loss (1) of the paper, the recipe's optimiser and schedule, scored at the last epoch.

The data lives on the device as uint8 and is normalised per batch; each epoch draws a permutation
from the member's own generator, so a seed fixes the data order and nothing else does. Dropout
(the ViT's) draws from the global generator, seeded with the member's seed as well.

A member can save its whole training state at the end of an epoch and resume from it
(``kdclaims.checkpoint.Checkpointer``); the learning rate is a pure function of the epoch
(``Recipe.lr_at_epoch``), set at the start of every epoch, so there is no scheduler state to save.
"""

from __future__ import annotations

import contextlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdclaims import metrics
from kdclaims.checkpoint import Checkpointer
from kdclaims.data import Dataset
from kdclaims.errors import ConfigError
from kdclaims.precision import check_precision
from kdclaims.recipe import Recipe
from kdclaims.setups import NOISE_SEED, noise_generator


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

    train_images: torch.Tensor  # uint8 (N, C, H, W) on device
    train_labels: torch.Tensor  # int64 (N,) on device
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor  # (1, C, 1, 1) float32, per-channel mean of the training images, in [0, 1]
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
        channels = pixels.shape[1]
        mean = pixels.mean(dim=(0, 2, 3)).view(1, channels, 1, 1).float()
        std = pixels.std(dim=(0, 2, 3)).view(1, channels, 1, 1).float().clamp_min(1e-6)  # a constant channel: no 0/0
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

    def train_inputs(self) -> "TrainInputs":
        """How training batches are drawn: from a normalised copy of the training set made once, when it
        fits ``$KDCLAIMS_NORMALISED_MB`` (default 2048: CIFAR-100 at 32x32 is 614 MB), else from the
        uint8 images, normalised per batch. Both give bit-identical batches (the same elementwise ops);
        the copy saves about 1 ms a batch, which on small CPU models is 5-15% of a step."""
        if getattr(self, "_train_inputs", None) is None:
            budget = float(os.environ.get("KDCLAIMS_NORMALISED_MB", "2048")) * 2 ** 20
            factor = self.train_images.shape[-1] // self.image_size
            size = self.train_images.numel() * 4 / factor ** 2
            normalised = None
            if size <= budget:
                normalised = torch.cat([self.batch(self.train_images[i:i + EVAL_BATCH])
                                        for i in range(0, self.train_images.shape[0], EVAL_BATCH)])
            self._train_inputs = TrainInputs(self, normalised)
        return self._train_inputs


@dataclass
class TrainInputs:
    data: PreparedData
    normalised: torch.Tensor | None  # (N, 3, image_size, image_size) float32, or None: per batch

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        if self.normalised is not None:
            return self.normalised[index]
        return self.data.batch(self.data.train_images[index])


# ---------------------------------------------------------------------------------------------
# Precision (``kdclaims.precision``): a recorded setting, part of every member's cache key.
# ---------------------------------------------------------------------------------------------


@contextmanager
def matmul_precision(precision: str, device: torch.device):
    """The TF32 switches of a whole training step (forward, backward and optimiser) at ``precision``.

    On CUDA, fp32 and bf16 turn TF32 off for the fp32 matrix work and tf32 turns it on; PyTorch's own
    default (TF32 on for cuDNN convolutions only) would otherwise make "fp32" backward passes TF32. The
    CPU has no TF32: nothing changes there.
    """
    check_precision(precision)
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextmanager
def forward_precision(precision: str, device: torch.device):
    """The autocast of a forward pass at ``precision`` (bf16 only; the backward pass follows the forward's dtypes)."""
    check_precision(precision)
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


@contextmanager
def precision_context(precision: str, device: torch.device):
    """The arithmetic of a forward pass at ``precision`` on ``device`` (scoring; training uses the two parts)."""
    with matmul_precision(precision, device), forward_precision(precision, device):
        yield


def _batchnorm_in_fp32(module, inputs):
    return tuple(x.float() for x in inputs)


def keep_batchnorm_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """Under bf16 autocast, feed every BatchNorm fp32 inputs so its statistics are computed in fp32."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_batchnorm_in_fp32)
    return model


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ConfigError(f"unknown optimizer {recipe.optimizer!r}: use 'sgd' or 'adamw'")



def _training_state(model, optimizer, order: torch.Generator, epoch: int, recipe: Recipe, member: str,
                    device: torch.device) -> dict:
    return {
        "member": member,
        "epoch": epoch,  # epochs completed
        "epochs": recipe.epochs,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "order_rng": order.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "device": str(device),
    }


def _resume(state: dict, model, optimizer, order: torch.Generator, device: torch.device) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    order.set_state(state["order_rng"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["epoch"])


def training_steps(model: torch.nn.Module, data: PreparedData, recipe: Recipe, seed: int,
                   soft_logits: torch.Tensor | None = None, alpha: float = 0.0, temperature: float = 1.0,
                   on_epoch=None, checkpoint: Checkpointer | None = None, precision: str = "fp32"):
    """``train_model``'s loop as a generator: it yields once when it is set up (seeded, optimiser made,
    checkpoint resumed, the normalised inputs made), then after every optimiser step.

    One code path for a member trained alone (``train_model`` runs it to the end) and members trained
    concurrently (``train_concurrently`` takes one step of each in turn), so both compute the same thing.
    The global RNG (dropout) is seeded during the set-up: whoever interleaves members must give each its
    own global RNG state between steps, as ``train_concurrently`` does.
    """
    device = data.device
    order = torch.Generator().manual_seed(seed)  # the data order: the only thing a seed changes ...
    torch.manual_seed(seed)  # ... besides dropout, which draws from the global generators
    optimizer = make_optimizer(model, recipe)
    n = data.train_images.shape[0]
    start = 0
    if checkpoint is not None:
        state = checkpoint.load(recipe.epochs)
        if state is not None:
            start = _resume(state, model, optimizer, order, device)
            checkpoint.resumed_from_epoch = start
            del state
    inputs = data.train_inputs()
    model.train()
    yield  # set up: what follows is the steps
    for epoch in range(start, recipe.epochs):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr_at_epoch(epoch)
        permutation = torch.randperm(n, generator=order).to(device)
        for first in range(0, n, recipe.batch_size):
            index = permutation[first:first + recipe.batch_size]
            with matmul_precision(precision, device):
                with forward_precision(precision, device):
                    logits = model(inputs[index])
                targets = soft_logits[index] if soft_logits is not None else None
                loss = kd_loss(logits.float(), data.train_labels[index], targets, alpha, temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            yield
        done = epoch + 1
        if checkpoint is not None and done < recipe.epochs and checkpoint.due(done):
            checkpoint.save(_training_state(model, optimizer, order, done, recipe, checkpoint.member, device))
        if on_epoch is not None:
            on_epoch(done, recipe.epochs)


def train_model(model: torch.nn.Module, data: PreparedData, recipe: Recipe, seed: int,
                soft_logits: torch.Tensor | None = None, alpha: float = 0.0, temperature: float = 1.0,
                on_epoch=None, checkpoint: Checkpointer | None = None, precision: str = "fp32") -> torch.nn.Module:
    """Train ``model`` in place with loss (1). ``soft_logits`` is (N_train, C) on the data's device, or None.

    ``precision`` (see ``matmul_precision`` and ``forward_precision``) changes the arithmetic of the
    forward pass (and, for tf32, of the whole step); the loss, the optimiser state and the weights stay fp32.

    With a ``checkpoint``, training resumes from its saved state when there is one, and saves the state
    at the end of the epochs it says are due (before ``on_epoch`` is called for that epoch).
    """
    for _ in training_steps(model, data, recipe, seed, soft_logits, alpha, temperature, on_epoch, checkpoint,
                            precision):
        pass
    return model


def _global_rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_global_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def train_concurrently(steps: list, device: torch.device) -> None:
    """Run several members' ``training_steps`` generators to the end, one step of each in turn.

    Each member keeps its own global RNG state (dropout) between its steps, so it draws exactly the
    numbers it would draw alone. On CUDA each member's steps are issued on a stream of its own, so the
    GPU can overlap one member's kernels with another's where a single small model leaves it idle; on
    the CPU the members simply take turns (same results, no speed-up). Returns when every member is
    done and, on CUDA, the default stream has waited for every member's stream.
    """
    if len(steps) == 1:
        for _ in steps[0]:
            pass
        return
    cuda = device.type == "cuda"
    outside = _global_rng_state(device)
    streams = [torch.cuda.Stream(device) for _ in steps] if cuda else [None] * len(steps)
    states: list[tuple] = []
    active = []
    try:
        # The set-ups first, on the current stream: each member seeds itself (or resumes its checkpoint),
        # and the first makes the normalised inputs every member reads.
        for i, member in enumerate(steps):
            if next(member, StopIteration) is not StopIteration:
                active.append(i)
            states.append(_global_rng_state(device))
        if cuda:
            for stream in streams:  # what the set-ups and the caller made on the current stream comes first
                stream.wait_stream(torch.cuda.current_stream(device))
        while active:
            for i in list(active):
                _set_global_rng_state(states[i], device)
                with torch.cuda.stream(streams[i]) if cuda else contextlib.nullcontext():
                    try:
                        next(steps[i])
                    except StopIteration:
                        active.remove(i)
                states[i] = _global_rng_state(device)
    finally:
        if cuda:
            for stream in streams:
                torch.cuda.current_stream(device).wait_stream(stream)
        _set_global_rng_state(outside, device)


@torch.no_grad()
def predict(model: torch.nn.Module, data: PreparedData, images: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Logits (N, C) in eval mode, on the CPU as float32."""
    model.eval()
    with precision_context(precision, data.device):
        chunks = [model(data.batch(images[i:i + EVAL_BATCH])).float().cpu()
                  for i in range(0, images.shape[0], EVAL_BATCH)]
    return torch.cat(chunks)


@dataclass
class TrainedMember:
    test_logits: torch.Tensor  # (N_test, C) float32
    train_logits: torch.Tensor | None  # (N_train, C) float32, kept for teachers: they are KD's soft targets
    test_accuracy: float
    test_loss: float
    # of this process's training (a resumed member: since the resume); members trained concurrently share
    # the device, so each records the whole group's time and the device time per member is that / concurrent
    wall_time_s: float
    resumed_from_epoch: int | None = None  # the epoch a checkpoint let it start from, if any
    concurrent: int = 1  # members trained together with this one on its device (itself included)


@dataclass
class MemberJob:
    """One member of a ``train_members`` call: its model (trained in place) and what is its own."""

    model: torch.nn.Module
    seed: int
    checkpoint: Checkpointer | None = None
    keep_train_logits: bool = False  # teachers: their training-set logits are KD's soft targets
    on_epoch: object = None  # called as on_epoch(epoch, epochs) at the end of each of its epochs


def train_members(jobs: list[MemberJob], data: PreparedData, recipe: Recipe, soft_logits: torch.Tensor | None,
                  alpha: float, temperature: float, precision: str = "fp32") -> list[TrainedMember]:
    """Train the members of one population (same recipe, soft targets, α and T) concurrently on the data's
    device (``train_concurrently``), then score each. One job is ``train_member``. Every member computes
    what it would compute alone: its own data order, dropout stream and checkpoint
    (``tests/test_training.py::test_a_member_trained_concurrently_equals_the_member_trained_alone``)."""
    if not jobs:
        return []
    started = time.perf_counter()
    check_precision(precision)
    if soft_logits is not None:
        soft_logits = soft_logits.to(data.device)
    steps = []
    for job in jobs:
        if precision == "bf16":
            keep_batchnorm_fp32(job.model)
        steps.append(training_steps(job.model, data, recipe, job.seed, soft_logits, alpha or 0.0, temperature,
                                    on_epoch=job.on_epoch, checkpoint=job.checkpoint, precision=precision))
    train_concurrently(steps, data.device)
    wall_time_s = time.perf_counter() - started
    labels = data.test_labels.cpu()
    trained = []
    for job in jobs:
        test_logits = predict(job.model, data, data.test_images, precision)
        trained.append(TrainedMember(
            test_logits=test_logits,
            train_logits=predict(job.model, data, data.train_images, precision) if job.keep_train_logits else None,
            test_accuracy=metrics.test_accuracy(test_logits, labels).item(),
            test_loss=metrics.test_loss(test_logits, labels).item(),
            wall_time_s=wall_time_s,
            resumed_from_epoch=job.checkpoint.resumed_from_epoch if job.checkpoint is not None else None,
            concurrent=len(jobs),
        ))
    return trained


def train_member(model: torch.nn.Module, data: PreparedData, recipe: Recipe, seed: int,
                 soft_logits: torch.Tensor | None, alpha: float, temperature: float,
                 keep_train_logits: bool = False, on_epoch=None, checkpoint: Checkpointer | None = None,
                 precision: str = "fp32") -> TrainedMember:
    """Train one member and score it on the test set (its training-set logits too, for a teacher)."""
    job = MemberJob(model, seed, checkpoint, keep_train_logits, on_epoch)
    return train_members([job], data, recipe, soft_logits, alpha, temperature, precision)[0]
