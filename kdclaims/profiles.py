"""Profiles: what one run trains and on which data. A profile is a small YAML file (``kdclaims/profile_files/``
ships ``paper``, ``smoke`` and ``digits``; ``--profile PATH`` takes one of your own) naming the dataset, the
model size and recipe per architecture, the seeds, the precision, and whether the run is a reproduction or
a machinery check. ``load_profile_file`` reads one; ``PROFILES`` holds the shipped ones.

Models and recipes start from the registered architectures' (``kdclaims.models``, ``kdclaims.recipe``); a
profile's ``scale: smoke`` takes each architecture's registered smoke size, and its ``architectures:`` block
overrides model keywords, epochs, batch size and learning rate. This module loads no torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdclaims.datasets import DatasetSpec
from kdclaims.errors import ConfigError
from kdclaims.precision import PRECISIONS, check_precision
from kdclaims.recipe import Recipe
from kdclaims.registry import Registry

if TYPE_CHECKING:
    from kdclaims.architectures import SmokeConfig

SCALES = ("paper", "smoke")  # how big each architecture is: as the paper has it, or its registered smoke_config
KINDS = {True: "reproduction", False: "machinery-check"}  # a profile file's ``kind:``, by is_reproduction
RECIPE_OVERRIDES = ("batch_size", "lr")  # besides epochs, what a profile may change in an architecture's recipe
SPENDINGS = ("obf", "pocock")  # --spending: Lan-DeMets O'Brien-Fleming-type or Pocock-type (kdclaims.sequential)
# Where a profile states no looks: the paper's looks (25, 50, 100, 200, 385 of 385) as fractions of its seeds.
_PAPER_LOOK_FRACTIONS = (25 / 385, 50 / 385, 100 / 385, 200 / 385, 1.0)
MIN_LOOK = 2  # members per population at a look: Welch's test needs two
PROFILE_DIR = Path(__file__).with_name("profile_files")


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
    # Per-arch recipe fields besides epochs (RECIPE_OVERRIDES: batch_size, lr).
    recipe_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None  # the profile file it was read from, if any (provenance only)
    # The group-sequential design (--sequential, issue #19): members per population at each look, the last
    # equal to the seeds' count (None: the paper's look fractions of the seeds), and the spending function.
    looks: tuple[int, ...] | None = None
    spending: str = "obf"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ConfigError(f"profile {self.name!r}: unknown scale {self.scale!r}; use one of {', '.join(SCALES)}")
        check_precision(self.precision, f" for profile {self.name!r}")

    @property
    def kind(self) -> str:
        """"reproduction" or "machinery-check" (verdicts recorded, never failing the run)."""
        return KINDS[bool(self.is_reproduction)]

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

        recipe = get_recipe(arch).scaled_to(self.epochs_for(arch))
        overrides = dict(self.recipe_overrides.get(arch, {}))
        return dataclasses.replace(recipe, **overrides) if overrides else recipe

    def model_config(self, arch: str, num_classes: int, image_size: int | None = None,
                     in_channels: int = 3) -> dict:
        """The keywords ``arch`` is built with; ``image_size`` defaults to the dataset spec's."""
        from kdclaims.architectures import ARCHITECTURES

        config = dict(ARCHITECTURES.get(arch).paper_config)
        config.update(self.model_overrides_for(arch))
        config.update(num_classes=num_classes, image_size=image_size or self.dataset.image_size or 32)
        if in_channels != 3:
            # Only when it is not the builders' default: the keys of every 3-channel member stay as they were.
            config["in_channels"] = in_channels
        return config

    def with_seeds(self, seeds: tuple[int, ...]) -> "Profile":
        """These seeds instead of the profile's; stated looks beyond them are dropped (``sequential_looks``
        then ends at the new count)."""
        looks = None if self.looks is None else tuple(k for k in self.looks if k < len(seeds)) + (len(seeds),)
        return dataclasses.replace(self, seeds=tuple(seeds), looks=looks)

    def with_looks(self, looks: tuple[int, ...]) -> "Profile":
        """This profile with the looks of ``--looks`` (checked against its seeds: one line if bad)."""
        return dataclasses.replace(self, looks=check_looks(looks, len(self.seeds), "--looks"))

    def with_spending(self, spending: str) -> "Profile":
        if spending not in SPENDINGS:
            raise ConfigError(f"unknown --spending {spending!r}: use one of {', '.join(SPENDINGS)}")
        return dataclasses.replace(self, spending=spending)

    @property
    def sequential_looks(self) -> tuple[int, ...]:
        """Members per population at each look of the sequential design; the last is the seeds' count."""
        if self.looks is not None:
            return self.looks
        n = len(self.seeds)
        return tuple(sorted({max(MIN_LOOK, min(n, round(f * n))) for f in _PAPER_LOOK_FRACTIONS}))

    def with_precision(self, precision: str) -> "Profile":
        """This profile at another arithmetic precision (a key of ``kdclaims.precision.PRECISIONS``).
        Precision is part of every member's key, so members of two precisions never mix in the cache."""
        check_precision(precision, f" for profile {self.name!r}")
        return dataclasses.replace(self, precision=precision)

    def differences_from_paper(self) -> list[dict]:
        """Every setting in which this profile departs from the paper's experiment, beside the paper's value:
        rows {"setting", "value", "paper"} (the report prints them as a table)."""
        from kdclaims.architectures import ARCHITECTURES, RECIPES, arch_label

        paper = PROFILES["paper"]
        rows: list[dict] = []

        def differ(setting: str, value, paper_value) -> None:
            if value != paper_value:
                rows.append({"setting": setting, "value": value, "paper": paper_value})

        differ("dataset", self.dataset.kind if self.dataset.path is None else f"{self.dataset.kind} ({self.dataset.path})",
               paper.dataset.kind)
        differ("image size", self.dataset.image_size or "as stored", paper.dataset.image_size)
        differ("seeds per population", len(self.seeds), len(paper.seeds))
        differ("precision", self.precision, paper.precision)
        for arch in RECIPES:
            label = arch_label(arch)
            base = ARCHITECTURES[arch].paper_config
            for key, value in sorted(self.model_overrides_for(arch).items()):
                differ(f"{label} {key}", value, base.get(key))
            ours, theirs = dataclasses.asdict(self.recipe(arch)), dataclasses.asdict(paper.recipe(arch))
            for key in ("epochs", "batch_size", "lr", "milestones", "warmup_epochs"):
                differ(f"{label} {key}", ours[key], theirs[key])
        return rows

    def as_dict(self) -> dict:
        """Provenance: model_overrides and epochs are the effective ones, per trainable architecture."""
        from kdclaims.architectures import RECIPES

        trainable = list(RECIPES)
        out = {
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
            "kind": self.kind,
            "differences_from_paper": self.differences_from_paper() if "paper" in PROFILES else [],
        }
        out["sequential"] = {"looks": list(self.sequential_looks), "spending": self.spending}
        if self.recipe_overrides:
            out["recipe_overrides"] = {a: dict(v) for a, v in self.recipe_overrides.items()}
        if self.source:
            out["source"] = self.source
        return out


