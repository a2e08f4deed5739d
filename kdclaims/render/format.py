"""How every report writes a number or a word: the one place for each.

Markdown, HTML, the terminal table, the pytest failure text and the paper audit all format through
this module, so the same value reads the same everywhere. CSV files are data, not text: they keep
full-precision numbers and the raw verdict ids.

Numbers: ``digits`` decimals; missing (None) is "–", not-a-number is "nan", infinities are "∞"/"−∞".
HTML passes ``unicode_minus=True`` for a typographic minus; plain-text formats keep the ASCII one
that survives copy and paste.

P-values, one rule for every format:

- a p-value we computed prints with three decimals, and below 0.001 as ``<0.001`` (including an
  underflowed 0): more digits claim a precision the normal approximation of a z-test does not have,
  and three decimals are how the paper prints its own;
- a p-value the paper printed is shown as the paper printed it, three decimals (``0.000``, ``1.000``);
- in running text ``p_clause`` writes "p = 0.023" or "p < 0.001".
"""

from __future__ import annotations

import math
import re

from kdclaims.stats import ALPHA

MISSING = "–"
P_FLOOR = 0.001  # computed p-values below this print as "<0.001"

VERDICT_WORDS = {
    "reproduced": "reproduced",
    "not_reproduced": "not reproduced",
    "inconclusive": "inconclusive",
    "error": "not evaluated",
    "not_evaluable": "not evaluable",
    "not_evaluated": "not evaluated in this run",  # a run that did not select the claim (-k, -m, -x, --lf)
}
# Markdown marks a verdict with an emoji; HTML with a plain symbol, its badge already carries the colour.
VERDICT_EMOJI = {"reproduced": "✅", "not_reproduced": "❌", "inconclusive": "⚠️", "error": "💥", "not_evaluable": "➖"}
VERDICT_SYMBOL = {"reproduced": "✔", "not_reproduced": "✘", "inconclusive": "?", "error": "!", "not_evaluable": "–"}
OUTCOME_WORDS = {"reject": "reject H0", "retain": "retain H0", "holds": "holds", "fails": "fails"}
# Short setup names for figure ticks and narrow table headers ("Uniform KD α=0.9"), in the paper's order.
SETUP_SHORT = {"independent": "Independent", "kd": "KD", "uniform_kd": "Uniform KD", "gaussian_kd": "Gaussian KD"}


