"""Every hyperparameter of the reproduction, and the registries that make it extensible, in one place.

Read top to bottom: the training setups of Section 2 (``register_setup``), the recipes (registered with
each architecture in ``kdclaims/models.py``; ``RECIPES`` and ``get_recipe`` read them from there), the
dataset kinds (``register_dataset``), the profiles (``paper``: the real experiment; ``smoke``: the same
pipeline scaled down to run on two CPU cores, each architecture at its registered smoke size), and the
specs that name one population and one member of it.

A member's *key* is a hash of everything that changes what it computes (architecture and its size,
recipe, setup, alpha, temperature, data content, seed, the teacher it learnt from, precision).
Things that only describe the run (profile name, device, versions, wall time) are recorded beside
the result, not hashed: a population trained on a GPU can be evaluated on a laptop.

This module does not import torch or the models at load time (they are imported where needed), so
the CLI and the report stay quick to start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from kdclaims.errors import ConfigError, DataError
from kdclaims.recipe import Recipe

if TYPE_CHECKING:
    import torch

    from kdclaims.models import SmokeConfig

# Bump when a change to training or storage makes old cache entries wrong (a noise generator's or a
# dataset locator's code is not hashed either: changing one in place needs this bump or a new name).
CACHE_SCHEMA = "kdclaims-member-v1"

TEACHER_SEED = 0  # the teacher M_T: initialisation M_0 from seed 0, trained with seed 0's data order
INIT_SEED = 0  # every model starts from M_0, the teacher's initialisation (Section 2)
NOISE_SEED = 20240101  # the noise "teachers" are generated once from this seed, one row per training example

# ---------------------------------------------------------------------------------------------
# Setups (Section 2). A setup says where the soft targets of loss (1) come from:
#   None       no KD term (cross-entropy only; the setup takes no alpha)
#   "teacher"  the trained teacher M_T's logits on the training set
#   a function fn(num_examples, num_classes, generator) -> (N, C) logits: a noise "teacher", drawn once
#              from torch.Generator().manual_seed(NOISE_SEED), so every member distils from the same rows
# ---------------------------------------------------------------------------------------------

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


SETUPS: dict[str, Setup] = {}


def register_setup(name: str, label: str, description: str, soft_targets: SoftTargets = None, *,
                   noise_name: str | None = None) -> Setup:
    """Adding a setup is this one call. ``soft_targets``: None, ``"teacher"`` or a noise generator.

    Remove a setup with ``del SETUPS[name]``. The setup's name is part of every member key, so two
    setups never share cached members.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"setup name {name!r} is invalid; it must be a non-empty string")
    if name in SETUPS:
        raise ConfigError(f"setup {name!r} is already registered (delete SETUPS[{name!r}] first to replace it)")
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
    setup = Setup(name, label, description, soft_targets, noise_name)
    SETUPS[name] = setup
    return setup


def get_setup(name: str) -> Setup:
    try:
        return SETUPS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown setup {name!r}: choose one of {', '.join(SETUPS)}") from None


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


# ---------------------------------------------------------------------------------------------
# Recipes (Appendices E, F, G) are part of each architecture's registration in kdclaims/models.py.
# RECIPES and get_recipe are read-only views onto that registry, for the callers that look them up here.
# ---------------------------------------------------------------------------------------------


class _RecipeView(Mapping):
    """``RECIPES[arch]``: the recipe registered with ``arch`` (architectures without one are left out)."""

    @staticmethod
    def _registered() -> dict[str, Recipe]:
        from kdclaims.models import ARCHITECTURES

        return {name: arch.recipe for name, arch in ARCHITECTURES.items() if arch.recipe is not None}

    def __getitem__(self, arch: str) -> Recipe:
        return self._registered()[arch]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registered())

    def __len__(self) -> int:
        return len(self._registered())

    def __repr__(self) -> str:
        return f"RECIPES({self._registered()!r})"


RECIPES: Mapping[str, Recipe] = _RecipeView()


def get_recipe(arch: str) -> Recipe:
    """The recipe registered with ``arch``; a ConfigError for an unknown architecture or one without a recipe."""
    from kdclaims.models import get_architecture

    recipe = get_architecture(arch).recipe
    if recipe is None:
        raise ConfigError(f"no training recipe for architecture {arch!r}: register it with recipe=... "
                          f"(architectures with one: {', '.join(RECIPES)})")
    return recipe


# ---------------------------------------------------------------------------------------------
# Datasets. Every dataset is read through kdclaims.data.load_cifar100, so it comes in CIFAR-100's
# format; a dataset kind only says where that archive (or extracted folder) is, or makes it.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    kind: str  # a key of DATASETS: "cifar100" (the real archive in the data dir) or "synthetic" (generated)
    image_size: int = 32  # models see images average-pooled down to this size (32 = as stored)
    synthetic: Mapping[str, Any] = field(default_factory=dict)  # write_synthetic_cifar100 arguments

    def as_dict(self) -> dict:
        return {"kind": self.kind, "image_size": self.image_size, "synthetic": dict(self.synthetic)}


# locate(spec, data_dir, cache_root) -> the archive or folder to read
DatasetLocator = Callable[[DatasetSpec, Path, Path], Path]
DATASETS: dict[str, DatasetLocator] = {}


