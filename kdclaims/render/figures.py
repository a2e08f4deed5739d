"""The paper's Figures 1, 2 and 4, redrawn from a report document's trained members.

``make_figures(document, out_dir)`` writes one PNG per architecture present in ``document["members"]``
(named by ``figure_file_name``):
a 2x3 grid of panels, one per metric -- (a) activation distance, (b) JS divergence, (c) prediction
dissimilarity, (d) logits cosine similarity, (e) test accuracy, (f) test loss -- each showing, for every
setup, the distribution over its members (a box plot with the members as jittered points). The
independent students are the baseline: their box is drawn in grey and their mean is a dashed line across
the panel. Above each other setup's box, ``▲`` marks a significant improvement over the independent
students and ``▼`` a significant deterioration (one-tailed Welch t-tests at 0.025, from the document's
``comparisons_vs_independent``). ``figure_png_bytes(document, arch)`` returns one figure as PNG bytes,
for embedding.

Drawing uses matplotlib's object-oriented API on an Agg canvas (``matplotlib.figure.Figure``), never
pyplot: nothing global (the backend, rcParams, open figures) is touched.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from kdclaims.metrics import METRICS
from kdclaims.render.format import SETUP_SHORT, arch_label, ordered_archs, setup_order_key, short_setup_label, to_float

__all__ = ["make_figures", "figure_file_name", "figure_png_bytes", "PANEL_METRICS", "archs_with_members"]

#: The panels, in the paper's order: (a) .. (f).
PANEL_METRICS = ("activation_distance", "js_divergence", "prediction_dissimilarity", "logits_cosine_similarity",
                 "test_accuracy", "test_loss")
SETUP_COLOUR = {"independent": "#7f7f7f", "kd": "#1f77b4", "uniform_kd": "#ff7f0e", "gaussian_kd": "#2ca02c"}
OTHER_COLOUR = "#9467bd"
BETTER_MARK, WORSE_MARK = "▲", "▼"
BETTER_COLOUR, WORSE_COLOUR = "#1a7f37", "#cf222e"
FIGSIZE = (16, 9)
DPI = 110


def _float(value) -> float:
    """A metric value as a float: JSON's "inf"/"-inf"/"nan" strings and None become non-finite floats."""
    x = to_float(value)
    return math.nan if x is None else x


def archs_with_members(document: dict) -> list[str]:
    """Architectures with at least one trained member, in a stable order (the paper's first)."""
    return ordered_archs({m.get("arch") for m in document.get("members") or [] if m.get("arch")})


def _populations(document: dict, arch: str) -> list[dict]:
    """The populations of ``arch``: name, label, setup, alpha, temperature and the members' metric values."""
    pops: dict[str, dict] = {}
    for m in document.get("members") or []:
        if m.get("arch") != arch:
            continue
        name = m.get("population")
        pop = pops.setdefault(name, {"name": name, "setup": m.get("setup"), "alpha": m.get("alpha"),
                                     "temperature": m.get("temperature"), "label": m.get("label"),
                                     "values": defaultdict(list), "n": 0})
        pop["n"] += 1
        for metric in PANEL_METRICS:
            pop["values"][metric].append(_float(m.get(metric)))
    return sorted(pops.values(), key=lambda p: (setup_order_key(p), str(p["name"])))


def _marks(document: dict, arch: str) -> dict[tuple[str, str], str]:
    """(metric, population) -> "better" / "worse" against the independent students."""
    marks = {}
    for row in document.get("comparisons_vs_independent") or []:
        if row.get("arch") != arch:
            continue
        if row.get("better"):
            marks[(row["metric"], row["population"])] = "better"
        elif row.get("worse"):
            marks[(row["metric"], row["population"])] = "worse"
    return marks


def _colour(setup) -> str:
    return SETUP_COLOUR.get(setup, OTHER_COLOUR)


def _n_text(pops: list[dict]) -> str:
    ns = sorted({p["n"] for p in pops})
    if not ns:
        return "no students"
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"{n} student{'s' if ns[-1] != 1 else ''} per setup"


