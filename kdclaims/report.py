"""The reproduction report, written from a saved evaluation alone (no training, no cache reads).

``describe_result`` is the text a failing claim shows under pytest; ``markdown_report`` is the
document ``kdclaims report --format markdown`` writes. Every number is printed with the populations,
the test and the n behind it.
"""

from __future__ import annotations

import math

from kdclaims.models import arch_label
from kdclaims.metrics import SIMILARITY_READINGS

VERDICT_LABEL = {
    "reproduced": "✅ reproduced",
    "not_reproduced": "❌ not reproduced",
    "inconclusive": "⚠️ inconclusive",
    "error": "💥 not evaluated",
}


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):  # "inf", "-inf", "nan" as saved in JSON
        return {"inf": "∞", "-inf": "−∞"}.get(value, value)
    if isinstance(value, float) and not math.isfinite(value):
        return "∞" if value > 0 else ("−∞" if value < 0 else "nan")
    return f"{value:.{digits}f}"


def _p(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)) and 0 < value < 0.001:
        return f"{value:.1e}"
    return _num(value, 3)


def _outcome(outcome: str | None) -> str:
    return {"reject": "reject H0", "retain": "retain H0"}.get(outcome or "", "–")


def describe_result(result: dict) -> str:
    """Plain-text account of one claim's evaluation: what a failing pytest item prints."""
    lines = [f"claim {result['id']}: {VERDICT_LABEL.get(result['verdict'], result['verdict'])}",
             f"  {result['sentence']}",
             f"  source: {result['source']} · kind: {result['kind']} · evidence: {result['evidence']}"]
    d = result.get("details") or {}
    if "test" in d:
        t, b, test, pw = d["treatment"], d["baseline"], d["test"], d.get("power") or {}
        symbol = "<" if d["direction"] == "less" else ">"
        lines += [
            f"  metric: {d['metric_label']} · H_a: mean(treatment) {symbol} mean(baseline) · one-tailed z-test at {test['alpha']}",
            f"  treatment {t['population']:<28} mean {_num(t['mean'])}  std {_num(t['std'])}  n {t['n']}",
            f"  baseline  {b['population']:<28} mean {_num(b['mean'])}  std {_num(b['std'])}  n {b['n']}",
            f"  diff {_num(test['diff'])}  95% CI [{_num(test['ci_low'])}, {_num(test['ci_high'])}]  se {_num(test['se'])}"
            f"  z {_num(test['z'], 2)}  p {_p(test['p_value'])}  d {_num(test['effect_size'], 2)}",
            f"  power {_num(pw.get('power'), 2)} to detect {_num(pw.get('effect'))} ({pw.get('basis', '–')})",
        ]
        if test.get("note"):
            lines.append(f"  note: {test['note']}")
    elif d.get("summary"):
        lines.append(f"  evidence: {d['summary']}")
        for row in d.get("ranking") or d.get("arms") or []:
            if "mean" in row:
                lines.append(f"    {row['population']:<28} mean {_num(row['mean'])}  std {_num(row['std'])}  n {row['n']}")
    if result.get("note"):
        lines.append(f"  note: {result['note']}")
    paper = result["paper"]
    p_text = f" (p = {paper['p']})" if paper.get("p") is not None else ""
    lines.append(f"  expected (paper): {_outcome(paper['outcome'])}{p_text} · observed: {_outcome(result.get('observed_outcome'))}")
    lines.append(f"  verdict: {result['verdict']}: {result['reason']}")
    return "\n".join(lines)


def _arm_cell(arm: dict | None) -> str:
    if not arm:
        return "–"
    return f"{_num(arm['mean'])} ± {_num(arm['std'])} (n={arm['n']})"


