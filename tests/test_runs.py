"""Runs that evaluate a subset of the claims (-k, -m, -x, --lf): what an evaluation records about its
selection, unique run files, the merged report across runs, one run alone, and --compare of subsets."""

import json
import subprocess
import sys

import pytest

from helpers import GOOD_CLAIM
from kdclaims.render.document import build_document, compare_runs
from kdclaims.render.markdown import compare_markdown, markdown_report
from kdclaims.results import load_evaluation, merged_evaluation, save_evaluation, single_run

THREE_CLAIMS = GOOD_CLAIM + "".join(
    GOOD_CLAIM.split("claims:\n")[1].replace("id: c1", f"id: {cid}").replace("alpha: 0.1", f"alpha: {alpha}")
    for cid, alpha in (("c2", 0.5), ("c3", 0.9)))


@pytest.fixture
def claims_project(pytester):
    (pytester.mkdir("claims") / "r18.yaml").write_text(THREE_CLAIMS)
    return pytester


def run_paper(pytester, results, *extra):
    """The claims with the paper's numbers as evidence: nothing is trained, each run takes a second."""
    return pytester.runpytest_subprocess("claims", "--evidence", "paper", "--results-dir", str(results),
                                         "-p", "no:cacheprovider", *extra)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "kdclaims.cli", *args], capture_output=True, text=True)


def saved_runs(results):
    return sorted(p for p in results.glob("*.json") if p.name != "latest.json")


def test_a_subset_run_records_its_selection_and_the_report_merges_runs(claims_project, tmp_path):
    results = tmp_path / "evaluations"
    first = run_paper(claims_project, results, "-k", "c1")
    assert "1 of 3 claims evaluated" in first.stdout.str()
    evaluation = json.loads((results / "latest.json").read_text())
    selection = evaluation["selection"]
    assert selection["catalogue"] == ["c1", "c2", "c3"]
    assert selection["selected"] == ["c1"] and selection["not_selected"] == ["c2", "c3"]
    assert selection["not_evaluated"] == ["c2", "c3"]
    assert evaluation["provenance"]["device"] != "auto"  # the device used, not the one asked for

    run_paper(claims_project, results, "-k", "c2 or c3")
    runs = saved_runs(results)
    assert len(runs) == 2  # the second subset did not replace the first

    merged = cli("report", "--results-dir", str(results), "--output", "-")
    assert merged.returncode == 0, merged.stderr
    assert "3 of 3 claims evaluated" in merged.stdout and "1 of them from earlier runs" in merged.stdout
    for cid in ("c1", "c2", "c3"):
        assert f"`{cid}`" in merged.stdout

    alone = cli("report", "--results-dir", str(results), "--run", runs[0].stem, "--output", "-")
    assert alone.returncode == 0, alone.stderr
    assert "1 of 3 claims evaluated" in alone.stdout and "Not evaluated: `c2`, `c3`" in alone.stdout
    assert "`c2`" not in alone.stdout.split("Not evaluated")[1].split("\n", 1)[1]

    missing = cli("report", "--results-dir", str(results), "--run", "no-such-run")
    assert missing.returncode == 2 and "--run" in missing.stderr and "no saved run" in missing.stderr

    compare = cli("report", "--compare", str(runs[0]), str(runs[1]), "--output", "-")
    assert compare.returncode == 0, compare.stderr
    assert "0 of 0 claims changed verdict" in compare.stdout
    assert "1 claim(s) not evaluated in B" in compare.stdout and "2 claim(s) not evaluated in A" in compare.stdout


def test_a_stopped_run_lists_the_selected_claims_it_did_not_reach(claims_project, tmp_path):
    """-x after a failure: the claims selected but never run are not evaluated, and the run says so."""
    # c1 says the paper rejected H0 where its tables retain it: not reproduced, so -x stops there
    wrong = THREE_CLAIMS.replace("paper: {outcome: retain, p: 0.956}", "paper: {outcome: reject, p: 0.001}", 1)
    (claims_project.path / "claims" / "r18.yaml").write_text(wrong)
    results = tmp_path / "evaluations"
    run = run_paper(claims_project, results, "-x")
    run.assert_outcomes(failed=1)
    evaluation = json.loads((results / "latest.json").read_text())
    assert [r["id"] for r in evaluation["results"]] == ["c1"]
    assert evaluation["selection"]["selected"] == ["c1", "c2", "c3"]
    assert evaluation["selection"]["not_evaluated"] == ["c2", "c3"]


