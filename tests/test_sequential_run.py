"""The sequential run (issue #19): claims decided look by look on synthetic evidence, populations that
stop growing, cached members beyond a look, the engine's type-I error, and plan --sequential.

Synthetic evidence draws members from normal distributions (seeded) with the paper's stds, so each
comparison's margin (which the paper's design fixes) is the shipped one.
"""

from __future__ import annotations

import numpy as np
import pytest

from kdclaims.claims import parse_claim
from kdclaims.errors import ConfigError
from kdclaims.paper import paper_summary
from kdclaims.sequential import PAPER_LOOKS
from kdclaims.sequential_run import Design, SequentialRun, ValuesEvidence, check_evidence

DESIGN = Design(PAPER_LOOKS)
N = PAPER_LOOKS[-1]


def comparison(claim_id: str, outcome: str = "reject", treatment=None, baseline=None, metric="test_accuracy",
               direction="greater"):
    return parse_claim({
        "id": claim_id, "sentence": "s", "source": "Table 1", "arch": "resnet18", "kind": "comparison",
        "metric": metric, "treatment": treatment or {"setup": "uniform_kd", "alpha": 0.5},
        "baseline": baseline or {"setup": "independent"}, "direction": direction, "paper": {"outcome": outcome},
    }, "test")


def draw(rng, claim, effect: float, sd_scale: float = 1.0, n: int = N) -> dict:
    """Members of the claim's two populations: baseline at the paper's baseline mean, the treatment
    ``effect`` better in the claim's direction, both with the paper's stds times ``sd_scale``."""
    t_spec, b_spec = claim.populations()
    metric = claim.params["metric"]
    sign = 1.0 if claim.params["direction"] == "greater" else -1.0
    b = paper_summary(b_spec.arch, metric, b_spec.setup, b_spec.alpha)
    t = paper_summary(t_spec.arch, metric, t_spec.setup, t_spec.alpha)
    return {
        t_spec.name: {metric: b.mean + sign * effect + t.std * sd_scale * rng.standard_normal(n)},
        b_spec.name: {metric: b.mean + b.std * sd_scale * rng.standard_normal(n)},
    }


def run_to_end(run: SequentialRun, values: dict, extra: dict | None = None) -> list[list[str]]:
    """Drive ``run`` look by look, each population showing the look's target (or ``extra``'s count if larger)."""
    decided = []
    while not run.done:
        target = run.target_members()
        members = {p.name: max(target, (extra or {}).get(p.name, 0)) for p in run.populations_to_grow()}
        decided.append(run.observe(ValuesEvidence(values, members)))
    return decided


def margin_of(claim) -> float:
    from kdclaims.kinds.comparison import claim_margin, paper_numbers

    return claim_margin(paper_numbers(claim))["value"]


def test_large_effect_stops_at_the_first_look_on_efficacy():
    claim = comparison("big")
    values = draw(np.random.default_rng(1), claim, effect=2.0)  # tens of standard errors at n = 25
    run = SequentialRun([claim], DESIGN)
    decided = run_to_end(run, values)
    assert decided == [["big"]]
    result = run.results["big"]
    seq = result.details["sequential"]
    assert (seq["reason"], seq["stop_look"]) == ("efficacy", 1)
    assert result.verdict == "reproduced" and result.observed_outcome == "reject"
    look = seq["looks"][0]
    assert look["z"] > look["efficacy_boundary"] > 4.5  # the O'Brien-Fleming-type first boundary at t = 25/385
    assert look["n"] == {p.name: 25 for p in claim.populations()}
    assert run.members_used == {p.name: 25 for p in claim.populations()}
    assert "sequential, stopped at look 1 on efficacy" in result.reason


def test_design_checks_and_profile():
    from kdclaims.profiles import get_profile

    with pytest.raises(ConfigError):
        Design((25, 25, 50))
    with pytest.raises(ConfigError):
        Design((25, 50), spending="linear")
    design = Design.from_profile(get_profile("paper"))
    assert design.looks == PAPER_LOOKS and design.spending == "obf"
    info = design.as_dict()
    assert info["looks"] == list(PAPER_LOOKS) and set(info["rules"]) >= {"comparison", "ranking", "trend", "bound",
                                                                          "threshold"}
    with pytest.raises(ConfigError, match="--evidence paper"):
        check_evidence("paper")
