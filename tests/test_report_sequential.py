"""A --sequential run in every report format: the design and its rules, each claim's looks and stopping reason,
the members per population beside the fixed design's; and the run records around it (merging, progress).

The evaluation is made by the sequential engine itself (``kdclaims.sequential_run``) on member values drawn in
memory, so nothing is trained: one claim with a large effect stops at the first look on efficacy, one without an
effect reaches the final look, and the population only the first claim needs stops growing at the first look.
"""

from __future__ import annotations

import csv
import io
import json

import jsonschema
import numpy as np
import pytest

from kdclaims.claims import load_claims
from kdclaims.metrics import METRICS
from kdclaims.render.csvfile import claims_csv, looks_csv
from kdclaims.render.document import SCHEMA_PATH, build_document, looks_frame
from kdclaims.render.format import design_rules, stop_text
from kdclaims.render.html import render_html
from kdclaims.render.markdown import markdown_report
from kdclaims.render.terminal import describe_result, print_table
from kdclaims.results import jsonable, same_series
from kdclaims.sequential_run import Design, SequentialRun, ValuesEvidence

LOOKS = (3, 6)
COMPARISONS = ("vit-noise-kd-regularises",  # uniform KD at 0.5 vs independent, test accuracy: a large effect here
               "vit-t5-ad-kd0.9-vs-independent",  # a large effect here
               "vit-t5-js-kd0.9-vs-independent")  # no effect here: reaches the final look
COMBINED = ("vit-kd-trend-ad", "vit-kd-improvement-below-0.03")  # a trend and a bound: their own look records
CLAIM_IDS = COMPARISONS + COMBINED
# population -> metric -> (mean, std) of the members drawn; every other metric N(0.5, 0.05)
MEANS = {"vit/independent": {"activation_distance": (0.5, 0.01), "js_divergence": (0.3, 0.01),
                             "test_accuracy": (0.6, 0.01)},
         "vit/kd-a0.1": {"activation_distance": (0.45, 0.01)},
         "vit/kd-a0.5": {"activation_distance": (0.4, 0.01)},
         "vit/kd-a0.9": {"activation_distance": (0.3, 0.01), "js_divergence": (0.3, 0.01)},
         "vit/uniform_kd-a0.5": {"test_accuracy": (0.8, 0.01)}}


def sequential_evaluation() -> dict:
    claims = [c for c in load_claims() if c.id in CLAIM_IDS]
    rng = np.random.default_rng(7)
    values = {pop: {m: rng.normal(*MEANS[pop].get(m, (0.5, 0.05)), LOOKS[-1]).tolist() for m in METRICS}
              for pop in MEANS}
    design = Design(LOOKS)
    run = SequentialRun(claims, design)
    while not run.done:
        run.observe(ValuesEvidence(values, default_members=run.target_members()))
    used = run.population_members()
    populations = []
    for spec in {s.name: s for c in claims for s in c.populations()}.values():
        n = used[spec.name]
        populations.append({
            **spec.as_dict(), "name": spec.name, "label": spec.label, "n": n, "seeds": list(range(1, n + 1)),
            "keys": [f"{spec.name}-{i}" for i in range(1, n + 1)], "teacher_key": "f" * 64, "trained_now": n,
            "wall_time_s": 1.0, "devices": ["cpu"], "members_limit": n, "members_planned": LOOKS[-1],
            "metrics": {m: values[spec.name][m][:n] for m in METRICS}})
    return {
        "schema_version": 1, "created_at": "2026-12-03T00:00:00Z", "evidence": "trained",
        "profile": {"name": "smoke", "description": "test", "seeds": "1-6", "n_seeds": 6, "is_reproduction": False,
                    "precision": "fp32", "sequential": {"looks": list(LOOKS), "spending": "obf"}},
        "dataset": {"source": "x", "fingerprint": "ab" * 32, "archive_md5": None}, "cache_dir": "/tmp/c",
        "provenance": {"git": "abc", "kdclaims": "0.1.0", "torch": "2", "python": "3", "device": "cpu"},
        "summary": {}, "correction": {"method": "none", "family": "group"},
        "sequential": True, "sequential_design": design.as_dict(),
        "populations": populations,
        "results": [run.results[claim_id].to_dict() for claim_id in sorted(run.results)],
    }


@pytest.fixture(scope="module")
def evaluation():
    return sequential_evaluation()


