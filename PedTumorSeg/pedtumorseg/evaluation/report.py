"""The evaluation report: one self-contained static HTML page (inline CSS, PNG figures embedded as base64, no
script and no external resource, so it opens offline) with the analyses of the clinical comparison paper
(Vossough et al., AJNR 2024) over a folder evaluation (``evaluation.evaluate_folder(..., report_data=True)``):

* per-region score tables (mean, SD, median, quartiles, IQR) of every metric of the evaluation CSV, for the six
  regions and the combined non-enhancing component NET+CC+ED;
* violin + box plots of lesion-wise Dice per region;
* agreement of absolute volumes (mL) and of volume fractions of WT with the ground truth: correlation (Pearson
  or Spearman chosen by Shapiro-Wilk, as the paper) and Bland-Altman, as tables and figures;
* scores stratified by lesion size (ground-truth WT volume below / at or above a cut-off);
* with a second prediction folder: a paired comparison A vs B per region and metric (Wilcoxon signed-rank,
  rank-biserial effect size, median difference).

The statistics are ``pedtumorseg.evaluation.analysis``; this module only renders them. matplotlib (extra ``[report]``) is
imported when a report is written; ``require_matplotlib`` checks it up front. Every number in a table is a
``<td>`` with ``data-stat`` (what it is) and ``data-value`` (the full-precision value, ``nan`` when undefined);
rows carry ``data-region`` and tables ``data-section``, ``data-set`` and ``data-metric``.
"""

from __future__ import annotations

import html
import importlib.util
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence


from pedtumorseg import __version__
from pedtumorseg.evaluation import analysis as an
from pedtumorseg.evaluation.figures import (SET_COLORS, agreement_figure, distribution_figure, is_number, number_text,
                                           png_img)
from pedtumorseg.errors import InputError

#: section id -> heading, in page order (every report has all of them)
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("scores", "Scores per region"),
    ("dice-distribution", "Distribution of lesion-wise Dice"),
    ("volumes", "Absolute volumes (mL)"),
    ("fractions", "Volume fractions of the whole tumor"),
    ("size", "Scores by lesion size"),
    ("paired", "Paired comparison A vs B"),
    ("methods", "Methods"),
)
METRIC_LABELS: dict[str, str] = {
    "lesion_dice": "Lesion-wise Dice",
    "lesion_hd95": "Lesion-wise HD95 (mm)",
    "lesion_nsd_0.5": "Lesion-wise NSD @ 0.5 mm",
    "lesion_nsd_1.0": "Lesion-wise NSD @ 1.0 mm",
    "dice": "Legacy Dice (whole region)",
    "hd95": "Legacy HD95 (mm, whole region)",
    "sensitivity": "Legacy sensitivity (whole region)",
}
#: metrics whose smaller values are better (for the "favours" column of the paired comparison)
LOWER_IS_BETTER = frozenset({"lesion_hd95", "hd95"})
#: metrics of the size-stratified tables
STRATIFIED_METRICS: tuple[str, ...] = ("lesion_dice", "lesion_hd95", "lesion_nsd_1.0", "dice")
#: significance level shown in the paired comparison's "favours" column (no multiplicity correction)
ALPHA = 0.05
_SIZE_RATIONALE = (
    "Pediatric brain tumors span more than two orders of magnitude in volume and no volumetric threshold for a "
    "'small' tumor is established for them (response criteria such as RAPNO use diameters), so by default the "
    "cases are split at the median ground-truth WT volume of this evaluation: two groups of equal size, the "
    "most balanced comparison the data allow. Lesion-wise scores are expected to drop for small tumors, where a "
    "few voxels of disagreement weigh more and a missed or spurious lesion scores 0. Give a fixed cut-off "
    "(--size-cutoff-ml) to compare strata across evaluations.")


