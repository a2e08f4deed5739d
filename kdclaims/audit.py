"""Audit the paper against its own numbers: nothing is trained.

Two checks, both from ``kdclaims/paper_tables/`` alone:

1. **P-values.** Every p-value printed in Tables 4-8 is recomputed from the means and stds of
   Tables 1-3 (n = 385 per group, one-tailed two-sample z-test, as the paper describes) by
   ``kdclaims.paper.recompute_pvalues``. A printed p-value *agrees* when it is within
   ``AGREE_TOL`` of the recomputed one and both lead to the same decision on H0 at 0.025. Every
   disagreement gets an explanation built from the numbers behind it.
2. **Claims.** Every claim in ``claims/`` is evaluated with the paper's own summary statistics as
   evidence (``PaperEvidence``): does the sentence follow from the paper's tables? A claim the
   tables have no numbers for is reported as not evaluable, with the reason.

Only generic claim fields are used (id, source, kind, sentence, outcomes, verdict, reason, note), so
claims of any kind appear here without this module knowing their details.

``pvalue_audit`` and ``claim_audit`` return DataFrames, ``audit_frames`` both with their summary;
``audit_json`` is what ``kdclaims audit-paper --format json`` prints. The markdown rendering is
``kdclaims.render.markdown.audit_markdown``; the explanations here format through ``kdclaims.render.format``.
"""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from kdclaims import paper as paper_tables
from kdclaims.render.format import (
    arch_label, decision, metric_label, number, p_clause, paper_pvalue, setup_label, source_order_key,
)
from kdclaims.stats import ALPHA

__all__ = ["pvalue_audit", "claim_audit", "audit_frames", "audit_json", "CLAIM_VERDICTS"]

CLAIM_VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "not_evaluable")
PVALUE_KEYS = [  # the leading columns of pvalue_audit() and of every JSON p-value row, in this order
    "source", "arch", "metric", "treatment", "treatment_alpha", "baseline", "baseline_alpha",
    "p_reported", "p_recomputed", "agrees",
]

# What the paper's prose says about a cell, where that matters to a disagreement (source, metric).
_TEXT_CONTEXT = {
    ("Table 8", "prediction_dissimilarity"): (
        "The paper's text follows the printed p-values: Appendix F.2 says \"the null hypothesis failed to be "
        "rejected for predictive dissimilarity for all alpha values\", and Appendix H.3 says the same of Table 8. "
        "Table 3 and Table 8 (with the text built on it) cannot both be right."
    ),
}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    """A JSON-ready scalar: NaN -> None, ±inf -> "inf"/"-inf", numpy scalars -> Python ones."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _records(df: pd.DataFrame) -> list[dict]:
    return [{str(k): _plain(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


# ---------------------------------------------------------------------------------------------
# P-values
# ---------------------------------------------------------------------------------------------


def _cell_summary(arch: str, metric: str, setup: str, alpha):
    try:
        return paper_tables.paper_summary(arch, metric, setup, None if _missing(alpha) else float(alpha))
    except Exception:
        return None


def comparison_labels(row) -> tuple[str, str, str]:
    """The metric, treatment and baseline of one p-value row as a reader names them."""
    return (metric_label(row["metric"]), setup_label(row["treatment"], row["treatment_alpha"]),
            setup_label(row["baseline"], row["baseline_alpha"]))


def _short_explanation(row) -> str:
    """One sentence: why a printed p-value disagrees (empty where it agrees)."""
    if bool(row["agrees"]):
        return ""
    metric, treatment, baseline = comparison_labels(row)
    if _missing(row["p_recomputed"]):
        return f"Tables 1–3 have no usable {metric} numbers for this comparison, so the printed p cannot be checked"
    t = _cell_summary(row["arch"], row["metric"], row["treatment"], row["treatment_alpha"])
    b = _cell_summary(row["arch"], row["metric"], row["baseline"], row["baseline_alpha"])
    if t and b:
        from kdclaims.metrics import more_similar_direction

        lower = more_similar_direction(row["metric"]) == "less"
        relation = "below" if t.mean < b.mean else ("above" if t.mean > b.mean else "equal to")
        means = (f"{treatment}'s mean {number(t.mean)} ± {number(t.std)} is {relation} {baseline}'s {number(b.mean)} ± "
                 f"{number(b.std)} ({'lower' if lower else 'higher'} = more similar), so")
    else:
        means = f"{treatment} vs {baseline} gives"
    return (f"{means} z = {number(row['z'], 2)}, {p_clause(row['p_recomputed'])} "
            f"({decision(row['reject_recomputed'])}); the paper prints p = {paper_pvalue(row['p_reported'])} "
            f"({decision(row['reject_reported'])})")


def _table_of(arch: str) -> str:
    """Which of Tables 1-3 holds an architecture's means and stds ("Tables 1–3" if unknown)."""
    sources = paper_tables.load_tables().query("arch == @arch")["source"].unique()
    return str(sources[0]) if len(sources) == 1 else "Tables 1–3"


