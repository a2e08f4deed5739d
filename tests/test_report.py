"""Report formats: every format holds every claim with its verdict; JSON follows its schema; no training."""

import csv
import io
import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from kdclaims.claims import load_claims
from kdclaims.evaluate import PaperEvidence, evaluate_all
from kdclaims.metrics import METRICS
from kdclaims.render.csvfile import claims_csv, members_csv
from kdclaims.render.document import SCHEMA_PATH, build_document, claims_frame, compare_runs, members_frame
from kdclaims.render.format import verdict_label
from kdclaims.render.markdown import markdown_report
from kdclaims.render.terminal import print_table
from kdclaims.results import jsonable, save_evaluation


def fake_evaluation(n_claims=12, seeds=(1, 2, 3)):
    """A saved-evaluation dict: real results (the paper as evidence) plus two trained-looking populations."""
    claims = [c for c in load_claims() if c.arch == "vit"][:n_claims]
    results = [r.to_dict() for r in evaluate_all(claims, PaperEvidence())]
    rng = np.random.default_rng(0)
    populations = []
    for setup, alpha in (("independent", None), ("kd", 0.9)):
        name = "vit/independent" if alpha is None else f"vit/kd-a{alpha:g}"
        populations.append({
            "name": name, "arch": "vit", "setup": setup, "alpha": alpha, "temperature": 1.0,
            "label": "Independent" if alpha is None else f"KD (α={alpha:g})", "n": len(seeds), "seeds": list(seeds),
            "keys": [f"{i:064x}" for i in seeds], "teacher_key": "f" * 64, "trained_now": 0, "wall_time_s": 1.5,
            "devices": ["cpu"], "metrics": {m: rng.uniform(0.2, 0.8, len(seeds)).tolist() for m in METRICS},
        })
    return {
        "schema_version": 1, "created_at": "2026-11-26T00:00:00Z", "evidence": "trained",
        "profile": {"name": "smoke", "description": "test", "seeds": "1-3", "n_seeds": 3, "is_reproduction": False,
                    "precision": "fp32"},
        "dataset": {"source": "x", "fingerprint": "ab" * 32, "archive_md5": None}, "cache_dir": "/tmp/c",
        "provenance": {"git": "abc", "kdclaims": "0.1.0", "torch": "2", "python": "3", "device": "cpu"},
        "summary": {}, "correction": {"method": "none", "family": "group"},
        "populations": populations, "results": results,
    }


@pytest.fixture(scope="module")
def document():
    return build_document(fake_evaluation())


def test_json_report_validates_against_its_schema(document):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    payload = json.loads(json.dumps(jsonable(document), allow_nan=False))
    jsonschema.validate(payload, schema)
    broken = dict(payload, headline={"total": 1})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_every_format_holds_every_claim_with_its_verdict(document):
    ids = {r["id"]: r["verdict"] for r in document["claims"]}
    md = markdown_report(document)
    for claim_id, verdict in ids.items():
        line = next(l for l in md.splitlines() if f"`{claim_id}`" in l and l.startswith("|"))
        assert verdict_label(verdict) in line
    rows = {r["id"]: r["verdict_id"] for r in csv.DictReader(io.StringIO(claims_csv(document)))}
    assert rows == ids
    from rich.console import Console

    console = Console(width=400, record=True)
    print_table(document, console)
    text = console.export_text()
    for claim_id, verdict in ids.items():
        line = next(l for l in text.splitlines() if claim_id in l)
        assert verdict.replace("_", " ") in line


def test_document_rebuilds_tables_and_members(document):
    table = [r for r in document["tables"] if r["population"] == "vit/kd-a0.9" and r["metric"] == "js_divergence"][0]
    assert table["paper"] == {"mean": 0.2239, "std": 0.002, "n": 385}
    assert table["observed"]["n"] == 3
    members = members_frame(fake_evaluation())
    assert len(members) == 6 and set(METRICS) <= set(members.columns)
    assert len(list(csv.DictReader(io.StringIO(members_csv(document))))) == 6
    assert len(claims_frame(document)) == len(document["claims"])
    marks = document["comparisons_vs_independent"]
    assert {m["metric"] for m in marks} == set(METRICS) and all(m["population"] == "vit/kd-a0.9" for m in marks)
    assert "smoke run on synthetic data" in document["notice"]


def test_compare_lists_changed_verdicts():
    a = fake_evaluation()
    b = json.loads(json.dumps(a))
    b["results"][0]["verdict"] = "not_reproduced" if a["results"][0]["verdict"] != "not_reproduced" else "reproduced"
    changes = compare_runs(a, b)
    assert [c["id"] for c in changes] == [a["results"][0]["id"]]


