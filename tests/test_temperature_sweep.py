"""The shipped example claim file, examples/claims/temperature_sweep.yaml, run end to end at smoke scale.

It shows that any α and T reach training through claims alone: the file asks for ViT students distilled
at T = 2 and T = 4, and nothing else in the harness names those temperatures. Run through pytest in a
subprocess, as a user would (`pytest examples/claims/ --profile smoke`), with 2 seeds to keep it short:
a teacher + 4 populations x 2 students = 9 small ViTs, about 35 s on one CPU thread.
"""

import json
import shutil
from pathlib import Path

from kdclaims.claims import load_claim_file

SWEEP = Path(__file__).resolve().parent.parent / "examples" / "claims" / "temperature_sweep.yaml"


def test_sweep_file_is_valid_and_tests_temperatures_2_and_4_against_1_and_independent():
    claims = load_claim_file(SWEEP)
    assert 4 <= len(claims) <= 8
    assert {c.arch for c in claims} == {"vit"} and {c.kind for c in claims} == {"comparison"}
    assert {c.metric for c in claims} == {"js_divergence", "logits_cosine_similarity"}
    assert all(c.source == "beyond the paper (Limitations, Appendix C)" and c.paper.outcome == "reject" for c in claims)
    treatments = {(c.params["treatment"].alpha, c.params["treatment"].temperature) for c in claims}
    assert treatments == {(0.9, 2.0), (0.9, 4.0)}
    baselines = {c.params["baseline"].population("vit").name for c in claims}
    assert baselines == {"vit/kd-a0.9", "vit/independent"}
    assert "pytest examples/claims/ --profile smoke" in SWEEP.read_text()


def test_temperature_sweep_runs_end_to_end_at_smoke_scale(pytester, tmp_path):
    shutil.copy(SWEEP, pytester.mkdir("claims") / SWEEP.name)  # the plugin collects YAML under a `claims` dir
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess("claims", "--profile", "smoke", "--seeds", "2", "--cache-dir", str(cache),
                                           "-p", "no:cacheprovider")
    n_claims = len(load_claim_file(SWEEP))
    result.assert_outcomes(passed=n_claims)  # smoke: every claim evaluated -> pass, whatever the verdict

    evaluation = json.loads((cache / "evaluations" / "latest.json").read_text())
    assert len(evaluation["results"]) == n_claims
    assert all(r["verdict"] != "error" for r in evaluation["results"])
    populations = {p["name"]: p for p in evaluation["populations"]}
    assert set(populations) == {"vit/kd-a0.9-T2", "vit/kd-a0.9-T4", "vit/kd-a0.9", "vit/independent"}
    assert {p["temperature"] for p in populations.values()} == {1.0, 2.0, 4.0}
    assert populations["vit/kd-a0.9-T2"]["temperature"] == 2.0 and populations["vit/kd-a0.9-T4"]["temperature"] == 4.0
    assert all(p["n"] == 2 and p["alpha"] in (0.9, None) for p in populations.values())
    # Temperature is part of the key: the three KD populations share the teacher but no student.
    keys = [k for p in populations.values() for k in p["keys"]]
    assert len(set(keys)) == len(keys) == 8
    assert len({p["teacher_key"] for p in populations.values()}) == 1