def core_explanation(row) -> str:
    """The numbers behind one disagreement, without the paper's prose (empty where it agrees)."""
    if bool(row["agrees"]):
        return ""
    metric, treatment, baseline = comparison_labels(row)
    source, printed = row["source"], row["p_reported"]
    table = _table_of(row["arch"])
    if _missing(row["p_recomputed"]):
        return (f"{table} gives no usable {metric} mean and std for {treatment} or {baseline}, so the printed "
                f"p = {paper_pvalue(printed)} of {source} cannot be checked.")
    from kdclaims.metrics import more_similar_direction

    t = _cell_summary(row["arch"], row["metric"], row["treatment"], row["treatment_alpha"])
    b = _cell_summary(row["arch"], row["metric"], row["baseline"], row["baseline_alpha"])
    lower = more_similar_direction(row["metric"]) == "less"
    favours = float(row["z"]) > 0
    parts = []
    if t and b:
        relation = "lower" if t.mean < b.mean else ("higher" if t.mean > b.mean else "equal to")
        than = "" if relation == "equal to" else " than"
        parts.append(
            f"{table} gives {treatment} a mean {metric} of {number(t.mean)} ± {number(t.std)}, {relation}{than} "
            f"{baseline}'s {number(b.mean)} ± {number(b.std)} ({'lower' if lower else 'higher'} is more similar to "
            f"the teacher); with n = {t.n} each the difference {number(row['diff'])} has se {number(row['se'])}, "
            f"so z = {number(row['z'], 2)} and {p_clause(row['p_recomputed'])}: "
            f"{decision(row['reject_recomputed'])} at {ALPHA}.")
    else:
        parts.append(f"Recomputed: z = {number(row['z'], 2)}, {p_clause(row['p_recomputed'])} "
                     f"({decision(row['reject_recomputed'])} at {ALPHA}).")
    if bool(row["reject_reported"]) != bool(row["reject_recomputed"]):
        if favours and not bool(row["reject_reported"]):
            parts.append(
                f"{treatment} is significantly more similar to the teacher by the paper's own numbers; the printed "
                f"p = {paper_pvalue(printed)} (H0 retained) would need its mean to be {'above' if lower else 'below'} the "
                f"baseline's, the opposite of what {table} shows.")
        else:
            printed_decision = "rejects" if bool(row["reject_reported"]) else "retains"
            parts.append(f"{source} prints p = {paper_pvalue(printed)} and so {printed_decision} H0: the opposite of the "
                         f"decision its own means and stds support.")
    else:
        parts.append(f"{source} prints p = {paper_pvalue(printed)}: the same decision on H0, but off by "
                     f"{abs(printed - float(row['p_recomputed'])):.3f}, more than the ±{paper_tables.AGREE_TOL} "
                     f"rounding tolerance.")
    return " ".join(parts)


def text_context(row) -> str:
    """What the paper's prose says about a disagreeing cell, where that matters ("" otherwise)."""
    return "" if bool(row["agrees"]) else _TEXT_CONTEXT.get((row["source"], row["metric"]), "")


def _explanation(row) -> str:
    """A short paragraph: why a printed p-value disagrees with the recomputed one (empty where it agrees)."""
    return " ".join(part for part in (core_explanation(row), text_context(row)) if part)


def pvalue_audit(alpha: float = ALPHA) -> pd.DataFrame:
    """Every printed p-value of Tables 4-8 beside the one recomputed from Tables 1-3.

    Columns: ``PVALUE_KEYS`` (source, arch, metric, treatment, treatment_alpha, baseline,
    baseline_alpha, p_reported, p_recomputed, agrees), then z, diff, se, reject_reported,
    reject_recomputed, explanation (a paragraph where the row disagrees, "" where it agrees) and
    short_explanation (one sentence, for summaries). Rows are in the order of ``pvalues.csv``.
    """
    df = paper_tables.recompute_pvalues(alpha)
    df["explanation"] = [_explanation(row) for _, row in df.iterrows()]
    df["short_explanation"] = [_short_explanation(row) for _, row in df.iterrows()]
    rest = [c for c in df.columns if c not in PVALUE_KEYS]
    return df[PVALUE_KEYS + rest].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------

CLAIM_COLUMNS = ["id", "source", "arch", "kind", "group", "sentence", "paper_outcome", "paper_p",
                 "observed_outcome", "verdict", "reason", "note", "error", "replication_probability", "fragile"]


