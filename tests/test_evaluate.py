"""Verdicts: the decision table, and every comparison evaluated on the paper's own statistics."""

import pytest

from kdclaims.claims import load_claims
from kdclaims.evaluate import PaperEvidence, evaluate_all, results_frame
from kdclaims.kinds.comparison import decide


@pytest.mark.parametrize("paper, observed, bounded, verdict", [
    ("reject", "reject", False, "reproduced"),  # a significant result counts whatever the bound
    ("retain", "retain", True, "reproduced"),  # retained, and our data bound the effect below the margin
    ("retain", "retain", False, "inconclusive"),  # retained but unbounded: never a pass
    ("retain", "retain", None, "inconclusive"),  # no margin to bound by
    ("reject", "retain", True, "not_reproduced"),
    ("reject", "retain", False, "inconclusive"),
    ("retain", "reject", False, "not_reproduced"),
])
def test_decision_table(paper, observed, bounded, verdict):
    assert decide(paper, observed, bounded)[0] == verdict


def test_paper_evidence_reproduces_every_comparison_except_the_papers_contradiction_and_unbounded_retentions():
    claims = [c for c in load_claims() if c.kind == "comparison"]
    results = evaluate_all(claims, PaperEvidence(), lazy=False)
    frame = results_frame(results)
    failing = frame[frame.verdict == "not_reproduced"]
    # Table 8 prints p = 1.000 for prediction dissimilarity, but its own Table 3 gives p ~ 0.
    assert set(failing.id) == {f"vgg16_bn-t8-pd-kd{a}-vs-uniform0.9" for a in ("0.1", "0.5", "0.9")}
    assert (failing.observed_outcome == "reject").all()
    # Table 7's alpha = 0.1 retentions (p 0.019-0.038 printed) leave effects above the design margin possible.
    unbounded = frame[frame.verdict == "inconclusive"]
    assert set(unbounded.id) == {f"vgg16_bn-t7-{m}-kd0.1-vs-independent" for m in ("ad", "js", "pd")}
    assert (unbounded.bound_upper > unbounded.margin).all()
    retained = frame[(frame.paper_outcome == "retain") & (frame.verdict == "reproduced")]
    assert (retained.bound_upper < retained.margin).all() and len(retained) > 10
    # At the paper's own n and stds, observed-variance power against the design margin is 0.8 by construction.
    assert retained.power.to_numpy() == pytest.approx(0.8, abs=1e-6)
    assert (frame.test == "welch-t").all() and frame.df.between(384 - 1e-9, 768 + 1e-9).all()  # Welch df: n-1..2n-2
    table4 = frame[frame.source == "Table 4"]
    assert table4.p_value.between(0.8, 1.0).all() and (table4.n_treatment == 385).all()


def test_results_carry_numbers_behind_the_verdict():
    claim = next(c for c in load_claims() if c.id == "vit-t5-js-kd0.9-vs-independent")
    (result,) = evaluate_all([claim], PaperEvidence())
    d = result.to_dict()["details"]
    assert d["treatment"]["mean"] == pytest.approx(0.2239) and d["baseline"]["mean"] == pytest.approx(0.2469)
    assert d["test"]["z"] > 100 and d["test"]["p_value"] < 1e-10 and d["treatment"]["n"] == 385
    # JS lower is more similar: the stored difference, CI, t, z and d are signed so that positive favours H_a
    assert d["test"]["mean_difference"] == pytest.approx(0.2239 - 0.2469)
    assert d["test"]["diff"] == pytest.approx(0.0230)
    assert 0 < d["test"]["ci_low"] < d["test"]["diff"] < d["test"]["ci_high"]
    assert d["test"]["t"] > 100 and d["test"]["effect_size"] > 0 and d["test"]["test"] == "welch-t"


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
    # retained after correction, with no bound to show the effect is small: inconclusive, and recorded as changed
    assert everything["b"]["verdict"] == "inconclusive" and "uncorrected: reproduced" in everything["b"]["reason"]
    assert everything["b"]["correction"]["changed"] and everything["b"]["correction"]["alpha"] == pytest.approx(0.025 / 3)
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
