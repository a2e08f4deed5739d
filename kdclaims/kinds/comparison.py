"""Comparison: a treatment is more similar to the teacher (or more accurate) than a baseline.

One-tailed Welch t-test (Welch-Satterthwaite df) at the paper's 0.025, at every n: it keeps the type-I
error at the nominal level at small n, where the paper's z-test does not, and agrees with the z-test at
the paper's n = 385 (the paper's z stays in the details for reference). The observed outcome is
"reject" or "retain" (H0); a claim is *reproduced* when it matches the paper's, with one proviso:

* A retained H0 is evidence of "no effect that matters" only when our own data bound the effect: the
  one-sided (1 - alpha) upper confidence bound of the treatment's improvement (observed means, stds
  and n) must lie below the claim's ``margin`` -- the smallest improvement the paper's design (its
  stds, n = 385, 0.025, 80% power) could detect (``stats.design_margin``). Otherwise the verdict is
  *inconclusive*: H0 retained as in the paper, or against a paper that rejects, we cannot tell.
* Power is shown beside it, from the variance we observed against the margin; it decides nothing.
* ``--pairing seed``: student s of every setup shares seed s, so the paired (by seed) t-test is computed
  beside the unpaired one whenever both populations have per-member values, with the within-seed
  correlation; with ``--pairing seed`` it decides.
* Under a family-wise correction (``evaluate.apply_correction``) the bound, the CI and the power use
  the family's corrected level (``stats.family_alpha``).
* Fragility: the probability that a faithful replication at the paper's n reproduces the paper's
  outcome if the paper's means and stds were exactly true (``stats.replication_probability``); below
  ``stats.FRAGILE_BELOW`` the claim is marked ``fragile``.

Every stored number (difference, CI, d, t and z) is signed in the hypothesis' direction: positive
means the treatment is better in the way the claim states.

``paper: table`` takes the outcome and p from the p-value the paper prints for this comparison in
the table named by ``source`` (``kdclaims/paper_tables/pvalues.csv``): H0 rejected below 0.025.
"""

from __future__ import annotations

import copy

from kdclaims import paper as paper_tables
from kdclaims.errors import ClaimError, ConfigError, KdclaimsError, short_repr
from kdclaims.kinds.base import (ClaimKind, ClaimResult, check_metric, parse_arm, register_kind, test_from_record,
                                 test_record)
from kdclaims.metrics import get_metric
from kdclaims.render.format import number, p_clause
from kdclaims.stats import (ALPHA, DIRECTIONS, design_margin, effect_bounded, is_fragile, match_by_seed,
                            observed_power, paired_t_test, replication_probability, upper_confidence_bound, welch_t_test,
                            z_test)



def paper_numbers(claim):
    """The paper's (treatment, baseline) summaries for this comparison, or None where its tables have none."""
    metric = claim.params["metric"]
    sides = [claim.params[arm].population(claim.arch) for arm in ("treatment", "baseline")]
    if any(s.temperature != 1 for s in sides):
        return None
    t, b = (paper_tables.paper_summary(s.arch, metric, s.setup, s.alpha) for s in sides)
    return None if t is None or b is None else (t, b)


def claim_margin(paper) -> dict:
    """The margin a retained H0's bound must lie below: the smallest improvement the paper's design detects."""
    if paper is None:
        return {"value": None, "basis": "the paper gives no numbers for this cell, so there is no margin"}
    t, b = paper
    return {"value": design_margin(t.std, b.std, paper_tables.PAPER_N, ALPHA),
            "basis": (f"the smallest improvement the paper's design (its stds, n = {paper_tables.PAPER_N}, "
                      f"one-tailed {ALPHA}, Welch) detects with 80% power"),
            "paper_treatment": {"mean": t.mean, "std": t.std, "n": t.n},
            "paper_baseline": {"mean": b.mean, "std": b.std, "n": b.n}}


def fragility(claim, paper) -> dict:
    """How often a faithful replication at the paper's n would reproduce the paper's outcome."""
    if paper is None:
        return {"replication_probability": None, "fragile": None}
    t, b = paper
    prob = replication_probability(t.mean, t.std, b.mean, b.std, paper_tables.PAPER_N, claim.params["direction"],
                                   claim.paper.outcome, ALPHA)
    return {"replication_probability": prob, "fragile": is_fragile(prob)}


def paired_analysis(treatment, baseline, direction: str, alpha: float):
    """(paired TTestResult or None, what to report): the by-seed version of the comparison."""
    if treatment.values is None or baseline.values is None or treatment.member_seeds is None \
            or baseline.member_seeds is None:
        return None, {"available": False, "reason": "no per-member values (the paper's tables give summaries "
                                                     "only), so there are no seeds to pair"}
    match = match_by_seed(zip(treatment.member_seeds, treatment.values), zip(baseline.member_seeds, baseline.values))
    try:
        paired = paired_t_test(match.treatment, match.baseline, direction, alpha, drop_nonfinite=True)
    except ConfigError as exc:
        return None, {"available": False, "reason": f"cannot pair by seed: {exc}"}
    return paired, {"available": True, **test_record(paired), "unmatched_treatment": list(match.unmatched_treatment),
                    "unmatched_baseline": list(match.unmatched_baseline)}