@pytest.fixture(scope="module")
def document(evaluation):
    return json.loads(json.dumps(jsonable(build_document(evaluation, audit=False)), allow_nan=False))


def test_the_document_holds_the_design_each_claims_looks_and_the_members(document):
    sequential = document["sequential"]
    assert sequential["design"]["looks"] == list(LOOKS) and sequential["design"]["rules"]
    stops = {c["id"]: (c["stop_look"], c["reason"], len(c["looks"])) for c in sequential["claims"]}
    assert {i: stops[i] for i in COMPARISONS} == {
        "vit-noise-kd-regularises": (1, "efficacy", 1), "vit-t5-ad-kd0.9-vs-independent": (1, "efficacy", 1),
        "vit-t5-js-kd0.9-vs-independent": (2, "final", 2)}
    assert set(stops) == set(CLAIM_IDS)
    for claim in sequential["claims"]:
        if claim["id"] in COMBINED:  # no z of their own: the number their decision turns on
            assert all(look["statistic"]["what"] for look in claim["looks"] if look["action"] != "error")
    populations = {p["name"]: (p["members_used"], p["members_planned"]) for p in sequential["populations"]}
    assert populations["vit/uniform_kd-a0.5"] == (3, 6) and populations["vit/independent"] == (6, 6)
    used = sum(p["members_used"] for p in sequential["populations"])
    assert sequential["members"] == {"used": used, "trained": used, "fixed": 6 * len(populations)}


def test_the_json_report_with_a_sequential_run_follows_its_schema(document):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(document, schema)
    broken = json.loads(json.dumps(document))
    broken["sequential"]["claims"][0]["reason"] = "ran out of patience"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_markdown_states_the_rules_and_every_look(document):
    md = markdown_report(document)
    setup = md.split("## Setup")[1].split("\n## ")[0]
    assert "Design: group-sequential, 2 looks at 3, 6 members per population, Lan-DeMets O'Brien-Fleming-type" in setup
    for rule in design_rules(document["sequential"]["design"]):
        assert f"  - {rule}" in setup  # the rules in words, in the methods part
    looks = md.split("## Sequential looks")[1].split("\n## ")[0]
    for claim in document["sequential"]["claims"]:
        row = next(line for line in looks.splitlines() if f"`{claim['id']}`" in line)
        assert stop_text(claim) in row
    rows = [line for line in looks.splitlines() if line.startswith("| ") and " | look | " not in line
            and not line.startswith("| population |")]
    assert len(rows) == sum(len(c["looks"]) for c in document["sequential"]["claims"]) + 5  # and 5 populations
    assert "| vit/uniform_kd-a0.5 | 3 | 3 | 6 | 50% |" in looks
    claims = md.split("### Comparisons")[1].split("\n### ")[0]  # each comparison's verdict says where it stopped
    assert "<br>stopped at look 1 of 2: efficacy boundary crossed" in next(
        line for line in claims.splitlines() if "`vit-t5-ad-kd0.9-vs-independent`" in line)
    trend = next(c for c in document["sequential"]["claims"] if c["id"] == "vit-kd-trend-ad")
    trend_row = next(line for line in looks.splitlines() if "`vit-kd-trend-ad`" in line)
    assert f"| {trend['looks'][0]['statistic']['z']:.2f} |" in trend_row  # the weakest step's z


def test_html_states_the_rules_and_every_look(document):
    page = render_html(document, figures={})
    method = page.split('<section id="method">')[1].split("</section>")[0]
    assert "Design: group-sequential" in method and "a population stops growing when every claim" in method
    section = page.split('<section id="sequential">')[1].split("</section>")[0]
    for claim in document["sequential"]["claims"]:
        assert f"<code>{claim['id']}</code>" in section and stop_text(claim) in section
    looks = sum(len(c["looks"]) for c in document["sequential"]["claims"])
    assert section.count("<tr>") == 2 + looks + 5  # each table's head, a row per look, one per population
    assert '<a href="#sequential">' in page
    row = next(row for row in page.split("<tr") if 'id="claim-vit-t5-js-kd0.9-vs-independent"' in row)
    assert "stopped at look 2 of 2: final look reached" in row