def test_report_cli_from_a_saved_evaluation_alone(tmp_path):
    """Every format is written from the evaluation file; the cache holds no member, so nothing could be loaded."""
    results = tmp_path / "evaluations"
    path = save_evaluation(fake_evaluation(), results)
    out = tmp_path / "out"
    for fmt in ("markdown", "json", "csv"):
        done = subprocess.run([sys.executable, "-m", "kdclaims.cli", "report", "--format", fmt, "--results-dir",
                               str(results), "--output", str(out / f"r.{fmt}")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert (out / "r-members.csv").is_file()
    assert list(out.glob("r-figure-*.png"))  # markdown writes its figures beside it
    table = subprocess.run([sys.executable, "-m", "kdclaims.cli", "report", "--format", "table", "--results-dir",
                            str(results)], capture_output=True, text=True, env={"COLUMNS": "300", "PATH": ""})
    assert table.returncode == 0 and "vit-" in table.stdout
    compare = subprocess.run([sys.executable, "-m", "kdclaims.cli", "report", "--compare", str(path), str(path),
                              "--output", "-"], capture_output=True, text=True)
    assert compare.returncode == 0 and "0 of 12 claims changed verdict" in compare.stdout


def test_format_has_one_pvalue_rule():
    from kdclaims.render import format as fmt

    assert [fmt.pvalue(p) for p in (0.0, 2.8e-46, 0.000999, 0.001, 0.0234, 1.0)] == [
        "<0.001", "<0.001", "<0.001", "0.001", "0.023", "1.000"]
    assert fmt.pvalue(None) == "–" and fmt.pvalue("nan") == "nan" and fmt.pvalue(float("nan")) == "nan"
    assert fmt.p_clause(0.0) == "p < 0.001" and fmt.p_clause(0.0234) == "p = 0.023"
    assert fmt.paper_pvalue(0.0) == "0.000" and fmt.paper_pvalue(1.0) == "1.000"  # as the paper prints them
    assert fmt.number(-0.5, 2) == "-0.50" and fmt.number(-0.5, 2, unicode_minus=True) == "−0.50"
    assert fmt.number("-inf") == "−∞" and fmt.number(None) == "–"
    assert fmt.setup_label("uniform_kd", 0.1) == "Uniform Noise KD α=0.1" and fmt.setup_label("independent") == "Independent"
    assert fmt.arch_label("vgg16_bn") == "VGG-16-BN" and fmt.arch_label("my_net") == "my_net"
    assert fmt.ordered_archs({"vit", "my_net", "resnet18"}) == ["resnet18", "vit", "my_net"]


def test_every_format_prints_a_tiny_computed_pvalue_the_same_way(document):
    """p = 0 and p = 3e-5 read "<0.001" in markdown, HTML, the terminal table and the pytest text; the
    paper's printed p = 0.0 reads "0.000" everywhere."""
    from rich.console import Console

    from kdclaims.render.html import render_html
    from kdclaims.render.terminal import describe_result

    doc = json.loads(json.dumps(jsonable(document)))
    comparisons = [r for r in doc["claims"] if r["kind"] == "comparison" and "test" in (r.get("details") or {})]
    for claim, p in zip(comparisons[:2], (0.0, 3e-5)):
        claim["details"]["test"]["p_value"] = p
        claim["paper"]["p"] = 0.0
    ids = [c["id"] for c in comparisons[:2]]
    md = markdown_report(doc)
    page = render_html(doc, figures={})
    console = Console(width=400, record=True)
    print_table(doc, console)
    table = console.export_text()
    for claim_id, claim in zip(ids, comparisons):
        md_row = next(line for line in md.splitlines() if f"`{claim_id}`" in line and line.startswith("|"))
        assert "| <0.001 |" in md_row and "(p=0.000)" in md_row
        html_row = next(row for row in page.split("<tr>") if f'id="claim-{claim_id}"' in row)
        assert '<td class="num">&lt;0.001</td>' in html_row and "p = 0.000" in html_row
        assert "p <0.001" in next(line for line in table.splitlines() if claim_id in line)
        text = describe_result(claim)
        assert "p <0.001" in text and "(p = 0.000)" in text
    for rendered in (md, page, table):
        assert "e-05" not in rendered and "e−05" not in rendered and "1e-300" not in rendered


def test_a_reproduction_profile_at_another_scale_is_called_a_small_scale_real_data_replication():
    from kdclaims.profiles import PROFILES
    from kdclaims.render.document import _notice

    notice = _notice("trained", PROFILES["digits"].as_dict())
    assert notice.startswith("A small-scale real-data replication on digits data (profile digits, 10 seeds")
    assert _notice("trained", PROFILES["paper"].as_dict()) is None  # the paper's own experiment needs no notice


def test_teachers_test_accuracy_is_shown_in_setup():
    from kdclaims.render.document import teachers
    from kdclaims.render.format import teachers_text

    evaluation = {"populations": [{"arch": "vit", "teacher_test_accuracy": 0.92},
                                  {"arch": "resnet18", "teacher_test_accuracy": 0.97037},
                                  {"arch": "vgg16_bn"}]}  # recorded before teachers' accuracy was: left out
    assert teachers(evaluation) == {"vit": 0.92, "resnet18": 0.97037}
    assert teachers_text(teachers(evaluation)) == "ResNet-18 97.0%, ViT 92.0%"