def require_matplotlib(report_path: str | os.PathLike | None = None) -> None:
    """Raise ``InputError`` (one line, naming the report) when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(report_path, "the report needs matplotlib: pip install 'pedtumorseg[report]'")


# --- formatting ---------------------------------------------------------------------------------------------

def _td(stat: str, v, kind: str = "num") -> str:
    if is_number(v):
        value = repr(float(v)) if math.isfinite(float(v)) else "nan"
        return f'<td class="num" data-stat="{stat}" data-value="{value}">{number_text(v, kind)}</td>'
    return f'<td data-stat="{stat}">{html.escape("" if v is None else str(v))}</td>'


def _table(section: str, dataset: str, metric: str, headers: Sequence[str], rows: Sequence[tuple[str, list[str]]],
           caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f'<tr data-region="{html.escape(region)}"><th>{html.escape(region)}</th>{"".join(cells)}</tr>'
                   for region, cells in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table data-section="{section}" data-set="{dataset}" data-metric="{html.escape(metric)}">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


# --- sections -------------------------------------------------------------------------------------------------

def _metrics_of(rows: Sequence[Mapping]) -> list[str]:
    present = set(rows[0]) if rows else set()
    ordered = [m for m in METRIC_LABELS if m in present]
    return ordered + sorted(m for m in present - set(ordered) - {"case", "region"})


def _scores_section(sets: Sequence[tuple[str, object]]) -> str:
    out = [_p("Per region and metric over the evaluated cases: mean, sample SD, median, first and third quartile "
              "and IQR (NaN values left out and counted). NET+CC+ED is the paper's combined non-enhancing "
              "component, scored as one region with the same definitions.")]
    metrics = _metrics_of(sets[0][1].rows)
    for metric in metrics:  # one row of tables per metric: A, then B beside it
        out.append('<div class="row">')
        for name, result in sets:
            table = an.score_table(result.rows, metric)
            rows = [(region, [_td("n", s["n"], "int"), _td("n_nan", s["n_nan"], "int"), _td("mean", s["mean"]),
                              _td("sd", s["sd"]), _td("median", s["median"]), _td("q1", s["q1"]),
                              _td("q3", s["q3"]), _td("iqr", s["iqr"])]) for region, s in table.items()]
            out.append(_table("scores", name, metric, ["region", "n", "NaN", "mean", "SD", "median", "Q1", "Q3",
                                                       "IQR"], rows, f"{name}: {METRIC_LABELS.get(metric, metric)}"))
        out.append("</div>")
    return "".join(out)


def _distribution_section(sets: Sequence[tuple[str, object]]) -> str:
    groups = [(name, {r: list(v.values()) for r, v in an.values_by_region(result.rows, "lesion_dice").items()})
              for name, result in sets]
    fig = distribution_figure(groups, an.REPORT_REGIONS, "lesion-wise Dice",
                               SET_COLORS if len(groups) > 1 else None, ylim=(-0.03, 1.03))
    note = "Violin (kernel density, where values spread), box (quartiles, whiskers 1.5 IQR) and cases as points."
    if len(groups) > 1:
        note += " A and B side by side per region."
    return _p(note) + png_img(fig)


def _agreement_rows(results: Mapping[str, dict]) -> list[tuple[str, list[str]]]:
    rows = []
    for region, res in results.items():
        c, ba = res["correlation"], res["bland_altman"]
        rows.append((region, [
            _td("n", res["n"], "int"), _td("median_gt", res["median_gt"]), _td("median_pred", res["median_pred"]),
            _td("shapiro_p_gt", c["normality_x"]["p_value"], "p"),
            _td("shapiro_p_pred", c["normality_y"]["p_value"], "p"),
            _td("method", c["method"] or "\u2014"), _td("coefficient", c["coefficient"]),
            _td("p_value", c["p_value"], "p"), _td("bias", ba["bias"]), _td("sd_difference", ba["sd"]),
            _td("loa_lower", ba["loa_lower"]), _td("loa_upper", ba["loa_upper"]),
            _td("mann_whitney_p", res["mann_whitney"]["p_value"], "p"), _td("note", c["note"])]))
    return rows


_AGREEMENT_HEADERS = ["region", "n", "median GT", "median pred", "Shapiro-Wilk p (GT)", "Shapiro-Wilk p (pred)",
                      "correlation", "coefficient", "p", "bias (pred - GT)", "SD of differences", "LoA lower",
                      "LoA upper", "Mann-Whitney p", "note"]


def _volume_pairs(result, regions: Sequence[str], fractions: bool) -> dict[str, tuple[list[float], list[float]]]:
    """{region: (predicted values, ground-truth values)} over the cases, in case order."""
    out = {r: ([], []) for r in regions}
    for case in sorted(result.volumes):
        vol = result.volumes[case]
        pred, gt = vol["prediction"], vol["ground_truth"]
        if fractions:
            pred, gt = an.fractions_of_wt(pred), an.fractions_of_wt(gt)
        for r in regions:
            out[r][0].append(pred[r])
            out[r][1].append(gt[r])
    return out


def _agreement_section(sets: Sequence[tuple[str, object]], fractions: bool) -> str:
    regions = an.FRACTION_REGIONS if fractions else an.REPORT_REGIONS
    unit = "(fraction of WT)" if fractions else "(mL)"
    section = "fractions" if fractions else "volumes"
    if fractions:
        out = [_p("Share of the whole tumor (subregion volume / WT volume) per case, prediction against ground "
                  "truth, as the paper compares them. Cases whose predicted or ground-truth WT is empty have no "
                  "fractions and are left out.")]
    else:
        out = [_p("Volumes in mL from the voxel spacing, prediction against ground truth per case.")]
    out.append(_p("Correlation: Pearson when a Shapiro-Wilk test does not reject normality (p \u2265 "
                  f"{an.NORMALITY_ALPHA}) for both the ground-truth and the predicted values, Spearman otherwise. "
                  "Bland-Altman: bias = mean of prediction - ground truth, limits of agreement = bias \u00b1 1.96 SD "
                  "of the differences. Mann-Whitney p: two-sided Mann-Whitney U test of the predicted against the "
                  "ground-truth distribution, the paper's test of the proportions (it ignores the pairing; the "
                  "Bland-Altman bias is the paired view)."))
    for name, result in sets:
        pairs = _volume_pairs(result, regions, fractions)
        results = {r: an.agreement(p, g) for r, (p, g) in pairs.items()}
        if fractions:
            excluded = sorted(c for c in result.volumes
                              if not (result.volumes[c]["prediction"]["WT"] > 0
                                      and result.volumes[c]["ground_truth"]["WT"] > 0))
            if excluded:
                out.append(_p(f"{name}: left out (empty WT): {', '.join(excluded)}"))
        out.append(_table(section, name, "agreement", _AGREEMENT_HEADERS, _agreement_rows(results),
                          f"{name}: agreement with the ground truth {unit}"))
        out.append(png_img(agreement_figure(pairs, results, unit)))
    return "".join(out)


def _size_section(sets: Sequence[tuple[str, object]], cutoff_ml: float | None) -> str:
    out = []
    tables: dict[str, list[str]] = {}  # metric -> the tables of A and B, shown side by side
    for name, result in sets:
        gt_wt = {c: v["ground_truth"]["WT"] for c, v in result.volumes.items()}
        strata = an.size_strata(gt_wt, cutoff_ml)
        out.append(f'<p data-set="{name}" data-stat="cutoff_ml" data-value="{strata["cutoff_ml"]!r}">'
                   f'{name}: cut-off {number_text(strata["cutoff_ml"])} mL ({html.escape(strata["rule"])}); small '
                   f'(&lt; cut-off): {len(strata["small"])} case(s), large (\u2265 cut-off): '
                   f'{len(strata["large"])} case(s).</p>')
        for metric in [m for m in STRATIFIED_METRICS if m in _metrics_of(result.rows)]:
            table = an.stratified_table(result.rows, metric, strata)
            rows = []
            for region, s in table.items():
                sm, lg, t = s["small"], s["large"], s["test"]
                rows.append((region, [_td("small_n", sm["n"], "int"), _td("small_mean", sm["mean"]),
                                      _td("small_median", sm["median"]), _td("large_n", lg["n"], "int"),
                                      _td("large_mean", lg["mean"]), _td("large_median", lg["median"]),
                                      _td("u", t["statistic"], "stat"), _td("p_value", t["p_value"], "p"),
                                      _td("note", t["note"])]))
            tables.setdefault(metric, []).append(_table("size", name, metric, ["region", "small n", "small mean", "small median", "large n",
                                                     "large mean", "large median", "Mann-Whitney U", "p", "note"],
                              rows, f"{name}: {METRIC_LABELS.get(metric, metric)} by ground-truth WT volume"))
    out += [f'<div class="row">{"".join(t)}</div>' for t in tables.values()]
    out.append(_p(_SIZE_RATIONALE + " Small and large are compared with a two-sided Mann-Whitney U test per "
                  "region (independent groups)."))
    return "".join(out)


def _favours(metric: str, res: dict) -> str:
    if not math.isfinite(res["p_value"]) or res["p_value"] >= ALPHA or not math.isfinite(res["rank_biserial"]):
        return "\u2014"
    a_higher = res["rank_biserial"] > 0
    return "A" if a_higher != (metric in LOWER_IS_BETTER) else "B"


def _paired_section(sets: Sequence[tuple[str, object]], labels: Mapping[str, str]) -> str:
    if len(sets) < 2:
        return _p("Not requested: give a second prediction folder with --pred-b to compare two predictions "
                  "of the same cases against the same ground truth.")
    (_, a), (_, b) = sets
    out = [_p(f"A = {labels.get('A', 'A')}; B = {labels.get('B', 'B')}. Per region and metric over the cases "
              "that both predictions scored: two-sided Wilcoxon signed-rank test of A against B (pairs with equal "
              "values dropped, Wilcoxon's method), median of the differences A - B, and the matched-pairs "
              "rank-biserial correlation r = (R+ - R-) / (R+ + R-) over the ranks of |A - B| (+1: A higher in "
              f"every pair, -1: B higher in every pair). 'favours' names the better prediction where p < {ALPHA} "
              "(no correction for the number of tests: read the p values as descriptive).")]
    for metric in [m for m in _metrics_of(a.rows) if m in _metrics_of(b.rows)]:
        va, vb = an.values_by_region(a.rows, metric), an.values_by_region(b.rows, metric)
        rows = []
        for region in an.REPORT_REGIONS:
            if not va[region] and not vb[region]:
                continue
            res = an.paired_comparison(va[region], vb[region])
            rows.append((region, [_td("n", res["n"], "int"), _td("n_zero", res["n_zero"], "int"),
                                  _td("median_a", res["median_a"]), _td("median_b", res["median_b"]),
                                  _td("median_difference", res["median_difference"]),
                                  _td("w", res["statistic"], "stat"), _td("p_value", res["p_value"], "p"),
                                  _td("rank_biserial", res["rank_biserial"]), _td("favours", _favours(metric, res)),
                                  _td("note", res["note"])]))
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        out.append(_table("paired", "A-B", metric, ["region", "pairs", "equal pairs", "median A", "median B",
                                                    "median A - B", "Wilcoxon W", "p", "rank-biserial r",
                                                    "favours", "note"], rows,
                          f"A vs B: {METRIC_LABELS.get(metric, metric)} ({better})"))
    return "".join(out)


def _methods_section() -> str:
    items = [
        "Scores: pedtumorseg.evaluation.metrics per case and region (BraTS 2024/2025 PED lesion-wise Dice, HD95 and NSD; "
        "legacy whole-region Dice, HD95 and sensitivity), as in the evaluation CSV.",
        "Regions: ET, NET, CC, ED; TC = ET + NET + CC; WT = ET + NET + CC + ED; NET+CC+ED, the paper's combined "
        "non-enhancing component.",
        "Descriptive statistics: NaN values left out and counted; quartiles by linear interpolation (numpy); "
        "SD with n - 1.",
        f"Tests (scipy.stats): Shapiro-Wilk normality (alpha {an.NORMALITY_ALPHA}) choosing Pearson or Spearman "
        "correlation; Mann-Whitney U for the size strata; Wilcoxon signed-rank for A vs B. A test with fewer than "
        f"{an.MIN_CASES} cases (pairs, or cases per group) is reported as '{an.NOT_ENOUGH}'; a constant series as "
        f"'{an.CONSTANT}'.",
        "Bland-Altman: differences prediction - ground truth against the mean of the two; limits of agreement "
        "bias \u00b1 1.96 SD (SD with n - 1).",
    ]
    return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _summary_section(sets, labels: Mapping[str, str], gt_label: str) -> str:
    rows = [("ground truth", gt_label)]
    for name, result in sets:
        rows.append((f"prediction {name}", labels.get(name, name)))
        rows.append((f"{name}: cases evaluated", str(result.summary["n_cases"])))
        if result.missing:
            rows.append((f"{name}: cases without a prediction", ", ".join(result.missing)))
        rows.append((f"{name}: per-case scores", str(result.csv_path)))
        if result.volumes_path is not None:
            rows.append((f"{name}: per-case volumes", str(result.volumes_path)))
    rows.append(("written", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by pedtumorseg {__version__}"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1400px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
nav ol{columns:2}table{border-collapse:collapse;margin:.8em 0 1.4em;font-size:.85em}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .5em}thead th{background:#f0f0f0}tbody th{text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.meta th{text-align:left;background:#f7f7f7}
img{max-width:100%;height:auto;display:block;margin:.5em 0}div.row{display:flex;flex-wrap:wrap;column-gap:2em}
"""


