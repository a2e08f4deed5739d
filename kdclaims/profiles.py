"""Profiles: the paper's experiment (``paper``) and the same pipeline scaled down to run on two CPU cores
(``smoke``: each architecture at its registered smoke size), and the seed lists they run over.

A profile names its dataset, seeds, scale and precision; the models and recipes are the registered
architectures' (``kdclaims.models``, ``kdclaims.recipe``). This module loads no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdclaims.datasets import DatasetSpec
from kdclaims.errors import ConfigError
from kdclaims.precision import check_precision
from kdclaims.recipe import Recipe
from kdclaims.registry import Registry

if TYPE_CHECKING:
    from kdclaims.architectures import SmokeConfig

SCALES = ("paper", "smoke")  # how big each architecture is: as the paper has it, or its registered smoke_config


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: DatasetSpec
    seeds: tuple[int, ...]  # student seeds of every population (the teacher is seed 0)
    # Extra per-arch model keywords and epochs on top of the scale (the built-in profiles need none:
    # the smoke sizes are registered with each architecture).
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    epochs: Mapping[str, int] = field(default_factory=dict)
    precision: str = "fp32"
    is_reproduction: bool = True  # False: verdicts are recorded but never fail the run (smoke)
    scale: str = "paper"  # one of SCALES

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ConfigError(f"profile {self.name!r}: unknown scale {self.scale!r}; use one of {', '.join(SCALES)}")
        check_precision(self.precision, f" for profile {self.name!r}")

    def _smoke_config(self, arch: str) -> "SmokeConfig | None":
        if self.scale != "smoke":
            return None
        from kdclaims.architectures import ARCHITECTURES

        return ARCHITECTURES.get(arch).smoke_config  # None: this architecture runs at paper size

    def model_overrides_for(self, arch: str) -> dict:
        """The keywords this profile sets on top of ``arch``'s paper_config (besides classes and image size)."""
        smoke = self._smoke_config(arch)
        overrides = dict(smoke.model) if smoke is not None else {}
        overrides.update(self.model_overrides.get(arch, {}))
        return overrides

    def epochs_for(self, arch: str) -> int:
        from kdclaims.architectures import get_recipe

        smoke = self._smoke_config(arch)
        default = smoke.epochs if smoke is not None and smoke.epochs is not None else get_recipe(arch).epochs
        return self.epochs.get(arch, default)

    def recipe(self, arch: str) -> Recipe:
        from kdclaims.architectures import get_recipe

        return get_recipe(arch).scaled_to(self.epochs_for(arch))

    def model_config(self, arch: str, num_classes: int) -> dict:
        from kdclaims.architectures import ARCHITECTURES

        config = dict(ARCHITECTURES.get(arch).paper_config)
        config.update(self.model_overrides_for(arch))
        config.update(num_classes=num_classes, image_size=self.dataset.image_size)
        return config

    def with_seeds(self, seeds: tuple[int, ...]) -> "Profile":
        return dataclasses.replace(self, seeds=tuple(seeds))

    def with_precision(self, precision: str) -> "Profile":
        """This profile at another arithmetic precision (a key of ``kdclaims.precision.PRECISIONS``).
        Precision is part of every member's key, so members of two precisions never mix in the cache."""
        check_precision(precision, f" for profile {self.name!r}")
        return dataclasses.replace(self, precision=precision)

    def as_dict(self) -> dict:
        """Provenance: model_overrides and epochs are the effective ones, per trainable architecture."""
        from kdclaims.architectures import RECIPES

        trainable = list(RECIPES)
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset.as_dict(),
            "seeds": seeds_to_text(self.seeds),
            "n_seeds": len(self.seeds),
            "scale": self.scale,
            "model_overrides": {a: self.model_overrides_for(a) for a in trainable if self.model_overrides_for(a)},
            "epochs": {a: self.epochs_for(a) for a in trainable if self.epochs_for(a) != RECIPES[a].epochs},
            "precision": self.precision,
            "is_reproduction": self.is_reproduction,
        }


PROFILES: Registry[Profile] = Registry("profile")
get_profile = PROFILES.get
PROFILES.register("paper", Profile(
    name="paper",
    description="the paper's experiment: CIFAR-100, full-size models and recipes, seeds 1-385",
    dataset=DatasetSpec(kind="cifar100"),
    seeds=tuple(range(1, 386)),  # n = 385 per setup: Cochran's sample size at 95% confidence, +-5%
))
PROFILES.register("smoke", Profile(
    name="smoke",
    description="the same pipeline scaled down for 2 CPU cores: synthetic data in CIFAR-100's format, "
                "small models, few epochs, a handful of seeds. Not a reproduction.",
    dataset=DatasetSpec(
        kind="synthetic",
        image_size=16,  # 32x32 images average-pooled 2x2
        synthetic={"num_classes": 10, "train_per_class": 160, "test_per_class": 40, "seed": 0},
    ),
    seeds=tuple(range(1, 6)),
    scale="smoke",  # each architecture at its registered smoke_config (models.py): width 8, dim 32, ...
    is_reproduction=False,
))


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"5"`` -> seeds 1..5; ``"1-385"`` -> 1..385; ``"3,7,9-11"`` -> those. Seed 0 is the teacher."""
    seeds: list[int] = []
    try:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if len(parts) == 1 and "-" not in parts[0]:
            count = int(parts[0])
            if count < 1:
                raise ValueError
            return tuple(range(1, count + 1))
        for part in parts:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(
            f"invalid --seeds {text!r}: give a count (5), a range (1-385) or a list (1,2,7-9) of positive seeds"
        ) from None
    if not seeds or min(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"invalid --seeds {text!r}: seeds must be distinct and >= 1 (seed 0 is the teacher)")
    return tuple(seeds)


def seeds_to_text(seeds: tuple[int, ...]) -> str:
    """Compact form of a seed list: (1,2,3,7) -> '1-3,7'."""
    out, run = [], []
    for s in sorted(seeds):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [s]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
