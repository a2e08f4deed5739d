"""Evaluating claims: evidence in, a structured result out (never a bare bool), and corrections.

Evidence is where a population's numbers come from: ``TrainedEvidence`` computes them from the
trained members of a ``Workbench`` (the reproduction); ``PaperEvidence`` reads the paper's own
summary statistics (n = 385 per cell). Both give a ``Summary`` (mean, std, n) per population and
metric, which is all the tests need, so one evaluator serves both.

How a claim is decided is its kind's (``kdclaims.kinds``): ``evaluate_claim`` hands the claim to
its kind, which returns a ``ClaimResult``. A family-wise correction (``apply_correction``) asks each
kind for the p-value its outcome rests on and lets it re-decide under the adjusted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from kdclaims import paper as paper_tables
from kdclaims.claims import Claim
from kdclaims.profiles import seeds_to_text
from kdclaims.spec import PopulationSpec
from kdclaims.errors import KdclaimsError
from kdclaims.kinds import KINDS, ClaimResult
from kdclaims.options import PAIRINGS
from kdclaims.stats import Summary

if TYPE_CHECKING:
    import pandas as pd  # imported by results_frame alone: evaluating claims needs neither pandas nor torch


@dataclass
class ArmEvidence:
    """One population's numbers on one metric."""

    population: str  # e.g. "resnet18/kd-a0.5"
    label: str
    summary: Summary
    values: list[float] | None = None  # per member, in seed order (trained evidence only)
    seeds: str | None = None
    keys: list[str] | None = None  # cache keys of the members
    diverged_seeds: list[int] = field(default_factory=list)  # members with NaN/inf outputs, left out
    member_seeds: list[int] | None = None  # the seed of each entry of ``values``: what pairs populations

    def to_dict(self) -> dict:
        return {
            "population": self.population, "label": self.label,
            "mean": self.summary.mean, "std": self.summary.std, "n": self.summary.n,
            "values": self.values, "seeds": self.seeds, "keys": self.keys, "diverged_seeds": self.diverged_seeds,
        }


def check_pairing(pairing: str) -> str:
    if pairing not in PAIRINGS:
        raise KdclaimsError(f"unknown pairing {pairing!r}: use one of {', '.join(PAIRINGS)}")
    return pairing


class PaperEvidence:
    """The paper's Tables 1-3 as evidence: no training, n = 385 per population. No members, so no pairing:
    with ``pairing="seed"`` each comparison says so and the unpaired test decides."""

    name = "paper"

    def __init__(self, pairing: str = "none"):
        self.pairing = check_pairing(pairing)

    def arm(self, spec: PopulationSpec, metric: str) -> ArmEvidence:
        summary = paper_tables.paper_summary(spec.arch, metric, spec.setup, spec.alpha) if spec.temperature == 1 else None
        if summary is None:
            raise KdclaimsError(f"the paper gives no {metric} for {spec.name} (temperature {spec.temperature:g})")
        return ArmEvidence(spec.name, spec.label, summary)

    def provenance(self) -> dict:
        return {"evidence": "paper", "tables": str(paper_tables.PAPER_DIR), "n": paper_tables.PAPER_N}


class TrainedEvidence:
    """Trained populations as evidence: every member's metric against the teacher, on the test set.

    ``members`` (a look of the sequential design): each population is its first ``members`` members, plus
    later ones already cached (``Workbench.population``'s member limit), or, as a mapping, population name
    -> that limit (a population that stopped growing keeps the limit it stopped at); None: every seed of the
    profile."""

    name = "trained"

    def __init__(self, workbench, pairing: str = "none", members: int | dict[str, int] | None = None):
        self.workbench = workbench
        self.pairing = check_pairing(pairing)  # "seed": the paired (by seed) test decides comparisons
        self.members = members

    def limit(self, spec: PopulationSpec) -> int | None:
        if isinstance(self.members, dict):
            if spec.name not in self.members:  # never silently every seed: that would train them
                raise KdclaimsError(f"no member limit for {spec.name} at this look")
            return self.members[spec.name]
        return self.members

    def arm(self, spec: PopulationSpec, metric: str) -> ArmEvidence:
        limit = self.limit(spec)
        population = self.workbench.population(spec, limit)
        values = self.workbench.member_values(spec, metric, limit)
        logits = population.test_logits_array
        finite = np.isfinite(values) & np.isfinite(logits.reshape(logits.shape[0], -1)).all(axis=1)
        diverged = [s for s, ok in zip(population.seeds, finite.tolist()) if not ok]
        kept = values[finite].tolist()
        if len(kept) < 2:
            raise KdclaimsError(f"population {spec.name} has {len(kept)} usable member(s) of {population.n} "
                                f"(diverged: {diverged or 'none'}); a z-test needs at least 2: add seeds with --seeds")
        return ArmEvidence(spec.name, spec.label, Summary.from_values(kept), values=values.tolist(),
                           seeds=seeds_to_text(population.seeds), keys=list(population.keys), diverged_seeds=diverged,
                           member_seeds=list(population.seeds))


def evaluate_claim(claim: Claim, evidence) -> ClaimResult:
    return KINDS.get(claim.kind).evaluate(claim, evidence)


def evaluate_all(claims: list[Claim], evidence, lazy: bool = True) -> list[ClaimResult]:
    """Evaluate every claim. Lazy (the default): a claim that errors becomes a result with its error."""
    results = []
    for claim in claims:
        try:
            results.append(evaluate_claim(claim, evidence))
        except KdclaimsError as exc:
            if not lazy:
                raise
            results.append(ClaimResult(claim, evidence.name, "inconclusive", f"not evaluated: {exc}", None, {}, str(exc)))
    return results