def fake_run(ids, created_at, verdict="reproduced", git="abc", profile="smoke"):
    results = [{"id": i, "arch": "resnet18", "kind": "threshold", "group": "g", "source": "Table 1",
                "sentence": f"claim {i}", "paper": {"outcome": "holds", "p": None}, "evidence": "trained",
                "verdict": verdict, "reason": "because", "observed_outcome": "holds", "details": {}} for i in ids]
    return {"schema_version": 1, "created_at": created_at, "evidence": "trained",
            "profile": {"name": profile, "description": "t", "seeds": "1-2", "n_seeds": 2, "is_reproduction": False},
            "provenance": {"git": git}, "correction": {"method": "none", "family": "group"}, "populations": [],
            "selection": {"catalogue": ["a", "b", "c"], "selected": list(ids)}, "results": results}


def test_run_files_are_unique_even_in_the_same_second(tmp_path, monkeypatch):
    import kdclaims.results as results_module

    monkeypatch.setattr(results_module.time, "time", lambda: 1_700_000_000.0)  # the same instant, twice
    first = save_evaluation(fake_run(["a"], "2026-01-01T00:00:00Z"), tmp_path)
    second = save_evaluation(fake_run(["b"], "2026-01-01T00:00:00Z"), tmp_path)
    assert first != second and first.is_file() and second.is_file()
    assert json.loads(first.read_text())["results"][0]["id"] == "a"
    assert json.loads((tmp_path / "latest.json").read_text())["run_id"] == second.stem


def test_merge_takes_the_latest_result_of_each_claim_from_the_same_series_only(tmp_path):
    save_evaluation(fake_run(["a", "b"], "2026-01-01T00:00:00Z", verdict="not_reproduced"), tmp_path)
    save_evaluation(fake_run(["a", "b", "c"], "2026-01-01T00:00:01Z", git="other"), tmp_path)  # other code
    save_evaluation(fake_run(["a", "b", "c"], "2026-01-01T00:00:02Z", profile="paper"), tmp_path)  # other profile
    latest_path = save_evaluation(fake_run(["b"], "2026-01-02T00:00:00Z"), tmp_path)
    merged = merged_evaluation(load_evaluation(None, tmp_path), tmp_path)
    by_id = {r["id"]: r for r in merged["results"]}
    assert set(by_id) == {"a", "b"}
    assert by_id["a"]["verdict"] == "not_reproduced" and by_id["a"]["evaluated_at"] == "2026-01-01T00:00:00Z"
    assert by_id["b"]["verdict"] == "reproduced" and by_id["b"]["run_id"] == latest_path.stem
    head = build_document(merged, audit=False)["headline"]
    assert (head["total"], head["catalogue"], head["from_earlier_runs"]) == (2, 3, 1)
    assert head["not_evaluated"] == ["c"]
    text = markdown_report(build_document(merged, audit=False))
    assert "2 of 3 claims evaluated" in text and "1 of them from earlier runs" in text
    assert "evaluated 2026-01-01T00:00:00Z" in text  # each claim says when it was evaluated

    alone = build_document(single_run(load_evaluation(latest_path)), audit=False)["headline"]
    assert (alone["total"], alone["catalogue"], alone["not_evaluated"]) == (1, 3, ["a", "c"])


def test_compare_says_not_evaluated_instead_of_counting_a_change():
    full, subset = fake_run(["a", "b", "c"], "t1"), fake_run(["a"], "t2", verdict="not_reproduced")
    entries = {c["id"]: c for c in compare_runs(full, subset)}
    assert entries["a"]["changed"] and not entries["b"]["changed"] and entries["b"]["after"] == "not_evaluated"
    text = compare_markdown(full, subset, "A.json", "B.json")
    assert "1 of 1 claims changed verdict" in text and "2 claim(s) not evaluated in B" in text
    assert "not_reproduced" not in text and "not reproduced" in text
