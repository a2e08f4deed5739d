"""Every hyperparameter of the reproduction, in one place.

Read top to bottom: the training setups of Section 2, the per-architecture recipes of Appendices
E-G, the profiles (``paper``: the real experiment; ``smoke``: the same pipeline scaled down to run on
two CPU cores), and the specs that name one population and one member of it.

A member's *key* is a hash of everything that changes what it computes (architecture and its size,
recipe, setup, alpha, temperature, data content, seed, the teacher it learnt from, precision).
Things that only describe the run (profile name, device, versions, wall time) are recorded beside
the result, not hashed: a population trained on a GPU can be evaluated on a laptop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kdclaims.errors import ConfigError

# Bump when a change to training or storage makes old cache entries wrong.
CACHE_SCHEMA = "kdclaims-member-v1"

TEACHER_SEED = 0  # the teacher M_T: initialisation M_0 from seed 0, trained with seed 0's data order
INIT_SEED = 0  # every model starts from M_0, the teacher's initialisation (Section 2)
NOISE_SEED = 20240101  # the noise "teachers" are generated once from this seed, one row per training example

# ---------------------------------------------------------------------------------------------
# Setups (Section 2). A setup says where the soft targets of loss (1) come from.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    name: str
    teacher: str | None  # "trained" (the teacher M_T), "uniform", "gaussian", or None (no KD term)
    label: str
    description: str

    @property
    def uses_alpha(self) -> bool:
        return self.teacher is not None


SETUPS: dict[str, Setup] = {}


def register_setup(name: str, teacher: str | None, label: str, description: str) -> Setup:
    """Adding a setup is this one call (its teacher kind must be one ``teacher_logits`` knows)."""
    setup = Setup(name, teacher, label, description)
    SETUPS[name] = setup
    return setup


register_setup("independent", None, "Independent",
               "cross-entropy only, same init M_0 as the teacher; the seed changes only the data order (and dropout)")
register_setup("kd", "trained", "KD",
               "loss (1) with the trained teacher's logits as soft targets")
register_setup("uniform_kd", "uniform", "Uniform Noise KD",
               "loss (1) with the teacher's logits replaced by a fixed U(0,1) tensor, one row per training example")
register_setup("gaussian_kd", "gaussian", "Gaussian Noise KD",
               "loss (1) with the teacher's logits replaced by a fixed N(0,1) tensor, one row per training example")


def get_setup(name: str) -> Setup:
    try:
        return SETUPS[name]
    except KeyError:
        raise ConfigError(f"unknown setup {name!r}: choose one of {', '.join(SETUPS)}") from None


# ---------------------------------------------------------------------------------------------
# Recipes (Appendices E, F, G). Batch 128, no augmentation, scored at the last epoch.
# ---------------------------------------------------------------------------------------------


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


RECIPES: dict[str, Recipe] = {
    # Appendix E: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, 100 epochs, x0.2 after epoch 60.
    "resnet18": Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=100,
                       schedule="multistep", milestones=(60,), gamma=0.2),
    # Appendix F: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, 50 epochs, x0.2 after epoch 30.
    "vgg16_bn": Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=50,
                       schedule="multistep", milestones=(30,), gamma=0.2),
    # Appendix G: AdamW, lr 5e-4, weight decay 1e-3, 70 epochs: 10 warm-up, cosine to 1e-5 over 60.
    "vit": Recipe(optimizer="adamw", lr=5e-4, weight_decay=1e-3, epochs=70,
                  schedule="warmup_cosine", warmup_epochs=10, final_lr=1e-5),
}


def get_recipe(arch: str) -> Recipe:
    try:
        return RECIPES[arch]
    except KeyError:
        raise ConfigError(f"no training recipe for architecture {arch!r}: known are {', '.join(RECIPES)}") from None


# ---------------------------------------------------------------------------------------------
# Profiles: the paper's experiment, and a smoke-sized copy of it.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # "cifar100": the real archive in the data dir; "synthetic": generated in that same format
    image_size: int = 32  # models see images average-pooled down to this size (32 = as stored)
    synthetic: Mapping[str, Any] = field(default_factory=dict)  # write_synthetic_cifar100 arguments

    def as_dict(self) -> dict:
        return {"kind": self.kind, "image_size": self.image_size, "synthetic": dict(self.synthetic)}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: DatasetSpec
    seeds: tuple[int, ...]  # student seeds of every population (the teacher is seed 0)
    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per arch, on top of the paper size
    epochs: Mapping[str, int] = field(default_factory=dict)  # per arch; missing = the recipe's
    precision: str = "fp32"
    is_reproduction: bool = True  # False: verdicts are recorded but never fail the run (smoke)

    def recipe(self, arch: str) -> Recipe:
        recipe = get_recipe(arch)
        return recipe.scaled_to(self.epochs.get(arch, recipe.epochs))

    def model_config(self, arch: str, num_classes: int) -> dict:
        from kdclaims.models import get_architecture

        config = dict(get_architecture(arch).paper_config)
        config.update(self.model_overrides.get(arch, {}))
        config.update(num_classes=num_classes, image_size=self.dataset.image_size)
        return config

    def with_seeds(self, seeds: tuple[int, ...]) -> "Profile":
        return dataclasses.replace(self, seeds=tuple(seeds))

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset.as_dict(),
            "seeds": seeds_to_text(self.seeds),
            "n_seeds": len(self.seeds),
            "model_overrides": {k: dict(v) for k, v in self.model_overrides.items()},
            "epochs": dict(self.epochs),
            "precision": self.precision,
            "is_reproduction": self.is_reproduction,
        }


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        description="the paper's experiment: CIFAR-100, full-size models and recipes, seeds 1-385",
        dataset=DatasetSpec(kind="cifar100"),
        seeds=tuple(range(1, 386)),  # n = 385 per setup: Cochran's sample size at 95% confidence, +-5%
    ),
    "smoke": Profile(
        name="smoke",
        description="the same pipeline scaled down for 2 CPU cores: synthetic data in CIFAR-100's format, "
                    "small models, few epochs, 5 seeds. Not a reproduction.",
        dataset=DatasetSpec(
            kind="synthetic",
            image_size=16,  # 32x32 images average-pooled 2x2
            synthetic={"num_classes": 10, "train_per_class": 160, "test_per_class": 40, "seed": 0},
        ),
        seeds=tuple(range(1, 6)),
        model_overrides={
            "resnet18": {"width": 8},
            "vgg16_bn": {"width": 8},
            "vit": {"dim": 32, "depth": 2, "heads": 2},
        },
        epochs={"resnet18": 4, "vgg16_bn": 4, "vit": 15},  # the ViT needs more epochs to learn (~70% vs ~30% at 6)
        is_reproduction=False,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}") from None


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


# ---------------------------------------------------------------------------------------------
# Populations and members
# ---------------------------------------------------------------------------------------------


def check_alpha(setup: Setup, alpha: float | None) -> float | None:
    if not setup.uses_alpha:
        if alpha not in (None, 0, 0.0):
            raise ConfigError(f"setup {setup.name!r} has no teacher term, so it takes no alpha (got {alpha})")
        return None
    if alpha is None:
        raise ConfigError(f"setup {setup.name!r} needs an alpha in [0, 1]")
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
        raise ConfigError(f"alpha {alpha} for setup {setup.name!r} is outside [0, 1]")
    return alpha


@dataclass(frozen=True)
class PopulationSpec:
    """One (architecture, setup, alpha, temperature) under a profile, over the profile's seeds."""

    arch: str
    setup: str
    alpha: float | None = None  # weight of the teacher term of loss (1); None for independent
    temperature: float = 1.0  # T of loss (1); the paper uses T = 1 throughout

    def __post_init__(self):
        setup = get_setup(self.setup)
        object.__setattr__(self, "alpha", check_alpha(setup, self.alpha))
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"temperature {self.temperature} must be a positive number")
        if not setup.uses_alpha:
            object.__setattr__(self, "temperature", 1.0)
        get_recipe(self.arch)

    @property
    def label(self) -> str:
        setup = get_setup(self.setup)
        if not setup.uses_alpha:
            return setup.label
        t = f", T={self.temperature:g}" if self.temperature != 1.0 else ""
        return f"{setup.label} (α={self.alpha:g}{t})"

    @property
    def name(self) -> str:
        """Stable identifier, e.g. ``resnet18/kd-a0.5`` or ``vit/independent``."""
        if self.alpha is None:
            return f"{self.arch}/{self.setup}"
        t = f"-T{self.temperature:g}" if self.temperature != 1.0 else ""
        return f"{self.arch}/{self.setup}-a{self.alpha:g}{t}"

    def as_dict(self) -> dict:
        return {"arch": self.arch, "setup": self.setup, "alpha": self.alpha, "temperature": self.temperature}


def teacher_spec(arch: str) -> PopulationSpec:
    """The teacher is the seed-0 member of the independent setup."""
    return PopulationSpec(arch, "independent")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_config(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$KDCLAIMS_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdclaims``, else ``~/.cache/kdclaims``."""
    if os.environ.get("KDCLAIMS_CACHE_DIR"):
        return Path(os.environ["KDCLAIMS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "kdclaims"


def default_data_dir(cache_dir: Path | None = None) -> Path:
    """Where the real CIFAR-100 archive is looked for: ``$KDCLAIMS_DATA_DIR``, else ``<cache dir>/data``."""
    if os.environ.get("KDCLAIMS_DATA_DIR"):
        return Path(os.environ["KDCLAIMS_DATA_DIR"]).expanduser()
    return (cache_dir or default_cache_dir()) / "data"