def register_dataset(kind: str, locate: DatasetLocator) -> DatasetLocator:
    """Adding a dataset kind is this one call; a profile then names it in ``DatasetSpec(kind=...)``.

    ``locate(spec, data_dir, cache_root)`` returns the path ``load_cifar100`` reads, or raises a
    DataError saying how to get the data. It runs in every pytest-xdist worker, so a locator that
    writes files must do it under a lock (see ``locate_synthetic``).
    """
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"dataset kind {kind!r} is invalid; it must be a non-empty string")
    if kind in DATASETS:
        raise ConfigError(f"dataset kind {kind!r} is already registered (delete DATASETS[{kind!r}] first)")
    if not callable(locate):
        raise ConfigError(f"locate for dataset kind {kind!r} is not callable")
    DATASETS[kind] = locate
    return locate


def get_dataset(kind: str) -> DatasetLocator:
    try:
        return DATASETS[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown dataset kind {kind!r}: choose one of {', '.join(DATASETS)}") from None


def locate_cifar100(spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
    """The real CIFAR-100, found in the data dir; never downloaded implicitly."""
    from kdclaims.data import ARCHIVE_NAME, find_cifar100

    found = find_cifar100(data_dir)
    if found is None:
        raise DataError(
            f"CIFAR-100 not found in {data_dir}: run `kdclaims data fetch --data-dir {data_dir}` "
            f"(or place {ARCHIVE_NAME} there, or set KDCLAIMS_DATA_DIR), "
            "or run the smoke profile instead (`--profile smoke`)"
        )
    return found


def locate_synthetic(spec: DatasetSpec, data_dir: Path, cache_root: Path) -> Path:
    """A synthetic CIFAR-100-format archive, generated on first use under ``<cache>/data/`` (its
    folder is named by a hash of its arguments, so different synthetic datasets never collide)."""
    from filelock import FileLock

    from kdclaims.data import ARCHIVE_NAME, write_synthetic_cifar100

    folder = Path(cache_root) / "data" / f"synthetic-{hash_config(dict(spec.synthetic))[:12]}"
    archive = folder / ARCHIVE_NAME
    if not archive.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):  # one writer among xdist workers
            if not archive.is_file():
                write_synthetic_cifar100(folder, **spec.synthetic)
    return archive


register_dataset("cifar100", locate_cifar100)
register_dataset("synthetic", locate_synthetic)


# ---------------------------------------------------------------------------------------------
# Profiles: the paper's experiment, and a smoke-sized copy of it.
# ---------------------------------------------------------------------------------------------

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
        if self.precision != "fp32":  # fp32 is always valid: profiles built at import time load no torch
            _check_profile_precision(self.name, self.precision)

    def _smoke_config(self, arch: str) -> "SmokeConfig | None":
        if self.scale != "smoke":
            return None
        from kdclaims.models import get_architecture

        return get_architecture(arch).smoke_config  # None: this architecture runs at paper size

    def model_overrides_for(self, arch: str) -> dict:
        """The keywords this profile sets on top of ``arch``'s paper_config (besides classes and image size)."""
        smoke = self._smoke_config(arch)
        overrides = dict(smoke.model) if smoke is not None else {}
        overrides.update(self.model_overrides.get(arch, {}))
        return overrides

    def epochs_for(self, arch: str) -> int:
        smoke = self._smoke_config(arch)
        default = smoke.epochs if smoke is not None and smoke.epochs is not None else get_recipe(arch).epochs
        return self.epochs.get(arch, default)

    def recipe(self, arch: str) -> Recipe:
        return get_recipe(arch).scaled_to(self.epochs_for(arch))

    def model_config(self, arch: str, num_classes: int) -> dict:
        from kdclaims.models import get_architecture

        config = dict(get_architecture(arch).paper_config)
        config.update(self.model_overrides_for(arch))
        config.update(num_classes=num_classes, image_size=self.dataset.image_size)
        return config

    def with_seeds(self, seeds: tuple[int, ...]) -> "Profile":
        return dataclasses.replace(self, seeds=tuple(seeds))

    def with_precision(self, precision: str) -> "Profile":
        """This profile at another arithmetic precision (a key of ``kdclaims.training.PRECISIONS``).
        Precision is part of every member's key, so members of two precisions never mix in the cache."""
        _check_profile_precision(self.name, precision)
        return dataclasses.replace(self, precision=precision)

    def as_dict(self) -> dict:
        """Provenance: model_overrides and epochs are the effective ones, per trainable architecture."""
        from kdclaims.models import ARCHITECTURES

        trainable = [name for name, arch in ARCHITECTURES.items() if arch.recipe is not None]
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset.as_dict(),
            "seeds": seeds_to_text(self.seeds),
            "n_seeds": len(self.seeds),
            "scale": self.scale,
            "model_overrides": {a: self.model_overrides_for(a) for a in trainable if self.model_overrides_for(a)},
            "epochs": {a: self.epochs_for(a) for a in trainable if self.epochs_for(a) != get_recipe(a).epochs},
            "precision": self.precision,
            "is_reproduction": self.is_reproduction,
        }


def _check_profile_precision(profile: str, precision: Any) -> None:
    from kdclaims.training import PRECISIONS  # here: kdclaims.training imports torch and this module

    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} for profile {profile!r}: "
                          f"use one of {', '.join(PRECISIONS)}")


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
                    "small models, few epochs, a handful of seeds. Not a reproduction.",
        dataset=DatasetSpec(
            kind="synthetic",
            image_size=16,  # 32x32 images average-pooled 2x2
            synthetic={"num_classes": 10, "train_per_class": 160, "test_per_class": 40, "seed": 0},
        ),
        seeds=tuple(range(1, 6)),
        scale="smoke",  # each architecture at its registered smoke_config (models.py): width 8, dim 32, ...
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
