"""Claim kinds: one module per kind, each a ``ClaimKind`` subclass registered in ``KINDS``.

Adding a kind is one new module here (a subclass of ``ClaimKind`` decorated with ``@register_kind``)
and its tests; every module of this package is imported below, so nothing else needs editing. A kind
defined outside the package registers the same way from wherever it is imported.
"""

import importlib
import pkgutil

from kdclaims.kinds.base import KINDS, Arm, ClaimKind, ClaimResult, paper_arms, register_kind

__all__ = ["KINDS", "Arm", "ClaimKind", "ClaimResult", "paper_arms", "register_kind"]

# The paper's kinds first, in the order the README presents them; then any other module of the package.
_ORDER = ("comparison", "ranking", "trend", "bound", "threshold")
for _name in sorted((m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"),
                    key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    importlib.import_module(f"{__name__}.{_name}")
