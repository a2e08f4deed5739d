"""Threshold: the compression test (Section 3).

No member of ``arms`` reaches ``similarity_at_least`` on every similarity metric at once. Distances
are read as similarities: 1 - AD/sqrt(2), 1 - JS/ln 2, 1 - prediction dissimilarity; cosine as it
is. Trained evidence counts members directly; for both kinds of evidence a normal approximation
bounds how many of 385 students would reach it: at most 385 * min over metrics of
P(similarity >= level).
"""

from __future__ import annotations

from kdclaims.kinds.base import ClaimKind, ClaimResult, number, parse_arms, register_kind
from kdclaims.metrics import SIMILARITY_METRICS, SIMILARITY_READINGS, as_similarity
from kdclaims.paper import PAPER_N

PAPER_N_FOR_THRESHOLD = PAPER_N  # "no student" is judged for populations of the paper's size


@register_kind
class Threshold(ClaimKind):
    name = "threshold"
    required = ("arms",)
    optional = {"similarity_at_least": 0.95}
    description = "no member reaches the similarity threshold on every metric (the compression test)"

    def check(self, params: dict, where: str) -> dict:
        params["arms"] = parse_arms(params["arms"], where, "arms")
        params["similarity_at_least"] = number(params["similarity_at_least"], where, "similarity_at_least", low=0.0,
                                               high=1.0, above_low=True, what="a number in (0, 1]")
        return params

    def populations(self, claim):
        return [a.population(claim.arch) for a in claim.params["arms"]]

    def evaluate(self, claim, evidence) -> ClaimResult:
        from scipy.special import ndtr  # the normal CDF; here, not at the top: collecting claims imports this module

        level = float(claim.params["similarity_at_least"])
        rows, reached_total, expected_max = [], 0, 0.0
        for arm_spec in claim.params["arms"]:
            spec = arm_spec.population(claim.arch)
            per_metric = {m: evidence.arm(spec, m) for m in SIMILARITY_METRICS}
            tails, sims = {}, {}
            for m, arm in per_metric.items():
                scale = abs(SIMILARITY_READINGS[m][0])
                mean, std = float(as_similarity(m, arm.summary.mean)), arm.summary.std * scale
                sims[m] = {"mean": mean, "std": std}
                tails[m] = float(ndtr((mean - level) / std)) if std > 0 else float(mean >= level)
            expected = PAPER_N_FOR_THRESHOLD * min(tails.values())
            row = {"population": spec.name, "label": spec.label, "similarity": sims,
                   "expected_reaching_of_385": expected, "n": min(a.summary.n for a in per_metric.values())}
            values = [per_metric[m].values for m in SIMILARITY_METRICS]
            if all(v is not None for v in values):
                member_min = [min(float(as_similarity(m, v[i])) for m, v in zip(SIMILARITY_METRICS, values))
                              for i in range(len(values[0]))]
                row["reached"] = sum(x >= level for x in member_min)
                row["closest_member_min_similarity"] = max(member_min)
                reached_total += row["reached"]
            expected_max = max(expected_max, expected)
            rows.append(row)
        counted = all("reached" in r for r in rows)
        if reached_total:
            observed, reason = "fails", f"{reached_total} member(s) reach {level:.0%} similarity on every metric"
        elif expected_max < 1:
            closest = max((r.get("closest_member_min_similarity", -1.0) for r in rows), default=None)
            observed = "holds"
            reason = (f"no member reaches {level:.0%} on every metric"
                      + (f" (closest member: {closest:.3f} on its weakest metric)" if counted else "")
                      + f"; at most {expected_max:.2g} of 385 students would be expected to")
        else:
            observed, reason = None, (f"no member observed above {level:.0%}, but up to {expected_max:.2g} of 385 "
                                      "students could be expected to: too close to the threshold to tell")
        details = {"level": level, "readings": {m: SIMILARITY_READINGS[m][2] for m in SIMILARITY_METRICS},
                   "arms": rows, "summary": reason}
        return self.held(claim, evidence, observed, reason, details)