def claim_audit(claims=None) -> pd.DataFrame:
    """Every claim evaluated against the paper's own Tables 1-3 (no training).

    ``claims``: a list of ``Claim`` (default: every claim in the repository's ``claims/``). One row
    per claim with the generic fields only (``CLAIM_COLUMNS``); a claim the tables cannot evaluate
    gets verdict ``not_evaluable`` and the reason in ``reason`` (the raw error in ``error``).
    """
    from kdclaims.claims import load_claims
    from kdclaims.evaluate import PaperEvidence, evaluate_all

    if claims is None:
        claims = load_claims()
    rows = []
    for result in evaluate_all(list(claims), PaperEvidence()):
        r = result.to_dict()
        paper = r.get("paper") or {}
        error = r.get("error")
        verdict, reason = r.get("verdict"), r.get("reason")
        if error:
            verdict, reason = "not_evaluable", f"not evaluable from the tables: {error}"
        rows.append({
            "id": r.get("id"), "source": r.get("source"), "arch": r.get("arch"), "kind": r.get("kind"),
            "group": r.get("group"), "sentence": r.get("sentence"), "paper_outcome": paper.get("outcome"),
            "paper_p": paper.get("p"), "observed_outcome": r.get("observed_outcome"), "verdict": verdict,
            "reason": reason, "note": r.get("note") or None, "error": error,
            # issue #12: how often a faithful replication at n = 385 would reproduce the paper's outcome
            "replication_probability": (r.get("details") or {}).get("replication_probability"),
            "fragile": (r.get("details") or {}).get("fragile"),
        })
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Summary, JSON
# ---------------------------------------------------------------------------------------------


def _pvalue_label(row) -> str:
    metric, treatment, baseline = comparison_labels(row)
    return f"{row['source']} · {arch_label(row['arch'])} · {metric} · {treatment} vs {baseline}"


def _summary(pv: pd.DataFrame, cl: pd.DataFrame) -> dict:
    agree = int(pv["agrees"].sum())
    flips = int((~pv["agrees"] & (pv["reject_reported"] != pv["reject_recomputed"])).sum())
    counts = Counter(cl["verdict"])
    pvalue_exceptions = [
        {"source": row["source"], "arch": row["arch"], "metric": row["metric"], "label": _pvalue_label(row),
         "p_reported": _plain(row["p_reported"]), "p_recomputed": _plain(row["p_recomputed"]),
         "explanation": row["short_explanation"]}
        for _, row in pv[~pv["agrees"]].iterrows()]
    order = {v: i for i, v in enumerate(CLAIM_VERDICTS)}
    claim_exceptions = sorted(
        ({"id": row["id"], "source": row["source"], "verdict": row["verdict"], "reason": row["reason"],
          "note": row["note"]}
         for _, row in cl[cl["verdict"] != "reproduced"].iterrows()),
        key=lambda e: order.get(e["verdict"], len(order)))  # not reproduced first, then inconclusive, ...
    claims_text = (f"{counts.get('not_reproduced', 0)} not reproduced, {counts.get('inconclusive', 0)} inconclusive, "
                   f"{counts.get('not_evaluable', 0)} not evaluable from the tables")
    disagree = len(pv) - agree
    where = "; ".join(f"{n} in {source}" for source, n in
                      sorted(Counter(pv.loc[~pv["agrees"], "source"]).items(), key=lambda kv: source_order_key(kv[0])))
    line = (f"P-values: {agree} of {len(pv)} printed p-values agree with those recomputed from Tables 1–3 "
            f"(n = {paper_tables.PAPER_N}, one-tailed z-test, ±{paper_tables.AGREE_TOL}); {disagree} disagree"
            f"{f' ({where}; {flips} with the opposite decision on H0)' if disagree else ''}. "
            f"Claims checked against the paper's own numbers: {counts.get('reproduced', 0)} of {len(cl)} "
            f"reproduced, {claims_text}.")
    return {
        "line": line,
        "pvalues": {"total": len(pv), "agree": agree, "disagree": len(pv) - agree, "opposite_decision": flips,
                    "tolerance": paper_tables.AGREE_TOL, "alpha": ALPHA, "n": paper_tables.PAPER_N},
        "claims": {"total": len(cl), **{v: int(counts.get(v, 0)) for v in CLAIM_VERDICTS}},
        "pvalue_exceptions": pvalue_exceptions,
        "claim_exceptions": [{k: _plain(v) for k, v in e.items()} for e in claim_exceptions],
        # issue #12: claims a faithful replication at n = 385 would reproduce less than 80% of the time
        "fragile_claims": [{"id": row["id"], "source": row["source"],
                            "replication_probability": _plain(row["replication_probability"])}
                           for _, row in cl[cl["fragile"].fillna(False).astype(bool)].iterrows()],
    }


def audit_frames(claims=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``pvalue_audit()``, ``claim_audit(claims)`` and their summary (the counts, the exceptions, one line)."""
    pv = pvalue_audit()
    cl = claim_audit(claims)
    return pv, cl, _summary(pv, cl)


def audit_json(claims=None) -> dict:
    """``{"pvalues": [...], "claims": [...], "summary": {...}}``: plain JSON (no NaN: missing is null)."""
    pv, cl, summary = audit_frames(claims)
    return {"pvalues": _records(pv), "claims": _records(cl), "summary": summary}