def test_the_terminal_table_and_the_pytest_text_show_the_looks(document):
    from rich.console import Console

    console = Console(width=300, record=True)
    print_table(document, console)
    text = console.export_text()
    assert "Sequential looks" in text and "Design: group-sequential" in text
    for claim in document["sequential"]["claims"]:
        assert stop_text(claim) in next(line for line in text.splitlines() if claim["id"] in line and "look" in line)
    failing = next(r for r in document["claims"] if r["id"] == "vit-t5-js-kd0.9-vs-independent")
    described = describe_result(failing)
    assert "sequential: stopped at look 2 of 2: final look reached (retain H0)" in described
    assert "    look 1 (n 3/3, information 0.50): z " in described and "    look 2 (n 6/6" in described


def test_csv_has_the_stop_per_claim_and_a_row_per_look(document):
    claims = {r["id"]: r for r in csv.DictReader(io.StringIO(claims_csv(document))) if r["id"] in COMPARISONS}
    assert {i: (r["sequential_stop_look"], r["sequential_looks_planned"], r["sequential_stop_reason"])
            for i, r in claims.items()} == {"vit-noise-kd-regularises": ("1", "2", "efficacy"),
                                            "vit-t5-ad-kd0.9-vs-independent": ("1", "2", "efficacy"),
                                            "vit-t5-js-kd0.9-vs-independent": ("2", "2", "final")}
    looks = [r for r in csv.DictReader(io.StringIO(looks_csv(document))) if r["id"] in COMPARISONS]
    assert [(r["id"], r["look"], r["stopped_here"]) for r in looks] == [
        ("vit-noise-kd-regularises", "1", "True"), ("vit-t5-ad-kd0.9-vs-independent", "1", "True"),
        ("vit-t5-js-kd0.9-vs-independent", "1", "False"), ("vit-t5-js-kd0.9-vs-independent", "2", "True")]
    trend = [r for r in csv.DictReader(io.StringIO(looks_csv(document))) if r["id"] == "vit-kd-trend-ad"]
    assert trend and trend[0]["statistic"] == "z of the weakest step still monitored" and trend[0]["z"]
    first = looks[0]
    assert float(first["z"]) > float(first["efficacy_boundary"]) and first["action"] == "efficacy"
    assert first["members"] == "vit/uniform_kd-a0.5=3;vit/independent=3"


def test_a_fixed_design_run_reports_no_sequential_part(evaluation):
    fixed = {**evaluation, "sequential": False, "sequential_design": None}
    document = build_document(fixed, audit=False)
    assert document["sequential"] is None and looks_csv(document) is None and looks_frame(document).empty
    assert "Sequential looks" not in markdown_report(document)
    assert 'id="sequential"' not in render_html(document, figures={})
    assert "sequential_stop_look" in claims_csv(document)  # the claims themselves still say where they stopped
    old = {k: v for k, v in fixed.items() if k not in ("sequential", "sequential_design")}  # saved before the field
    assert build_document(old, audit=False)["sequential"] is None


def test_runs_of_the_two_designs_are_never_merged(evaluation):
    fixed = {**evaluation, "sequential": False}
    assert same_series(evaluation, dict(evaluation)) and not same_series(evaluation, fixed)
    older = {k: v for k, v in fixed.items() if k != "sequential"}  # saved before the field: a fixed-design run
    assert same_series(fixed, older) and not same_series(evaluation, older)


def test_progress_shows_the_look_and_counts_cached_members_once():
    from kdclaims.progress import RunProgress

    model = RunProgress()
    model.apply({"event": "plan", "populations": ["a", "b"], "teachers": [], "seeds": 6})
    model.apply({"event": "look", "group": "vit", "look": 1, "looks": 2, "members": 3, "populations": ["a", "b"]})
    model.apply({"event": "population", "name": "a", "to_train": 2, "cached": 1})
    for seed in (2, 3):
        model.apply({"event": "done", "member": f"a seed {seed}"})
    model.apply({"event": "population_done", "name": "a", "trained": 2})
    assert "vit look 1/2 (3 members, 2 populations growing)" in model.line(0.0)
    assert model.cached == 1 and model.trained == 2 and model.populations_done == {"a"}
    model.apply({"event": "look", "group": "vit", "look": 2, "looks": 2, "members": 6, "populations": ["a"]})
    assert model.populations_done == set()  # growing again until its look is ready
    model.apply({"event": "population", "name": "a", "to_train": 3, "cached": 3})  # seeds 1-3: 1 cached, 2 trained
    assert model.cached == 1  # not 1 + 3: the members trained at look 1 are not counted again
    assert "vit look 2/2" in model.line(0.0) and "members 3/at most 12" in model.line(0.0)
