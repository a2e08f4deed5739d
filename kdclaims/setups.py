"""The training setups of Section 2, and the seeds every member shares.

A setup says where the soft targets of loss (1) come from:
  None       no KD term (cross-entropy only; the setup takes no alpha)
  "teacher"  the trained teacher M_T's logits on the training set
  a function fn(num_examples, num_classes, generator) -> (N, C) logits: a noise "teacher", drawn once
             from torch.Generator().manual_seed(NOISE_SEED), so every member distils from the same rows

Adding a setup is one ``register_setup`` call; ``del SETUPS[name]`` removes one. The setup's name is
part of every member key, so two setups never share cached members. This module loads no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from kdclaims.errors import ConfigError
from kdclaims.registry import Registry

if TYPE_CHECKING:
    import torch

TEACHER_SEED = 0  # the teacher M_T: initialisation M_0 from seed 0, trained with seed 0's data order
INIT_SEED = 0  # every model starts from M_0, the teacher's initialisation (Section 2)
NOISE_SEED = 20240101  # the noise "teachers" are generated once from this seed, one row per training example

TEACHER = "teacher"  # the soft_targets that mean: distil from the trained teacher M_T
NoiseGenerator = Callable[[int, int, "torch.Generator"], "torch.Tensor"]
SoftTargets = Union[None, str, NoiseGenerator]


@dataclass(frozen=True)
class Setup:
    name: str
    label: str
    description: str
    soft_targets: SoftTargets = None  # None | "teacher" | a NoiseGenerator (see above)
    # Noise setups only: the name the noise goes by in member keys ({"kind": noise_name, "seed": NOISE_SEED})
    # and in ``noise_teacher_logits``. Defaults to the setup's name.
    noise_name: str | None = None

    @property
    def uses_alpha(self) -> bool:
        return self.soft_targets is not None

    @property
    def uses_teacher(self) -> bool:
        return self.soft_targets == TEACHER

    @property
    def noise(self) -> NoiseGenerator | None:
        return self.soft_targets if callable(self.soft_targets) else None


SETUPS: Registry[Setup] = Registry("setup")
get_setup = SETUPS.get


def register_setup(name: str, label: str, description: str, soft_targets: SoftTargets = None, *,
                   noise_name: str | None = None) -> Setup:
    """Adding a setup is this one call. ``soft_targets``: None, ``"teacher"`` or a noise generator."""
    if soft_targets is not None and soft_targets != TEACHER and not callable(soft_targets):
        raise ConfigError(f"soft_targets of setup {name!r} must be None, 'teacher' or a function "
                          f"(num_examples, num_classes, generator) -> logits, got {soft_targets!r}")
    if callable(soft_targets):
        noise_name = noise_name or name
        taken = [s.name for s in SETUPS.values() if s.noise_name == noise_name]
        if taken:
            raise ConfigError(f"noise name {noise_name!r} of setup {name!r} is already used by setup {taken[0]!r}")
    elif noise_name is not None:
        raise ConfigError(f"setup {name!r} has no noise generator, so it takes no noise_name")
    return SETUPS.register(name, Setup(name, label, description, soft_targets, noise_name))


def noise_generator(noise_name: str) -> NoiseGenerator:
    """The generator of the noise setup whose noise goes by ``noise_name`` ("uniform", "gaussian", ...)."""
    for setup in SETUPS.values():
        if setup.noise is not None and setup.noise_name == noise_name:
            return setup.noise
    known = [s.noise_name for s in SETUPS.values() if s.noise is not None]
    raise ConfigError(f"unknown noise teacher {noise_name!r}: use one of {', '.join(map(repr, known))}")


def uniform_noise(num_examples: int, num_classes: int, generator: "torch.Generator") -> "torch.Tensor":
    """U(0, 1) logits, one row per training example."""
    import torch  # here, not at the top: this module stays importable without loading torch

    return torch.rand(num_examples, num_classes, generator=generator)


def gaussian_noise(num_examples: int, num_classes: int, generator: "torch.Generator") -> "torch.Tensor":
    """N(0, 1) logits, one row per training example."""
    import torch

    return torch.randn(num_examples, num_classes, generator=generator)


register_setup("independent", "Independent",
               "cross-entropy only, same init M_0 as the teacher; the seed changes only the data order (and dropout)")
register_setup("kd", "KD", "loss (1) with the trained teacher's logits as soft targets", TEACHER)
# noise_name keeps the names these two had before the registry, and so the cache keys of their members.
register_setup("uniform_kd", "Uniform Noise KD",
               "loss (1) with the teacher's logits replaced by a fixed U(0,1) tensor, one row per training example",
               uniform_noise, noise_name="uniform")
register_setup("gaussian_kd", "Gaussian Noise KD",
               "loss (1) with the teacher's logits replaced by a fixed N(0,1) tensor, one row per training example",
               gaussian_noise, noise_name="gaussian")
