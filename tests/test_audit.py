"""Tests for kdclaims.audit, its markdown rendering and `kdclaims audit-paper`: the paper audited against its own numbers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from kdclaims.audit import CLAIM_VERDICTS, PVALUE_KEYS, audit_json, claim_audit, pvalue_audit
from kdclaims.claims import load_claims, parse_claim
from kdclaims.cli import main
from kdclaims.paper import PAPER_DIR
from kdclaims.render.markdown import audit_markdown

REQUIRED_PVALUE_KEYS = {"source", "arch", "metric", "treatment", "treatment_alpha", "baseline", "baseline_alpha",
                        "p_reported", "p_recomputed", "agrees"}
SOURCES = ["Table 4", "Table 5", "Table 6", "Table 7", "Table 8"]


@pytest.fixture(scope="module")
def payload() -> dict:
    return audit_json()


@pytest.fixture(scope="module")
def markdown() -> str:
    return audit_markdown()


def _is_table8_pd(row) -> bool:
    return row["source"] == "Table 8" and row["metric"] == "prediction_dissimilarity"


def test_json_has_one_row_per_printed_pvalue_with_the_required_keys(payload):
    printed = pd.read_csv(PAPER_DIR / "pvalues.csv")
    assert len(payload["pvalues"]) == len(printed) == 60
    for row in payload["pvalues"]:
        assert REQUIRED_PVALUE_KEYS <= set(row)
        for key in ("treatment_alpha", "baseline_alpha"):
            assert row[key] is None or (isinstance(row[key], (int, float)) and math.isfinite(row[key]))
        assert isinstance(row["agrees"], bool)
        assert isinstance(row["p_reported"], float) and isinstance(row["p_recomputed"], float)
    independent = [r for r in payload["pvalues"] if r["baseline"] == "independent"]
    assert independent and all(r["baseline_alpha"] is None for r in independent)
    assert set(payload) == {"pvalues", "claims", "summary"}


def test_json_is_strict_json(payload):
    text = json.dumps(payload, allow_nan=False)  # raises on NaN or inf
    assert json.loads(text)["summary"]["pvalues"]["total"] == 60


def test_exactly_the_three_table8_prediction_dissimilarity_rows_disagree(payload):
    bad = [r for r in payload["pvalues"] if not r["agrees"]]
    assert len(bad) == 3 and all(_is_table8_pd(r) for r in bad)
    assert sorted(r["treatment_alpha"] for r in bad) == [0.1, 0.5, 0.9]
    for r in bad:
        assert r["p_reported"] == 1.0 and r["p_recomputed"] < 1e-3
        assert r["baseline"] == "uniform_kd" and r["baseline_alpha"] == 0.9
        # the explanation names the numbers that contradict the printed p
        assert "0.3834" in r["explanation"] and "lower" in r["explanation"] and "1.000" in r["explanation"]
    assert all(r["explanation"] == "" for r in payload["pvalues"] if r["agrees"])


def test_pvalue_audit_frame_leads_with_the_required_columns():
    df = pvalue_audit()
    assert list(df.columns[: len(PVALUE_KEYS)]) == PVALUE_KEYS
    assert "explanation" in df.columns and len(df) == 60
    assert (df["explanation"] != "").sum() == 3


def test_summary_counts(payload):
    summary = payload["summary"]
    assert summary["pvalues"]["agree"] == 57 and summary["pvalues"]["disagree"] == 3
    claims = summary["claims"]
    assert claims["total"] == len(load_claims())
    assert sum(claims[v] for v in CLAIM_VERDICTS) == claims["total"]
    assert len(summary["pvalue_exceptions"]) == 3
    assert {e["id"] for e in summary["claim_exceptions"]} == {
        c["id"] for c in payload["claims"] if c["verdict"] != "reproduced"}
    assert "57 of 60 printed p-values agree" in summary["line"]


def test_markdown_has_every_source_table_and_marks_the_disagreements(markdown):
    for source in SOURCES:
        assert f"### {source}" in markdown
    assert markdown.index("### Table 4") < markdown.index("### Table 8") < markdown.index("## 2. Claims")
    marked = [line for line in markdown.splitlines() if line.startswith("|") and "disagrees" in line]
    assert len(marked) == 3
    for line in marked:
        assert "❌ **disagrees**" in line and "Prediction Dissimilarity" in line and "**1.000**" in line
        assert "**<0.001**" in line  # the recomputed p, by the one p-value rule of kdclaims.render.format
    table8 = markdown[markdown.index("### Table 8"):markdown.index("## 2. Claims")]
    assert all(line in table8 for line in marked)
    assert "Appendix F.2" in table8  # the paper's text is part of the explanation
    assert markdown.count("✅ agrees") == 57


def test_markdown_tables_are_well_formed(markdown):
    for block in markdown.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if not lines:
            continue
        widths = {len(line.replace("\\|", "").split("|")) for line in lines}
        assert len(widths) == 1, block[:200]


def test_claim_audit_has_one_row_per_claim():
    claims = load_claims()
    df = claim_audit()
    assert len(df) == len(claims)
    assert list(df["id"]) == [c.id for c in claims]
    for column in ("id", "source", "kind", "sentence", "paper_outcome", "observed_outcome", "verdict", "reason",
                   "note"):
        assert column in df.columns
    assert set(df["verdict"]) <= set(CLAIM_VERDICTS)
    pd_rows = df[df["id"].str.startswith("vgg16_bn-t8-pd-")]
    assert len(pd_rows) == 3 and (pd_rows["verdict"] == "not_reproduced").all()
    assert pd_rows["note"].notna().all()


def test_markdown_claim_table_shows_every_claim_with_its_paper_outcome(markdown):
    df = claim_audit()
    section = markdown[markdown.index("## 2. Claims"):]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) == len(df)
    for line, (_, claim) in zip(rows, df.iterrows()):
        cells = [c.strip() for c in line.replace("\\|", "").split("|")[1:-1]]
        assert cells[0] == f"`{claim['id']}`" and cells[2] == claim["kind"]
        assert cells[4].startswith(str(claim["paper_outcome"]).replace("reject", "reject H0").replace("retain", "retain H0"))


def test_claim_the_tables_cannot_evaluate_is_shown_as_not_evaluable():
    claim = parse_claim({
        "id": "vgg16_bn-js-kd0.5-T4", "sentence": "KD at T=4 beats independent training on JS divergence",
        "source": "Table 7", "arch": "vgg16_bn", "kind": "comparison", "metric": "js_divergence",
        "treatment": {"setup": "kd", "alpha": 0.5, "temperature": 4}, "baseline": {"setup": "independent"},
        "direction": "less", "paper": {"outcome": "reject"},
    }, "test")
    df = claim_audit([claim])
    assert len(df) == 1
    row = df.iloc[0]
    assert row["verdict"] == "not_evaluable"
    assert row["reason"].startswith("not evaluable from the tables") and "temperature" in row["reason"]
    md = audit_markdown([claim])
    assert "not evaluable from the tables" in md
    json.dumps(audit_json([claim]), allow_nan=False)


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_cli_prints_to_stdout(fmt):
    result = CliRunner().invoke(main, ["audit-paper", "--format", fmt])
    assert result.exit_code == 0, result.output
    if fmt == "json":
        data = json.loads(result.output)
        assert len(data["pvalues"]) == 60 and len(data["claims"]) == len(load_claims())
    else:
        assert result.output.startswith("# Audit")
        assert "❌ **disagrees**" in result.output and "### Table 8" in result.output


def test_cli_default_is_markdown():
    result = CliRunner().invoke(main, ["audit-paper"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Audit")


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_cli_writes_output_file(tmp_path, fmt):
    target = tmp_path / "sub" / f"audit.{'md' if fmt == 'markdown' else 'json'}"
    result = CliRunner().invoke(main, ["audit-paper", "--format", fmt, "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert str(target) in result.output
    text = target.read_text(encoding="utf-8")
    if fmt == "json":
        assert len(json.loads(text)["pvalues"]) == 60
    else:
        assert "### Table 8" in text and "❌ **disagrees**" in text


def test_cli_help():
    result = CliRunner().invoke(main, ["audit-paper", "--help"])
    assert result.exit_code == 0
    assert "--format" in result.output and "--output" in result.output
