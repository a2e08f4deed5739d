"""Audit the paper against its own numbers: nothing is trained.

Two checks, both from ``fixtures/paper/`` alone:

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

``pvalue_audit`` and ``claim_audit`` return DataFrames; ``audit_json`` and ``audit_markdown`` are
what ``kdclaims audit-paper`` prints.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import pandas as pd

from kdclaims import paper as paper_tables
from kdclaims.models import arch_label
from kdclaims.stats import ALPHA

__all__ = ["pvalue_audit", "claim_audit", "audit_json", "audit_markdown", "CLAIM_VERDICTS"]

CLAIM_VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "not_evaluable")
VERDICT_LABEL = {
    "reproduced": "✅ reproduced",
    "not_reproduced": "❌ not reproduced",
    "inconclusive": "⚠️ inconclusive",
    "not_evaluable": "➖ not evaluable from the tables",
}
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
# Formatting helpers
# ---------------------------------------------------------------------------------------------


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _setup_label(setup: str, alpha) -> str:
    from kdclaims.setups import get_setup

    try:
        label = get_setup(setup).label
    except Exception:  # an unknown setup name still gets a readable label
        label = setup
    return label if _missing(alpha) else f"{label} α={float(alpha):g}"


def _metric_label(metric: str) -> str:
    from kdclaims.metrics import get_metric

    try:
        return get_metric(metric).label
    except Exception:
        return metric


def _p_text(p) -> str:
    """A p-value as a reader compares it with a printed one: 3 dp, scientific below 0.001."""
    if _missing(p):
        return "–"
    p = float(p)
    if p == 0.0:
        return "<1e-300"  # below double precision: |z| is enormous
    if p < 0.001:
        return f"{p:.1e}"
    return f"{p:.3f}"


def _num(value, digits: int = 4) -> str:
    if _missing(value):
        return "–"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def _decision(reject) -> str:
    return "reject H0" if bool(reject) else "retain H0"


def _cell(text) -> str:
    """Text made safe for one cell of a GitHub-flavoured markdown table."""
    if _missing(text):
        return ""
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|")


def _sentence(text) -> str:
    """Text ending in exactly one full stop (or its own ! / ?)."""
    text = "" if _missing(text) else str(text).strip()
    return text if not text or text[-1] in ".!?" else text + "."


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


def _source_key(source: str):
    match = re.search(r"(\d+)", str(source))
    return (0, int(match.group(1)), str(source)) if match else (1, 0, str(source))


# ---------------------------------------------------------------------------------------------
# P-values
# ---------------------------------------------------------------------------------------------


def _cell_summary(arch: str, metric: str, setup: str, alpha):
    try:
        return paper_tables.paper_summary(arch, metric, setup, None if _missing(alpha) else float(alpha))
    except Exception:
        return None


def _comparison_text(row) -> tuple[str, str, str]:
    metric = _metric_label(row["metric"])
    treatment = _setup_label(row["treatment"], row["treatment_alpha"])
    baseline = _setup_label(row["baseline"], row["baseline_alpha"])
    return metric, treatment, baseline


def _short_explanation(row) -> str:
    """One sentence: why a printed p-value disagrees (empty where it agrees)."""
    if bool(row["agrees"]):
        return ""
    metric, treatment, baseline = _comparison_text(row)
    if _missing(row["p_recomputed"]):
        return f"Tables 1–3 have no usable {metric} numbers for this comparison, so the printed p cannot be checked"
    t = _cell_summary(row["arch"], row["metric"], row["treatment"], row["treatment_alpha"])
    b = _cell_summary(row["arch"], row["metric"], row["baseline"], row["baseline_alpha"])
    if t and b:
        from kdclaims.metrics import more_similar_direction

        lower = more_similar_direction(row["metric"]) == "less"
        relation = "below" if t.mean < b.mean else ("above" if t.mean > b.mean else "equal to")
        means = (f"{treatment}'s mean {_num(t.mean)} ± {_num(t.std)} is {relation} {baseline}'s {_num(b.mean)} ± "
                 f"{_num(b.std)} ({'lower' if lower else 'higher'} = more similar), so")
    else:
        means = f"{treatment} vs {baseline} gives"
    return (f"{means} z = {_num(row['z'], 2)}, p = {_p_text(row['p_recomputed'])} "
            f"({_decision(row['reject_recomputed'])}); the paper prints p = {row['p_reported']:.3f} "
            f"({_decision(row['reject_reported'])})")


def _table_of(arch: str) -> str:
    """Which of Tables 1-3 holds an architecture's means and stds ("Tables 1–3" if unknown)."""
    sources = paper_tables.load_tables().query("arch == @arch")["source"].unique()
    return str(sources[0]) if len(sources) == 1 else "Tables 1–3"


