"""Bound: an effect is below a size.

``quantity: max_improvement``: every improvement of a treatment over the baseline (in the metric's
better direction) is below ``bound``; ``quantity: spread``: the means of ``arms`` differ pairwise by
less than ``bound``. Both are intersection-union tests: the bound holds if every cell's one-sided
97.5% upper confidence bound is below it (valid at level 0.025 without a multiplicity correction);
it fails if some cell's lower bound is above it; otherwise the evidence cannot tell. The bounds use the
t quantile with each cell's Welch-Satterthwaite df (``stats.welch_t_test``), at every n.
"""

from __future__ import annotations

from kdclaims.errors import ClaimError, short_repr
from kdclaims.kinds.base import (ClaimKind, ClaimResult, parse_arm, parse_arms, parse_metrics,
                                 positive_number, register_kind)
from kdclaims.metrics import get_metric, more_similar_direction
from kdclaims.stats import ALPHA, welch_t_test
QUANTITIES = ("max_improvement", "spread")


@register_kind
class Bound(ClaimKind):
    name = "bound"
    required = ("quantity", "metrics", "arms", "bound")
    optional = {"baseline": None, "only_significant": False}
    description = "an effect (largest improvement, or spread of means) is below a size"

    def check(self, params: dict, where: str) -> dict:
        if params["quantity"] not in QUANTITIES:
            raise ClaimError(f"{where}: quantity must be one of {', '.join(QUANTITIES)}, got {short_repr(params['quantity'])}")
        params["metrics"] = parse_metrics(params["metrics"], where)
        params["bound"] = positive_number(params["bound"], where, "bound")
        params["arms"] = parse_arms(params["arms"], where, "arms", minimum=2 if params["quantity"] == "spread" else 1)
        if params["quantity"] == "max_improvement":
            if params["baseline"] is None:
                raise ClaimError(f"{where}: a max_improvement bound needs a baseline")
            params["baseline"] = parse_arm(params["baseline"], where, "baseline")
        if not isinstance(params["only_significant"], bool):
            raise ClaimError(f"{where}: only_significant must be true or false, got {short_repr(params['only_significant'])}")
        if params["quantity"] == "spread" and (params["baseline"] is not None or params["only_significant"]):
            raise ClaimError(f"{where}: a spread bound takes no baseline and no only_significant")
        return params

    def populations(self, claim):
        arms = list(claim.params["arms"])
        if claim.params.get("baseline") is not None:
            arms.append(claim.params["baseline"])
        return [a.population(claim.arch) for a in arms]

    def evaluate(self, claim, evidence, alpha: float = ALPHA) -> ClaimResult:
        """``alpha``: the level of every cell's bounds (a sequential look's nominal level; 0.025 otherwise)."""
        bound, quantity = claim.params["bound"], claim.params["quantity"]
        cells = []
        for metric in claim.params["metrics"]:
            direction = more_similar_direction(metric)
            arms = [evidence.arm(a.population(claim.arch), metric) for a in claim.params["arms"]]
            if quantity == "max_improvement":
                base = evidence.arm(claim.params["baseline"].population(claim.arch), metric)
                for arm in arms:
                    test = welch_t_test(arm.summary, base.summary, direction, alpha)
                    # the improvement (positive = better than the baseline) and its one-sided 97.5% bounds
                    cells.append({"metric": metric, "population": arm.population, "label": arm.label,
                                  "value": test.improvement, "upper": test.upper_bound, "lower": test.lower_bound,
                                  "df": test.df, "significant": test.reject, "p_value": test.p_value})
            else:
                for i, a in enumerate(arms):
                    for b in arms[i + 1:]:
                        test = welch_t_test(a.summary, b.summary, direction, alpha)
                        value, half = abs(test.diff), test.upper_bound - test.improvement  # t_{0.975,df} * se
                        cells.append({"metric": metric, "population": f"{a.population} vs {b.population}",
                                      "label": f"{a.label} vs {b.label}", "value": value,
                                      "upper": value + half, "lower": value - half, "df": test.df})
        considered = [c for c in cells if c.get("significant", True)] if claim.params["only_significant"] else cells
        level = f"{100 * (1 - alpha):.6g}%"  # "97.5%" at the paper's 0.025
        what = "improvement" if quantity == "max_improvement" else "difference between means"
        if not considered:
            observed, reason, largest = None, "no significant improvement over the baseline, so there is nothing to bound", None
        else:
            largest = max(considered, key=lambda c: c["value"])
            worst_upper = max(c["upper"] for c in considered)
            head = (f"largest {what} {largest['value']:.4g} ({largest['label']}, {get_metric(largest['metric']).label}); "
                    f"highest {level} upper bound {worst_upper:.4g} vs bound {bound:g}")
            if all(c["upper"] < bound for c in considered):
                observed, reason = "holds", head
            elif any(c["lower"] > bound for c in considered):
                observed, reason = "fails", head + ": some cell is significantly above the bound"
            else:
                observed, reason = None, head + ": the estimate is below the bound but the data cannot establish it at 97.5%"
        details = {"quantity": quantity, "bound": bound, "cells": cells, "considered": len(considered),
                   "largest": largest, "summary": reason}
        return self.held(claim, evidence, observed, reason, details)
