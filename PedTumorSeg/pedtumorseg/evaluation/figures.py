"""The evaluation report's figures (matplotlib, drawn on the Agg canvas without pyplot state) and the number
format they share with the report's tables."""

from __future__ import annotations

import base64
import io
import math
from typing import Mapping, Sequence

import numpy as np

from pedtumorseg.conventions import LABEL_COLORS, LABEL_NAMES
from pedtumorseg.evaluation import analysis as an

REGION_COLORS: dict[str, tuple[float, float, float]] = {
    **{LABEL_NAMES[k]: v for k, v in LABEL_COLORS.items()},
    "TC": (0.55, 0.25, 0.75), "WT": (0.45, 0.45, 0.45), an.COMBINED_REGION: (0.2, 0.45, 0.85),
}
SET_COLORS = {"A": "#1f77b4", "B": "#ff7f0e"}


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def number_text(v, kind: str = "num") -> str:
    if v is None or (is_number(v) and not math.isfinite(float(v))):
        return "n/a"
    if kind == "int":
        return str(int(v))
    if kind == "p":
        return f"{v:.4f}" if v >= 1e-4 else "<0.0001"
    if kind == "stat":
        return f"{v:.1f}"
    return f"{v:.4f}"


def png_img(fig) -> str:
    """``<img>`` with the figure as an embedded PNG (rendered with the Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def distribution_figure(groups: Sequence[tuple[str, Mapping[str, Sequence[float]]]], regions: Sequence[str],
                         ylabel: str, colors: Mapping[str, str] | None = None, ylim=None):
    """Violin + box + points per region, one series per group side by side; a violin only for a series of two
    or more distinct finite values (a kernel density needs spread)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rng = np.random.default_rng(0)
    fig = Figure(figsize=(max(6.0, 1.3 * len(regions) * max(1, len(groups))), 4.2), dpi=90)
    ax = fig.subplots()
    width = 0.8 / max(1, len(groups))
    for gi, (name, by_region) in enumerate(groups):
        color = (colors or {}).get(name)
        for ri, region in enumerate(regions):
            v = an.finite(by_region.get(region, []))
            pos = ri + (gi - (len(groups) - 1) / 2) * width
            c = color or REGION_COLORS.get(region, (0.5, 0.5, 0.5))
            if v.size >= 2 and np.ptp(v) > 0:
                parts = ax.violinplot([v], positions=[pos], widths=width * 0.95, showextrema=False)
                for body in parts["bodies"]:
                    body.set_facecolor(c)
                    body.set_edgecolor("black")
                    body.set_alpha(0.45)
            if v.size:
                ax.boxplot([v], positions=[pos], widths=width * 0.3, showfliers=False, manage_ticks=False,
                           medianprops={"color": "black"})
                ax.scatter(pos + rng.uniform(-width * 0.15, width * 0.15, v.size), v, s=9, color="black",
                           alpha=0.6, zorder=3)
    ax.set_xticks(range(len(regions)))
    ax.set_xticklabels(regions)
    ax.set_xlim(-0.6, len(regions) - 0.4)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if len(groups) > 1:
        ax.legend(handles=[Patch(facecolor=(colors or {}).get(name, "grey"), edgecolor="black", alpha=0.45,
                                 label=name) for name, _ in groups], loc="lower left", fontsize=9)
    fig.tight_layout()
    return fig


def agreement_figure(pairs: Mapping[str, tuple[list[float], list[float]]], results: Mapping[str, dict],
                      unit: str):
    """Per region: correlation scatter (ground truth x, prediction y, identity line) and Bland-Altman panel
    (mean x, prediction - ground truth y; bias solid, limits of agreement dashed), two regions per figure row."""
    from matplotlib.figure import Figure

    regions = list(pairs)
    nrows = max(1, math.ceil(len(regions) / 2))
    fig = Figure(figsize=(15.0, 3.4 * nrows), dpi=80)
    axes = fig.subplots(nrows, 4, squeeze=False)
    for i in range(len(regions), nrows * 2):  # the unused pair of the last row
        axes[i // 2][2 * (i % 2)].set_visible(False)
        axes[i // 2][2 * (i % 2) + 1].set_visible(False)
    for i, region in enumerate(regions):
        ax_c, ax_b = axes[i // 2][2 * (i % 2)], axes[i // 2][2 * (i % 2) + 1]
        gt, pred = an.finite_pairs(pairs[region][1], pairs[region][0])
        res = results[region]
        color = REGION_COLORS.get(region, (0.3, 0.3, 0.3))
        ax_c.scatter(gt, pred, s=14, color=color, edgecolor="black", linewidth=0.4)
        if gt.size:
            lo, hi = float(min(gt.min(), pred.min())), float(max(gt.max(), pred.max()))
            pad = 0.05 * (hi - lo) if hi > lo else 0.5
            ax_c.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls=":")
        corr = res["correlation"]
        if corr["method"]:
            label = {"pearson": "Pearson r", "spearman": "Spearman \u03c1"}[corr["method"]]
            ax_c.set_title(f"{region}: {label} = {corr['coefficient']:.3f} (n={corr['n']})", fontsize=9)
        else:
            ax_c.set_title(f"{region}: {corr['note']} (n={corr['n']})", fontsize=9)
        ax_c.set_xlabel(f"ground truth {unit}", fontsize=8)
        ax_c.set_ylabel(f"prediction {unit}", fontsize=8)
        ba = res["bland_altman"]
        ax_b.scatter(ba["means"], ba["differences"], s=14, color=color, edgecolor="black", linewidth=0.4)
        ax_b.axhline(0.0, color="grey", lw=0.6, ls=":")
        if math.isfinite(ba["bias"]):
            ax_b.axhline(ba["bias"], color="black", lw=1)
        for key in ("loa_lower", "loa_upper"):
            if math.isfinite(ba[key]):
                ax_b.axhline(ba[key], color="tab:red", lw=1, ls="--")
        ax_b.set_title(f"{region}: Bland-Altman, bias {number_text(ba['bias'])}", fontsize=9)
        ax_b.set_xlabel(f"mean of prediction and ground truth {unit}", fontsize=8)
        ax_b.set_ylabel(f"prediction - ground truth {unit}", fontsize=8)
        for ax in (ax_c, ax_b):
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    # fixed margins: tight_layout would draw the many panels once more just to measure them
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.6 / (3.4 * nrows), top=1 - 0.35 / (3.4 * nrows),
                        wspace=0.32, hspace=0.45)
    return fig