def _core_explanation(row) -> str:
    """The numbers behind one disagreement, without the paper's prose (empty where it agrees)."""
    if bool(row["agrees"]):
        return ""
    metric, treatment, baseline = _comparison_text(row)
    source, printed = row["source"], row["p_reported"]
    table = _table_of(row["arch"])
    if _missing(row["p_recomputed"]):
        return (f"{table} gives no usable {metric} mean and std for {treatment} or {baseline}, so the printed "
                f"p = {printed:.3f} of {source} cannot be checked.")
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
            f"{table} gives {treatment} a mean {metric} of {_num(t.mean)} ± {_num(t.std)}, {relation}{than} "
            f"{baseline}'s {_num(b.mean)} ± {_num(b.std)} ({'lower' if lower else 'higher'} is more similar to "
            f"the teacher); with n = {t.n} each the difference {_num(row['diff'])} has se {_num(row['se'])}, "
            f"so z = {_num(row['z'], 2)} and p = {_p_text(row['p_recomputed'])}: "
            f"{_decision(row['reject_recomputed'])} at {ALPHA}.")
    else:
        parts.append(f"Recomputed: z = {_num(row['z'], 2)}, p = {_p_text(row['p_recomputed'])} "
                     f"({_decision(row['reject_recomputed'])} at {ALPHA}).")
    if bool(row["reject_reported"]) != bool(row["reject_recomputed"]):
        if favours and not bool(row["reject_reported"]):
            parts.append(
                f"{treatment} is significantly more similar to the teacher by the paper's own numbers; the printed "
                f"p = {printed:.3f} (H0 retained) would need its mean to be {'above' if lower else 'below'} the "
                f"baseline's, the opposite of what {table} shows.")
        else:
            printed_decision = "rejects" if bool(row["reject_reported"]) else "retains"
            parts.append(f"{source} prints p = {printed:.3f} and so {printed_decision} H0: the opposite of the "
                         f"decision its own means and stds support.")
    else:
        parts.append(f"{source} prints p = {printed:.3f}: the same decision on H0, but off by "
                     f"{abs(printed - float(row['p_recomputed'])):.3f}, more than the ±{paper_tables.AGREE_TOL} "
                     f"rounding tolerance.")
    return " ".join(parts)


def _context(row) -> str:
    """What the paper's prose says about a disagreeing cell, where that matters ("" otherwise)."""
    return "" if bool(row["agrees"]) else _TEXT_CONTEXT.get((row["source"], row["metric"]), "")


def _explanation(row) -> str:
    """A short paragraph: why a printed p-value disagrees with the recomputed one (empty where it agrees)."""
    return " ".join(part for part in (_core_explanation(row), _context(row)) if part)


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
                 "observed_outcome", "verdict", "reason", "note", "error"]


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
        })
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Summary, JSON, markdown
# ---------------------------------------------------------------------------------------------


def _pvalue_label(row) -> str:
    metric, treatment, baseline = _comparison_text(row)
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
                      sorted(Counter(pv.loc[~pv["agrees"], "source"]).items(), key=lambda kv: _source_key(kv[0])))
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
    }


