"""What names one population and one member of it, and how a member's key is made.

A member's *key* is a hash of everything that changes what it computes (architecture and its size,
recipe, setup, alpha, temperature, data content, seed, the teacher it learnt from, precision; see
``Workbench.member_config``). Things that only describe the run (profile name, device, versions, wall
time) are recorded beside the result, not hashed: a population trained on a GPU can be evaluated on a
laptop. This module loads no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from kdclaims.errors import ConfigError
from kdclaims.setups import Setup, get_setup

# Bump when a change to training or storage makes old cache entries wrong (a noise generator's or a
# dataset locator's code is not hashed either: changing one in place needs this bump or a new name).
CACHE_SCHEMA = "kdclaims-member-v1"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_config(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


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
        from kdclaims.architectures import get_recipe

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
