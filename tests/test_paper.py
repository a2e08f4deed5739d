"""Tests for kdclaims.paper: the paper's tables as data, and recomputing Tables 4-8."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from kdclaims.errors import ConfigError
from kdclaims.paper import (
    AGREE_TOL,
    PAPER_DIR,
    PAPER_N,
    load_pvalues,
    load_tables,
    paper_summary,
    recompute_pvalues,
)
from kdclaims.stats import Summary


@pytest.fixture(scope="module")
def recomputed() -> pd.DataFrame:
    return recompute_pvalues()


def test_paper_dir_is_package_data():
    import kdclaims

    assert PAPER_DIR == Path(kdclaims.__file__).resolve().parent / "paper_tables"  # installed with the package
    assert "shared" not in PAPER_DIR.parts
    assert (PAPER_DIR / "tables.csv").is_file() and (PAPER_DIR / "pvalues.csv").is_file()
    assert PAPER_N == 385 and AGREE_TOL == 0.015


def test_load_tables():
    df = load_tables()
    assert list(df.columns) == ["arch", "source", "metric", "setup", "alpha", "mean", "std", "note"]
    assert len(df) == 180  # 3 architectures x 6 metrics x 10 setups
    assert df.loc[df.setup == "independent", "alpha"].isna().all()
    assert df.loc[df.setup != "independent", "alpha"].notna().all()
    df.loc[0, "mean"] = -1.0  # a copy: the cache is not mutated
    assert load_tables().loc[0, "mean"] != -1.0


def test_load_pvalues():
    df = load_pvalues()
    assert len(df) == 60
    assert set(df.source) == {"Table 4", "Table 5", "Table 6", "Table 7", "Table 8"}
    assert set(df.treatment) == {"kd"}
    assert df.loc[df.baseline == "independent", "baseline_alpha"].isna().all()
    assert df.loc[df.baseline == "uniform_kd", "baseline_alpha"].notna().all()


def test_paper_summary():
    s = paper_summary("resnet18", "activation_distance", "independent")
    assert s == Summary(0.3224, 0.0284, 385)
    assert paper_summary("vgg16_bn", "test_accuracy", "uniform_kd", 0.9) == Summary(0.6554, 0.0032, 385)


@pytest.mark.parametrize("setup,alpha", [("independent", None), ("kd", 0.1), ("kd", 0.5), ("uniform_kd", 0.9)])
def test_vit_test_loss_is_empty(setup, alpha):
    assert paper_summary("vit", "test_loss", setup, alpha) is None


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("alexnet", "js_divergence", "kd", 0.1), "resnet18"),
        (("vit", "cosine", "kd", 0.1), "logits_cosine_similarity"),
        (("vit", "js_divergence", "distill", 0.1), "uniform_kd"),
        (("vit", "js_divergence", "kd", None), "0.5"),
        (("vit", "js_divergence", "kd", 0.3), "0.9"),
        (("vit", "js_divergence", "independent", 0.1), "alpha=None"),
    ],
)
def test_paper_summary_errors(args, fragment):
    with pytest.raises(ConfigError) as e:
        paper_summary(*args)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_recompute_columns(recomputed):
    assert list(recomputed.columns[:8]) == list(load_pvalues().columns)
    for col in ("p_recomputed", "z", "diff", "agrees"):
        assert col in recomputed.columns
    assert recomputed.p_recomputed.between(0, 1).all()


@pytest.mark.parametrize("table", ["Table 4", "Table 5", "Table 6", "Table 7"])
def test_tables_4_to_7_reproduce(recomputed, table):
    rows = recomputed[recomputed.source == table]
    assert len(rows) == 12
    gap = (rows.p_recomputed - rows.p_reported).abs()
    assert (gap <= 0.015).all(), rows[gap > 0.015]
    assert ((rows.p_recomputed < 0.025) == (rows.p_reported < 0.025)).all()
    assert rows.agrees.all()


def test_table_8_reproduces_except_prediction_dissimilarity(recomputed):
    rows = recomputed[recomputed.source == "Table 8"]
    assert len(rows) == 12
    pd_rows = rows[rows.metric == "prediction_dissimilarity"]
    others = rows[rows.metric != "prediction_dissimilarity"]
    assert others.agrees.all()
    assert ((others.p_recomputed - others.p_reported).abs() <= 0.015).all()
    # The paper prints p = 1.000 (retain) for prediction dissimilarity at every alpha, but Table 3's
    # own means and stds give p ~ 0.000 (KD 0.3743/0.3699/0.3661 vs uniform-noise KD 0.3834 with
    # tiny stds): the paper contradicts itself here.
    assert len(pd_rows) == 3
    assert (pd_rows.p_reported == 1.0).all()
    assert (pd_rows.p_recomputed < 1e-4).all()
    assert (~pd_rows.agrees).all()
    assert pd_rows.reject_recomputed.all() and not pd_rows.reject_reported.any()


def test_only_table_8_prediction_dissimilarity_disagrees(recomputed):
    bad = recomputed[~recomputed.agrees]
    assert set(zip(bad.source, bad.metric)) == {("Table 8", "prediction_dissimilarity")}


def test_largest_gap_is_resnet_cosine_alpha_09(recomputed):
    # the worst agreeing row sits near the tolerance: ResNet-18 cosine at alpha 0.9 (0.835 vs 0.821)
    ok = recomputed[recomputed.agrees]
    gap = (ok.p_recomputed - ok.p_reported).abs()
    worst = ok.loc[gap.idxmax()]
    assert (worst.arch, worst.metric, worst.treatment_alpha) == ("resnet18", "logits_cosine_similarity", 0.9)
    assert 0.01 < gap.max() <= 0.015
    assert math.isclose(worst.p_recomputed, 0.8346, abs_tol=1e-3)