# ---------------------------------------------------------------------------------------------
# Profile files
# ---------------------------------------------------------------------------------------------

_TOP_FIELDS = ("name", "description", "kind", "dataset", "seeds", "precision", "scale", "architectures", "sequential")
_SEQUENTIAL_FIELDS = ("looks", "spending")
_DATASET_FIELDS = ("kind", "image_size", "path", "synthetic")
_ARCH_FIELDS = ("model", "epochs") + RECIPE_OVERRIDES


def _bad(where: str, field_name: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: field '{field_name}' {problem}")


def _check_fields(where: str, prefix: str, mapping, allowed: tuple[str, ...]) -> dict:
    if not isinstance(mapping, Mapping):
        raise _bad(where, prefix.rstrip(".") or "(top level)", f"should be a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            raise _bad(where, f"{prefix}{key}", f"is unknown (allowed: {', '.join(allowed)})")
    return dict(mapping)


def _positive_int(where: str, field_name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(where, field_name, f"should be a positive integer, got {value!r}")
    return value


def check_looks(looks, n_seeds: int, where: str) -> tuple[int, ...]:
    """Looks as members per population: strictly increasing integers >= 2 ending at the seeds' count."""
    if isinstance(looks, str):
        try:
            looks = [int(part) for part in looks.split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"{where} should be member counts like 25,50,100,200,385, got {looks!r}") from None
    if not isinstance(looks, (list, tuple)) or not looks or any(
            isinstance(k, bool) or not isinstance(k, int) for k in looks):
        raise ConfigError(f"{where} should be a list of member counts like 25,50,100,200,385, got {looks!r}")
    looks = tuple(looks)
    if looks[0] < MIN_LOOK or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ConfigError(f"{where} should increase strictly from at least {MIN_LOOK} members, got "
                          f"{','.join(map(str, looks))}")
    if looks[-1] != n_seeds:
        raise ConfigError(f"{where} should end at the seeds per population ({n_seeds}), got "
                          f"{','.join(map(str, looks))}")
    return looks


def profile_from_mapping(data, where: str, base_dir: Path | None = None) -> Profile:
    """A profile from the parsed content of a profile file; every problem is one ConfigError naming
    ``where`` (the file) and the field."""
    from kdclaims.datasets import DATASETS

    data = _check_fields(where, "", data, _TOP_FIELDS)
    for required in ("name", "kind", "dataset", "seeds"):
        if required not in data:
            raise _bad(where, required, "is missing")
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise _bad(where, "name", f"should be a non-empty text, got {name!r}")
    if data["kind"] not in KINDS.values():
        raise _bad(where, "kind", f"should be one of {', '.join(KINDS.values())}, got {data['kind']!r}")
    dataset = _check_fields(where, "dataset.", data["dataset"], _DATASET_FIELDS)
    if dataset.get("kind") not in DATASETS:
        raise _bad(where, "dataset.kind", f"should be one of {', '.join(DATASETS)}, got {dataset.get('kind')!r}")
    image_size = dataset.get("image_size")
    if image_size is not None:
        _positive_int(where, "dataset.image_size", image_size)
    path = dataset.get("path")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise _bad(where, "dataset.path", f"should be a file or folder path, got {path!r}")
        path = os.path.expanduser(path)
        if base_dir is not None and not os.path.isabs(path):
            path = str((base_dir / path).resolve())
    synthetic = dataset.get("synthetic", {})
    if not isinstance(synthetic, Mapping):
        raise _bad(where, "dataset.synthetic", f"should be a mapping, got {type(synthetic).__name__}")
    try:
        seeds = parse_seeds(str(data["seeds"]) if not isinstance(data["seeds"], list)
                            else ",".join(map(str, data["seeds"])))
    except ConfigError as exc:
        raise _bad(where, "seeds", f"is invalid ({exc})") from None
    precision = data.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise _bad(where, "precision", f"should be one of {', '.join(PRECISIONS)}, got {precision!r}")
    scale = data.get("scale", "paper")
    if scale not in SCALES:
        raise _bad(where, "scale", f"should be one of {', '.join(SCALES)}, got {scale!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _bad(where, "description", f"should be text, got {type(description).__name__}")

    sequential = _check_fields(where, "sequential.", data.get("sequential") or {}, _SEQUENTIAL_FIELDS)
    looks = None
    if "looks" in sequential:
        try:
            looks = check_looks(sequential["looks"], len(seeds), "")
        except ConfigError as exc:
            raise _bad(where, "sequential.looks", str(exc).strip()) from None
    spending = sequential.get("spending", "obf")
    if spending not in SPENDINGS:
        raise _bad(where, "sequential.spending", f"should be one of {', '.join(SPENDINGS)}, got {spending!r}")

    model_overrides, epochs, recipe_overrides = {}, {}, {}
    architectures = data.get("architectures") or {}
    if not isinstance(architectures, Mapping):
        raise _bad(where, "architectures", f"should be a mapping of architecture names, got {type(architectures).__name__}")
    for arch, settings in architectures.items():
        prefix = f"architectures.{arch}."
        settings = _check_fields(where, prefix, settings if settings is not None else {}, _ARCH_FIELDS)
        if "model" in settings:
            model_overrides[arch] = _check_fields(where, prefix + "model.", settings["model"] or {},
                                                  tuple(settings["model"] or {}))  # keywords: the builder checks them
        if "epochs" in settings:
            epochs[arch] = _positive_int(where, prefix + "epochs", settings["epochs"])
        overrides = {}
        if "batch_size" in settings:
            overrides["batch_size"] = _positive_int(where, prefix + "batch_size", settings["batch_size"])
        if "lr" in settings:
            lr = settings["lr"]
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
                raise _bad(where, prefix + "lr", f"should be a positive number, got {lr!r}")
            overrides["lr"] = float(lr)
        if overrides:
            recipe_overrides[arch] = overrides
    return Profile(
        name=name, description=description,
        dataset=DatasetSpec(kind=dataset["kind"], image_size=image_size, synthetic=dict(synthetic), path=path),
        seeds=seeds, model_overrides=model_overrides, epochs=epochs, precision=precision,
        is_reproduction=data["kind"] == KINDS[True], scale=scale, recipe_overrides=recipe_overrides,
        source=None if base_dir is None else where, looks=looks, spending=spending,
    )


def load_profile_file(path) -> Profile:
    """Read a profile file (YAML); a missing file, bad YAML, unknown field or bad value is one ConfigError."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read profile file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at} ({problem})") from None
    return profile_from_mapping(data if data is not None else {}, str(path), path.parent.resolve())


def _shipped_profile(path: Path) -> Profile:
    profile = load_profile_file(path)
    if profile.name != path.stem:
        raise ConfigError(f"{path}: field 'name' is {profile.name!r} but a shipped profile is named by its file")
    return dataclasses.replace(profile, source=None)  # shipped: named, not a path on this machine


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


PROFILES: Registry[Profile] = Registry("profile")
for _file in sorted(PROFILE_DIR.glob("*.yaml")):
    PROFILES.register(_file.stem, _shipped_profile(_file))


def get_profile(name_or_path: str) -> Profile:
    """A shipped (or registered) profile by name, else the profile file at that path."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text or Path(text).is_file():
        return load_profile_file(text)
    return PROFILES.get(text)  # unknown: one line naming the shipped ones
