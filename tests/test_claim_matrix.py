"""Claim files: matrices, a sentence per outcome, and outcomes read from the paper's tables."""

import pytest

from kdclaims.claims import load_claim_file
from kdclaims.errors import ClaimError

HEAD = """
group: g
defaults:
  kind: comparison
  source: Table 7
  arch: vgg16_bn
  baseline: {setup: independent}
claims:
"""

MATRIX = HEAD + """
  - matrix:
      metric:
        - {metric: activation_distance, m: ad, direction: less}
        - {metric: logits_cosine_similarity, m: cos, direction: greater}
      alpha: [0.1, 0.9]
    id: t7-{m}-kd{alpha}
    sentence: "KD at {alpha} vs independent on {metric}"
    metric: "{metric}"
    treatment: {setup: kd, alpha: "{alpha}"}
    direction: "{direction}"
    paper: {outcome: retain}
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_matrix_expands_to_the_cartesian_product_in_written_order(tmp_path):
    claims = load_claim_file(write(tmp_path, MATRIX))
    assert [c.id for c in claims] == ["t7-ad-kd0.1", "t7-ad-kd0.9", "t7-cos-kd0.1", "t7-cos-kd0.9"]
    first, last = claims[0], claims[-1]
    assert first.params["treatment"].alpha == 0.1 and isinstance(first.params["treatment"].alpha, float)
    assert (last.metric, last.params["direction"]) == ("logits_cosine_similarity", "greater")
    assert last.sentence == "KD at 0.9 vs independent on logits_cosine_similarity"
    assert [c.populations()[0].name for c in claims[:2]] == ["vgg16_bn/kd-a0.1", "vgg16_bn/kd-a0.9"]


def test_a_matrix_in_defaults_applies_to_every_entry(tmp_path):
    text = MATRIX.replace("claims:\n\n  - matrix:", "  matrix:", 1).replace("\n    id:", "\nclaims:\n  - id:", 1)
    assert [c.id for c in load_claim_file(write(tmp_path, text))][:2] == ["t7-ad-kd0.1", "t7-ad-kd0.9"]


@pytest.mark.parametrize("change, message", [
    (("kd{alpha}", "kd{alpa}"), r"unknown placeholder \{alpa\} \(did you mean 'alpha'\?\)"),
    (("alpha: [0.1, 0.9]", "alpha: []"), "matrix 'alpha' must be a non-empty list"),
    (("t7-{m}-kd{alpha}", "t7-{m}"), "claim id 't7-ad' is used twice"),
    (("alpha: [0.1, 0.9]", "alpha: [0.1, 0.9]\n      m: [x]"), "placeholder 'm' is set by two dimensions"),
    (("  - matrix:\n", "  - matrix: [1]\n    unused:\n"), "matrix must map each placeholder"),
])
def test_matrix_mistakes_are_one_line_errors_naming_the_file(tmp_path, change, message):
    path = write(tmp_path, MATRIX.replace(*change), "bad.yaml")
    with pytest.raises(ClaimError, match=message) as err:
        load_claim_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_paper_table_reads_the_printed_p_and_the_sentence_follows_the_outcome(tmp_path):
    text = HEAD + """
  - matrix:
      alpha: [0.1, 0.5]
    id: ad-kd{alpha}
    sentence:
      reject: "KD at {alpha} is more similar"
      retain: "KD at {alpha} is not more similar"
    metric: activation_distance
    treatment: {setup: kd, alpha: "{alpha}"}
    direction: less
    paper: table
"""
    low, mid = load_claim_file(write(tmp_path, text))
    # Table 7 prints p = 0.029 at alpha 0.1 (H0 retained at 0.025) and 0.000 at 0.5 (rejected).
    assert (low.paper.outcome, low.paper.p, low.sentence) == ("retain", 0.029, "KD at 0.1 is not more similar")
    assert (mid.paper.outcome, mid.paper.p, mid.sentence) == ("reject", 0.0, "KD at 0.5 is more similar")


@pytest.mark.parametrize("text, message", [
    (HEAD.replace("Table 7", "Table 1") + """
  - {id: x, sentence: s, metric: js_divergence, treatment: {setup: kd, alpha: 0.5}, direction: less, paper: table}
""", "Table 1 prints no p-value for js_divergence"),
    (HEAD + """
  - {id: x, sentence: {reject: s}, metric: js_divergence, treatment: {setup: kd, alpha: 0.1}, direction: less,
     paper: table}
""", "needs keys among reject, retain, including the paper's outcome 'retain'"),
    (HEAD.replace("  baseline: {setup: independent}\n", "") + """
  - {id: x, sentence: s, kind: trend, metric: js_divergence, arms: [{setup: kd, alpha: 0.1}, {setup: kd, alpha: 0.5}],
     paper: table}
""", "a trend claim cannot read its outcome from the paper's tables"),
])
def test_paper_table_and_sentence_mistakes(tmp_path, text, message):
    with pytest.raises(ClaimError, match=message):
        load_claim_file(write(tmp_path, text))


def test_shipped_table_files_are_matrices():
    from kdclaims.claims import CLAIMS_DIR

    for name in ("resnet18_table4", "vgg16_bn_table7", "vgg16_bn_table8", "vit_table5", "vit_table6"):
        path = CLAIMS_DIR / f"{name}.yaml"
        assert path.read_text().count("- matrix:") == 1 and len(load_claim_file(path)) == 12
        assert len(path.read_text().splitlines()) < 30