def results_frame(results) -> pd.DataFrame:
    """One row per claim: id, verdict and the numbers behind it (accepts ClaimResults or their dicts).

    Differences, CIs, t, z and d are signed in the hypothesis' direction (positive favours H_a)."""
    import pandas as pd

    rows = []
    for r in results:
        r = r.to_dict() if isinstance(r, ClaimResult) else r
        d = r.get("details") or {}
        test, t, b, pw = d.get("test") or {}, d.get("treatment") or {}, d.get("baseline") or {}, d.get("power") or {}
        bound, margin, paired = d.get("effect_bound") or {}, d.get("margin") or {}, d.get("paired") or {}
        rows.append({
            "id": r["id"], "arch": r["arch"], "kind": r["kind"], "group": r["group"], "source": r["source"],
            "metric": d.get("metric"), "treatment": t.get("population"), "baseline": b.get("population"),
            "mean_treatment": t.get("mean"), "std_treatment": t.get("std"), "n_treatment": t.get("n"),
            "mean_baseline": b.get("mean"), "std_baseline": b.get("std"), "n_baseline": b.get("n"),
            "test": test.get("test"), "df": test.get("df"), "t": test.get("t"),
            "diff": test.get("diff"), "z": test.get("z"), "p_value": test.get("p_value"),
            "effect_size": test.get("effect_size"), "ci_low": test.get("ci_low"), "ci_high": test.get("ci_high"),
            "power": pw.get("power"), "bound_upper": bound.get("upper_bound"), "margin": margin.get("value"),
            "p_value_paired": paired.get("p_value"), "correlation": paired.get("correlation"),
            "replication_probability": d.get("replication_probability"), "fragile": d.get("fragile"),
            "paper_outcome": r["paper"]["outcome"], "paper_p": r["paper"]["p"],
            "observed_outcome": r["observed_outcome"], "verdict": r["verdict"], "reason": r["reason"],
            "evidence": r["evidence"],
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Family-wise correction (optional; the paper tests each claim at 0.025 on its own)
# ---------------------------------------------------------------------------------------------

CORRECTIONS = ("none", "holm", "bh")  # Holm: family-wise error rate; Benjamini-Hochberg: false discovery rate
FAMILIES = ("all", "group", "arch", "source")


def primary_p(result: dict) -> float | None:
    """The one p-value a saved result's observed outcome rests on, if its kind has one (comparisons:
    the z-test; rankings: the leader's lead over its rival; the other kinds combine several tests by
    design and stay out of the family)."""
    kind = KINDS[result["kind"]] if result.get("kind") in KINDS else None
    return None if kind is None else kind.primary_p(result)


def apply_correction(results: list[dict], method: str = "none", family: str = "all") -> list[dict]:
    """Adjust the primary p-values within each family and re-derive the verdicts.

    Returns new result dicts; each corrected one gains ``correction: {method, family, family_id,
    family_size, p_raw, p_adjusted, alpha, verdict_uncorrected, changed}`` and, where the outcome changes,
    a verdict and reason that say so. ``alpha`` is the family's corrected level
    (``stats.family_alpha``: Bonferroni for Holm, the false-coverage level for BH), at which every
    alpha-dependent number of the claim -- bounds, CIs, power -- is re-derived, so the correction carries
    through. ``corrected_verdicts`` lists the changed ones.
    """
    from kdclaims.stats import ALPHA, benjamini_hochberg, family_alpha, holm

    if method not in CORRECTIONS:
        raise KdclaimsError(f"unknown correction {method!r}: use one of {', '.join(CORRECTIONS)}")
    if family not in FAMILIES:
        raise KdclaimsError(f"unknown family {family!r}: use one of {', '.join(FAMILIES)}")
    results = [dict(r) for r in results]
    if method == "none":
        return results
    adjust = holm if method == "holm" else benjamini_hochberg
    families: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        p = primary_p(r)
        if isinstance(p, (int, float)):
            key = "all" if family == "all" else str(r.get(family))
            families.setdefault(key, []).append(i)
    for key, members in families.items():
        adjusted = adjust([primary_p(results[i]) for i in members])
        level = family_alpha(ALPHA, len(members), method, sum(p < ALPHA for p in adjusted))
        for i, p_adj in zip(members, adjusted):
            r = results[i]
            r["correction"] = {"method": method, "family": family, "family_id": key, "family_size": len(members),
                               "p_raw": primary_p(r), "p_adjusted": p_adj, "alpha": level,
                               "verdict_uncorrected": r["verdict"]}
            _redecide(r, p_adj)
            r["correction"]["changed"] = r["verdict"] != r["correction"]["verdict_uncorrected"]
    return results


def corrected_verdicts(results: list[dict]) -> list[dict]:
    """The verdicts a correction changed: ``{id, before, after, reason}`` for each (reports list them)."""
    return [{"id": r["id"], "before": r["correction"]["verdict_uncorrected"], "after": r["verdict"],
             "reason": r["reason"]}
            for r in results if (r.get("correction") or {}).get("changed")]


def _redecide(r: dict, p_adjusted: float) -> None:
    observed, verdict, reason = KINDS.get(r["kind"]).redecide(r, p_adjusted)
    if verdict != r["verdict"]:
        label = f"{r['correction']['method']} over {r['correction']['family']}"
        reason = f"{reason} (adjusted p {p_adjusted:.3g}, {label}; uncorrected: {r['verdict']})"
    r.update(observed_outcome=observed, verdict=verdict, reason=reason)
