"""The report, the comparison of two runs and the paper audit as GitHub-flavoured markdown.

``markdown_report`` is what ``kdclaims report --format markdown`` writes, ``compare_markdown`` what
``kdclaims report --compare`` prints, ``audit_markdown`` what ``kdclaims audit-paper`` prints. Every
number is printed with the populations, the test and the n behind it, through ``kdclaims.render.format``.
"""

from __future__ import annotations

import html
import re

from kdclaims.metrics import SIMILARITY_READINGS
from kdclaims.render.document import compare_runs
from kdclaims.render.format import (
    MISSING, SIGN_CONVENTION, VERDICT_RULES, arch_label, bound_text, ci_text, correction_text, coverage_text, decision,
    design_rules, design_text, fragility_text, look_action_text, look_bound_text, look_sizes_text, look_z, mean_std,
    members_text, number, outcome, p_clause, paired_text, paper_pvalue, percent, pvalue, seed_text, setup_label,
    source_order_key, stop_text, teachers_text, verdict_label, verdict_words,
)


def cell(text) -> str:
    """Text from a claim file or an evaluation made safe for markdown, in a table cell or in running text:
    one line, pipes escaped, and <, > and & as HTML entities, so markup in a claim's sentence (``<script>``,
    ``<img onerror=...>``) is shown as written, never run by whatever renders the markdown. Markdown's own
    emphasis is left alone. None and NaN: empty."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    return html.escape(re.sub(r"\s*\n\s*", " ", str(text)), quote=False).replace("|", "\\|")


def _arm_cell(arm: dict | None) -> str:
    return f"{mean_std(arm)} (n={arm['n']})" if arm else MISSING


def markdown_report(document: dict, figures: dict[str, str] | None = None) -> str:
    """GitHub-flavoured markdown of a report document; ``figures`` maps arch -> relative PNG path."""
    prov = document["provenance"]
    profile, results = prov["profile"], document["claims"]
    out = [f"# {document['title']}", ""]
    if document.get("notice"):
        out += [f"> **{document['notice']}**", ""]
    out += [f"> {SIGN_CONVENTION}", ""]

    # Headline
    head = document["headline"]
    counts = head["verdicts"]
    out += ["## Headline", "", f"**{coverage_text(head)}**.", ""]
    if head.get("not_evaluated"):
        out += [f"Not evaluated: {', '.join(f'`{i}`' for i in head['not_evaluated'])}.", ""]
    out += [f"{head['total']} claims: " + ", ".join(f"**{counts.get(v, 0)}** {verdict_words(v)}"
                                                  for v in ("reproduced", "not_reproduced", "inconclusive", "error")
                                                  if counts.get(v) or v != "error"), "",
            "| architecture | reproduced | not reproduced | inconclusive | not evaluated |", "|---|---:|---:|---:|---:|"]
    for arch, c in head["by_arch"].items():
        out.append(f"| {cell(arch_label(arch))} | {c['reproduced']} | {c['not_reproduced']} | {c['inconclusive']} | {c['error']} |")
    out.append("")

    # Setup
    trained = prov["evidence"] == "trained"
    n_text = f"{profile['n_seeds']} seeds ({profile['seeds']})" if trained else "n = 385 (paper)"
    out += ["## Setup", "",
            f"- Profile: **{cell(profile['name'])}**: {cell(profile['description'])}",
            f"- Students per population: {n_text}; teacher: seed 0, every student starts from the teacher's initialisation"
            + (f"; teachers' test accuracy: {teachers_text(document.get('teachers'))}" if document.get("teachers") else ""),
            f"- Test: {document['method'].get('test', 'one-tailed Welch t-test')}, significance "
            f"{document['method'].get('alpha', 0.025)}; 95% CI of the improvement and d = Cohen's d (pooled sd), "
            "both in the H_a direction (see the sign convention above)",
            "- Verdict: *reproduced* when our outcome (reject/retain H0) matches the paper's, under these rules:",
            *[f"  - {rule}" for rule in VERDICT_RULES],
            f"- Family-wise correction: {correction_text(document['method'].get('correction'), strong=lambda w: f'**{w}**')}",
            *[f"  - verdict changed by the correction: `{c['id']}` {verdict_words(c['before'])} → "
              f"{verdict_words(c['after'])}" for c in document["method"].get("corrected_verdicts") or []],
            "- Compression threshold (Section 3): the paper does not say how a distance becomes a similarity; we read "
            + ", ".join(f"{reading}" for _, _, reading in SIMILARITY_READINGS.values())
            + ", and a student reaches 95% only if all four are ≥ 0.95 at once",
            "- Bounds hold when every cell's one-sided 97.5% upper confidence bound (t quantile) is below the bound "
            "(an intersection-union test)"]
    sequential = document.get("sequential")
    if sequential:
        out += [f"- Design: {cell(design_text(sequential.get('design')))}; members "
                f"{cell(members_text(sequential.get('members')))}. Its rules:",
                *[f"  - {cell(rule)}" for rule in design_rules(sequential.get("design"))]]
    out.append("")
    if profile.get("differences_from_paper") and trained:
        out += ["What this profile changes from the paper's experiment:", "", "| setting | this run | paper |",
                "|---|---|---|"]
        out += [f"| {cell(d['setting'])} | {cell(d['value'])} | {cell(d['paper'])} |"
                for d in profile["differences_from_paper"]]
        out.append("")

    # Figures
    if figures:
        out += ["## Figures", "",
                "Distribution over students of each metric, test accuracy and loss, per setup (as the paper's Figures "
                "1, 2 and 4). The dashed line is the independent students' mean; ▲/▼: significantly better/worse than "
                "independent (one-tailed Welch t-test, 0.025).", ""]
        for arch, path in figures.items():
            out += [f"![{cell(arch_label(arch))}]({path})", ""]

    # Claims
    comparisons = [r for r in results if r["kind"] == "comparison"]
    show_power = document["method"].get("show_paper_power", True)
    others = [r for r in results if r["kind"] != "comparison"]
    out += ["## Claims", "", "### Comparisons (one-tailed Welch t-tests)", "",
            "| claim | source | metric | treatment | baseline | t | p | d | 95% CI of improvement (H_a) |"
            + (" power |" if show_power else "") + " paper | observed | verdict |",
            "|---|---|---|---|---|---:|---:|---:|---|" + ("---:|" if show_power else "") + "---|---|---|"]
    for r in comparisons:
        d = r.get("details") or {}
        test, pw = d.get("test") or {}, d.get("power") or {}
        if r.get("correction"):
            test = dict(test, p_value=r["correction"]["p_adjusted"])
        paper = r["paper"]
        paper_text = outcome(paper["outcome"]) + (f" (p={paper_pvalue(paper['p'])})" if paper.get("p") is not None else "")
        if pw.get("paper_treatment"):
            paper_text += f"; {number(pw['paper_treatment']['mean'])} vs {number(pw['paper_baseline']['mean'])}"
        ci = ci_text(test, d.get("direction"))
        t, b = d.get("treatment"), d.get("baseline")
        out.append(
            f"| `{cell(r['id'])}` | {cell(r['source'])} | {cell(d.get('metric_label', '–'))} "
            f"| {cell(t['label']) if t else '–'}: {_arm_cell(t)} | {cell(b['label']) if b else '–'}: {_arm_cell(b)} "
            f"| {number(test.get('t'), 2)} | {pvalue(test.get('p_value'))} | {number(test.get('effect_size'), 2)} | {ci} "
            + (f"| {number(pw.get('power'), 2)} " if show_power else "") + f"| {paper_text} | {outcome(r.get('observed_outcome'))} "
            f"| {verdict_label(r['verdict'])}{_verdict_extras(d)} |")
    out.append("")
    if others:
        out += ["### Rankings, trends, bounds and thresholds", "",
                "| claim | kind | source | evidence | paper | observed | verdict |", "|---|---|---|---|---|---|---|"]
        for r in others:
            d = r.get("details") or {}
            out.append(f"| `{cell(r['id'])}` | {cell(r['kind'])} | {cell(r['source'])} | {cell(d.get('summary') or r['reason'])} "
                       f"| {outcome(r['paper']['outcome'])} | {outcome(r.get('observed_outcome'), missing='cannot tell')} "
                       f"| {verdict_label(r['verdict'])} |")
        out.append("")
    out += ["### Claims in words", ""]
    for r in results:
        note = f" *Note: {cell(r['note'])}*" if r.get("note") else ""
        when = f", evaluated {r['evaluated_at']}" if head.get("mode") == "merged" and r.get("evaluated_at") else ""
        out.append(f"- `{cell(r['id'])}` ({cell(r['source'])}{when}): {cell(r['sentence'])} — **{verdict_words(r['verdict'])}**: "
                   f"{cell(r['reason'])}.{note}")
    out.append("")

    if sequential:
        out += _sequential_markdown(sequential)

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
                           f"| {baseline} | {paper_pvalue(r['p_reported'])} | {pvalue(r['p_recomputed'])} |")
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
            out.append(f"| {cell(p['name'])} | {p['n']} | {cell(seed_text(p['seeds']))} | `{p['teacher_key'][:12]}` "
                       f"| `{p['keys'][0][:12]}` | {number(p['wall_time_s'], 1)} | {', '.join(p['devices'])} |")
    out.append("")
    return "\n".join(out)


def _sequential_markdown(sequential: dict) -> list[str]:
    """A --sequential run: where each claim stopped and why, every look's statistics, the members per population."""
    out = ["## Sequential looks", "",
           "Each claim was tested at each look until it crossed a boundary or reached the final look (the rules are "
           "under Setup). n: members per population (treatment/baseline) at the look; information: the fraction of "
           "the final look's; z: the test statistic on the z scale against the look's efficacy boundary; the upper "
           "bound is the repeated one-sided bound of the improvement, against the claim's margin.", "",
           "| claim | stopped | look | n | information | z | boundary | nominal α | α spent | upper bound vs margin or bound | decision |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for claim in sequential.get("claims") or []:
        name, stopped = f"`{cell(claim['id'])}`", cell(stop_text(claim))
        for i, look in enumerate(claim["looks"]):
            out.append(f"| {name if i == 0 else ''} | {stopped if i == 0 else ''} | {look.get('look')} "
                       f"| {cell(look_sizes_text(look))} "
                       f"| {number(look.get('information_fraction'), 2)} | {number(look_z(look), 2)} "
                       f"| {number(look.get('efficacy_boundary'), 2)} | {number(look.get('nominal_alpha'), 4)} "
                       f"| {number(look.get('alpha_spent'), 4)} | {cell(look_bound_text(look))} "
                       f"| {cell(look_action_text(look))} |")
    out.append("")
    populations = sequential.get("populations") or []
    if populations:
        out += ["| population | members used | trained now | fixed design | used / fixed |", "|---|---:|---:|---:|---:|"]
        for p in populations:
            planned = p.get("members_planned")
            share = percent(p["members_used"] / planned) if planned and p.get("members_used") is not None else MISSING
            out.append(f"| {cell(p['name'])} | {p.get('members_used')} | {p.get('members_trained')} | {planned} | {share} |")
        out.append("")
    return out


def _stats_text(stats: dict | None) -> str:
    return f"{mean_std(stats)} ({stats['n']})" if stats else MISSING


def _rebuilt_tables_markdown(rows: list[dict]) -> list[str]:
    out = []
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        populations = list(dict.fromkeys(r["population"] for r in mine))
        labels = {r["population"]: r["label"] for r in mine}
        out += [f"### {cell(arch_label(arch))} ({cell(mine[0]['source'])})", "",
                "| metric | " + " | ".join(cell(labels[p]) for p in populations) + " |",
                "|---|" + "---|" * len(populations)]
        for metric in dict.fromkeys(r["metric"] for r in mine):
            cells = {r["population"]: r for r in mine if r["metric"] == metric}
            label = cells[populations[0]]["metric_label"] if populations[0] in cells else metric
            out.append(f"| {cell(label)} | " + " | ".join(
                f"{_stats_text(cells[p]['observed'])}<br>paper {_stats_text(cells[p]['paper'])}" if p in cells else "–"
                for p in populations) + " |")
        out.append("")
    return out


def compare_markdown(a: dict, b: dict, name_a: str, name_b: str) -> str:
    """Which verdicts changed between two runs (evaluations or report documents); a claim only one of
    them evaluated is said to be not evaluated there, not counted as a change."""
    entries = compare_runs(a, b)
    changes = [c for c in entries if c["changed"]]
    only_a = [c["id"] for c in entries if c["after"] == "not_evaluated"]
    only_b = [c["id"] for c in entries if c["before"] == "not_evaluated"]
    both = len({r["id"] for r in a.get("claims", a.get("results", []))}
               & {r["id"] for r in b.get("claims", b.get("results", []))})
    out = [f"# Verdicts that changed: `{name_a}` → `{name_b}`", "",
           f"{len(changes)} of {both} claims changed verdict (of the claims both runs evaluated).", ""]
    for ids, where in ((only_a, "B"), (only_b, "A")):
        if ids:
            out += [f"{len(ids)} claim(s) not evaluated in {where} (`{name_b if where == 'B' else name_a}`): "
                    + ", ".join(f"`{i}`" for i in ids) + ".", ""]
    if changes:
        out += ["| claim | before | after | why (after) |", "|---|---|---|---|"]
        out += [f"| `{cell(c['id'])}` | {verdict_words(c['before'])} | {verdict_words(c['after'])} | {cell(c['reason_after'])} |"
                for c in changes]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The paper audit (kdclaims audit-paper)
# ---------------------------------------------------------------------------------------------


def _sentence(text) -> str:
    """Text ending in exactly one full stop (or its own ! / ?)."""
    text = "" if text is None or (isinstance(text, float) and text != text) else str(text).strip()
    return text if not text or text[-1] in ".!?" else text + "."


def _pvalue_table(rows) -> list[str]:
    from kdclaims.audit import comparison_labels

    out = ["| metric | treatment | baseline | p printed | p recomputed | z | printed → | recomputed → | check |",
           "|---|---|---|---:|---:|---:|---|---|---|"]
    for _, row in rows.iterrows():
        # labels are text (escaped); p-values are ours and keep their "<0.001" as written
        cells = [*(cell(label) for label in comparison_labels(row)), paper_pvalue(row["p_reported"]),
                 pvalue(row["p_recomputed"]), number(row["z"], 2), decision(row["reject_reported"]),
                 decision(row["reject_recomputed"])]
        if bool(row["agrees"]):
            cells.append("✅ agrees")
        else:
            cells = [f"**{c}**" for c in cells] + ["❌ **disagrees**"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _paper_outcome(row) -> str:
    p = row["paper_p"]
    return outcome(row["paper_outcome"]) + ("" if p is None or p != p else f" (p = {paper_pvalue(p)})")


def audit_markdown(claims=None) -> str:
    """The paper audit: one p-value table per source table, the claim check, a summary."""
    from kdclaims import paper as paper_tables
    from kdclaims.audit import audit_frames, comparison_labels, core_explanation, text_context
    from kdclaims.stats import ALPHA

    pv, cl, summary = audit_frames(claims)
    n, tol = paper_tables.PAPER_N, paper_tables.AGREE_TOL
    out = ["# Audit: the paper against its own numbers", "",
           "> Nothing was trained. Every number here comes from the paper's Tables 1–8 "
           "(`kdclaims/paper_tables/`).", "",
           "## Summary", "", summary["line"], ""]
    for e in summary["pvalue_exceptions"]:
        out.append(f"- ❌ p-value, {e['label']}: {_sentence(e['explanation'])}")
    for e in summary["claim_exceptions"]:
        note = f" Note: {cell(_sentence(e['note']))}" if e.get("note") else ""
        out.append(f"- {verdict_label(e['verdict'])}: claim `{cell(e['id'])}` ({cell(e['source'])}): "
                   f"{cell(_sentence(e['reason']))}{note}")
    for e in summary.get("fragile_claims") or []:
        out.append(f"- fragile: claim `{cell(e['id'])}` ({cell(e['source'])}): a faithful replication at n = {n} would "
                   f"reproduce the paper's outcome with probability {number(e['replication_probability'], 2)} (< 0.8)")
    if summary["pvalue_exceptions"] or summary["claim_exceptions"] or summary.get("fragile_claims"):
        out.append("")

    out += ["## 1. Printed p-values vs recomputed", "",
            f"Each p-value of Tables 4–8 is recomputed from the means and standard deviations of Tables 1–3 with "
            f"n = {n} students per group: one-tailed two-sample z-test, se = √(s₁²/n₁ + s₂²/n₂), H_a \"the KD "
            f"students are more similar to the teacher than the baseline\", significance {ALPHA}. A printed value "
            f"*agrees* when it is within ±{tol} of the recomputed one (the paper rounds to 3 dp) and both give the "
            f"same decision on H0. z > 0 favours H_a.", ""]
    for source in sorted(pv["source"].unique(), key=source_order_key):
        rows = pv[pv["source"] == source]
        archs = ", ".join(arch_label(a) for a in dict.fromkeys(rows["arch"]))
        baselines = ", ".join(dict.fromkeys(setup_label(r["baseline"], r["baseline_alpha"]) for _, r in rows.iterrows()))
        bad = int((~rows["agrees"]).sum())
        status = f"{len(rows) - bad} of {len(rows)} agree" + (f", **{bad} disagree**" if bad else "")
        out += [f"### {source}: {archs}, KD vs {baselines} ({status})", ""]
        out += _pvalue_table(rows)
        out.append("")
        contexts = []
        for _, row in rows[~rows["agrees"]].iterrows():
            metric, treatment, baseline = comparison_labels(row)
            out += [f"**❌ {metric}, {treatment} vs {baseline}: printed p = {paper_pvalue(row['p_reported'])}, "
                    f"recomputed {p_clause(row['p_recomputed'])}.** {core_explanation(row)}", ""]
            context = text_context(row)
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
        verdict = verdict_label(row["verdict"])
        if row["verdict"] != "reproduced":
            verdict = f"**{verdict}**"
        cells = [f"`{row['id']}`", row["source"], row["kind"], row["sentence"], _paper_outcome(row),
                 outcome(row["observed_outcome"]), verdict, row["reason"], row["note"]]
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    out += ["", "---", "", summary["line"], ""]
    return "\n".join(out)


def _verdict_extras(details: dict) -> str:
    """Beside a comparison's verdict: a retained H0's bound vs margin, the paired test, the look a sequential run
    stopped it at, and fragility (#12)."""
    extras = []
    if details.get("effect_bound") and (details.get("test") or {}).get("reject") is False:
        extras.append(f"bound {bound_text(details)}")
    if (details.get("paired") or {}).get("available"):
        extras.append(paired_text(details))
    if details.get("sequential"):  # --sequential: the look it stopped at (every look: under Sequential looks)
        extras.append(f"stopped at {stop_text(details['sequential'])}")
    if fragility_text(details):
        extras.append(f"**{fragility_text(details)}**")
    return "".join(f"<br>{e}" for e in extras)

