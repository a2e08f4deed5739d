"""Reports that fit and say one thing: the terminal at 80 and 120 columns, one sign convention for z,
d and the CI, verdict words everywhere, and the small points of issue #17 (claims list/validate errors,
YAML line numbers, group markers, integer n, load() errors, paper power on synthetic data)."""

import csv
import io

import pytest
from click.testing import CliRunner
from rich.console import Console

from kdclaims.claims import load_claim_file, load_claims
from kdclaims.cli import main
from kdclaims.errors import ClaimError, KdclaimsError
from kdclaims.render.csvfile import claims_csv
from kdclaims.render.document import build_document, claims_frame
from kdclaims.render.format import SIGN_CONVENTION, hypothesis_interval
from kdclaims.render.html import render_html
from kdclaims.render.markdown import markdown_report
from kdclaims.render.terminal import print_table
from test_report import fake_evaluation

from helpers import GOOD_CLAIM


@pytest.fixture(scope="module")
def evaluation():
    return fake_evaluation()


@pytest.fixture(scope="module")
def document(evaluation):
    return build_document(evaluation, audit=False)


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_table_fits_and_never_cuts_an_id(document, width):
    console = Console(width=width, record=True)
    print_table(document, console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    for claim in document["claims"]:
        row = [line for line in lines if f" {claim['id']} " in line]
        assert len(row) == 1, claim["id"]  # the whole id, on one line: what users paste into -k


@pytest.mark.parametrize("width", [80, 120])
def test_claims_list_is_one_line_per_claim_at_any_width(width):
    result = CliRunner().invoke(main, ["claims", "list"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    catalogue = load_claims()
    assert max(len(line) for line in lines) <= width
    assert len(lines) == len(catalogue) + 2  # title, header, one line per claim
    for claim in catalogue:
        assert sum(line.startswith(claim.id + " ") for line in lines) == 1


def test_claims_list_long_shows_every_field_and_the_marker():
    result = CliRunner().invoke(main, ["claims", "list", "--arch", "vit", "--long"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    claim = next(c for c in load_claims() if c.arch == "vit")
    assert claim.id in result.output and f"-m group_{claim.group}" in result.output
    assert "resnet18-" not in result.output


@pytest.mark.parametrize("flag,value,suggestion", [("--arch", "vitt", "vit"), ("--kind", "comparisn", "comparison")])
def test_claims_list_with_an_unknown_filter_is_an_error(flag, value, suggestion):
    result = CliRunner().invoke(main, ["claims", "list", flag, value])
    assert result.exit_code == 2
    assert f"did you mean {suggestion!r}" in result.output and flag in result.output


def test_claims_validate_reports_every_error(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD_CLAIM.replace("metric: activation_distance", "metric: activation_dist"))
    (tmp_path / "b.yaml").write_text(GOOD_CLAIM.replace("id: c1", "id: c2").replace("direction: less", "direction: down"))
    (tmp_path / "c.yaml").write_text("claims:\n  - id: x\n    sentence: [unclosed\n")
    result = CliRunner().invoke(main, ["claims", "validate", str(tmp_path)])
    assert result.exit_code == 2
    assert "a.yaml" in result.output and "b.yaml" in result.output and "c.yaml" in result.output
    assert "3 error(s)" in result.output


def test_yaml_syntax_error_carries_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("group: g\nclaims:\n  - id: x\n    sentence: [unclosed\n    kind: comparison\n")
    with pytest.raises(ClaimError, match=r"bad\.yaml:\d+: not valid YAML"):
        load_claim_file(path)


def test_group_marker_works_as_the_group_is_written(pytester):
    claims_dir = pytester.mkdir("claims")
    (claims_dir / "r18.yaml").write_text(GOOD_CLAIM.replace("group: g", "group: my-group"))
    for marker in ("group_my-group", "group_my_group"):
        result = pytester.runpytest_subprocess("claims", "--evidence", "paper", "-m", marker, "--collect-only", "-q",
                                               "-p", "no:cacheprovider")
        assert "c1" in result.stdout.str() and "deselected" not in result.stdout.str(), marker


def test_one_sign_convention_for_z_d_and_the_ci(document):
    comparisons = [r for r in document["claims"] if "test" in (r.get("details") or {})]
    assert any(r["details"]["direction"] == "less" for r in comparisons)
    for r in comparisons:
        test, direction = r["details"]["test"], r["details"]["direction"]
        improvement, low, high = hypothesis_interval(test, direction)
        assert low <= improvement <= high
        assert (test["z"] > 0) == (improvement > 0) and (test["effect_size"] > 0) == (improvement > 0)
        assert test["reject"] == (low > 0)  # the CI lies above 0 exactly when H0 is rejected (normal CI, z-test)
    console = Console(width=120, record=True)
    print_table(document, console)
    # stated once at the top of every format
    for text in (markdown_report(document), console.export_text(), render_html(document, {})):
        flat = " ".join(text.replace("<sub>a</sub>", "_a").split())
        assert flat.count(" ".join(SIGN_CONVENTION.split())) == 1


def test_ci_is_turned_round_where_h_a_says_smaller():
    test = {"diff": -0.02, "ci_low": -0.033, "ci_high": -0.0053}
    assert hypothesis_interval(test, "less") == (0.02, 0.0053, 0.033)
    assert hypothesis_interval(test, "greater") == (-0.02, -0.033, -0.0053)
    welch = {"improvement": 0.02, "lower_bound": 0.005, "upper_bound": 0.035, "diff": -0.02}
    assert hypothesis_interval(welch, "less") == (0.02, 0.005, 0.035)


def test_frames_and_csv_use_verdict_words_and_integer_n(document, evaluation):
    frame = claims_frame(document)
    assert "not_reproduced" not in set(frame["verdict"]) and "not reproduced" in set(frame["verdict"])
    assert set(frame["verdict_id"]) >= {"not_reproduced"}
    rows = list(csv.DictReader(io.StringIO(claims_csv(document))))
    ns = [r["n_treatment"] for r in rows if r["n_treatment"]]
    assert ns and all(n.isdigit() for n in ns)  # "385", not "385.0"
    for row, claim in zip(rows, document["claims"]):
        if "test" in (claim.get("details") or {}):
            _, low, _ = hypothesis_interval(claim["details"]["test"], claim["details"]["direction"])
            assert float(row["ci_low"]) == pytest.approx(low)


def test_paper_power_is_not_shown_for_a_smoke_run(document, evaluation):
    assert document["kind"] == "smoke" and not document["method"]["show_paper_power"]
    header = next(line for line in markdown_report(document).splitlines() if line.startswith("| claim | source | metric"))
    assert "power" not in header
    assert ">power<" not in render_html(document, {})
    paper_run = build_document(dict(evaluation, evidence="paper"), audit=False)
    header = next(line for line in markdown_report(paper_run).splitlines() if line.startswith("| claim | source | metric"))
    assert "| power |" in header


def test_load_errors_name_the_python_call_not_a_cli_flag(tmp_path):
    import kdclaims

    with pytest.raises(KdclaimsError) as info:
        kdclaims.load(tmp_path / "none.json")
    assert "kdclaims.load(path)" in str(info.value) and "--evaluation" not in str(info.value)


@pytest.mark.parametrize("args", [["claims", "list"], ["claims", "list", "--long"]])
def test_claims_list_shows_a_sentence_with_brackets_literally(monkeypatch, tmp_path, args):
    """A claim sentence is text, never rich markup: ``[x]`` and ``[bold]`` are printed as written."""
    import kdclaims.claims

    path = tmp_path / "brackets.yaml"
    path.write_text(GOOD_CLAIM.replace("KD is not more similar", "KD [x] is [bold]not[/bold] more similar"))
    claims = load_claim_file(path)
    monkeypatch.setattr(kdclaims.claims, "load_claims", lambda: claims)
    result = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "KD [x] is [bold]not[/bold] more similar" in result.output