def to_float(value) -> float | None:
    """A number from a document value: JSON's "inf"/"-inf"/"nan" strings parse; None, booleans and
    other text are None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def number(value, digits: int = 4, unicode_minus: bool = False) -> str:
    x = to_float(value)
    if x is None:
        return MISSING if value is None or isinstance(value, bool) else str(value)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    text = f"{x:.{digits}f}"
    return text.replace("-", "−") if unicode_minus else text


def mean_std(stats: dict | None, digits: int = 4, unicode_minus: bool = False) -> str:
    """``0.1234 ± 0.0050`` from a {"mean", "std"} dict (the n is each format's own business)."""
    if not stats:
        return MISSING
    return (f"{number(stats.get('mean'), digits, unicode_minus)} ± "
            f"{number(stats.get('std'), digits, unicode_minus)}")


def pvalue(value) -> str:
    """A computed p-value: three decimals, "<0.001" below 0.001 (see the module docstring)."""
    x = to_float(value)
    if x is None or math.isnan(x):
        return number(value)
    return f"<{P_FLOOR}" if x < P_FLOOR else f"{x:.3f}"


def paper_pvalue(value) -> str:
    """A p-value the paper printed, as it printed it: three decimals."""
    x = to_float(value)
    return number(value) if x is None or math.isnan(x) else f"{x:.3f}"


def p_clause(value) -> str:
    """A computed p-value in running text: "p = 0.023", "p < 0.001"."""
    text = pvalue(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def outcome(value, missing: str = MISSING) -> str:
    """"reject H0", "retain H0", "holds", "fails"; ``missing`` where the outcome could not be told."""
    if not value or (isinstance(value, float) and math.isnan(value)):
        return missing
    return OUTCOME_WORDS.get(value, str(value))


def decision(reject) -> str:
    return outcome("reject" if bool(reject) else "retain")


def verdict_words(verdict) -> str:
    return VERDICT_WORDS.get(verdict, str(verdict).replace("_", " "))


def verdict_label(verdict, marks: dict[str, str] = VERDICT_EMOJI) -> str:
    """The verdict with its mark: "✅ reproduced" (markdown), "✔ reproduced" with ``VERDICT_SYMBOL``."""
    mark = marks.get(verdict)
    return f"{mark} {verdict_words(verdict)}" if mark else verdict_words(verdict)


def arch_label(name) -> str:
    """An architecture as the paper names it ("ResNet-18"): its registered label, else its name."""
    from kdclaims.architectures import arch_label as registered_label

    return registered_label(name)


def ordered_archs(names) -> list[str]:
    """Architectures in registration order (the paper's: ResNet-18, VGG-16-BN, ViT), unknown ones after, sorted."""
    from kdclaims.architectures import ARCHITECTURES

    present = set(names) - {None}
    known = [a for a in ARCHITECTURES if a in present]
    return known + sorted(str(a) for a in present - set(known))


def setup_label(setup, alpha=None) -> str:
    """A setup with its teacher weight, as the paper writes it: "KD α=0.9", "Uniform Noise KD α=0.1"."""
    from kdclaims.setups import SETUPS

    label = SETUPS[setup].label if setup in SETUPS else str(setup)
    a = to_float(alpha)
    return label if a is None or math.isnan(a) else f"{label} α={a:g}"


def setup_order_key(row: dict) -> tuple:
    """Independent, KD α 0.1/0.5/0.9, uniform-noise KD α..., gaussian-noise KD α..., other setups, then
    every population at a temperature other than 1 (in the same order)."""
    setup = row.get("setup")
    rank = list(SETUP_SHORT).index(setup) if setup in SETUP_SHORT else len(SETUP_SHORT)
    a, t = to_float(row.get("alpha")), to_float(row.get("temperature"))
    a = 0.0 if a is None or math.isnan(a) else a
    t = 1.0 if t is None or math.isnan(t) else t
    return (t != 1.0, rank, str(setup) if rank == len(SETUP_SHORT) else "", a, t)


def short_setup_label(row: dict) -> str:
    """A tick or column label: "Independent", "KD α=0.5", "Uniform KD α=0.9", "KD α=0.9 T=4"."""
    setup = row.get("setup")
    if setup == "independent" or row.get("alpha") is None:
        return SETUP_SHORT[setup] if setup in SETUP_SHORT else str(row.get("label") or setup)
    name = SETUP_SHORT.get(setup) or row.get("label") or str(setup)
    a = to_float(row["alpha"])
    text = f"{name} α={0.0 if a is None or math.isnan(a) else a:g}"
    t = to_float(row.get("temperature"))
    return text + (f" T={t:g}" if t is not None and not math.isnan(t) and t != 1.0 else "")


def metric_label(metric) -> str:
    """A metric as the paper names it ("JS Divergence"); the name itself for one not registered."""
    from kdclaims.metrics import METRICS

    return METRICS[metric].label if metric in METRICS else str(metric)


def seed_text(seeds) -> str:
    """A seed list in its compact form: [1, 2, 3, 7] -> "1-3,7" (as given where it is not a list of integers)."""
    from kdclaims.profiles import seeds_to_text

    try:
        return seeds_to_text(tuple(int(s) for s in seeds))
    except (TypeError, ValueError):
        return ", ".join(str(s) for s in seeds)


def correction_text(correction: dict | None, strong=str) -> str:
    """The family-wise correction in words; ``strong`` emphasises "on" in the format's own markup."""
    if not correction or correction.get("method", "none") == "none":
        return f"off (each claim tested at {ALPHA} on its own, as in the paper)"
    method = correction.get("method")
    name = {"holm": "Holm (family-wise error rate)", "bh": "Benjamini–Hochberg (false discovery rate)"}.get(method, method)
    return (f"{strong('on')}: {name} at {ALPHA} within each {correction.get('family')}, applied to comparisons and "
            "rankings; the verdicts below use the adjusted p-values")


def source_order_key(source) -> tuple:
    """Sorts "Table 4" before "Table 10", and sources without a number after every numbered one."""
    match = re.search(r"(\d+)", str(source))
    return (0, int(match.group(1)), str(source)) if match else (1, 0, str(source))


def fragility_text(details: dict | None) -> str:
    """ "fragile (replication 0.54)" for a claim a faithful replication at the paper's n would reproduce less
    than 80% of the time, computed from the paper's own means and stds; "" otherwise (issue #12)."""
    details = details or {}
    if not details.get("fragile"):
        return ""
    return f"fragile (replication {number(details.get('replication_probability'), 2)})"


def bound_text(details: dict | None) -> str:
    """A retained H0's evidence: "upper bound 0.0150 vs margin 0.0109" (one-sided, at the level used)."""
    bound = (details or {}).get("effect_bound")
    if not bound:
        return MISSING
    return f"{number(bound.get('upper_bound'))} vs {number(bound.get('margin'))}"


def paired_text(details: dict | None) -> str:
    """The paired (by seed) test beside the unpaired one: "paired p 0.012, r 0.37 (n 5)", or why there is none."""
    paired = (details or {}).get("paired") or {}
    if not paired.get("available"):
        return "paired: n/a"
    return (f"paired {p_clause(paired.get('p_value'))}, r {number(paired.get('correlation'), 2)} "
            f"(n {paired.get('n_pairs')})")


# The report's "how to read" rules for verdicts (issue #12): one text, written by markdown and HTML alike.
VERDICT_RULES = (
    "Test: one-tailed Welch t-test (Welch–Satterthwaite df) at 0.025 for every comparison, ranking step, trend "
    "step, CI and bound, at every n (it keeps its nominal error at small n, where the paper's z-test does not, and "
    "matches the z-test at n = 385); the paper's z is kept in the details for reference. Every difference, CI, t, "
    "z and d is signed so that positive means the treatment is better in the way the claim states.",
    "A retained H0 is *reproduced* only when our data bound the effect: the one-sided 97.5% upper confidence bound "
    "of the improvement must lie below the claim's margin, the smallest improvement the paper's design (its stds, "
    "n = 385, 0.025, 80% power) could detect; otherwise *inconclusive*. The bound and the margin are in each claim; "
    "power is shown from the observed stds against the margin and decides nothing.",
    "Corrections carry through: with --correction holm|bh the bound, CI and power of each corrected claim use its "
    "family's corrected level (Bonferroni α/m for Holm, α·R/m for BH), and the verdicts the correction changed are "
    "listed.",
    "Fragile: a claim a faithful replication at the paper's n would reproduce less than 80% of the time, if the "
    "paper's own means and stds were exactly true; marked in every format.",
    "Trends: reproduced only when every step improves significantly in the stated direction (an intersection–union "
    "test), unless the claim file says test: point_estimates, which the claim then states.",
    "Rankings: the leader is tested against every rival, and the ranking holds only when every one-sided test "
    "rejects (intersection–union); its p is the largest pairwise p.",
    "Pairing: student s of every setup shares seed s, so where members are available the paired (by seed) t-test "
    "and the within-seed correlation are shown beside the unpaired test; --pairing seed makes the paired test "
    "decide (default: unpaired, the paper's). The paper's tables have no members, so there it is not available.",
)


def coverage_text(headline: dict) -> str:
    """What the report covers, for its headline: "35 of 98 claims evaluated", with how many results come
    from earlier runs of a merged view, or "this run alone" for one run."""
    total, catalogue = headline.get("total", 0), headline.get("catalogue", headline.get("total", 0))
    text = f"{total} of {catalogue} claims evaluated"
    runs = [r for r in headline.get("runs") or [] if r]
    if headline.get("mode") == "merged":
        earlier = headline.get("from_earlier_runs", 0)
        text += (f" (the latest result of each claim across {len(runs)} run(s) of this profile, evidence and code "
                 f"version; {earlier} of them from earlier runs than the newest)")
    elif runs:
        text += f" (run {runs[0]} alone)"
    return text


# One sign convention for every number of a comparison, stated once at the top of every report format.
SIGN_CONVENTION = ("Signs: z (or t), d and the 95% CI are all of the difference in the direction of the "
                   "hypothesis H_a (treatment − baseline where H_a says the treatment is larger, baseline − "
                   "treatment where it says smaller): positive favours H_a, and H0 is rejected when the CI lies "
                   "above 0.")


def hypothesis_interval(test: dict | None, direction: str | None) -> tuple[float | None, float | None, float | None]:
    """(improvement, CI low, CI high) of a stored test, in the direction of H_a (see ``SIGN_CONVENTION``).

    A Welch/paired t-test stores them so (``improvement``, ``lower_bound``, ``upper_bound``); the z-test
    stores the raw treatment − baseline ``diff`` and its CI, which are turned round where H_a is "less"."""
    test = test or {}
    if "improvement" in test:
        return (to_float(test.get("improvement")), to_float(test.get("lower_bound", test.get("ci_low"))),
                to_float(test.get("upper_bound", test.get("ci_high"))))
    diff, low, high = (to_float(test.get(k)) for k in ("diff", "ci_low", "ci_high"))
    if direction != "less":
        return diff, low, high
    flip = (lambda x: None if x is None else -x)
    return flip(diff), flip(high), flip(low)


def ci_text(test: dict | None, direction: str | None, unicode_minus: bool = False) -> str:
    """"[0.0053, 0.0330]": the 95% CI of the improvement in the H_a direction; "–" without a test."""
    if not test:
        return MISSING
    _, low, high = hypothesis_interval(test, direction)
    return f"[{number(low, 4, unicode_minus)}, {number(high, 4, unicode_minus)}]"


# ---------------------------------------------------------------------------------------------
# The sequential design (--sequential, issue #19): the same words and numbers in every format
# ---------------------------------------------------------------------------------------------

# A stop's words; ``stop_text`` adds the outcome it led to (a comparison's efficacy stop rejects H0, a ranking's or
# trend's holds or fails, an equivalence stop retains H0 or finds a bound holding).
STOP_REASON_WORDS = {
    "efficacy": "efficacy boundary crossed",
    "equivalence": "equivalence shown (repeated upper bound below the margin or bound)",
    "futility": ("futility (no outcome reachable: a pair's conditional power below 10% both ways, or its "
                 "predictive probability below 10% the way an outcome needs)"),
    "final": "final look reached",
}
LOOK_ACTION_WORDS = {**STOP_REASON_WORDS, "continue": "continue", "error": "not evaluable at this look",
                     "no new members": "no new members: nothing to test"}


def percent(value, digits: int = 0) -> str:
    """0.4667 -> "47%"; missing: "–"."""
    value = to_float(value)
    return MISSING if value is None else f"{value * 100:.{digits}f}%"


def teachers_text(teachers: dict | None) -> str:
    """"ResNet-18 97.0%, VGG-16-BN 96.5%, ViT 92.0%": each teacher's test accuracy, or "" if none recorded."""
    return ", ".join(f"{arch_label(arch)} {percent(teachers[arch], 1)}" for arch in ordered_archs(teachers or {}))


def design_text(design: dict | None) -> str:
    """The design in one line: "group-sequential, 2 looks at 3, 6 members per population, Lan-DeMets
    O'Brien-Fleming-type error spending, one-sided alpha 0.025"."""
    if not design:
        return "fixed (every population at its full seeds, one test per claim)"
    looks = design.get("looks") or []
    return (f"group-sequential, {len(looks)} looks at {', '.join(str(k) for k in looks)} members per population, "
            f"{design.get('spending_name') or design.get('spending')} error spending, one-sided alpha "
            f"{design.get('alpha', ALPHA)}")


def design_rules(design: dict | None) -> list[str]:
    """The design's rules in words, one "name: rule" line each (``Design.as_dict()['rules']``)."""
    return [f"{name}: {rule}" for name, rule in ((design or {}).get("rules") or {}).items()]


def members_text(members: dict | None) -> str:
    """Members a sequential run trained and used beside the fixed design's: "7 trained now, 7 used of the 12 the
    fixed design uses (58%)"."""
    if not members:
        return MISSING
    used, trained, fixed = members.get("used"), members.get("trained"), members.get("fixed")
    share = f" ({percent(used / fixed)})" if used is not None and fixed else ""
    return f"{trained} trained now, {used} used of the {fixed} the fixed design uses{share}"


def sequential_members_text(populations: list[dict]) -> str:
    """``members_text`` of a run's population records (their n, trained_now and members_planned)."""
    return members_text(sequential_members(populations))


def sequential_members(populations: list[dict]) -> dict:
    """Members used, trained now and planned (the fixed design's) summed over population records."""
    return {"used": sum(int(p.get("n") or 0) for p in populations),
            "trained": sum(int(p.get("trained_now") or 0) for p in populations),
            "fixed": sum(int(p.get("members_planned") or p.get("n") or 0) for p in populations)}


def stop_text(sequential: dict | None, observed_outcome: str | None = None) -> str:
    """Where a claim stopped and with what outcome: "look 1 of 2: efficacy boundary crossed (reject H0)"; "–" for
    a fixed-design claim. The outcome is ``observed_outcome``, else the record's own (the report's claim rows)."""
    if not sequential:
        return MISSING
    planned = len((sequential.get("design") or {}).get("looks") or [])
    of = f" of {planned}" if planned else ""
    reason = sequential.get("reason")
    observed = observed_outcome or sequential.get("observed_outcome")
    led_to = f" ({outcome(observed)})" if observed else ""
    return f"look {sequential.get('stop_look')}{of}: {STOP_REASON_WORDS.get(reason, reason or MISSING)}{led_to}"


def look_sizes_text(look: dict) -> str:
    """Members per population at a look: "3/3" (in the claim's population order), or the target members."""
    sizes = look.get("n")
    if isinstance(sizes, dict) and sizes:
        return "/".join(str(v) for v in sizes.values())
    return str(look.get("target_members", MISSING))


def look_z(look: dict):
    """A look's z: a comparison's test statistic, or the z a ranking or trend turns on (its ``statistic``)."""
    return look["z"] if look.get("z") is not None else (look.get("statistic") or {}).get("z")


def look_bound_text(look: dict, unicode_minus: bool = False) -> str:
    """What bounds a look's claim: a comparison's repeated upper bound of the improvement against its margin, a
    bound claim's highest upper bound against the bound, a threshold's students of 385 expected to reach the
    level; "–" where the claim has none."""
    def num(value):
        return number(value, 4, unicode_minus)

    statistic = look.get("statistic") or {}
    if look.get("margin") is not None:
        return f"{num(look.get('upper_bound'))} vs {num(look.get('margin'))}"
    if "bound" in statistic:
        return f"{num(statistic.get('upper_bound'))} vs bound {num(statistic.get('bound'))}"
    if "expected" in statistic:
        pessimistic = "" if statistic.get("pessimistic") is None else f", pessimistic {num(statistic['pessimistic'])}"
        return f"{num(statistic.get('expected'))} of 385 expected to reach the level{pessimistic}"
    return MISSING


def look_action_text(look: dict) -> str:
    action = look.get("action")
    text = LOOK_ACTION_WORDS.get(action, action or MISSING)
    return f"{text}: {look['error']}" if action == "error" and look.get("error") else text


def look_text(look: dict) -> str:
    """One look in a line: "look 1 (n 3/3, information 0.50): z 5.21 vs boundary 2.96, alpha spent 0.0015; upper
    bound 0.0100 vs margin 0.0200 → efficacy boundary crossed (H0 rejected)"."""
    information = number(look.get("information_fraction"), 2)
    parts = [f"look {look.get('look')} (n {look_sizes_text(look)}, information {information})"]
    if look.get("efficacy_boundary") is not None:
        z = look_z(look)
        parts.append(f": {'' if z is None else f'z {number(z, 2)} vs '}boundary "
                     f"{number(look.get('efficacy_boundary'), 2)} (nominal level {number(look.get('nominal_alpha'), 4)}), "
                     f"alpha spent {number(look.get('alpha_spent'), 4)}")
    if look_bound_text(look) != MISSING:
        parts.append(f"; {'upper bound ' if look.get('margin') is not None else ''}{look_bound_text(look)}")
    return "".join(parts) + f" → {look_action_text(look)}"
