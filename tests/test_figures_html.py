"""Figures and the HTML report, from a small synthetic evaluation (nothing is trained).

The evaluation has one architecture (ResNet-18), two populations (independent and KD at α = 0.9) of
three members each with all six metrics, and three claims evaluated by the real evaluators on those
numbers: a comparison (whose sentence carries markup that must be escaped), a ranking, and one that
cannot be evaluated (its population is missing).
"""

from __future__ import annotations

import json
import re
import struct

import pytest

from kdclaims.claims import parse_claim
from kdclaims.spec import PopulationSpec
from kdclaims.errors import KdclaimsError
from kdclaims.evaluate import ArmEvidence, evaluate_all
from kdclaims.metrics import METRICS
from kdclaims.render.document import build_document
from kdclaims.render.figures import figure_png_bytes, make_figures
from kdclaims.render.html import render_html
from kdclaims.results import jsonable
from kdclaims.stats import Summary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NASTY = "KD <b>beats</b> independent on JS divergence when JS < 0.5 & <script>alert(1)</script>"

# Per-member metric values: KD at α = 0.9 is clearly closer to the teacher than the independent students.
VALUES = {
    "resnet18/independent": {
        "activation_distance": [0.62, 0.64, 0.63], "js_divergence": [0.21, 0.22, 0.20],
        "prediction_dissimilarity": [0.41, 0.43, 0.42], "logits_cosine_similarity": [0.80, 0.79, 0.81],
        "test_accuracy": [0.30, 0.31, 0.29], "test_loss": [2.9, 3.0, 2.95],
    },
    "resnet18/kd-a0.9": {
        "activation_distance": [0.41, 0.40, 0.42], "js_divergence": [0.09, 0.10, 0.095],
        "prediction_dissimilarity": [0.22, 0.21, 0.23], "logits_cosine_similarity": [0.93, 0.94, 0.935],
        "test_accuracy": [0.33, 0.34, 0.335], "test_loss": [2.7, 2.65, 2.68],
    },
}
SPECS = {"resnet18/independent": PopulationSpec("resnet18", "independent"),
         "resnet18/kd-a0.9": PopulationSpec("resnet18", "kd", 0.9)}
SEEDS = [1, 2, 3]


def _key(name: str, seed: int) -> str:
    return (f"{abs(hash((name, seed))):064x}" * 2)[:64]


class StubEvidence:
    """Trained-style evidence from the fixed member values above."""

    name = "trained"

    def arm(self, spec, metric):
        if spec.name not in VALUES:
            raise KdclaimsError(f"population {spec.name} was not trained in this test")
        values = VALUES[spec.name][metric]
        return ArmEvidence(spec.name, spec.label, Summary.from_values(values), values=list(values), seeds="1-3",
                           keys=[_key(spec.name, s) for s in SEEDS])


CLAIMS = [
    {"id": "resnet18-js-kd0.9-vs-independent", "arch": "resnet18", "source": "Table 4", "sentence": NASTY,
     "kind": "comparison", "metric": "js_divergence", "treatment": {"setup": "kd", "alpha": 0.9},
     "baseline": {"setup": "independent"}, "direction": "less", "paper": {"outcome": "reject", "p": 0.0},
     "note": "A note with <em>markup</em> & an ampersand."},
    {"id": "resnet18-best-cos-is-kd", "arch": "resnet18", "source": "Table 1", "kind": "ranking",
     "sentence": "KD at α=0.9 is the most similar setup on cosine", "metric": "logits_cosine_similarity",
     "candidates": [{"setup": "independent"}, {"setup": "kd", "alpha": 0.9}],
     "expected_best": [{"setup": "kd", "alpha": 0.9}], "paper": {"outcome": "holds"}},
    {"id": "resnet18-acc-uniform0.9-vs-independent", "arch": "resnet18", "source": "Section 5", "kind": "comparison",
     "sentence": "Uniform-noise KD is more accurate", "metric": "test_accuracy",
     "treatment": {"setup": "uniform_kd", "alpha": 0.9}, "baseline": {"setup": "independent"},
     "direction": "greater", "paper": {"outcome": "reject"}},
]


def _evaluation(evidence: str = "trained") -> dict:
    claims = [parse_claim(dict(raw), "test") for raw in CLAIMS]
    results = [r.to_dict() for r in evaluate_all(claims, StubEvidence())]
    if evidence == "paper":
        populations = []
        for r in results:
            r["evidence"] = "paper"
    else:
        populations = [
            {"name": name, **spec.as_dict(), "label": spec.label, "n": len(SEEDS), "seeds": SEEDS,
             "keys": [_key(name, s) for s in SEEDS], "teacher_key": _key("teacher", 0), "trained_now": 0,
             "wall_time_s": 12.5, "devices": ["cpu"], "metrics": VALUES[name]}
            for name, spec in SPECS.items()]
    payload = {
        "schema_version": 1, "created_at": "2024-01-01T00:00:00Z", "evidence": evidence,
        "profile": {"name": "smoke", "description": "synthetic data, small models", "seeds": "1-3", "n_seeds": 3,
                    "scale": "smoke", "is_reproduction": False},
        "dataset": {"source": "synthetic", "fingerprint": "f" * 64, "archive_md5": None},
        "cache_dir": "/tmp/cache <dir>",
        "provenance": {"git": "abc123", "kdclaims": "0.0.0", "torch": "2.x", "python": "3.11", "device": "cpu",
                       "cuda": None, "duration_s": 40.0},
        "correction": {"method": "none", "family": "group"},
        "populations": populations, "results": results,
    }
    return json.loads(json.dumps(jsonable(payload)))  # as saved and loaded: plain JSON


