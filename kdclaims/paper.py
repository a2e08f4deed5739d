"""The paper's own numbers as data: Tables 1-3 (means and stds) and Tables 4-8 (p-values).

``kdclaims/paper_tables/tables.csv`` -- columns arch, source, metric, setup, alpha, mean, std, note: one
row per (architecture, metric, setup, alpha) cell of Tables 1-3, mean +- std over 385 students;
alpha is NaN for the independent setup; mean/std are NaN where the paper's cell is unusable (the
ViT test-loss row is garbled in the source).

``kdclaims/paper_tables/pvalues.csv`` -- columns arch, source, treatment, treatment_alpha, baseline,
baseline_alpha, metric, p_reported: the p-values printed in Tables 4-8. The treatment is always
"kd" at treatment_alpha; the baseline is "independent" (baseline_alpha empty) or "uniform_kd" at
baseline_alpha.

Both ship inside the package (``PAPER_DIR``), so an installed kdclaims has them.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from typing import TYPE_CHECKING
from pathlib import Path

if TYPE_CHECKING:
    import pandas as pd

from kdclaims.errors import ConfigError, DataError
from kdclaims.metrics import more_similar_direction
from kdclaims.stats import ALPHA, Summary, z_test

__all__ = [
    "PAPER_DIR",
    "PAPER_N",
    "AGREE_TOL",
    "load_tables",
    "load_pvalues",
    "paper_summary",
    "printed_p",
    "recompute_pvalues",
]

PAPER_DIR = Path(__file__).resolve().parent / "paper_tables"
PAPER_N = 385  # students per setup in every table
AGREE_TOL = 0.015  # recomputed vs printed p-values agree within this (the paper rounds to 3 dp)

_TABLE_COLUMNS = ["arch", "source", "metric", "setup", "alpha", "mean", "std", "note"]
_PVALUE_COLUMNS = [
    "arch", "source", "treatment", "treatment_alpha", "baseline", "baseline_alpha", "metric", "p_reported",
]


def _read(name: str, columns: list[str]) -> pd.DataFrame:
    import pandas as pd  # here: collecting claims imports this module, and pandas takes half a second

    path = PAPER_DIR / name
    if not path.is_file():
        raise DataError(f"paper data file {path} is missing; reinstall kdclaims from its source tree")
    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"paper data file {path} lacks columns {missing}; expected {columns}")
    return df


@lru_cache(maxsize=None)
def _tables() -> pd.DataFrame:
    import pandas as pd

    df = _read("tables.csv", _TABLE_COLUMNS)
    for col in ("alpha", "mean", "std"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    df["note"] = df["note"].astype("object").where(df["note"].notna(), None)
    return df


@lru_cache(maxsize=None)
def _pvalues() -> pd.DataFrame:
    import pandas as pd

    df = _read("pvalues.csv", _PVALUE_COLUMNS)
    for col in ("treatment_alpha", "baseline_alpha", "p_reported"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    return df


def load_tables() -> pd.DataFrame:
    """Tables 1-3 as a DataFrame (a fresh copy; alpha NaN for independent)."""
    return _tables().copy()


def load_pvalues() -> pd.DataFrame:
    """Tables 4-8 as a DataFrame (a fresh copy; baseline_alpha NaN for the independent baseline)."""
    return _pvalues().copy()


def _choices(values) -> str:
    return ", ".join(sorted(str(v) for v in set(values)))


def paper_summary(arch: str, metric: str, setup: str, alpha: float | None = None) -> Summary | None:
    """The paper's mean +- std (n = 385) for one cell of Tables 1-3, or None where the cell is
    empty (the ViT test-loss row, garbled in the source).

    ``alpha`` is required for the KD/noise-KD setups and must be None for "independent".
    """
    cells = _table_cells()
    for what, value, col in (("architecture", arch, 0), ("metric", metric, 1), ("setup", setup, 2)):
        if value not in {cell[col] for cell in cells}:
            raise ConfigError(f"unknown {what} {value!r}; valid: {_choices(cell[col] for cell in cells)}")
    rows = [cell for cell in cells if cell[:3] == (arch, metric, setup)]
    alphas = sorted({cell[3] for cell in rows if cell[3] is not None})
    if not alphas:  # independent: no alpha
        if alpha is not None and not (isinstance(alpha, float) and math.isnan(alpha)):
            raise ConfigError(f"setup {setup!r} has no alpha; pass alpha=None")
        match = rows
    else:
        try:
            a = float(alpha) if alpha is not None else math.nan
        except (TypeError, ValueError):
            a = math.nan
        if math.isnan(a):
            raise ConfigError(f"setup {setup!r} needs alpha; valid: {', '.join(map(str, alphas))}")
        match = [cell for cell in rows if cell[3] is not None and abs(cell[3] - a) < 1e-9]
        if not match:
            raise ConfigError(f"no alpha {alpha!r} for setup {setup!r}; valid: {', '.join(map(str, alphas))}")
    if len(match) != 1:
        raise DataError(f"tables.csv has {len(match)} rows for {arch}/{metric}/{setup}/alpha={alpha}; expected 1")
    mean, std = match[0][4], match[0][5]
    if mean is None or std is None:  # the paper's cell is unusable
        return None
    return Summary(mean=mean, std=std, n=PAPER_N)


def _read_rows(name: str, columns: list[str]) -> tuple[Path, list[dict]]:
    """A paper data file's rows, read with the csv module: evaluating a claim looks its paper numbers up in
    them, and a run must not pay for importing pandas (the DataFrames above are for reports)."""
    path = PAPER_DIR / name
    if not path.is_file():
        raise DataError(f"paper data file {path} is missing; reinstall kdclaims from its source tree")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"paper data file {path} lacks columns {missing}; expected {columns}")
        return path, list(reader)


def _number(text: str, path: Path) -> float | None:
    """A cell as a number; None where it is empty or NaN."""
    try:
        value = float(text) if text.strip() else None
    except ValueError:
        raise DataError(f"paper data file {path}: {text!r} is not a number") from None
    return None if value is None or math.isnan(value) else value


@lru_cache(maxsize=None)
def _table_cells() -> tuple[tuple[str, str, str, float | None, float | None, float | None], ...]:
    """tables.csv as (arch, metric, setup, alpha, mean, std) per row: alpha None for independent, mean and
    std None where the paper's cell is unusable."""
    path, rows = _read_rows("tables.csv", _TABLE_COLUMNS)
    return tuple((r["arch"], r["metric"], r["setup"], _number(r["alpha"], path), _number(r["mean"], path),
                  _number(r["std"], path)) for r in rows)


