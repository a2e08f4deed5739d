"""Verdicts: the decision table, and every comparison evaluated on the paper's own statistics."""

import pytest

from kdclaims.claims import load_claims
from kdclaims.evaluate import PaperEvidence, decide, evaluate_all, results_frame


@pytest.mark.parametrize("paper, observed, power, verdict", [
    ("reject", "reject", 0.1, "reproduced"),  # a significant result counts whatever the power
    ("retain", "retain", 0.95, "reproduced"),
    ("retain", "retain", 0.30, "inconclusive"),  # underpowered retention is never a pass
    ("retain", "retain", None, "inconclusive"),
    ("reject", "retain", 0.95, "not_reproduced"),
    ("reject", "retain", 0.30, "inconclusive"),
    ("retain", "reject", 0.30, "not_reproduced"),
])
def test_decision_table(paper, observed, power, verdict):
    assert decide(paper, observed, power)[0] == verdict


def test_paper_evidence_reproduces_every_comparison_except_the_papers_own_contradiction():
    claims = [c for c in load_claims() if c.kind == "comparison"]
    results = evaluate_all(claims, PaperEvidence(), lazy=False)
    frame = results_frame(results)
    failing = frame[frame.verdict != "reproduced"]
    # Table 8 prints p = 1.000 for prediction dissimilarity, but its own Table 3 gives p ~ 0.
    assert set(failing.id) == {f"vgg16_bn-t8-pd-kd{a}-vs-uniform0.9" for a in ("0.1", "0.5", "0.9")}
    assert (failing.observed_outcome == "reject").all() and (failing.verdict == "not_reproduced").all()
    # At the paper's own n, power against its own minimum detectable effect is 0.8 by construction.
    retained = frame[frame.paper_outcome == "retain"]
    assert retained.power.min() == pytest.approx(0.8)
    table4 = frame[frame.source == "Table 4"]
    assert table4.p_value.between(0.8, 1.0).all() and (table4.n_treatment == 385).all()


def test_results_carry_numbers_behind_the_verdict():
    claim = next(c for c in load_claims() if c.id == "vit-t5-js-kd0.9-vs-independent")
    (result,) = evaluate_all([claim], PaperEvidence())
    d = result.to_dict()["details"]
    assert d["treatment"]["mean"] == pytest.approx(0.2239) and d["baseline"]["mean"] == pytest.approx(0.2469)
    assert d["test"]["z"] > 100 and d["test"]["p_value"] < 1e-10 and d["treatment"]["n"] == 385
    assert d["test"]["ci_low"] < -0.0230 < d["test"]["ci_high"] < 0
