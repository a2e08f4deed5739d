"""Verdicts: the decision table, and every comparison evaluated on the paper's own statistics."""

import pytest

from kdclaims.claims import load_claims
from kdclaims.evaluate import PaperEvidence, evaluate_all, results_frame
from kdclaims.kinds.comparison import decide


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


def _comparison(id_, p, group="g", paper="reject", power=0.9):
    return {"id": id_, "kind": "comparison", "group": group, "arch": "vit", "source": "T", "paper": {"outcome": paper},
            "verdict": "reproduced" if (p < 0.025) == (paper == "reject") else "not_reproduced", "reason": "r",
            "observed_outcome": "reject" if p < 0.025 else "retain",
            "details": {"test": {"p_value": p}, "power": {"power": power}}}


def test_holm_correction_within_groups_overturns_a_marginal_rejection():
    from kdclaims.evaluate import apply_correction

    results = [_comparison("a", 0.001), _comparison("b", 0.02), _comparison("c", 0.02, group="h")]
    corrected = {r["id"]: r for r in apply_correction(results, "holm", "group")}
    assert corrected["a"]["correction"]["p_adjusted"] == pytest.approx(0.002)
    assert corrected["b"]["correction"]["p_adjusted"] == pytest.approx(0.02)  # Holm: max(0.002, 1 x 0.02)
    assert corrected["c"]["correction"]["family_size"] == 1 and corrected["c"]["verdict"] == "reproduced"
    everything = {r["id"]: r for r in apply_correction(results, "holm", "all")}
    assert everything["b"]["correction"]["p_adjusted"] == pytest.approx(0.04)
    assert everything["b"]["verdict"] == "not_reproduced" and "uncorrected: reproduced" in everything["b"]["reason"]
    assert apply_correction(results, "none", "all") == results


def test_correction_runs_under_pytest_and_is_recorded(pytester, tmp_path):
    import json

    claims_dir = pytester.mkdir("claims")
    from kdclaims.claims import CLAIMS_DIR

    (claims_dir / "t7.yaml").write_text((CLAIMS_DIR / "vgg16_bn_table7.yaml").read_text())
    result = pytester.runpytest("claims", "--evidence", "paper", "--correction", "bh", "--family", "all",
                                "--results-dir", str(tmp_path))
    evaluation = json.loads((tmp_path / "latest.json").read_text())
    assert evaluation["correction"] == {"method": "bh", "family": "all"}
    assert all(r["correction"]["family_size"] == 12 for r in evaluation["results"])
    assert "bh correction over each all" in result.stdout.str()
