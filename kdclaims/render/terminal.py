"""The report in the terminal: ``describe_result`` is the text a failing claim shows under pytest;
``print_table`` is ``kdclaims report --format table`` (rich tables)."""

from __future__ import annotations

from kdclaims.render.document import VERDICTS
from kdclaims.render.format import (
    SIGN_CONVENTION, arch_label, bound_text, ci_text, coverage_text, design_rules, design_text, fragility_text,
    look_action_text, look_bound_text, look_sizes_text, look_z, look_text, members_text, number, outcome, paired_text,
    paper_pvalue, pvalue, stop_text, verdict_label, verdict_words,
)

WIDE_TERMINAL = 160  # columns from which the claim table shows kind, source, paper and observed outcome
VERDICT_STYLE = {"reproduced": "green", "not_reproduced": "red", "inconclusive": "yellow", "error": "magenta"}


def describe_result(result: dict) -> str:
    """Plain-text account of one claim's evaluation: what a failing pytest item prints."""
    lines = [f"claim {result['id']}: {verdict_label(result['verdict'])}",
             f"  {result['sentence']}",
             f"  source: {result['source']} · kind: {result['kind']} · evidence: {result['evidence']}"]
    d = result.get("details") or {}
    if "test" in d:
        t, b, test, pw = d["treatment"], d["baseline"], d["test"], d.get("power") or {}
        symbol = "<" if d["direction"] == "less" else ">"
        lines += [
            f"  metric: {d['metric_label']} · H_a: mean(treatment) {symbol} mean(baseline) · one-tailed {test.get('test', 'welch-t')} test at {test['alpha']}",
            f"  treatment {t['population']:<28} mean {number(t['mean'])}  std {number(t['std'])}  n {t['n']}",
            f"  baseline  {b['population']:<28} mean {number(b['mean'])}  std {number(b['std'])}  n {b['n']}",
            f"  diff (T − B) {number(test['diff'])}  95% CI in the H_a direction {ci_text(test, d['direction'])}  "
            f"se {number(test['se'])}  z {number(test['z'], 2)}  p {pvalue(test['p_value'])}  d {number(test['effect_size'], 2)}",
            f"  power {number(pw.get('power'), 2)} to detect {number(pw.get('effect'))} ({pw.get('basis', '–')})",
            f"  {test.get('test', 'welch-t')} df {number(test.get('df'), 1)} · one-sided upper bound vs margin "
            f"{bound_text(d)} · {paired_text(d)}" + (f" · {fragility_text(d)}" if fragility_text(d) else ""),
        ]
        if test.get("note"):
            lines.append(f"  note: {test['note']}")
    elif d.get("summary"):
        lines.append(f"  evidence: {d['summary']}")
        for row in d.get("ranking") or d.get("arms") or []:
            if "mean" in row:
                lines.append(f"    {row['population']:<28} mean {number(row['mean'])}  std {number(row['std'])}  n {row['n']}")
    sequential = d.get("sequential")
    if sequential:  # --sequential: where the claim stopped, and each look it was tested at
        lines.append(f"  sequential: stopped at {stop_text(sequential, result.get('observed_outcome'))}")
        lines += [f"    {look_text(look)}" for look in sequential.get("looks") or []]
    if result.get("note"):
        lines.append(f"  note: {result['note']}")
    paper = result["paper"]
    p_text = f" (p = {paper_pvalue(paper['p'])})" if paper.get("p") is not None else ""
    lines.append(f"  expected (paper): {outcome(paper['outcome'])}{p_text} · observed: {outcome(result.get('observed_outcome'))}")
    lines.append(f"  verdict: {verdict_words(result['verdict'])}: {result['reason']}")
    return "\n".join(lines)


