"""What several test files share: the tiny profile members train with, and a well-formed claim file.

Importable as ``helpers`` from any test (pytest puts ``tests/`` on the path) and from a subprocess that
puts ``TESTS_DIR`` on its ``sys.path``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kdclaims.profiles import get_profile

TESTS_DIR = Path(__file__).resolve().parent


def tiny_profile(seeds=(1, 2), epochs=2):
    """The smoke pipeline on a smaller synthetic dataset: a member trains in a fraction of a second."""
    base = get_profile("smoke")
    dataset = dataclasses.replace(base.dataset, synthetic={"num_classes": 4, "train_per_class": 48,
                                                           "test_per_class": 16, "seed": 0})
    return dataclasses.replace(base, name="tiny-test", dataset=dataset, seeds=tuple(seeds),
                               epochs={"vgg16_bn": epochs, "vit": epochs, "resnet18": epochs})


def tiny_profile_conftest(name: str = "tiny-test", seeds=(1, 2), epochs: int = 1) -> str:
    """A conftest.py for a ``pytester`` run: registers ``tiny_profile`` under ``name`` (``--profile name``)."""
    return (f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\nfrom helpers import tiny_profile\n"
            f"from kdclaims.profiles import PROFILES\n"
            f"PROFILES.register({name!r}, tiny_profile(seeds={tuple(seeds)!r}, epochs={epochs!r}))\n")


def retained_ad_claims(*entries: str, arch: str | None = None) -> str:
    """A claim file of Table 4 comparisons on activation distance whose paper outcome is a retained H0 (a
    baseline of independent students); ``entries`` are the claims' YAML flow mappings, one a line."""
    arch_line = f"  arch: {arch}\n" if arch else ""
    return ("group: g\ndefaults:\n  kind: comparison\n  source: Table 4\n" + arch_line
            + "  baseline: {setup: independent}\n  metric: activation_distance\n  direction: less\n"
            "  paper: {outcome: retain, p: 0.956}\nclaims:\n" + "".join(f"  - {e}\n" for e in entries))


GOOD_CLAIM = """
group: g
defaults:
  kind: comparison
  source: Table 4
  arch: resnet18
  baseline: {setup: independent}
claims:
  - id: c1
    sentence: "KD is not more similar than independent on AD"
    metric: activation_distance
    treatment: {setup: kd, alpha: 0.1}
    direction: less
    paper: {outcome: retain, p: 0.956}
"""