def _audit(claims=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    pv = pvalue_audit()
    cl = claim_audit(claims)
    return pv, cl, _summary(pv, cl)


def audit_json(claims=None) -> dict:
    """``{"pvalues": [...], "claims": [...], "summary": {...}}``: plain JSON (no NaN: missing is null)."""
    pv, cl, summary = _audit(claims)
    return {"pvalues": _records(pv), "claims": _records(cl), "summary": summary}


def _pvalue_table(rows: pd.DataFrame) -> list[str]:
    out = ["| metric | treatment | baseline | p printed | p recomputed | z | printed → | recomputed → | check |",
           "|---|---|---|---:|---:|---:|---|---|---|"]
    for _, row in rows.iterrows():
        metric, treatment, baseline = _comparison_text(row)
        cells = [metric, treatment, baseline, f"{row['p_reported']:.3f}", _p_text(row["p_recomputed"]),
                 _num(row["z"], 2), _decision(row["reject_reported"]), _decision(row["reject_recomputed"])]
        if bool(row["agrees"]):
            cells.append("✅ agrees")
        else:
            cells = [f"**{c}**" for c in cells] + ["❌ **disagrees**"]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


def _outcome_text(outcome, p=None) -> str:
    if _missing(outcome) or outcome == "":
        return "–"
    text = {"reject": "reject H0", "retain": "retain H0"}.get(outcome, str(outcome))  # other kinds: holds/fails
    if not _missing(p) and outcome:
        text += f" (p = {float(p):.3f})"
    return text


def audit_markdown(claims=None) -> str:
    """The audit as GitHub-flavoured markdown: one p-value table per source table, the claim check, a summary."""
    pv, cl, summary = _audit(claims)
    n, tol = paper_tables.PAPER_N, paper_tables.AGREE_TOL
    out = ["# Audit: the paper against its own numbers", "",
           "> Nothing was trained. Every number here comes from the paper's Tables 1–8 "
           "(`fixtures/paper/`).", "",
           "## Summary", "", summary["line"], ""]
    for e in summary["pvalue_exceptions"]:
        out.append(f"- ❌ p-value, {e['label']}: {_sentence(e['explanation'])}")
    for e in summary["claim_exceptions"]:
        note = f" Note: {_sentence(e['note'])}" if e.get("note") else ""
        out.append(f"- {VERDICT_LABEL.get(e['verdict'], e['verdict'])}: claim `{e['id']}` ({e['source']}): "
                   f"{_sentence(e['reason'])}{note}")
    if summary["pvalue_exceptions"] or summary["claim_exceptions"]:
        out.append("")

    out += ["## 1. Printed p-values vs recomputed", "",
            f"Each p-value of Tables 4–8 is recomputed from the means and standard deviations of Tables 1–3 with "
            f"n = {n} students per group: one-tailed two-sample z-test, se = √(s₁²/n₁ + s₂²/n₂), H_a \"the KD "
            f"students are more similar to the teacher than the baseline\", significance {ALPHA}. A printed value "
            f"*agrees* when it is within ±{tol} of the recomputed one (the paper rounds to 3 dp) and both give the "
            f"same decision on H0. z > 0 favours H_a.", ""]
    for source in sorted(pv["source"].unique(), key=_source_key):
        rows = pv[pv["source"] == source]
        archs = ", ".join(arch_label(a) for a in dict.fromkeys(rows["arch"]))
        baselines = ", ".join(dict.fromkeys(_setup_label(r["baseline"], r["baseline_alpha"]) for _, r in rows.iterrows()))
        bad = int((~rows["agrees"]).sum())
        status = f"{len(rows) - bad} of {len(rows)} agree" + (f", **{bad} disagree**" if bad else "")
        out += [f"### {source}: {archs}, KD vs {baselines} ({status})", ""]
        out += _pvalue_table(rows)
        out.append("")
        contexts = []
        for _, row in rows[~rows["agrees"]].iterrows():
            metric, treatment, baseline = _comparison_text(row)
            out += [f"**❌ {metric}, {treatment} vs {baseline}: printed p = {row['p_reported']:.3f}, recomputed "
                    f"p = {_p_text(row['p_recomputed'])}.** {_core_explanation(row)}", ""]
            context = _context(row)
            if context and context not in contexts:
                contexts.append(context)
        for context in contexts:
            out += [context, ""]

    out += ["## 2. Claims checked against the paper's own numbers", "",
            f"Each claim in `claims/` evaluated with Tables 1–3 as evidence (n = {n}): *reproduced* when the "
            f"outcome the tables support (the decision on H0, or whether the statement holds) matches the one the "
            f"paper reports. A claim the tables have no numbers for is *not evaluable from the tables*.", "",
            "| claim | source | kind | sentence | paper | from the tables | verdict | reason | note |",
            "|---|---|---|---|---|---|---|---|---|"]
    for _, row in cl.iterrows():
        verdict = VERDICT_LABEL.get(row["verdict"], row["verdict"])
        if row["verdict"] not in ("reproduced",):
            verdict = f"**{verdict}**"
        cells = [f"`{row['id']}`", row["source"], row["kind"], row["sentence"],
                 _outcome_text(row["paper_outcome"], row["paper_p"]), _outcome_text(row["observed_outcome"]),
                 verdict, row["reason"], row["note"]]
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    out += ["", "---", "", summary["line"], ""]
    return "\n".join(out)