@lru_cache(maxsize=None)
def _printed_pvalue_rows() -> tuple[tuple[tuple, float], ...]:
    """pvalues.csv as ((arch, source, metric, treatment, treatment_alpha, baseline, baseline_alpha),
    p_reported) per row, an alpha None where empty."""
    path, rows = _read_rows("pvalues.csv", _PVALUE_COLUMNS)
    return tuple(
        ((r["arch"], r["source"], r["metric"], r["treatment"], _number(r["treatment_alpha"], path),
          r["baseline"], _number(r["baseline_alpha"], path)), _number(r["p_reported"], path))
        for r in rows
    )


def printed_p(arch: str, source: str, metric: str, treatment: tuple, baseline: tuple) -> float | None:
    """The p-value ``source`` (e.g. "Table 7") prints for ``treatment`` vs ``baseline`` on ``metric``,
    each side a (setup, alpha) pair with alpha None for independent; None if it prints none."""

    def same_alpha(row_alpha: float | None, alpha) -> bool:
        if alpha is None:
            return row_alpha is None
        return row_alpha is not None and abs(row_alpha - float(alpha)) < 1e-9

    matches = [
        p for (a, s, m, t, t_alpha, b, b_alpha), p in _printed_pvalue_rows()
        if (a, s, m, t, b) == (arch, source, metric, treatment[0], baseline[0])
        and same_alpha(t_alpha, treatment[1]) and same_alpha(b_alpha, baseline[1])
    ]
    if len(matches) > 1:
        raise DataError(f"pvalues.csv has {len(matches)} rows for {source} {arch}/{metric} {treatment} vs {baseline}")
    return float(matches[0]) if matches and matches[0] is not None else None


def recompute_pvalues(alpha: float = ALPHA) -> pd.DataFrame:
    """Recompute every p-value of Tables 4-8 from Tables 1-3 with n = 385 per group.

    Columns: those of pvalues.csv, then p_recomputed, z, diff (mean_kd - mean_baseline), agrees
    (|p_recomputed - p_reported| <= AGREE_TOL and the same reject/retain at ``alpha``), then se,
    reject_reported, reject_recomputed. Rows whose cells are empty get NaN and agrees = False.
    """
    import pandas as pd

    out = load_pvalues()
    p_rec, zs, diffs, ses, rej_rec = [], [], [], [], []
    for row in out.itertuples(index=False):
        treat = paper_summary(row.arch, row.metric, row.treatment, row.treatment_alpha)
        base_alpha = None if pd.isna(row.baseline_alpha) else row.baseline_alpha
        base = paper_summary(row.arch, row.metric, row.baseline, base_alpha)
        if treat is None or base is None:
            p_rec.append(math.nan); zs.append(math.nan); diffs.append(math.nan); ses.append(math.nan)
            rej_rec.append(False)
            continue
        res = z_test(treat, base, more_similar_direction(row.metric), alpha=alpha)
        p_rec.append(res.p_value); zs.append(res.z); diffs.append(res.diff); ses.append(res.se)
        rej_rec.append(res.reject)
    out["p_recomputed"] = p_rec
    out["z"] = zs
    out["diff"] = diffs
    rej_rep = out["p_reported"] < alpha
    rej_rec_s = pd.Series(rej_rec, index=out.index, dtype=bool)
    close = (out["p_recomputed"] - out["p_reported"]).abs() <= AGREE_TOL
    out["agrees"] = (close & (rej_rep == rej_rec_s)).astype(bool)
    out["se"] = ses
    out["reject_reported"] = rej_rep.astype(bool)
    out["reject_recomputed"] = rej_rec_s
    return out
