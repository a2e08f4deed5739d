"""The report document: one dict, built from a saved evaluation alone, that every format renders.

``build_document(evaluation)`` gathers what a reader needs: the headline counts, every claim with
its numbers and verdict, the paper's Tables 1-3 rebuilt from the observed populations beside the
paper's values, one row per trained member, each setup's test against the independent baseline
(for the figures' significance marks), the audit of the paper's own p-values, and the provenance.
Markdown, HTML, JSON, CSV and the terminal table are views of this document; its JSON form is
versioned and described by ``kdclaims/schemas/report-v1.schema.json``. ``compare_runs`` lists the verdicts
that changed between two runs; ``load`` gives notebooks the claims and members as DataFrames.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from kdclaims import paper as paper_tables
from kdclaims.metrics import METRICS, get_metric, more_similar_direction
from kdclaims.render.format import setup_order_key
from kdclaims.stats import ALPHA, Summary, welch_t_test

REPORT_SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "report-v1.schema.json"
VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "error")
PAPER_TABLE = {"resnet18": "Table 1", "vit": "Table 2", "vgg16_bn": "Table 3"}


def report_kind(evaluation: dict) -> str:
    """"paper" (the paper's own numbers), "smoke" (not a reproduction) or "reproduction"."""
    if evaluation["evidence"] == "paper":
        return "paper"
    return "reproduction" if evaluation["profile"].get("is_reproduction", True) else "smoke"


def _summary(values) -> dict | None:
    finite = [v for v in values if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")]
    if len(finite) < 2:
        return None
    s = Summary.from_values(finite)
    return {"mean": s.mean, "std": s.std, "n": s.n}


def members_frame(evaluation: dict) -> pd.DataFrame:
    """One row per trained member: population, setup, seed, cache key and every metric."""
    rows = []
    for pop in evaluation.get("populations") or []:
        metrics = pop.get("metrics") or {}
        for i, seed in enumerate(pop["seeds"]):
            row = {"population": pop["name"], "arch": pop["arch"], "setup": pop["setup"], "alpha": pop["alpha"],
                   "temperature": pop["temperature"], "label": pop["label"], "seed": seed, "key": pop["keys"][i]}
            row.update({m: values[i] for m, values in metrics.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def rebuilt_tables(evaluation: dict) -> list[dict]:
    """Tables 1-3 rebuilt: per architecture, metric and population, observed mean ± std (n) beside the paper's."""
    rows = []
    for pop in evaluation.get("populations") or []:
        for metric in METRICS:
            values = (pop.get("metrics") or {}).get(metric)
            observed = _summary(values) if values else None
            paper = None
            if pop["temperature"] == 1.0:
                try:
                    s = paper_tables.paper_summary(pop["arch"], metric, pop["setup"], pop["alpha"])
                except Exception:  # a setup or alpha the paper does not have
                    s = None
                paper = None if s is None else {"mean": s.mean, "std": s.std, "n": s.n}
            rows.append({"arch": pop["arch"], "source": PAPER_TABLE.get(pop["arch"], ""), "metric": metric,
                         "metric_label": get_metric(metric).label, "population": pop["name"], "setup": pop["setup"],
                         "alpha": pop["alpha"], "temperature": pop["temperature"], "label": pop["label"],
                         "observed": observed, "paper": paper})
    order = {m: i for i, m in enumerate(METRICS)}
    rows.sort(key=lambda r: (r["arch"], order[r["metric"]], setup_order_key(r)))
    return rows


def comparisons_vs_independent(evaluation: dict) -> list[dict]:
    """Each population against its architecture's independent students on every metric, both ways
    (one-tailed Welch t-tests at 0.025, the claims' own test): the significance marks of the figures."""
    by_arch = defaultdict(dict)
    for pop in evaluation.get("populations") or []:
        by_arch[pop["arch"]][pop["name"]] = pop
    rows = []
    for arch, pops in by_arch.items():
        base = pops.get(f"{arch}/independent")
        if base is None:
            continue
        for name, pop in pops.items():
            if name == base["name"]:
                continue
            for metric in METRICS:
                t, b = _summary(pop["metrics"].get(metric, [])), _summary(base["metrics"].get(metric, []))
                if t is None or b is None:
                    continue
                better = more_similar_direction(metric)
                worse = "greater" if better == "less" else "less"
                ts, bs = Summary(**t), Summary(**b)
                up, down = welch_t_test(ts, bs, better), welch_t_test(ts, bs, worse)
                rows.append({"arch": arch, "metric": metric, "population": name, "diff": up.diff, "t": up.t,
                             "p_better": up.p_value, "p_worse": down.p_value,
                             "better": up.reject, "worse": down.reject})
    return rows


def _notice(kind: str, profile: dict) -> str | None:
    dataset = (profile.get("dataset") or {}).get("kind")
    if kind == "smoke" and dataset in (None, "synthetic"):  # None: an evaluation from before profiles named it
        return ("This is a smoke run on synthetic data, not a reproduction. It exercises the whole pipeline "
                "(training, cache, metrics, statistical tests, report) with small models on generated data; its verdicts "
                "say nothing about the paper.")
    if kind == "smoke":
        return (f"This is a machinery check (profile {profile.get('name')}, {dataset} data), not a reproduction. It "
                "exercises the whole pipeline (training, cache, metrics, statistical tests, report) with small models; its "
                "verdicts say nothing about the paper.")
    if kind == "paper":
        return "Evidence: the paper's own summary statistics (Tables 1-3, n = 385 per setup); nothing was trained."
    if profile.get("differences_from_paper"):
        seeds = f", {profile['n_seeds']} seeds per population" if profile.get("n_seeds") else ""
        real = "synthetic-data" if dataset == "synthetic" else "real-data"
        return (f"A small-scale {real} replication on {dataset} data (profile {profile.get('name')}{seeds}), not "
                "the paper's experiment: the verdicts below are what these populations show, and the settings that "
                "differ from the paper's are listed under Setup beside the paper's values.")
    return None


def build_document(evaluation: dict, audit: bool = True) -> dict:
    from kdclaims.evaluate import corrected_verdicts

    results = evaluation["results"]
    counts = Counter(r["verdict"] for r in results)
    by_arch: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_arch[r["arch"]][r["verdict"]] += 1
    kind = report_kind(evaluation)
    selection = evaluation.get("selection") or {}
    evaluated = {r["id"] for r in results}
    members = members_frame(evaluation)
    document = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": kind,
        "title": "Reproduction report: Knowledge Distillation: The Functional Perspective",
        "notice": _notice(kind, evaluation["profile"]),
        "created_at": evaluation.get("created_at"),
        "evaluation_path": evaluation.get("_path"),
        "headline": {
            "total": len(results),
            # which claims the report covers: a subset run, or a merge of several runs, is said in the headline
            "catalogue": len(selection.get("catalogue") or evaluated),
            "not_evaluated": sorted(set(selection.get("catalogue") or evaluated) - evaluated),
            "mode": selection.get("mode", "run"),
            "runs": selection.get("runs") or [evaluation.get("run_id")],
            "from_earlier_runs": selection.get("from_earlier_runs", 0),
            "verdicts": {v: counts.get(v, 0) for v in VERDICTS},
            "by_arch": {a: {v: c.get(v, 0) for v in VERDICTS} for a, c in sorted(by_arch.items())},
        },
        "method": {
            "test": "one-tailed Welch t-test (Welch-Satterthwaite df), se = sqrt(s1^2/n1 + s2^2/n2)", "alpha": ALPHA,
            "correction": evaluation.get("correction") or {"method": "none", "family": "group"},
            "corrected_verdicts": corrected_verdicts(results),
            # the power to detect the paper's effect comes from the paper's CIFAR-100 stds: on a smoke run's
            # synthetic data it is a number about another dataset, so the reports leave it out
            "show_paper_power": kind != "smoke",
        },
        "claims": results,
        "sequential": sequential_section(evaluation),
        "tables": rebuilt_tables(evaluation),
        "members": members.to_dict(orient="records"),
        "comparisons_vs_independent": comparisons_vs_independent(evaluation),
        "audit": _audit() if audit else None,
        "teachers": teachers(evaluation),
        "provenance": {
            "evidence": evaluation["evidence"],
            "profile": evaluation["profile"],
            "dataset": evaluation.get("dataset"),
            "cache_dir": evaluation.get("cache_dir"),
            **(evaluation.get("provenance") or {}),
            "training_time_s": sum(p.get("wall_time_s", 0.0) for p in evaluation.get("populations") or []),
            "populations": [{k: p[k] for k in ("name", "arch", "setup", "alpha", "temperature", "n", "seeds", "keys",
                                               "teacher_key", "teacher_test_accuracy", "trained_now", "wall_time_s", "devices") if k in p}
                            for p in evaluation.get("populations") or []],
        },
    }
    return document


def teachers(evaluation: dict) -> dict[str, float]:
    """Each architecture's teacher test accuracy, from the population records (evaluations from before it was
    recorded have none)."""
    return {p["arch"]: p["teacher_test_accuracy"] for p in evaluation.get("populations") or []
            if p.get("teacher_test_accuracy") is not None}


def sequential_section(evaluation: dict) -> dict | None:
    """A --sequential run's design (its rules in words), each claim's looks and stopping reason, and the members
    each population used and trained beside the fixed design's; None for a fixed-design run."""
    if not evaluation.get("sequential"):
        return None
    from kdclaims.render.format import sequential_members

    populations = evaluation.get("populations") or []
    claims = []
    for r in evaluation["results"]:
        seq = (r.get("details") or {}).get("sequential")
        if seq:
            claims.append({"id": r["id"], "kind": r.get("kind"), "observed_outcome": r.get("observed_outcome"),
                           "stop_look": seq.get("stop_look"), "reason": seq.get("reason"),
                           "members_used": seq.get("members_used"), "looks": seq.get("looks") or [],
                           "design": seq.get("design")})
    return {
        "design": evaluation.get("sequential_design"),
        "members": sequential_members(populations),
        "populations": [{"name": p["name"], "members_used": p.get("n"), "members_trained": p.get("trained_now"),
                         "members_planned": p.get("members_planned"), "members_limit": p.get("members_limit")}
                        for p in populations],
        "claims": claims,
    }


def looks_frame(document: dict) -> pd.DataFrame:
    """One row per look of each claim of a --sequential run (empty for a fixed-design run): the look, the
    members per population, information fraction, z, efficacy boundary, nominal level, alpha spent, the
    repeated upper bound against the margin, and what the look decided."""
    from kdclaims.render.format import look_z

    rows = []
    for claim in (document.get("sequential") or {}).get("claims") or []:
        for look in claim["looks"]:
            sizes = look.get("n") if isinstance(look.get("n"), dict) else {}
            statistic = look.get("statistic") or {}  # a ranking's, trend's, bound's or threshold's deciding number
            rows.append({"id": claim["id"], "look": look.get("look"), "target_members": look.get("target_members"),
                         "members": ";".join(f"{k}={v}" for k, v in sizes.items()),
                         "information_fraction": look.get("information_fraction"), "z": look_z(look),
                         **{k: look.get(k) for k in ("efficacy_boundary", "nominal_alpha", "alpha_spent", "improvement",
                                                     "se", "df", "upper_bound", "margin")},
                         "statistic": statistic.get("what"), "bound": statistic.get("bound"),
                         "bound_upper": statistic.get("upper_bound"), "expected_reaching_of_385": statistic.get("expected"),
                         "observed_outcome": look.get("observed_outcome"),
                         **{k: look.get(k) for k in ("action", "error")},
                         "stopped_here": look.get("look") == claim["stop_look"], "stop_reason": claim["reason"]})
    return pd.DataFrame(rows)


def _audit() -> dict:
    from kdclaims.audit import audit_json

    return audit_json()


def claims_frame(document_or_evaluation: dict) -> pd.DataFrame:
    """One row per claim with its verdict and the numbers behind it, as every report shows them: the
    verdict in words ("not reproduced"; ``verdict_id`` keeps the id), the 95% CI in the direction of
    H_a (as z and d; ``diff`` stays treatment − baseline), the n as integers."""
    from kdclaims.evaluate import results_frame
    from kdclaims.render.format import hypothesis_interval, verdict_words

    key = "claims" if "claims" in document_or_evaluation else "results"
    results = document_or_evaluation[key]
    frame = results_frame(results)
    if frame.empty:
        return frame
    intervals = [hypothesis_interval((r.get("details") or {}).get("test"), (r.get("details") or {}).get("direction"))
                 for r in results]
    frame["ci_low"] = [None if not (r.get("details") or {}).get("test") else low for r, (_, low, _) in zip(results, intervals)]
    frame["ci_high"] = [None if not (r.get("details") or {}).get("test") else high for r, (_, _, high) in zip(results, intervals)]
    frame.insert(frame.columns.get_loc("verdict") + 1, "verdict_id", frame["verdict"])
    frame["verdict"] = frame["verdict"].map(verdict_words)
    for column in ("n_treatment", "n_baseline"):
        frame[column] = frame[column].astype("Int64")  # 5, not 5.0; empty where the claim has no such arm
    sequential = [(r.get("details") or {}).get("sequential") for r in results]
    if any(sequential):  # --sequential: where each claim stopped, and why
        frame["sequential_stop_look"] = pd.array([(q or {}).get("stop_look") for q in sequential], dtype="Int64")
        frame["sequential_looks_planned"] = pd.array(
            [len(((q or {}).get("design") or {}).get("looks") or []) or None for q in sequential], dtype="Int64")
        frame["sequential_stop_reason"] = [(q or {}).get("reason") for q in sequential]
    if any(r.get("evaluated_at") for r in results):
        frame["evaluated_at"] = [r.get("evaluated_at") for r in results]
        frame["run_id"] = [r.get("run_id") for r in results]
    return frame


def compare_runs(a: dict, b: dict) -> list[dict]:
    """Claims whose verdict differs between two runs (evaluations or report documents). A claim one run
    did not evaluate is no change: it is listed with ``before``/``after`` "not_evaluated" and
    ``changed`` False (a subset run, ``-k`` or ``-m``, leaves most claims out)."""
    def verdicts(run):
        return {r["id"]: r for r in run.get("claims", run.get("results", []))}

    va, vb = verdicts(a), verdicts(b)
    changes = []
    for claim_id in sorted(set(va) | set(vb)):
        before, after = va.get(claim_id), vb.get(claim_id)
        if before and after and before["verdict"] == after["verdict"]:
            continue
        changes.append({"id": claim_id, "before": before["verdict"] if before else "not_evaluated",
                        "after": after["verdict"] if after else "not_evaluated", "changed": bool(before and after),
                        "reason_after": after["reason"] if after else ""})
    return changes


def load(path=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For notebooks: ``claims, members = kdclaims.load()`` (default: the latest evaluation)."""
    from kdclaims.results import load_evaluation

    evaluation = load_evaluation(path, hint="or pass the evaluation file: `kdclaims.load(path)`")
    return claims_frame(evaluation), members_frame(evaluation)
