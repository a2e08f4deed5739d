"""The reproduction report as one self-contained HTML file.

``render_html(document)`` renders the report document of ``kdclaims.render.document.build_document``: the
title, the smoke/paper notice as a banner, the headline counts, the method, then per architecture its
figure (``kdclaims.render.figures``) and its claims with their numbers, the paper's Tables 1-3 rebuilt from the
observed populations, the audit of the paper's printed p-values, and the provenance.

The file stands alone: inline CSS, no scripts, no external fonts or links; figures are embedded as
``data:image/png;base64,...``. Every piece of text from the document is escaped. Numbers, p-values and
labels come from ``kdclaims.render.format``, with the typographic minus.
"""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from html import escape
from importlib import resources

from kdclaims.metrics import METRICS, SIMILARITY_READINGS
from kdclaims.render.document import VERDICTS
from kdclaims.render.figures import BETTER_MARK, WORSE_MARK, archs_with_members, figure_png_bytes
from kdclaims.render.format import (
    MISSING, VERDICT_RULES, VERDICT_SYMBOL, arch_label, correction_text, fragility_text, metric_label, number, ordered_archs, outcome,
    paired_text, pvalue,
    paper_pvalue, mean_std, seed_text, setup_label, setup_order_key, short_setup_label, to_float, verdict_label,
    decision, p_clause, source_order_key, verdict_words, SIGN_CONVENTION, ci_text, coverage_text,
    design_rules, design_text, look_action_text, look_bound_text, look_sizes_text, look_z, members_text, percent,
    stop_text, teachers_text,
)

__all__ = ["render_html"]

KIND_TEXT = {"smoke": "smoke run", "reproduction": "reproduction", "paper": "paper's own numbers"}
KEY_CHARS = 12  # cache keys are shown abbreviated, the full key in a title attribute
MEMBER_ROWS_MAX = 1500  # the per-member table is included (collapsed) up to this many members

# The stylesheet is package data (kdclaims/render/report.css), inlined into every page.
CSS = "\n" + resources.files("kdclaims.render").joinpath("report.css").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _e(value) -> str:
    """Escaped text; None becomes an en dash."""
    return MISSING if value is None else escape(str(value), quote=True)


def _typeset_number(value, digits: int = 4) -> str:
    """``format.number`` with the typographic minus of a typeset page."""
    return number(value, digits, unicode_minus=True)


def _verdict_badge(verdict) -> str:
    v = str(verdict)
    return f'<span class="v v-{_e(v)}">{_e(verdict_label(v, VERDICT_SYMBOL))}</span>'


def _key(key, chars: int = KEY_CHARS) -> str:
    if not key:
        return MISSING
    key = str(key)
    short = key if len(key) <= chars else key[:chars] + "…"
    return f'<code title="{_e(key)}">{_e(short)}</code>'


def _anchor(text) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text))


def _stats(stats: dict | None, digits: int = 4, n: bool = True) -> str:
    if not stats:
        return MISSING
    text = mean_std(stats, digits, unicode_minus=True)
    if n and stats.get("n") is not None:
        text += f" (n={_e(stats['n'])})"
    return text


def _em(text: str) -> str:
    """Escaped text whose markdown *emphasis* (as in format.VERDICT_RULES) becomes <em>."""
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", _e(text))