def print_table(document: dict, console=None) -> None:
    """The report as rich tables in the terminal: headline, then one row per claim."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    if document.get("notice"):
        console.print(f"[bold yellow]{document['notice']}[/]")
    console.print(SIGN_CONVENTION, highlight=False)
    head = document["headline"]
    console.print(f"[bold]{coverage_text(head)}[/]", highlight=False)
    if head.get("not_evaluated"):
        console.print("not evaluated: " + ", ".join(head["not_evaluated"]), highlight=False)
    summary = Table(title=f"{document['title']}: {head['total']} claims")
    summary.add_column("architecture")
    for verdict in VERDICTS:
        summary.add_column(verdict_words(verdict), justify="right")
    for arch, c in head["by_arch"].items():
        summary.add_row(arch_label(arch), *(str(c[v]) for v in VERDICTS))
    console.print(summary)
    claims = Table(show_lines=False)
    wide = console.width >= WIDE_TERMINAL  # narrower: the columns a reader can do without give way
    rows = []
    for r in document["claims"]:
        d = r.get("details") or {}
        evidence = d.get("summary") or r["reason"]
        if r["kind"] == "comparison" and "test" in d:
            t, b, test = d["treatment"], d["baseline"], d["test"]
            evidence = (f"{number(t['mean'])}±{number(t['std'])} vs {number(b['mean'])}±{number(b['std'])} "
                        f"(n {t['n']}/{b['n']}), t {number(test.get('t'), 2)}, p {pvalue(test['p_value'])}, "
                        f"CI {ci_text(test, d.get('direction'))}")
            if fragility_text(d):
                evidence += f"; {fragility_text(d)}"
        if head.get("mode") == "merged" and r.get("evaluated_at"):
            evidence += f" [evaluated {r['evaluated_at']}]"
        extra = (r["kind"], r["source"], outcome(r["paper"]["outcome"]),
                 outcome(r.get("observed_outcome"), missing="cannot tell")) if wide else ()
        rows.append((r["id"], Text(verdict_words(r["verdict"]), style=VERDICT_STYLE.get(r["verdict"], "white")),
                     *(Text(x) for x in extra), Text(evidence)))
    # An id is what users paste into -k: its column is as wide as the longest id, never wrapped nor cut;
    # every row is one line, and the evidence text is cut short instead (markdown and HTML hold all of it).
    names = ["claim", "verdict"] + (["kind", "source", "paper", "observed"] if wide else [])
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(names)]
    if wide:
        widths[names.index("source")] = min(widths[names.index("source")], 14)
    rest = console.width - sum(widths) - 3 * (len(names) + 1) - 1  # each column: padding 2 and a border
    for name, width in zip(names, widths):
        claims.add_column(name, width=width, no_wrap=True, overflow="ellipsis")
    claims.add_column("evidence", width=max(rest, 10), no_wrap=True, overflow="ellipsis")
    for row in rows:
        claims.add_row(*row)
    console.print(claims)
    if document.get("sequential"):
        print_sequential(document["sequential"], console)


def print_sequential(sequential: dict, console) -> None:
    """A --sequential run: the design and its rules, then one row per look of each claim."""
    from rich.table import Table

    console.print(f"[bold]Design[/]: {design_text(sequential.get('design'))}; members "
                  f"{members_text(sequential.get('members'))}", highlight=False)
    for rule in design_rules(sequential.get("design")):
        console.print(f"  {rule}", highlight=False)
    looks = Table(title="Sequential looks")
    for name in ("claim", "stopped", "look", "n", "information", "z", "boundary", "α spent", "upper bound vs margin or bound",
                 "decision"):
        looks.add_column(name, justify="right" if name in ("look", "information", "z", "boundary", "α spent") else "left")
    for claim in sequential.get("claims") or []:
        for i, look in enumerate(claim["looks"]):
            looks.add_row(claim["id"] if i == 0 else "", stop_text(claim) if i == 0 else "", str(look.get("look")),
                          look_sizes_text(look), number(look.get("information_fraction"), 2), number(look_z(look), 2),
                          number(look.get("efficacy_boundary"), 2), number(look.get("alpha_spent"), 4),
                          look_bound_text(look), look_action_text(look))
    console.print(looks)
