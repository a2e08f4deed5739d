"""Comparison: a treatment is more similar to the teacher (or more accurate) than a baseline.

One-tailed two-sample z-test at the paper's 0.025. The observed outcome is "reject" or "retain" (H0);
a claim is *reproduced* when it matches the paper's. Retaining H0 is only evidence when the test
could have rejected: if its power is below ``POWER_TARGET`` the verdict is *inconclusive*, never
reproduced (and a paper rejection we fail to see with low power is inconclusive, not a failure).
Power is the design power at the n used: the paper's effect, with the paper's standard deviations,
at our group sizes. For a rejection that effect is the paper's own difference; for a retention,
where the paper saw no effect, it is the smallest difference the paper's design (n = 385, 80%
power) would have detected.

``paper: table`` takes the outcome and p from the p-value the paper prints for this comparison in
the table named by ``source`` (``kdclaims/paper_tables/pvalues.csv``): H0 rejected below 0.025.
"""

from __future__ import annotations

import math

from kdclaims import paper as paper_tables
from kdclaims.errors import ClaimError, KdclaimsError, short_repr
from kdclaims.kinds.base import ClaimKind, ClaimResult, check_metric, parse_arm, register_kind
from kdclaims.metrics import get_metric
from kdclaims.stats import ALPHA, DIRECTIONS, minimum_detectable_effect, power, z_test

POWER_TARGET = 0.8  # a retained H0 counts as evidence only if the test had at least this power


def design_power(claim, n_treatment: int, n_baseline: int) -> dict:
    """Power of our test, at our n, to detect the paper's effect (see the module docstring)."""
    metric, direction = claim.params["metric"], claim.params["direction"]
    sides = [claim.params[arm].population(claim.arch) for arm in ("treatment", "baseline")]
    if any(s.temperature != 1 for s in sides):
        return {"power": None, "effect": None, "basis": "the paper has no numbers at this temperature"}
    t, b = (paper_tables.paper_summary(s.arch, metric, s.setup, s.alpha) for s in sides)
    if t is None or b is None:
        return {"power": None, "effect": None, "basis": "the paper gives no numbers for this cell"}
    if claim.paper.outcome == "reject":
        sign = 1.0 if direction == "greater" else -1.0
        effect = sign * (t.mean - b.mean)
        basis = "the paper's observed difference"
    else:
        effect = minimum_detectable_effect(math.sqrt(t.std ** 2 / t.n + b.std ** 2 / b.n))
        basis = f"the smallest difference the paper's design (n={t.n}) detects with 80% power"
    se = math.sqrt(t.std ** 2 / n_treatment + b.std ** 2 / n_baseline)
    return {"power": power(effect, se), "effect": effect, "basis": basis,
            "paper_treatment": {"mean": t.mean, "std": t.std, "n": t.n},
            "paper_baseline": {"mean": b.mean, "std": b.std, "n": b.n}}


def decide(paper_outcome: str, observed: str, achieved_power: float | None) -> tuple[str, str]:
    """(verdict, reason) from the paper's outcome, ours, and the power we had."""
    powered = achieved_power is not None and achieved_power >= POWER_TARGET - 1e-9
    power_text = "unknown" if achieved_power is None else f"{achieved_power:.2f}"
    if observed == paper_outcome:
        if observed == "retain" and not powered:
            return "inconclusive", (f"H0 retained as in the paper, but the test's power to detect the paper's effect "
                                    f"was {power_text} (< {POWER_TARGET}): too few members to tell")
        return "reproduced", f"H0 {'rejected' if observed == 'reject' else 'retained'}, as in the paper"
    if observed == "retain" and not powered:
        return "inconclusive", (f"the paper rejects H0 but we retained it with power {power_text} "
                                f"(< {POWER_TARGET}): too few members to tell")
    if observed == "retain":
        return "not_reproduced", f"the paper rejects H0; we retained it with power {power_text}"
    return "not_reproduced", "the paper retains H0; we rejected it"


@register_kind
class Comparison(ClaimKind):
    name = "comparison"
    required = ("metric", "treatment", "baseline", "direction")
    description = "treatment vs baseline on one metric, one-tailed two-sample z-test at 0.025"
    outcomes = ("reject", "retain")

    def check(self, params: dict, where: str) -> dict:
        check_metric(params["metric"], where)
        if params["direction"] not in DIRECTIONS:
            raise ClaimError(f"{where}: direction must be 'less' or 'greater' (H_a: treatment mean < or > baseline "
                             f"mean), got {short_repr(params['direction'])}")
        params["treatment"] = parse_arm(params["treatment"], where, "treatment")
        params["baseline"] = parse_arm(params["baseline"], where, "baseline")
        return params

    def printed_outcome(self, arch: str, source: str, params: dict, where: str) -> tuple[str, float | None]:
        try:
            t, b = (params[side].population(arch) for side in ("treatment", "baseline"))
        except KdclaimsError as exc:
            raise ClaimError(f"{where}: {exc}") from None
        p = paper_tables.printed_p(arch, source, params["metric"], (t.setup, t.alpha), (b.setup, b.alpha))
        if p is None or t.temperature != 1 or b.temperature != 1:
            raise ClaimError(f"{where}: {source} prints no p-value for {params['metric']}, {t.label} vs {b.label}; "
                             "write paper: {outcome: reject|retain, p: ...}")
        return ("reject" if p < ALPHA else "retain"), p

    def populations(self, claim):
        return [claim.params["treatment"].population(claim.arch), claim.params["baseline"].population(claim.arch)]

    def evaluate(self, claim, evidence) -> ClaimResult:
        metric, direction = claim.params["metric"], claim.params["direction"]
        treatment = evidence.arm(claim.params["treatment"].population(claim.arch), metric)
        baseline = evidence.arm(claim.params["baseline"].population(claim.arch), metric)
        test = z_test(treatment.summary, baseline.summary, direction, ALPHA)
        observed = "reject" if test.reject else "retain"
        achieved = design_power(claim, treatment.summary.n, baseline.summary.n)
        verdict, reason = decide(claim.paper.outcome, observed, achieved["power"])
        details = {
            "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
            "treatment": treatment.to_dict(), "baseline": baseline.to_dict(),
            "test": test.to_dict(), "power": achieved, "power_target": POWER_TARGET,
            "summary": (f"{treatment.label} {treatment.summary.mean:.4g} vs {baseline.label} "
                        f"{baseline.summary.mean:.4g}: z {test.z:.2f}, p {test.p_value:.3g}"),
        }
        return ClaimResult(claim, evidence.name, verdict, reason, observed, details)

    def primary_p(self, result: dict) -> float | None:
        test = (result.get("details") or {}).get("test")
        return test["p_value"] if test else None

    def redecide(self, result: dict, p_adjusted: float) -> tuple[str | None, str, str]:
        observed = "reject" if p_adjusted < ALPHA else "retain"
        verdict, reason = decide(result["paper"]["outcome"], observed, (result["details"].get("power") or {}).get("power"))
        return observed, verdict, reason