def _table(head: list[str], rows: list[str], cls: str = "", wrap_cls: str = "") -> str:
    """``head``: ready <th> cells; ``rows``: ready <tr> rows."""
    return (f'<div class="table-wrap {wrap_cls}"><table class="{cls}"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _th(text: str, num: bool = False, title: str | None = None) -> str:
    t = f' title="{_e(title)}"' if title else ""
    c = ' class="num"' if num else ""
    return f"<th{c}{t}>{text}</th>"


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _archs(document: dict) -> list[str]:
    """Every architecture the document speaks of: claims, members, headline (the paper's order first)."""
    return ordered_archs([c.get("arch") for c in document.get("claims") or []] + archs_with_members(document)
                         + list((document.get("headline") or {}).get("by_arch") or {}))


def _header(document: dict, archs: list[str]) -> str:
    kind = document.get("kind") or "reproduction"
    bits = [f'<span class="kind kind-{_e(kind)}">{_e(KIND_TEXT.get(kind, kind))}</span>']
    if document.get("created_at"):
        bits.append(f"created {_e(document['created_at'])}")
    if document.get("evaluation_path"):
        bits.append(f"from <code>{_e(document['evaluation_path'])}</code>")
    out = [f"<h1>{_e(document.get('title') or 'Reproduction report')}</h1>",
           f'<div class="subtitle">{" · ".join(bits)}</div>']
    notice = document.get("notice")
    if notice:
        heading = {"smoke": "Smoke run — not a reproduction", "paper": "The paper's own numbers as evidence"}.get(kind, "Note")
        out.append(f'<div class="banner banner-{_e(kind)}" role="note"><strong>{_e(heading)}</strong>{_e(notice)}</div>')
    links = [("headline", "Headline"), ("method", "Setup and method")]
    links += [(f"arch-{_anchor(a)}", arch_label(a)) for a in archs]
    if document.get("sequential"):
        links.append(("sequential", "Sequential looks"))
    links += [("tables", "Tables 1–3 rebuilt"), ("audit", "Audit of the paper's p-values"), ("provenance", "Provenance")]
    out.append('<nav class="toc">' + "".join(f'<a href="#{_e(i)}">{_e(t)}</a>' for i, t in links) + "</nav>")
    return "\n".join(out)


def _headline(document: dict) -> str:
    h = document.get("headline") or {}
    counts = h.get("verdicts") or {}
    tiles = [f'<div class="tile"><div class="n">{_e(h.get("total", 0))}</div><div class="l">claims</div></div>']
    for v in VERDICTS:
        if v == "error" and not counts.get(v):
            continue
        tiles.append(f'<div class="tile {v}"><div class="n">{_e(counts.get(v, 0))}</div>'
                     f'<div class="l">{_e(verdict_words(v))}</div></div>')
    head = [_th("architecture"), _th("claims", True)] + [_th(_e(verdict_label(v, VERDICT_SYMBOL)), True) for v in VERDICTS]
    rows = []
    by_arch = h.get("by_arch") or {}
    for arch in ordered_archs(by_arch):
        c = by_arch[arch]
        cells = [f'<td><a href="#arch-{_e(_anchor(arch))}">{_e(arch_label(arch))}</a></td>',
                 f'<td class="num">{_e(sum(c.get(v, 0) for v in VERDICTS))}</td>']
        for v in VERDICTS:
            n = c.get(v, 0)
            cells.append(f'<td class="num"><span class="{"zero" if not n else "count-" + v}">{_e(n)}</span></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    missing = h.get("not_evaluated") or []
    coverage = (f'<p class="coverage"><strong>{_e(coverage_text(h))}</strong>.'
                + (f' Not evaluated: {", ".join(f"<code>{_e(i)}</code>" for i in missing)}.' if missing else "")
                + "</p>")
    return ('<section id="headline"><h2>Headline</h2>' + coverage +
            f'<div class="tiles">{"".join(tiles)}</div>'
            + (_table(head, rows, "headline", "short") if rows else "") + "</section>")


def _correction(correction: dict | None) -> str:
    escaped = {k: _e(v) for k, v in correction.items()} if correction else correction
    return correction_text(escaped, strong=lambda word: f"<strong>{word}</strong>")


def _method(document: dict) -> str:
    method = document.get("method") or {}
    prov = document.get("provenance") or {}
    profile = prov.get("profile") or {}
    if prov.get("evidence") == "paper" or document.get("kind") == "paper":
        n_text = "n = 385 per setup (the paper's)"
    else:
        n_text = f"{_e(profile.get('n_seeds'))} seeds ({_e(profile.get('seeds'))})"
    readings = ", ".join(_e(r) for _, _, r in SIMILARITY_READINGS.values())
    items = [
        f"Profile: <strong>{_e(profile.get('name'))}</strong>: {_e(profile.get('description'))}",
        f"Students per population: {n_text}; teacher: seed 0, every student starts from the teacher's initialisation"
        + (f"; teachers' test accuracy: {_e(teachers_text(document.get('teachers')))}" if document.get("teachers") else ""),
        f"Test: {_e(method.get('test', 'one-tailed Welch t-test'))}, significance {_e(method.get('alpha', 0.025))}; "
        "95% CI of the improvement and d = Cohen's d (pooled sd), both in the H<sub>a</sub> direction (see the sign convention at the top)",
        "Verdict: <em>reproduced</em> when our outcome (reject/retain H0) matches the paper's, under these rules:<ul>"
        + "".join(f"<li>{_em(rule)}</li>" for rule in VERDICT_RULES) + "</ul>",
        f"Family-wise correction: {_correction(method.get('correction'))}"
        + "".join(f"<br>verdict changed by the correction: <code>{_e(c['id'])}</code> {_e(verdict_words(c['before']))}"
                  f" → {_e(verdict_words(c['after']))}" for c in method.get("corrected_verdicts") or []),
        "Compression threshold (Section 3): the paper does not say how a distance becomes a similarity; we read "
        f"{readings}, and a student reaches 95% only if all four are ≥ 0.95 at once",
        "Bounds hold when every cell's one-sided 97.5% upper confidence bound (t quantile) is below the bound "
        "(an intersection-union test)",
    ]
    sequential = document.get("sequential")
    if sequential:
        items.append(f"Design: {_e(design_text(sequential.get('design')))}; members "
                     f"{_e(members_text(sequential.get('members')))}. Its rules:<ul>"
                     + "".join(f"<li>{_e(rule)}</li>" for rule in design_rules(sequential.get("design"))) + "</ul>")
    return ('<section id="method"><h2>Setup and method</h2><ul class="method">'
            + "".join(f"<li>{i}</li>" for i in items) + "</ul></section>")


def _arm_cell(arm: dict | None) -> str:
    if not arm:
        return '<td class="arm">–</td>'
    label = arm.get("label") or arm.get("population")
    n = f" · n={_e(arm['n'])}" if arm.get("n") is not None else ""
    return (f'<td class="arm" title="{_e(arm.get("population"))}"><span class="lab">{_e(label)}{n}</span>'
            f'<span class="val">{_stats(arm, n=False)}</span></td>')


def _arms_list(rows: list[dict]) -> str:
    items = []
    for i, row in enumerate(rows, 1):
        if "mean" not in row:
            continue
        items.append(f'<li><span class="rank">{i}.</span> {_e(row.get("label") or row.get("population"))}: '
                     f'<span class="val">{_stats(row, n=False)}</span></li>')
    return f'<ol class="arms">{"".join(items)}</ol>' if items else ""


def _claim_cell(claim: dict) -> str:
    note = f'<div class="note"><strong>Note:</strong> {_e(claim["note"])}</div>' if claim.get("note") else ""
    when = f' · evaluated {_e(claim["evaluated_at"])}' if claim.get("evaluated_at") else ""
    return (f'<td class="claim" id="claim-{_e(claim.get("id"))}"><code class="cid">{_e(claim.get("id"))}</code>'
            f'<span class="src">{_e(claim.get("source"))} · {_e(claim.get("kind"))}{when}</span>'
            f'<div class="sentence">{_e(claim.get("sentence"))}</div>{note}</td>')


def _claim_row(claim: dict, show_power: bool = True) -> str:
    d = claim.get("details") or {}
    cells = [_claim_cell(claim)]
    if "test" in d:
        test, pw = dict(d.get("test") or {}), d.get("power") or {}
        p_cell = _e(pvalue(test.get("p_value")))
        correction = claim.get("correction")
        if correction:
            p_cell = (f'<span title="{_e(correction.get("method"))}-adjusted over {_e(correction.get("family"))}">'
                      f'{_e(pvalue(correction.get("p_adjusted")))}<sup>adj</sup></span><br>'
                      f'<span class="muted small">raw {_e(pvalue(correction.get("p_raw", test.get("p_value"))))}</span>')
        direction = "&lt;" if d.get("direction") == "less" else "&gt;"
        ci = _e(ci_text(test, d.get("direction"), unicode_minus=True))
        power_title = f' title="{_e(pw.get("basis"))}; effect {_e(_typeset_number(pw.get("effect")))}"' if pw.get("basis") else ""
        cells += [f'<td class="metric">{_e(d.get("metric_label") or d.get("metric"))}<br>'
                  f'<span class="muted small">H<sub>a</sub>: T {direction} B</span></td>',
                  _arm_cell(d.get("treatment")), _arm_cell(d.get("baseline")),
                  f'<td class="num">{_typeset_number(test.get("t"), 2)}</td>', f'<td class="num">{p_cell}</td>',
                  f'<td class="num">{_typeset_number(test.get("effect_size"), 2)}</td>', f'<td class="num">{ci}</td>']
        if show_power:
            cells.append(f'<td class="num"{power_title}>{_typeset_number(pw.get("power"), 2)}</td>')
    else:
        summary = d.get("summary") or claim.get("error") or claim.get("reason")
        metric = d.get("metric_label")
        arms = _arms_list(d.get("ranking") or d.get("arms") or [])
        cells.append(f'<td class="summary" colspan="{8 if show_power else 7}"><span class="kindtag">{_e(claim.get("kind"))}</span>'
                     + (f"<strong>{_e(metric)}</strong>: " if metric else "") + f"{_e(summary)}{arms}</td>")
    paper = claim.get("paper") or {}
    paper_p = f'<br><span class="lab"></span> <span class="small">p = {paper_pvalue(paper["p"])}</span>' if paper.get("p") is not None else ""
    cells += [f'<td class="outcome"><span class="lab">paper</span> {_e(outcome(paper.get("outcome")))}{paper_p}<br>'
              f'<span class="lab">ours</span> {_e(outcome(claim.get("observed_outcome")))}</td>',
              f'<td class="verdict">{_verdict_badge(claim.get("verdict"))}<span class="reason">{_e(claim.get("reason"))}</span>'
              + "".join(f'<br><span class="small">{_e(x)}</span>' for x in _verdict_extras(d)) + '</td>']
    return f"<tr>{''.join(cells)}</tr>"


def _verdict_extras(details: dict) -> list[str]:
    """Beside a comparison's verdict: the paired test, fragility (#12) and, after --sequential, the look it stopped
    at; the bound is in the reason."""
    extras = [paired_text(details)] if (details.get("paired") or {}).get("available") else []
    extras += [f"stopped at {stop_text(details['sequential'])}"] if details.get("sequential") else []
    return extras + ([fragility_text(details)] if fragility_text(details) else [])


def _claim_head(show_power: bool) -> list[str]:
    return ([_th("claim"), _th("metric"), _th("treatment (T)"), _th("baseline (B)"),
             _th("t", True, "Welch's t (paired t with --pairing seed), signed so that positive favours H_a"),
             _th("p", True), _th("d", True, "Cohen's d, pooled sd, in the H_a direction"),
             _th("95% CI of improvement (H<sub>a</sub>)", True, "95% CI of the improvement in the H_a direction")]
            + ([_th("power", True, "power against the margin, from the observed stds and n (shown, never deciding)")]
               if show_power else [])
            + [_th("outcome (H0)"), _th("verdict")])


def _figure_html(arch: str, png: bytes | None, error: str | None, document: dict) -> str:
    if png:
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        smoke = " Smoke run: synthetic data, not a reproduction." if document.get("kind") == "smoke" else ""
        return (f'<figure><img src="{src}" alt="{_e(arch_label(arch))}: the distribution of every metric over the '
                f'members of each setup" width="1760" height="990">'
                f"<figcaption>{_e(arch_label(arch))}: each metric over the students of every setup (boxes: quartiles; "
                f"dots: members; dashed line: the independent students' mean). {BETTER_MARK} / {WORSE_MARK}: "
                f"significantly better / worse than the independent students (one-tailed Welch t-test at 0.025).{smoke}"
                f"</figcaption></figure>")
    if error:
        return f'<p class="muted">The figure could not be drawn: {_e(error)}</p>'
    return ""


def _arch_sections(document: dict, archs: list[str], figures: dict[str, bytes], errors: dict[str, str]) -> str:
    by_arch = defaultdict(list)
    for claim in document.get("claims") or []:
        by_arch[claim.get("arch")].append(claim)
    out = []
    for arch in archs:
        claims = by_arch.get(arch, [])
        c = (document.get("headline") or {}).get("by_arch", {}).get(arch) or {}
        counts = ", ".join(f'<span class="count-{v}">{_e(c.get(v, 0))} {_e(verdict_words(v))}</span>'
                           for v in VERDICTS if c.get(v) or v != "error")
        part = [f'<section id="arch-{_e(_anchor(arch))}"><h2>{_e(arch_label(arch))}</h2>',
                f"<p>{len(claims)} claim{'s' if len(claims) != 1 else ''}" + (f": {counts}" if claims else "") + "</p>",
                _figure_html(arch, figures.get(arch), errors.get(arch), document)]
        if claims:
            show_power = (document.get("method") or {}).get("show_paper_power", True)
            part.append(_table(_claim_head(show_power), [_claim_row(cl, show_power) for cl in claims], "claims"))
        part.append("</section>")
        out.append("".join(part))
    return "\n".join(out)


def _rebuilt(document: dict) -> str:
    rows = document.get("tables") or []
    out = ['<section id="tables"><h2>The paper\'s Tables 1–3, rebuilt</h2>']
    if not rows:
        out.append('<p class="muted">No trained populations in this evaluation: there is nothing to rebuild.</p></section>')
        return "".join(out)
    out.append("<p>Each cell: the observed mean ± std (n) over our students, and below it, muted, the paper's mean ± std "
               f"(n = 385). {BETTER_MARK} / {WORSE_MARK}: significantly better / worse than our independent students "
               "(one-tailed Welch t-test at 0.025). Arrows in the metric column: ↓ lower is better, ↑ higher is better.</p>")
    marks = {}
    for c in document.get("comparisons_vs_independent") or []:
        if c.get("better"):
            marks[(c.get("metric"), c.get("population"))] = f'<span class="better" title="{_e(p_clause(c.get("p_better")))}">{BETTER_MARK}</span>'
        elif c.get("worse"):
            marks[(c.get("metric"), c.get("population"))] = f'<span class="worse" title="{_e(p_clause(c.get("p_worse")))}">{WORSE_MARK}</span>'
    by_arch = defaultdict(list)
    for row in rows:
        by_arch[row.get("arch")].append(row)
    for arch in ordered_archs(by_arch):
        arch_rows = by_arch[arch]
        pops = {}
        for row in arch_rows:
            pops.setdefault(row.get("population"), row)
        order = sorted(pops.values(), key=lambda r: (setup_order_key(r), str(r.get("population"))))
        cells = {(r.get("metric"), r.get("population")): r for r in arch_rows}
        metrics = [m for m in METRICS if any(k[0] == m for k in cells)]
        metrics += sorted({k[0] for k in cells} - set(metrics))
        source = next((r.get("source") for r in arch_rows if r.get("source")), "")
        head = [_th("metric")] + [_th(_e(short_setup_label(p)), True, p.get("label") or p.get("population")) for p in order]
        body = []
        for m in metrics:
            info = METRICS[m] if m in METRICS else None
            arrow = "" if info is None else (" ↑" if info.higher_is_better else " ↓")
            label = next((r.get("metric_label") for r in arch_rows if r.get("metric") == m and r.get("metric_label")), m)
            tds = [f'<td class="metric">{_e(label)}{arrow}</td>']
            for p in order:
                r = cells.get((m, p.get("population")))
                if r is None:
                    tds.append('<td class="num">–</td>')
                    continue
                mark = f'<span class="mk">{marks.get((m, p.get("population")), "")}</span>'
                paper = f"paper {_stats(r.get('paper'), n=False)}" if r.get("paper") else "paper –"
                tds.append(f'<td class="num"><span class="obs">{_stats(r.get("observed"))} {mark}</span>'
                           f'<span class="pap">{paper}<span class="mk"></span></span></td>')
            body.append(f"<tr>{''.join(tds)}</tr>")
        title = f"{arch_label(arch)}" + (f" ({source})" if source else "")
        out.append(f"<h3>{_e(title)}</h3>" + _table(head, body, "rebuilt", "short"))
    out.append("</section>")
    return "".join(out)


def _audit(document: dict) -> str:
    audit = document.get("audit")
    out = ['<section id="audit"><h2>Audit: the paper against its own numbers</h2>']
    if not audit:
        out.append('<p class="muted">The audit was not included in this report.</p></section>')
        return "".join(out)
    summary = audit.get("summary") or {}
    pv_summary = summary.get("pvalues") or {}
    if summary.get("line"):
        out.append(f"<p><strong>{_e(summary['line'])}</strong></p>")
    out.append("<p>Each p-value printed in Tables 4–8 is recomputed from the means and standard deviations of "
               f"Tables 1–3 with n = {_e(pv_summary.get('n', 385))} students per group (one-tailed two-sample z-test, "
               f"significance {_e(pv_summary.get('alpha', 0.025))}). A printed value <em>agrees</em> when it is within "
               f"±{_e(pv_summary.get('tolerance', 0.015))} of the recomputed one and both give the same decision on H0. "
               "z &gt; 0 favours H<sub>a</sub>. Disagreements are highlighted, each with its explanation.</p>")
    pvalues = audit.get("pvalues") or []
    by_source = defaultdict(list)
    for row in pvalues:
        by_source[row.get("source")].append(row)

    head = [_th("architecture"), _th("metric"), _th("treatment"), _th("baseline"), _th("p printed", True),
            _th("p recomputed", True), _th("z", True), _th("printed →"), _th("recomputed →"), _th("check")]
    for source in sorted(by_source, key=source_order_key):
        rows = by_source[source]
        bad = sum(1 for r in rows if not r.get("agrees"))
        status = f"{len(rows) - bad} of {len(rows)} agree" + (f", {bad} disagree" if bad else "")
        body = []
        for r in rows:
            metric = metric_label(r.get("metric"))
            ok = bool(r.get("agrees"))
            cells = [_e(arch_label(r.get("arch"))), _e(metric), _e(setup_label(r.get("treatment"), r.get("treatment_alpha"))),
                     _e(setup_label(r.get("baseline"), r.get("baseline_alpha")))]
            tds = "".join(f"<td>{c}</td>" for c in cells)
            tds += (f'<td class="num">{paper_pvalue(r.get("p_reported"))}</td><td class="num">{_e(pvalue(r.get("p_recomputed")))}</td>'
                    f'<td class="num">{_typeset_number(r.get("z"), 2)}</td><td>{_e(decision(r.get("reject_reported")))}</td>'
                    f'<td>{_e(decision(r.get("reject_recomputed")))}</td>'
                    + ('<td><span class="ok">✔ agrees</span></td>' if ok else '<td><span class="bad-text">✘ disagrees</span></td>'))
            body.append(f'<tr class="{"ok-row" if ok else "bad"}">{tds}</tr>')
            if not ok:
                explanation = r.get("explanation") or r.get("short_explanation") or ""
                body.append(f'<tr class="explain"><td colspan="10">{_e(explanation)}</td></tr>')
        cls = "" if not bad else ' class="bad-text"'
        out.append(f'<h3>{_e(source)} <span{cls} style="font-weight:400;font-size:14px">({_e(status)})</span></h3>')
        out.append(_table(head, body, "audit"))

    exceptions = summary.get("claim_exceptions") or []
    if exceptions:
        body = []
        for r in exceptions:
            note = f'<div class="note"><strong>Note:</strong> {_e(r["note"])}</div>' if r.get("note") else ""
            body.append(f'<tr><td class="id">{_e(r.get("id"))}</td><td class="small">{_e(r.get("source"))}</td>'
                        f'<td class="verdict">{_verdict_badge(r.get("verdict"))}</td>'
                        f'<td class="claim" style="max-width:none">{_e(r.get("reason"))}{note}</td></tr>')
        out.append(f"<h3>Claims the paper's own numbers do not support ({len(exceptions)})</h3>"
                   + _table([_th("claim"), _th("source"), _th("verdict"), _th("why")], body, "audit-exceptions", "short"))
    fragile = summary.get("fragile_claims") or []
    if fragile:
        body = [f'<tr><td class="id">{_e(r.get("id"))}</td><td class="small">{_e(r.get("source"))}</td>'
                f'<td class="num">{_typeset_number(r.get("replication_probability"), 2)}</td></tr>' for r in fragile]
        out.append(f"<h3>Fragile claims ({len(fragile)}): a faithful replication at n = 385 reproduces the paper's "
                   "outcome less than 80% of the time</h3>"
                   + _table([_th("claim"), _th("source"), _th("replication probability", True)], body, "audit-fragile",
                            "short"))
    claims = audit.get("claims") or []
    if claims:
        counts = summary.get("claims") or {}
        out.append("<h3>Claims checked against the paper's own numbers</h3>"
                   "<p>Each claim evaluated with Tables 1–3 as evidence (n = 385): <em>reproduced</em> when the outcome "
                   "the tables support matches the one the paper reports."
                   + (f" {_e(counts.get('reproduced', 0))} of {_e(counts.get('total', len(claims)))} reproduced." if counts else "")
                   + "</p>")
        order = {"not_reproduced": 0, "inconclusive": 1, "not_evaluable": 2, "reproduced": 3}
        body = []
        for r in sorted(claims, key=lambda r: order.get(r.get("verdict"), 4)):
            paper_p = f" (p = {paper_pvalue(r['paper_p'])})" if r.get("paper_p") is not None else ""
            note = f'<div class="note"><strong>Note:</strong> {_e(r["note"])}</div>' if r.get("note") else ""
            body.append(f'<tr><td class="id">{_e(r.get("id"))}</td><td class="small">{_e(r.get("source"))}</td>'
                        f'<td>{_e(r.get("kind"))}</td><td class="claim">{_e(r.get("sentence"))}{note}</td>'
                        f'<td style="white-space:nowrap">{_e(outcome(r.get("paper_outcome")))}{paper_p}</td>'
                        f'<td style="white-space:nowrap">{_e(outcome(r.get("observed_outcome")))}</td>'
                        f'<td class="verdict">{_verdict_badge(r.get("verdict"))}<span class="reason">{_e(r.get("reason"))}</span></td></tr>')
        head = [_th("claim"), _th("source"), _th("kind"), _th("sentence"), _th("paper"), _th("from the tables"), _th("verdict")]
        out.append(f"<details><summary>All {len(claims)} claims against the paper's tables (not reproduced first)</summary>"
                   + _table(head, body, "audit-claims") + "</details>")
    out.append("</section>")
    return "".join(out)


def _sequential(document: dict) -> str:
    """A --sequential run: each claim's looks (statistics, boundary, decision) and the members per population."""
    sequential = document.get("sequential")
    if not sequential:
        return ""
    body = []
    for claim in sequential.get("claims") or []:
        looks = claim["looks"]
        for i, look in enumerate(looks):
            lead = (f'<td class="id" rowspan="{len(looks)}"><code>{_e(claim["id"])}</code></td>'
                    f'<td rowspan="{len(looks)}">{_e(stop_text(claim))}</td>') if i == 0 else ""
            body.append(f"<tr>{lead}<td class=\"num\">{_e(look.get('look'))}</td><td>{_e(look_sizes_text(look))}</td>"
                        f"<td class=\"num\">{_typeset_number(look.get('information_fraction'), 2)}</td>"
                        f"<td class=\"num\">{_typeset_number(look_z(look), 2)}</td>"
                        f"<td class=\"num\">{_typeset_number(look.get('efficacy_boundary'), 2)}</td>"
                        f"<td class=\"num\">{_typeset_number(look.get('nominal_alpha'), 4)}</td>"
                        f"<td class=\"num\">{_typeset_number(look.get('alpha_spent'), 4)}</td>"
                        f"<td>{_e(look_bound_text(look, unicode_minus=True))}</td><td>{_e(look_action_text(look))}</td></tr>")
    head = [_th("claim"), _th("stopped"), _th("look", True), _th("n", title="members per population at the look"),
            _th("information", True, "fraction of the final look's information"),
            _th("z", True, "the test statistic on the z scale"), _th("boundary", True, "the look's efficacy boundary"),
            _th("nominal α", True), _th("α spent", True),
            _th("upper bound vs margin or bound", title="repeated one-sided upper bound of the improvement"), _th("decision")]
    out = ['<section id="sequential"><h2>Sequential looks</h2>',
           "<p>Each claim was tested at each look until it crossed a boundary or reached the final look (the rules "
           "are under Setup and method).</p>", _table(head, body, "looks")]
    pops = sequential.get("populations") or []
    if pops:
        rows = []
        for p in pops:
            planned, used = p.get("members_planned"), p.get("members_used")
            share = percent(used / planned) if planned and used is not None else MISSING
            rows.append(f'<tr><td class="id">{_e(p["name"])}</td><td class="num">{_e(used)}</td>'
                        f'<td class="num">{_e(p.get("members_trained"))}</td><td class="num">{_e(planned)}</td>'
                        f'<td class="num">{_e(share)}</td></tr>')
        head = [_th("population"), _th("members used", True), _th("trained now", True), _th("fixed design", True),
                _th("used / fixed", True)]
        out.append("<h3>Members per population</h3>" + _table(head, rows, "pops"))
    out.append("</section>")
    return "".join(out)


def _provenance(document: dict) -> str:
    prov = document.get("provenance") or {}
    profile = prov.get("profile") or {}
    dataset = prov.get("dataset") or {}
    items: list[tuple[str, str]] = [("Evidence", _e(prov.get("evidence")))]
    if document.get("evaluation_path"):
        items.append(("Evaluation", f"<code>{_e(document['evaluation_path'])}</code>"
                      + (f", created {_e(document.get('created_at'))}" if document.get("created_at") else "")))
    items.append(("Profile", f"<strong>{_e(profile.get('name'))}</strong> — {_e(profile.get('description'))}"))
    items.append(("Seeds", f"{_e(profile.get('seeds'))} ({_e(profile.get('n_seeds'))} seeds)"))
    extras = {k: profile[k] for k in ("scale", "precision", "epochs", "model_overrides") if profile.get(k)}
    if extras:
        items.append(("Profile settings", "<code>" + _e(json.dumps(extras, sort_keys=True, ensure_ascii=False)) + "</code>"))
    if dataset:
        ds = [f"source <code>{_e(dataset.get('source'))}</code>"]
        if dataset.get("fingerprint"):
            ds.append(f"fingerprint {_key(dataset.get('fingerprint'), 16)}")
        ds.append(f"archive MD5 <code>{_e(dataset.get('archive_md5') or '–')}</code>")
        rest = {k: v for k, v in dataset.items() if k not in ("source", "fingerprint", "archive_md5")}
        if rest:
            ds.append('<span class="muted small">' + _e(json.dumps(rest, sort_keys=True, ensure_ascii=False, default=str)) + "</span>")
        items.append(("Dataset", "; ".join(ds)))
    elif prov.get("evidence") != "paper":
        items.append(("Dataset", '<span class="muted">not recorded in this evaluation (no fingerprint or MD5 saved)</span>'))
    if profile.get("differences_from_paper") and prov.get("evidence") != "paper":
        rows = "".join(f"<tr><td>{_e(d['setting'])}</td><td>{_e(d['value'])}</td><td>{_e(d['paper'])}</td></tr>"
                       for d in profile["differences_from_paper"])
        items.append(("Differs from the paper", "<table><tr><th>setting</th><th>this run</th><th>paper</th></tr>"
                      + rows + "</table>"))
    if profile.get("dataset"):
        items.append(("Dataset spec", "<code>" + _e(json.dumps(profile["dataset"], sort_keys=True, ensure_ascii=False,
                                                               default=str)) + "</code>"))
    items.append(("Code", f"kdclaims {_e(prov.get('kdclaims'))}, git <code>{_e(prov.get('git') or 'unknown')}</code>"))
    items.append(("Runtime", f"torch {_e(prov.get('torch'))}, Python {_e(prov.get('python'))}"))
    device = _e(prov.get("device"))
    if prov.get("cuda"):
        device += f" ({_e(prov['cuda'])})"
    items.append(("Device", device))
    if prov.get("host"):
        items.append(("Host", _e(prov.get("host"))))
    items.append(("Cache", f"<code>{_e(prov.get('cache_dir'))}</code>"))
    times = []
    if to_float(prov.get("duration_s")) is not None:
        times.append(f"run {_typeset_number(prov.get('duration_s'), 1)} s")
    if to_float(prov.get("training_time_s")) is not None:
        times.append(f"training of the members used {_typeset_number(prov.get('training_time_s'), 1)} s")
    if times:
        items.append(("Time", ", ".join(times)))
    out = ['<section id="provenance"><h2>Provenance</h2><dl class="prov">']
    out += [f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items]
    out.append("</dl>")

    pops = prov.get("populations") or []
    if pops:
        body = []
        for p in sorted(pops, key=lambda p: (str(p.get("arch")), setup_order_key(p), str(p.get("name")))):
            keys, seeds = list(p.get("keys") or []), list(p.get("seeds") or [])
            pairs = [f'<span title="seed {_e(s)}">{_key(k)}</span>' for s, k in zip(seeds, keys)]
            pairs += [_key(k) for k in keys[len(seeds):]]
            shown = " ".join(pairs[:4])
            if len(pairs) > 4:
                shown += (f"<details><summary>all {len(pairs)} keys</summary>" + " ".join(pairs[4:]) + "</details>")
            trained = p.get("trained_now")
            body.append(f'<tr><td class="id">{_e(p.get("name"))}</td><td class="num">{_e(p.get("n"))}</td>'
                        f'<td>{_e(seed_text(seeds))}</td><td>{_key(p.get("teacher_key"))}</td>'
                        f'<td class="keys">{shown}</td><td class="num">{_e(trained if trained is not None else "–")}</td>'
                        f'<td class="num">{_typeset_number(p.get("wall_time_s"), 1)}</td>'
                        f'<td>{_e(", ".join(p.get("devices") or []) or "–")}</td></tr>')
        head = [_th("population"), _th("n", True), _th("seeds"), _th("teacher key"),
                _th("member cache keys (hover for the full key)"), _th("trained now", True),
                _th("training time (s)", True), _th("devices")]
        out.append("<h3>Populations and cache keys</h3>" + _table(head, body, "pops"))

    members = document.get("members") or []
    if members and len(members) <= MEMBER_ROWS_MAX:
        metric_cols = [m for m in METRICS if any(m in row for row in members)]
        head = [_th("population"), _th("seed", True), _th("key")] + [
            _th(_e(METRICS[m].label) + (" ↑" if METRICS[m].higher_is_better else " ↓"), True) for m in metric_cols]
        body = []
        for row in sorted(members, key=lambda r: (str(r.get("arch")), setup_order_key(r), str(r.get("population")),
                                                  to_float(r.get("seed")) or 0)):
            tds = (f'<td class="id">{_e(row.get("population"))}</td><td class="num">{_e(row.get("seed"))}</td>'
                   f'<td>{_key(row.get("key"))}</td>' + "".join(f'<td class="num">{_typeset_number(row.get(m))}</td>' for m in metric_cols))
            body.append(f"<tr>{tds}</tr>")
        out.append(f"<details><summary>Every member's metrics ({len(members)} members)</summary>"
                   + _table(head, body, "members") + "</details>")
    elif members:
        out.append(f'<p class="muted">{len(members)} members: too many to list here; the JSON report has them all.</p>')
    out.append("</section>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def render_html(document: dict, figures: dict[str, bytes] | None = None) -> str:
    """The report document as one self-contained HTML page.

    ``figures``: PNG bytes per architecture. ``None`` (the default) draws them with
    ``kdclaims.render.figures.figure_png_bytes`` for every architecture with trained members; pass ``{}`` for
    a report without figures.
    """
    archs = _archs(document)
    errors: dict[str, str] = {}
    if figures is None:
        figures = {}
        for arch in archs_with_members(document):
            try:
                figures[arch] = figure_png_bytes(document, arch)
            except Exception as exc:  # noqa: BLE001 - a figure that fails must not lose the report
                errors[arch] = f"{type(exc).__name__}: {exc}"
    title = document.get("title") or "Reproduction report"
    if document.get("kind") == "smoke":
        title = "[SMOKE RUN] " + title
    version = (document.get("provenance") or {}).get("kdclaims")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="kdclaims{(" " + _e(version)) if version else ""}">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        _header(document, archs),
        f'<p class="convention">{_e(SIGN_CONVENTION).replace("H_a", "H<sub>a</sub>")}</p>',
        _headline(document),
        _method(document),
        _arch_sections(document, archs, figures, errors),
        _sequential(document),
        _rebuilt(document),
        _audit(document),
        _provenance(document),
        f'<footer>Written by kdclaims{(" " + _e(version)) if version else ""} from the report document '
        f'(schema version {_e(document.get("schema_version"))}). Every number comes from the saved evaluation'
        + (f" <code>{_e(document['evaluation_path'])}</code>" if document.get("evaluation_path") else "")
        + ".</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"