def _draw_panel(ax, metric: str, letter: str, pops: list[dict], marks: dict, baseline: dict | None) -> None:
    info = METRICS[metric]
    arrow = "↑ higher is better" if info.higher_is_better else "↓ lower is better"
    ax.set_title(f"({letter}) {info.label}   {arrow}", fontsize=11, loc="left")
    positions = np.arange(1, len(pops) + 1)
    finite_all: list[float] = []
    data, non_finite = [], []
    for pop in pops:
        values = np.asarray(pop["values"][metric], dtype=float)
        ok = values[np.isfinite(values)]
        data.append(ok)
        non_finite.append(int((~np.isfinite(values)).sum()))
        finite_all.extend(ok.tolist())

    drawn = [i for i, d in enumerate(data) if d.size]
    if drawn:
        boxes = ax.boxplot([data[i] for i in drawn], positions=positions[drawn], widths=0.6, patch_artist=True,
                           showfliers=False, medianprops={"color": "black", "linewidth": 1.2},
                           whiskerprops={"color": "#444444"}, capprops={"color": "#444444"}, manage_ticks=False)
        for i, box in zip(drawn, boxes["boxes"]):
            setup = pops[i]["setup"]
            box.set_facecolor(_colour(setup))
            box.set_alpha(0.55 if setup != "independent" else 0.75)
            box.set_edgecolor("#222222" if setup == "independent" else "#444444")
            box.set_linewidth(1.6 if setup == "independent" else 1.0)
    rng = np.random.default_rng(0)  # deterministic jitter: the same document draws the same figure
    for i, d in enumerate(data):
        if d.size:
            x = positions[i] + rng.uniform(-0.17, 0.17, size=d.size)
            ax.scatter(x, d, s=14, color=_colour(pops[i]["setup"]), edgecolors="black", linewidths=0.4, zorder=3)

    if baseline is not None:
        base = np.asarray(baseline["values"][metric], dtype=float)
        base = base[np.isfinite(base)]
        if base.size:
            ax.axhline(float(base.mean()), color="#444444", linestyle="--", linewidth=1.1, zorder=1)

    # Room above the data for the significance marks.
    if finite_all:
        lo, hi = min(finite_all), max(finite_all)
        span = hi - lo if hi > lo else (abs(hi) * 0.05 or 0.05)
        ax.set_ylim(lo - 0.08 * span, hi + 0.25 * span)
    for i, pop in enumerate(pops):
        mark = marks.get((metric, pop["name"]))
        if mark:
            ax.text(positions[i], 0.955, BETTER_MARK if mark == "better" else WORSE_MARK,
                    transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=12,
                    color=BETTER_COLOUR if mark == "better" else WORSE_COLOUR)
        if non_finite[i]:
            ax.text(positions[i], 0.02, f"{non_finite[i]} n/f", transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7, color=WORSE_COLOUR)
    ax.set_xlim(0.4, len(pops) + 0.6)
    ax.set_xticks(positions)
    ax.set_xticklabels([short_setup_label(p) for p in pops], rotation=35, ha="right", rotation_mode="anchor", fontsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if not drawn:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="#888888")


def _figure(document: dict, arch: str) -> Figure:
    pops = _populations(document, arch)
    if not pops:
        raise ValueError(f"the document has no trained members for architecture {arch!r}")
    marks = _marks(document, arch)
    baseline = next((p for p in pops if p["setup"] == "independent"), None)

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    smoke = document.get("kind") == "smoke"
    top = 0.87 if smoke else 0.9
    fig.subplots_adjust(left=0.05, right=0.99, top=top, bottom=0.2, hspace=0.66, wspace=0.2)
    axes = fig.subplots(2, 3)
    for ax, metric, letter in zip(axes.flat, PANEL_METRICS, "abcdef"):
        _draw_panel(ax, metric, letter, pops, marks, baseline)

    fig.suptitle(f"{arch_label(arch)} — {_n_text(pops)}", fontsize=16, fontweight="bold", y=0.985)
    if smoke:
        fig.text(0.5, 0.925, "SMOKE RUN — synthetic data, not a reproduction", ha="center", va="center",
                 fontsize=12, fontweight="bold", color="#b35900")
        fig.text(0.5, 0.5, "SMOKE RUN", ha="center", va="center", fontsize=110, fontweight="bold",
                 color="#b35900", alpha=0.04, rotation=20, zorder=0)

    present = list(dict.fromkeys(p["setup"] for p in pops))
    handles = [Patch(facecolor=_colour(s), edgecolor="#444444", alpha=0.6,
                     label=SETUP_SHORT.get(s, str(s)) + (" (baseline)" if s == "independent" else ""))
               for s in present]
    handles += [Line2D([], [], color="#444444", linestyle="--", label="mean of the independent students"),
                Line2D([], [], color=BETTER_COLOUR, marker="^", linestyle="none", markersize=9,
                       label="significantly better than independent"),
                Line2D([], [], color=WORSE_COLOUR, marker="v", linestyle="none", markersize=9,
                       label="significantly worse than independent")]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.025), ncol=min(len(handles), 7),
               fontsize=9.5, frameon=False)
    fig.text(0.5, 0.008,
             "Boxes: quartiles, whiskers to 1.5 IQR; dots: the individual members.   "
             f"{BETTER_MARK} / {WORSE_MARK}: significantly better / worse than the independent students "
             "(one-tailed Welch t-test at 0.025); no mark: not significant.",
             ha="center", va="bottom", fontsize=9.5, color="#333333")
    return fig


def figure_png_bytes(document: dict, arch: str) -> bytes:
    """The figure of ``arch`` as PNG bytes (ValueError when the document has no members of ``arch``)."""
    fig = _figure(document, arch)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def make_figures(document: dict, out_dir, prefix: str = "figure") -> list[Path]:
    """One PNG per architecture with trained members, ``<out_dir>/<prefix>-<arch>.png``; returns the paths
    (``[]`` for a document without members, e.g. the paper's own numbers as evidence)."""
    archs = archs_with_members(document)
    if not archs:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for arch in archs:
        path = out / figure_file_name(prefix, arch)
        path.write_bytes(figure_png_bytes(document, arch))
        paths.append(path)
    return paths


def figure_file_name(prefix: str, arch) -> str:
    """``<prefix>-<arch>.png``. The name comes from an evaluation file, which anyone can write: one that is
    not a plain file name ("a/b", "<x>", "..", 300 characters) has its other characters replaced and a
    hash of the whole name added, so it stays in the report's folder and two names never share a file."""
    name = str(arch)
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:64].lstrip(".")
    if safe != name:
        safe = f"{safe}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    return f"{prefix}-{safe}.png"
