"""The architecture registry, without torch: names, labels, paper sizes, recipes, smoke sizes.

Collecting claims, ``kdclaims --help``, ``claims list`` and ``claims validate`` need to know which
architectures exist and how the profiles size and train them, never the networks themselves; so
the registry lives here and names each builder lazily, as a ``"module:function"`` string resolved
(importing torch) only when a model is built. The networks are in :mod:`kdclaims.models`, which
re-exports these names.

Adding an architecture is one call to :func:`register_architecture`: its builder (a callable, or a
``"module:function"`` string to keep the import lazy), the paper-size keywords, a description, its
training recipe (:class:`kdclaims.recipe.Recipe`; the paper's three are written out in
``kdclaims/recipe.py``) and, optionally, how the smoke profile scales it down
(:class:`SmokeConfig`). Profiles read recipes (``get_recipe``) and smoke sizes from here.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from kdclaims import recipe as recipes
from kdclaims.errors import ConfigError
from kdclaims.recipe import OPTIMIZERS, SCHEDULES, Recipe
from kdclaims.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "RECIPES",
    "SmokeConfig",
    "arch_label",
    "get_architecture",
    "get_recipe",
    "register_architecture",
]

Builder = Callable[..., Any]  # returns a torch.nn.Module (not named here: that would import torch)

_BUILDER_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class SmokeConfig:
    """How the smoke profile scales an architecture down to run on two CPU cores.

    ``model`` overrides ``paper_config`` (e.g. ``{"width": 8}``); ``epochs`` shortens the recipe with
    :meth:`Recipe.scaled_to` (None keeps the recipe's). Both enter the members' cache keys through
    ``Workbench.member_config``, so changing them retrains the smoke members, never reuses stale ones.
    """

    model: Mapping[str, Any]
    epochs: int | None = None


@lru_cache(maxsize=None)
def _import_builder(path: str) -> Builder:
    """``"package.module:function"`` -> the function (imported on first use, then cached)."""
    module_name, function_name = path.split(":")
    try:
        builder = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"architecture builder {path!r} cannot be imported: {exc}") from None
    if not callable(builder):
        raise ConfigError(f"architecture builder {path!r} is not callable")
    return builder


@dataclass(frozen=True)
class Architecture:
    name: str  # "resnet18" | "vgg16_bn" | "vit"
    builder: Builder | str  # the function, or "module:function" imported when a model is built
    paper_config: Mapping[str, Any]  # kwargs giving the paper's full-size model
    description: str
    recipe: Recipe | None = None  # how the paper trains it; None: buildable, but not trainable here
    smoke_config: SmokeConfig | None = None  # None: the smoke profile trains it at paper size
    label: str = ""  # display name in reports, e.g. "ResNet-18" (default: the registry name)

    def build_function(self) -> Builder:
        """The builder itself. A ``"module:function"`` builder is imported here, on first use, and its
        paper and smoke keywords are checked against it then (at registration they could not be)."""
        if callable(self.builder):
            return self.builder
        builder = _import_builder(self.builder)
        _check_options(self.name, builder, self.paper_config)
        if self.smoke_config is not None:
            _check_options(self.name, builder, self.smoke_config.model)
        return builder

    def check_options(self, options: Mapping[str, Any]) -> None:
        """A ConfigError naming the first keyword the builder does not accept (and the accepted ones)."""
        _check_options(self.name, self.build_function(), options)

    @property
    def accepted_options(self) -> tuple[str, ...]:
        """Keyword options ``build_model`` accepts for this architecture, sorted (a builder that
        also takes ``**kwargs`` accepts anything on top of these)."""
        return _accepted_options(self.build_function())[0]


ARCHITECTURES: Registry[Architecture] = Registry("architecture")
get_architecture = ARCHITECTURES.get


def _accepted_options(builder: Builder) -> tuple[tuple[str, ...], bool]:
    """(named keyword parameters, whether the builder takes **kwargs)."""
    sig = inspect.signature(builder)
    names = tuple(
        sorted(
            p.name
            for p in sig.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
    )
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _check_options(name: str, builder: Builder, options: Mapping[str, Any]) -> None:
    accepted, var_kw = _accepted_options(builder)
    if var_kw:
        return
    for key in options:
        if key not in accepted:
            hint = difflib.get_close_matches(str(key), accepted, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"unknown model option {key!r} for architecture {name!r}{did_you_mean}; "
                f"accepted options: {', '.join(accepted)}"
            )


def _check_recipe(name: str, recipe: Any) -> Recipe | None:
    if recipe is None:
        return None
    if not isinstance(recipe, Recipe):
        raise ConfigError(f"recipe for architecture {name!r} must be a kdclaims.recipe.Recipe, "
                          f"not {type(recipe).__name__}")
    if recipe.optimizer not in OPTIMIZERS:
        raise ConfigError(f"recipe for architecture {name!r}: unknown optimizer {recipe.optimizer!r}; "
                          f"use one of {', '.join(OPTIMIZERS)}")
    if recipe.schedule not in SCHEDULES:
        raise ConfigError(f"recipe for architecture {name!r}: unknown schedule {recipe.schedule!r}; "
                          f"use one of {', '.join(SCHEDULES)}")
    if isinstance(recipe.epochs, bool) or not isinstance(recipe.epochs, int) or recipe.epochs < 1:
        raise ConfigError(f"recipe for architecture {name!r}: epochs={recipe.epochs!r} must be a positive integer")
    return recipe


def _check_smoke_config(name: str, builder: Builder | str, smoke_config: Any) -> SmokeConfig | None:
    """A ``SmokeConfig`` (or a ``{"model": {...}, "epochs": n}`` mapping), checked and frozen (its
    model keywords against a callable builder now, against a lazy one when it is imported)."""
    if smoke_config is None:
        return None
    if isinstance(smoke_config, Mapping):
        unknown = set(smoke_config) - {"model", "epochs"}
        if unknown:
            raise ConfigError(f"smoke_config for architecture {name!r}: unknown field "
                              f"{sorted(unknown)[0]!r} (allowed: model, epochs)")
        smoke_config = SmokeConfig(smoke_config.get("model", {}), smoke_config.get("epochs"))
    if not isinstance(smoke_config, SmokeConfig):
        raise ConfigError(f"smoke_config for architecture {name!r} must be a SmokeConfig or a mapping")
    if callable(builder):
        _check_options(name, builder, smoke_config.model)
    epochs = smoke_config.epochs
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"smoke_config for architecture {name!r}: epochs={epochs!r} must be a positive "
                          "integer (or None for the recipe's)")
    return SmokeConfig(MappingProxyType(dict(smoke_config.model)), smoke_config.epochs)


def register_architecture(
    name: str,
    builder: Builder | str,
    paper_config: Mapping[str, Any],
    description: str,
    recipe: Recipe | None = None,
    smoke_config: SmokeConfig | Mapping[str, Any] | None = None,
    label: str | None = None,
) -> Architecture:
    """Register an architecture under ``name`` and return it: the one place an architecture is added.

    ``builder(**kwargs)`` must return an ``nn.Module``; pass the function, or its
    ``"module:function"`` path to import it only when a model is built. ``paper_config`` is the
    keyword set that builds the paper's full-size model and should include ``num_classes`` and
    ``image_size``. ``recipe`` is how it is trained (required to train it: ``get_recipe`` reads it);
    ``smoke_config`` is how the smoke profile scales it down. Registering a taken name is a
    ConfigError (delete ``ARCHITECTURES[name]`` first to replace one)."""
    if isinstance(builder, str):
        if not _BUILDER_PATH.match(builder):
            raise ConfigError(f"builder for architecture {name!r} is {builder!r}; give a callable or "
                              "a 'package.module:function' path")
    elif not callable(builder):
        raise ConfigError(f"builder for architecture {name!r} is not callable")
    else:
        _check_options(name, builder, paper_config)
    return ARCHITECTURES.register(name, Architecture(
        name=name,
        builder=builder,
        paper_config=MappingProxyType(dict(paper_config)),
        description=description,
        recipe=_check_recipe(name, recipe),
        smoke_config=_check_smoke_config(name, builder, smoke_config),
        label=label or name,
    ))


def arch_label(name: str) -> str:
    """How reports name an architecture ("ResNet-18"); the name itself for one not registered."""
    return ARCHITECTURES[name].label if name in ARCHITECTURES else str(name)


class _RecipeView(Mapping):
    """``RECIPES[arch]``: the recipe registered with ``arch`` (architectures without one are left out)."""

    @staticmethod
    def _registered() -> dict[str, Recipe]:
        return {name: arch.recipe for name, arch in ARCHITECTURES.items() if arch.recipe is not None}

    def __getitem__(self, arch: str) -> Recipe:
        return self._registered()[arch]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registered())

    def __len__(self) -> int:
        return len(self._registered())


RECIPES: Mapping[str, Recipe] = _RecipeView()  # read-only: a recipe is registered with its architecture


def get_recipe(arch: str) -> Recipe:
    """The recipe registered with ``arch``; a ConfigError for an unknown architecture or one without a recipe."""
    recipe = ARCHITECTURES.get(arch).recipe
    if recipe is None:
        raise ConfigError(f"no training recipe for architecture {arch!r}: register it with recipe=... "
                          f"(architectures with one: {', '.join(RECIPES)})")
    return recipe


# --------------------------------------------------------------------------------------------------
# The paper's three architectures: model (kdclaims/models.py, imported when built), recipe
# (kdclaims/recipe.py) and smoke size, one call each
# --------------------------------------------------------------------------------------------------


register_architecture(
    "resnet18",
    "kdclaims.models:build_resnet18",
    {"num_classes": 100, "image_size": 32, "width": 64, "blocks": (2, 2, 2, 2)},
    "ResNet-18, CIFAR form (3x3 stem, no max-pool, BasicBlocks [2,2,2,2] at 64/128/256/512); "
    "scale with width= and blocks=",
    recipe=recipes.RESNET18,
    smoke_config=SmokeConfig(model={"width": 8}, epochs=4),
    label="ResNet-18",
)
register_architecture(
    "vgg16_bn",
    "kdclaims.models:build_vgg16_bn",
    {"num_classes": 100, "image_size": 32, "width": 64, "depth_per_stage": (2, 2, 3, 3, 3)},
    "VGG-16 with batch norm for 32x32 inputs and a single linear classifier (kuangliu style); "
    "scale with width= and depth_per_stage=",
    recipe=recipes.VGG16_BN,
    smoke_config=SmokeConfig(model={"width": 8}, epochs=4),
    label="VGG-16-BN",
)
register_architecture(
    "vit",
    "kdclaims.models:build_vit",
    {
        "num_classes": 100,
        "image_size": 32,
        "patch_size": 4,
        "dim": 128,
        "depth": 6,
        "heads": 4,
        "mlp_ratio": 2.0,
        "dropout": 0.1,
    },
    "pre-norm Vision Transformer of the paper (patch 4, dim 128, depth 6, 4 heads, MLP 256, "
    "dropout 0.1); scale with dim=, depth=, heads=, mlp_ratio=, patch_size=, dropout=",
    recipe=recipes.VIT,
    # The ViT needs more smoke epochs than the CNNs to learn the synthetic classes (~70% vs ~30% at 6).
    smoke_config=SmokeConfig(model={"dim": 32, "depth": 2, "heads": 2}, epochs=15),
    label="ViT",
)