def render(sets: Sequence[tuple[str, object]], *, labels: Mapping[str, str], gt_label: str,
           size_cutoff_ml: float | None = None) -> str:
    """The report's HTML for ``sets`` = [("A", EvaluationResult), optionally ("B", EvaluationResult)], both
    evaluated with ``report_data=True``; ``labels`` names the prediction folders, ``gt_label`` the ground truth."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>PedTumorSeg evaluation report'
            f"</title><style>{STYLE}</style></head><body><h1>PedTumorSeg evaluation report</h1>"
            f"{render_body(sets, labels=labels, gt_label=gt_label, size_cutoff_ml=size_cutoff_ml)}</body></html>\n")


def render_body(sets: Sequence[tuple[str, object]], *, labels: Mapping[str, str], gt_label: str,
                size_cutoff_ml: float | None = None) -> str:
    """The report's contents (its table of contents and sections, without the page around them; styled by
    :data:`STYLE`), for a page that embeds the evaluation (the cohort report)."""
    for name, result in sets:
        if not result.volumes:
            raise ValueError(f"prediction {name}: evaluate_folder(..., report_data=True) is needed for a report")
    bodies = {
        "summary": _summary_section(sets, labels, gt_label),
        "scores": _scores_section(sets),
        "dice-distribution": _distribution_section(sets),
        "volumes": _agreement_section(sets, fractions=False),
        "fractions": _agreement_section(sets, fractions=True),
        "size": _size_section(sets, size_cutoff_ml),
        "paired": _paired_section(sets, labels),
        "methods": _methods_section(),
    }
    nav = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>' for sid, title in SECTIONS)
    sections = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{bodies[sid]}</section>'
                       for sid, title in SECTIONS)
    return f"<nav><ol>{nav}</ol></nav>{sections}"


def write_report(path: str | os.PathLike, a, b=None, *, labels: Mapping[str, str] | None = None,
                 gt_label: str = "", size_cutoff_ml: float | None = None) -> Path:
    """Write the report of evaluation ``a`` (and the paired comparison with ``b``) to ``path`` atomically."""
    from pedtumorseg.files import atomic_output

    require_matplotlib(path)
    sets = [("A", a)] + ([("B", b)] if b is not None else [])
    text = render(sets, labels=labels or {}, gt_label=gt_label, size_cutoff_ml=size_cutoff_ml)
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