@pytest.fixture(scope="module")
def document() -> dict:
    return build_document(_evaluation(), audit=True)


@pytest.fixture(scope="module")
def paper_document() -> dict:
    return build_document(_evaluation("paper"), audit=False)


@pytest.fixture(scope="module")
def page(document) -> str:
    return render_html(document)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


def test_the_synthetic_document_has_members_and_every_metric(document):
    assert document["kind"] == "smoke"
    assert len(document["members"]) == 6
    assert all(m in document["members"][0] for m in METRICS)
    assert {c["verdict"] for c in document["claims"]} >= {"reproduced"}


def test_make_figures_writes_one_png_per_architecture(document, tmp_path):
    paths = make_figures(document, tmp_path / "figs", prefix="fig")
    assert [p.name for p in paths] == ["fig-resnet18.png"]
    data = paths[0].read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000  # six panels with boxes, points, titles: not an empty canvas
    width, height = _png_size(data)
    assert width >= 1400 and height >= 800


def test_figure_bytes_are_deterministic(document):
    assert figure_png_bytes(document, "resnet18") == figure_png_bytes(document, "resnet18")


def test_no_figures_without_members(paper_document, tmp_path):
    assert paper_document["members"] == []
    assert make_figures(paper_document, tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError):
        figure_png_bytes(paper_document, "resnet18")


def test_html_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "@import" not in page and "url(" not in page
    assert not re.search(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    images = re.findall(r"""<img\b[^>]*\bsrc="([^"]*)\"""", page)
    assert len(images) == 1
    assert all(src.startswith("data:image/png;base64,") for src in images)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#") for h in hrefs)  # in-page links only


def test_html_has_every_claim_with_its_verdict(page, document):
    rows = page.split("<tr>")
    for claim in document["claims"]:
        row = next((r for r in rows if f'id="claim-{claim["id"]}"' in r), None)
        assert row is not None, claim["id"]
        assert f'class="v v-{claim["verdict"]}"' in row


def test_html_shows_the_smoke_notice_tables_audit_and_provenance(page, document):
    assert "banner-smoke" in page
    assert "smoke run on synthetic data, not a reproduction" in page
    assert 'id="tables"' in page and 'class="rebuilt"' in page
    assert "paper 0." in page  # the paper's values beside the observed ones
    assert 'id="audit"' in page and 'class="audit"' in page
    assert "disagrees" in page  # the paper's Table 8 p-values that do not follow from Table 3
    assert 'id="provenance"' in page
    key = document["provenance"]["populations"][0]["keys"][0]
    assert f'title="{key}"' in page  # full key on hover, abbreviated text
    assert "/tmp/cache &lt;dir&gt;" in page


def test_html_escapes_claim_text(page):
    assert "<script>alert(1)</script>" not in page
    assert "<b>beats</b>" not in page
    assert "JS &lt; 0.5 &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;em&gt;markup&lt;/em&gt; &amp; an ampersand" in page


def test_html_for_the_paper_evidence_has_no_figures(paper_document):
    page = render_html(paper_document)
    assert "<img" not in page
    assert "banner-paper" in page
    assert "nothing to rebuild" in page
    assert "audit was not included" in page
    for claim in paper_document["claims"]:
        assert claim["id"] in page


def test_html_accepts_given_figures_and_none(document):
    assert "<img" not in render_html(document, figures={})
    page = render_html(document, figures={"resnet18": PNG_SIGNATURE + b"fake"})
    assert "data:image/png;base64,iVBORw0KGgpmYWtl" in page


def test_setups_are_ordered_as_in_the_paper_with_extra_temperatures_last():
    from kdclaims.render.format import setup_order_key, short_setup_label as short_label

    rows = [{"setup": "gaussian_kd", "alpha": 0.1, "temperature": 1.0},
            {"setup": "kd", "alpha": 0.9, "temperature": 4.0},
            {"setup": "kd", "alpha": 0.5, "temperature": 1.0},
            {"setup": "uniform_kd", "alpha": 0.9, "temperature": 1.0},
            {"setup": "independent", "alpha": None, "temperature": 1.0},
            {"setup": "kd", "alpha": 0.1, "temperature": 1.0}]
    ordered = [short_label(r) for r in sorted(rows, key=setup_order_key)]
    assert ordered == ["Independent", "KD α=0.1", "KD α=0.5", "Uniform KD α=0.9", "Gaussian KD α=0.1", "KD α=0.9 T=4"]
