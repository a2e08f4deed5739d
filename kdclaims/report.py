"""The reproduction report, written from a saved evaluation alone (no training, no cache reads).

``describe_result`` is the text a failing claim shows under pytest; ``markdown_report`` is the
document ``kdclaims report --format markdown`` writes. Every number is printed with the populations,
the test and the n behind it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from kdclaims.metrics import SIMILARITY_READINGS

VERDICT_LABEL = {
    "reproduced": "✅ reproduced",
    "not_reproduced": "❌ not reproduced",
    "inconclusive": "⚠️ inconclusive",
    "error": "💥 not evaluated",
}
ARCH_LABEL = {"resnet18": "ResNet-18", "vgg16_bn": "VGG-16-BN", "vit": "ViT"}


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


def markdown_report(evaluation: dict) -> str:
    profile, results = evaluation["profile"], evaluation["results"]
    prov = evaluation.get("provenance", {})
    out = [f"# Reproduction report: Knowledge Distillation: The Functional Perspective", ""]
    if evaluation["evidence"] == "trained" and not profile.get("is_reproduction", True):
        out += ["> **This is a smoke run on synthetic data, not a reproduction.** It exercises the whole pipeline "
                "(training, cache, metrics, z-tests, report) with small models on generated data; its verdicts "
                "say nothing about the paper.", ""]
    if evaluation["evidence"] == "paper":
        out += ["> Evidence: the paper's own summary statistics (Tables 1–3, n = 385 per setup); nothing was trained.", ""]

    # Headline
    counts = Counter(r["verdict"] for r in results)
    by_arch: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_arch[r["arch"]][r["verdict"]] += 1
    out += ["## Headline", "",
            f"{len(results)} claims: " + ", ".join(f"**{counts.get(v, 0)}** {v.replace('_', ' ')}"
                                                   for v in ("reproduced", "not_reproduced", "inconclusive", "error")
                                                   if counts.get(v) or v != "error"), "",
            "| architecture | reproduced | not reproduced | inconclusive | not evaluated |", "|---|---:|---:|---:|---:|"]
    for arch in sorted(by_arch):
        c = by_arch[arch]
        out.append(f"| {ARCH_LABEL.get(arch, arch)} | {c['reproduced']} | {c['not_reproduced']} | {c['inconclusive']} | {c['error']} |")
    out.append("")

    # Setup
    n_text = f"{profile['n_seeds']} seeds ({profile['seeds']})" if evaluation["evidence"] == "trained" else "n = 385 (paper)"
    out += ["## Setup", "",
            f"- Profile: **{profile['name']}**: {profile['description']}",
            f"- Students per population: {n_text}; teacher: seed 0, every student starts from the teacher's initialisation",
            "- Test: one-tailed two-sample z-test, se = √(s₁²/n₁ + s₂²/n₂), significance 0.025; "
            "95% CI for the difference of means; d = Cohen's d (pooled sd) in the H_a direction",
            "- Verdict: *reproduced* when our outcome (reject/retain H0) matches the paper's; a retained H0 needs "
            "power ≥ 0.8 to detect the paper's effect at our n, else *inconclusive*",
            f"- Family-wise correction: {_correction_text(evaluation.get('correction'))}",
            "- Compression threshold (Section 3): the paper does not say how a distance becomes a similarity; we read "
            + ", ".join(f"{reading}" for _, _, reading in SIMILARITY_READINGS.values())
            + ", and a student reaches 95% only if all four are ≥ 0.95 at once",
            "- Rankings must lead the best other setup significantly; trends must improve at every step with a "
            "significant overall change; bounds hold when every cell's one-sided 97.5% upper confidence bound is "
            "below the bound (an intersection-union test)", ""]

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
            out.append(f"| `{r['id']}` | {r['kind']} | {r['source']} | {d.get('summary') or r['reason']} "
                       f"| {r['paper']['outcome']} | {r.get('observed_outcome') or 'cannot tell'} "
                       f"| {VERDICT_LABEL.get(r['verdict'], r['verdict'])} |")
        out.append("")
    out += ["### Claims in words", ""]
    for r in results:
        note = f" *Note: {r['note']}*" if r.get("note") else ""
        out.append(f"- `{r['id']}` ({r['source']}): {r['sentence']} — **{r['verdict'].replace('_', ' ')}**: {r['reason']}.{note}")
    out.append("")

    # Provenance
    out += ["## Provenance", "",
            f"- Evaluation: `{evaluation.get('_path', '–')}`, created {evaluation.get('created_at', '–')}",
            f"- Code: kdclaims {prov.get('kdclaims', '–')}, git `{prov.get('git') or 'unknown'}`; "
            f"torch {prov.get('torch', '–')}, Python {prov.get('python', '–')}; device {prov.get('cuda') or prov.get('device', '–')}",
            f"- Cache: `{evaluation.get('cache_dir', '–')}`"]
    dataset = evaluation.get("dataset")
    if dataset:
        out.append(f"- Dataset: `{dataset.get('source')}` fingerprint `{str(dataset.get('fingerprint'))[:16]}…`, "
                   f"archive MD5 `{dataset.get('archive_md5') or '–'}`")
    pops = evaluation.get("populations") or []
    if pops:
        total = sum(p.get("wall_time_s", 0.0) for p in pops)
        out += [f"- Training time of the members used: {total:.1f} s", "",
                "| population | n | seeds | teacher key | first member key | training time (s) | devices |",
                "|---|---:|---|---|---|---:|---|"]
        for p in pops:
            out.append(f"| {p['name']} | {p['n']} | {_seed_text(p['seeds'])} | `{p['teacher_key'][:12]}` "
                       f"| `{p['keys'][0][:12]}` | {p['wall_time_s']:.1f} | {', '.join(p['devices'])} |")
    out.append("")
    return "\n".join(out)


def _correction_text(correction: dict | None) -> str:
    if not correction or correction.get("method", "none") == "none":
        return "off (each claim tested at 0.025 on its own, as in the paper)"
    name = {"holm": "Holm (family-wise error rate)", "bh": "Benjamini–Hochberg (false discovery rate)"}[correction["method"]]
    return (f"**on**: {name} at 0.025 within each {correction['family']}, applied to comparisons and rankings; "
            "verdicts below use the adjusted p-values")


def _seed_text(seeds: list[int]) -> str:
    from kdclaims.config import seeds_to_text

    return seeds_to_text(tuple(seeds))