def markdown_report(document: dict, figures: dict[str, str] | None = None) -> str:
    """GitHub-flavoured markdown of a report document; ``figures`` maps arch -> relative PNG path."""
    prov = document["provenance"]
    profile, results = prov["profile"], document["claims"]
    out = [f"# {document['title']}", ""]
    if document.get("notice"):
        out += [f"> **{document['notice']}**", ""]

    # Headline
    head = document["headline"]
    counts = head["verdicts"]
    out += ["## Headline", "",
            f"{head['total']} claims: " + ", ".join(f"**{counts.get(v, 0)}** {v.replace('_', ' ')}"
                                                  for v in ("reproduced", "not_reproduced", "inconclusive", "error")
                                                  if counts.get(v) or v != "error"), "",
            "| architecture | reproduced | not reproduced | inconclusive | not evaluated |", "|---|---:|---:|---:|---:|"]
    for arch, c in head["by_arch"].items():
        out.append(f"| {arch_label(arch)} | {c['reproduced']} | {c['not_reproduced']} | {c['inconclusive']} | {c['error']} |")
    out.append("")

    # Setup
    trained = prov["evidence"] == "trained"
    n_text = f"{profile['n_seeds']} seeds ({profile['seeds']})" if trained else "n = 385 (paper)"
    out += ["## Setup", "",
            f"- Profile: **{profile['name']}**: {profile['description']}",
            f"- Students per population: {n_text}; teacher: seed 0, every student starts from the teacher's initialisation",
            "- Test: one-tailed two-sample z-test, se = √(s₁²/n₁ + s₂²/n₂), significance 0.025; "
            "95% CI for the difference of means; d = Cohen's d (pooled sd) in the H_a direction",
            "- Verdict: *reproduced* when our outcome (reject/retain H0) matches the paper's; a retained H0 needs "
            "power ≥ 0.8 to detect the paper's effect at our n, else *inconclusive*",
            f"- Family-wise correction: {_correction_text(document['method'].get('correction'))}",
            "- Compression threshold (Section 3): the paper does not say how a distance becomes a similarity; we read "
            + ", ".join(f"{reading}" for _, _, reading in SIMILARITY_READINGS.values())
            + ", and a student reaches 95% only if all four are ≥ 0.95 at once",
            "- Rankings must lead the best other setup significantly; trends must improve at every step with a "
            "significant overall change; bounds hold when every cell's one-sided 97.5% upper confidence bound is "
            "below the bound (an intersection-union test)", ""]

    # Figures
    if figures:
        out += ["## Figures", "",
                "Distribution over students of each metric, test accuracy and loss, per setup (as the paper's Figures "
                "1, 2 and 4). The dashed line is the independent students' mean; ▲/▼: significantly better/worse than "
                "independent (one-tailed z-test, 0.025).", ""]
        for arch, path in figures.items():
            out += [f"![{arch_label(arch)}]({path})", ""]

    # Claims
    comparisons = [r for r in results if r["kind"] == "comparison"]
    others = [r for r in results if r["kind"] != "comparison"]
    out += ["## Claims", "", "### Comparisons (one-tailed z-tests)", "",
            "| claim | source | metric | treatment | baseline | z | p | d | 95% CI of diff | power | paper | observed | verdict |",
            "|---|---|---|---|---|---:|---:|---:|---|---:|---|---|---|"]
    for r in comparisons:
        d = r.get("details") or {}
        test, pw = d.get("test") or {}, d.get("power") or {}
        if r.get("correction"):
            test = dict(test, p_value=r["correction"]["p_adjusted"])
        paper = r["paper"]
        paper_text = _outcome(paper["outcome"]) + (f" (p={paper['p']})" if paper.get("p") is not None else "")
        if pw.get("paper_treatment"):
            paper_text += f"; {_num(pw['paper_treatment']['mean'])} vs {_num(pw['paper_baseline']['mean'])}"
        ci = f"[{_num(test.get('ci_low'))}, {_num(test.get('ci_high'))}]" if test else "–"
        t, b = d.get("treatment"), d.get("baseline")
        out.append(
            f"| `{r['id']}` | {r['source']} | {d.get('metric_label', '–')} "
            f"| {t['label'] if t else '–'}: {_arm_cell(t)} | {b['label'] if b else '–'}: {_arm_cell(b)} "
            f"| {_num(test.get('z'), 2)} | {_p(test.get('p_value'))} | {_num(test.get('effect_size'), 2)} | {ci} "
            f"| {_num(pw.get('power'), 2)} | {paper_text} | {_outcome(r.get('observed_outcome'))} "
            f"| {VERDICT_LABEL.get(r['verdict'], r['verdict'])} |")
    out.append("")
    if others:
        out += ["### Rankings, trends, bounds and thresholds", "",
                "| claim | kind | source | evidence | paper | observed | verdict |", "|---|---|---|---|---|---|---|"]
        for r in others:
            d = r.get("details") or {}
            out.append(f"| `{r['id']}` | {r['kind']} | {r['source']} | {_cell(d.get('summary') or r['reason'])} "
                       f"| {r['paper']['outcome']} | {r.get('observed_outcome') or 'cannot tell'} "
                       f"| {VERDICT_LABEL.get(r['verdict'], r['verdict'])} |")
        out.append("")
    out += ["### Claims in words", ""]
    for r in results:
        note = f" *Note: {r['note']}*" if r.get("note") else ""
        out.append(f"- `{r['id']}` ({r['source']}): {r['sentence']} — **{r['verdict'].replace('_', ' ')}**: {r['reason']}.{note}")
    out.append("")

    # Tables rebuilt
    if document["tables"]:
        out += ["## The paper's tables, rebuilt from the observed populations", "",
                "Each cell: observed mean ± std (n), then the paper's mean ± std (n = 385). "
                "A dash: the paper has no such cell.", ""]
        out += _rebuilt_tables_markdown(document["tables"])

    # Audit
    audit = document.get("audit")
    if audit:
        rows = audit["pvalues"]
        bad = [r for r in rows if not r["agrees"]]
        out += ["## Audit of the paper's own p-values", "",
                f"{len(rows) - len(bad)} of {len(rows)} p-values printed in Tables 4–8 agree (±0.015, same decision) "
                "with those recomputed from Tables 1–3 at n = 385. Full audit: `kdclaims audit-paper`.", ""]
        if bad:
            out += ["| source | arch | metric | treatment | baseline | printed p | recomputed p |", "|---|---|---|---|---|---:|---:|"]
            for r in bad:
                baseline = r["baseline"] + ("" if r["baseline_alpha"] is None else f" α={r['baseline_alpha']}")
                out.append(f"| {r['source']} | {r['arch']} | {r['metric']} | {r['treatment']} α={r['treatment_alpha']} "
                           f"| {baseline} | {r['p_reported']} | {_p(r['p_recomputed'])} |")
            out.append("")
            for r in bad:
                if r.get("explanation"):
                    out += [f"- {r['explanation']}"]
            out.append("")

    # Provenance
    out += ["## Provenance", "",
            f"- Evaluation: `{document.get('evaluation_path') or '–'}`, created {document.get('created_at') or '–'}",
            f"- Code: kdclaims {prov.get('kdclaims', '–')}, git `{prov.get('git') or 'unknown'}`; "
            f"torch {prov.get('torch', '–')}, Python {prov.get('python', '–')}; device {prov.get('cuda') or prov.get('device', '–')}",
            f"- Precision: {profile.get('precision', 'fp32')}; training backend {prov.get('backend') or 'local'}, "
            f"{prov.get('concurrent_members') or 1} member(s) at a time per device",
            f"- Cache: `{prov.get('cache_dir') or '–'}`"]
    dataset = prov.get("dataset")
    if dataset:
        out.append(f"- Dataset: `{dataset.get('source')}` fingerprint `{str(dataset.get('fingerprint'))[:16]}…`, "
                   f"archive MD5 `{dataset.get('archive_md5') or '–'}`")
    pops = prov.get("populations") or []
    if pops:
        out += [f"- Training time of the members used: {prov.get('training_time_s', 0.0):.1f} s", "",
                "| population | n | seeds | teacher key | first member key | training time (s) | devices |",
                "|---|---:|---|---|---|---:|---|"]
        for p in pops:
            out.append(f"| {p['name']} | {p['n']} | {_seed_text(p['seeds'])} | `{p['teacher_key'][:12]}` "
                       f"| `{p['keys'][0][:12]}` | {p['wall_time_s']:.1f} | {', '.join(p['devices'])} |")
    out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _stats_text(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{_num(stats['mean'])} ± {_num(stats['std'])} ({stats['n']})"


def _rebuilt_tables_markdown(rows: list[dict]) -> list[str]:
    out = []
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        populations = list(dict.fromkeys(r["population"] for r in mine))
        labels = {r["population"]: r["label"] for r in mine}
        out += [f"### {arch_label(arch)} ({mine[0]['source']})", "",
                "| metric | " + " | ".join(labels[p] for p in populations) + " |",
                "|---|" + "---|" * len(populations)]
        for metric in dict.fromkeys(r["metric"] for r in mine):
            cells = {r["population"]: r for r in mine if r["metric"] == metric}
            label = cells[populations[0]]["metric_label"] if populations[0] in cells else metric
            out.append(f"| {label} | " + " | ".join(
                f"{_stats_text(cells[p]['observed'])}<br>paper {_stats_text(cells[p]['paper'])}" if p in cells else "–"
                for p in populations) + " |")
        out.append("")
    return out


def _correction_text(correction: dict | None) -> str:
    if not correction or correction.get("method", "none") == "none":
        return "off (each claim tested at 0.025 on its own, as in the paper)"
    name = {"holm": "Holm (family-wise error rate)", "bh": "Benjamini–Hochberg (false discovery rate)"}[correction["method"]]
    return (f"**on**: {name} at 0.025 within each {correction['family']}, applied to comparisons and rankings; "
            "verdicts below use the adjusted p-values")


def _seed_text(seeds: list[int]) -> str:
    from kdclaims.profiles import seeds_to_text

    return seeds_to_text(tuple(seeds))


# ---------------------------------------------------------------------------------------------
# Terminal table, CSV, comparison of two runs
# ---------------------------------------------------------------------------------------------

VERDICT_STYLE = {"reproduced": "green", "not_reproduced": "red", "inconclusive": "yellow", "error": "magenta"}


def print_table(document: dict, console=None) -> None:
    """The report as rich tables in the terminal: headline, then one row per claim."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if document.get("notice"):
        console.print(f"[bold yellow]{document['notice']}[/]")
    head = document["headline"]
    summary = Table(title=f"{document['title']}: {head['total']} claims")
    for column in ("architecture", "reproduced", "not reproduced", "inconclusive", "not evaluated"):
        summary.add_column(column, justify="right" if column != "architecture" else "left")
    for arch, c in head["by_arch"].items():
        summary.add_row(arch_label(arch), *(str(c[v]) for v in ("reproduced", "not_reproduced", "inconclusive", "error")))
    console.print(summary)
    claims = Table(show_lines=False)
    for column in ("claim", "kind", "source", "evidence", "paper", "observed", "verdict"):
        claims.add_column(column, overflow="fold")
    for r in document["claims"]:
        d = r.get("details") or {}
        evidence = d.get("summary") or r["reason"]
        if r["kind"] == "comparison" and "test" in d:
            t, b, test = d["treatment"], d["baseline"], d["test"]
            evidence = (f"{_num(t['mean'])}±{_num(t['std'])} vs {_num(b['mean'])}±{_num(b['std'])} "
                        f"(n {t['n']}/{b['n']}), z {_num(test['z'], 2)}, p {_p(test['p_value'])}")
        claims.add_row(r["id"], r["kind"], r["source"], evidence, r["paper"]["outcome"],
                       r.get("observed_outcome") or "cannot tell",
                       f"[{VERDICT_STYLE.get(r['verdict'], 'white')}]{r['verdict'].replace('_', ' ')}[/]")
    console.print(claims)


def claims_csv(document: dict) -> str:
    from kdclaims.reportdoc import claims_frame

    return claims_frame(document).to_csv(index=False)


def members_csv(document: dict) -> str:
    import pandas as pd

    return pd.DataFrame(document["members"]).to_csv(index=False)


def compare_runs(a: dict, b: dict) -> list[dict]:
    """Claims whose verdict differs between two runs (evaluations or report documents), plus added/removed."""
    def verdicts(run):
        return {r["id"]: r for r in run.get("claims", run.get("results", []))}

    va, vb = verdicts(a), verdicts(b)
    changes = []
    for claim_id in sorted(set(va) | set(vb)):
        before, after = va.get(claim_id), vb.get(claim_id)
        if before and after and before["verdict"] == after["verdict"]:
            continue
        changes.append({"id": claim_id, "before": before["verdict"] if before else "absent",
                        "after": after["verdict"] if after else "absent",
                        "reason_after": after["reason"] if after else ""})
    return changes


def compare_markdown(a: dict, b: dict, name_a: str, name_b: str) -> str:
    changes = compare_runs(a, b)
    total = len({r["id"] for run in (a, b) for r in run.get("claims", run.get("results", []))})
    out = [f"# Verdicts that changed: `{name_a}` → `{name_b}`", "",
           f"{len(changes)} of {total} claims changed verdict.", ""]
    if changes:
        out += ["| claim | before | after | why (after) |", "|---|---|---|---|"]
        out += [f"| `{c['id']}` | {c['before']} | {c['after']} | {_cell(c['reason_after'])} |" for c in changes]
    return "\n".join(out) + "\n"