def decide(paper_outcome: str, observed: str, bounded: bool | None) -> tuple[str, str]:
    """(verdict, reason) from the paper's outcome, ours, and whether our data bound the improvement below
    the margin (None: no margin to bound it by)."""
    if observed == "reject":
        if paper_outcome == "reject":
            return "reproduced", "H0 rejected, as in the paper"
        return "not_reproduced", "the paper retains H0; we rejected it"
    if paper_outcome == "retain":
        if bounded:
            return "reproduced", "H0 retained, as in the paper, and the improvement is bounded below the margin"
        return "inconclusive", ("H0 retained as in the paper, but the upper bound of the improvement is not below "
                                "the margin: the data cannot exclude an effect the paper's design would detect")
    if bounded:
        return "not_reproduced", "the paper rejects H0; we retained it and bound the improvement below the margin"
    return "inconclusive", ("the paper rejects H0 but we retained it without bounding the improvement below the "
                            "margin: too little evidence to tell")


def _bound_and_power(test, margin: float | None, alpha: float, treatment: dict, baseline: dict):
    """The retained-H0 bound and the observed-variance power, both at ``alpha`` (a family's corrected level)."""
    if margin is None:
        return None, {"power": None, "effect": None, "basis": "no margin to compute power against"}
    bound = effect_bounded(test, margin, alpha)
    power = observed_power(treatment["std"], treatment["n"], baseline["std"], baseline["n"], margin, alpha)
    return bound, {"power": power, "effect": margin, "alpha": alpha,
                   "basis": "observed stds and n (Welch), against the margin; shown, never deciding"}


def _reason(reason: str, bound) -> str:
    if bound is None:
        return reason
    return (f"{reason} (one-sided {1 - bound.alpha:.2%} upper bound {number(bound.upper_bound)} "
            f"vs margin {number(bound.margin)})")


@register_kind
class Comparison(ClaimKind):
    name = "comparison"
    required = ("metric", "treatment", "baseline", "direction")
    description = "treatment vs baseline on one metric, one-tailed Welch t-test at 0.025"
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

    def deciding_test(self, claim, evidence):
        """(treatment arm, baseline arm, the test that decides: Welch's, or the paired one under
        ``--pairing seed`` when the members pair, with the Welch one and the paired details beside it).
        The sequential engine reads only this at its interim looks."""
        metric, direction = claim.params["metric"], claim.params["direction"]
        treatment = evidence.arm(claim.params["treatment"].population(claim.arch), metric)
        baseline = evidence.arm(claim.params["baseline"].population(claim.arch), metric)
        welch = welch_t_test(treatment.summary, baseline.summary, direction, ALPHA)
        paired, paired_details = paired_analysis(treatment, baseline, direction, ALPHA)
        pairing = getattr(evidence, "pairing", "none")
        test = paired if pairing == "seed" and paired is not None else welch
        return treatment, baseline, test, welch, paired_details

    def evaluate(self, claim, evidence) -> ClaimResult:
        metric, direction = claim.params["metric"], claim.params["direction"]
        treatment, baseline, test, welch, paired_details = self.deciding_test(claim, evidence)
        unpaired = test_record(welch, z_test(treatment.summary, baseline.summary, direction).z)
        pairing = getattr(evidence, "pairing", "none")
        record = paired_details if test is not welch else unpaired
        if pairing == "seed" and not paired_details["available"]:
            paired_details["reason"] += "; the unpaired Welch test decides"
        observed = "reject" if test.reject else "retain"
        paper = paper_numbers(claim)
        margin = claim_margin(paper)
        bound, power = _bound_and_power(test, margin["value"], ALPHA, treatment.to_dict(), baseline.to_dict())
        verdict, reason = decide(claim.paper.outcome, observed, None if bound is None else bound.bounded)
        if observed == "retain":
            reason = _reason(reason, bound)
        stat = "t" if test.test == "welch-t" else "paired t"
        details = {
            "metric": metric, "metric_label": get_metric(metric).label, "direction": direction,
            "treatment": treatment.to_dict(), "baseline": baseline.to_dict(),
            "test": {k: v for k, v in record.items() if k not in ("available", "unmatched_treatment",
                                                                  "unmatched_baseline")},
            "pairing": pairing, "unpaired": unpaired, "paired": paired_details,
            "alpha": ALPHA, "margin": margin, "effect_bound": None if bound is None else bound.to_dict(),
            "power": power, **fragility(claim, paper),
            "summary": (f"{treatment.label} {treatment.summary.mean:.4g} vs {baseline.label} "
                        f"{baseline.summary.mean:.4g}: {stat} {test.t:.2f} (df {test.df:.3g}), {p_clause(test.p_value)}"),
        }
        return ClaimResult(claim, evidence.name, verdict, reason, observed, details)

    def primary_p(self, result: dict) -> float | None:
        test = (result.get("details") or {}).get("test")
        return test["p_value"] if test else None

    def redecide(self, result: dict, p_adjusted: float) -> tuple[str | None, str, str]:
        """Re-decide at the adjusted p; the bound, CI and power move to the family's level (``correction.alpha``)."""
        details = result["details"] = copy.deepcopy(result["details"])
        alpha = result.get("correction", {}).get("alpha", ALPHA)
        observed = "reject" if p_adjusted < ALPHA else "retain"
        bound = None
        if "mean_difference" in details["test"]:  # a full record: re-derive the alpha-dependent numbers
            test = test_from_record(details["test"])
            margin = (details.get("margin") or {}).get("value")
            bound, details["power"] = _bound_and_power(test, margin, alpha, details["treatment"], details["baseline"])
            half = upper_confidence_bound(test, alpha) - test.improvement
            details["test"].update(alpha=alpha, ci_low=test.improvement - half, ci_high=test.improvement + half,
                                   lower_bound=test.improvement - half, upper_bound=test.improvement + half,
                                   ci_level=1 - 2 * alpha)
            details["alpha"] = alpha
            details["effect_bound"] = None if bound is None else bound.to_dict()
        verdict, reason = decide(result["paper"]["outcome"], observed, None if bound is None else bound.bounded)
        return observed, verdict, (_reason(reason, bound) if observed == "retain" else reason)
