"""The cohort report (``pedtumorseg cohort report``): one CSV of every case's state, volumes (mL) and fractions of
the whole tumor from its stats file, and one self-contained HTML page (inline CSS, figures as embedded PNG, no
script, no external resource) with the distributions of the volumes per subregion, the proportions of the whole
tumor (per case and over the cohort), the slowest cases, the cases that did not finish and, when ground truth is
given, the project's evaluation report (``evaluation.report``) over the finished cases.

Volumes are the stats files' ``volumes_ml`` (post-processed labels); fractions are ``analysis.fractions_of_wt``
of them (NaN, an empty CSV cell, when WT is empty), with NET+CC+ED the combined non-enhancing component.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pedtumorseg import __version__
from pedtumorseg.cohort.state import CohortFolder, DONE
from pedtumorseg.cohort.status import CaseState, cohort_states, summary_line
from pedtumorseg.conventions import REGIONS
from pedtumorseg.evaluation import analysis as an
from pedtumorseg.evaluation.figures import REGION_COLORS, distribution_figure, number_text, png_img
from pedtumorseg.files import atomic_output
from pedtumorseg.outputs.paths import CaseOutputs

VOLUME_REGIONS: tuple[str, ...] = tuple(REGIONS) + (an.COMBINED_REGION,)
FRACTION_REGIONS: tuple[str, ...] = an.FRACTION_REGIONS
SLOWEST = 10


@dataclass
class CaseRow:
    state: CaseState
    stats: dict | None  # the case's stats file when it is done

    @property
    def volumes(self) -> dict[str, float]:
        return an.with_combined(self.stats["volumes_ml"]) if self.stats else {}

    @property
    def fractions(self) -> dict[str, float]:
        return an.fractions_of_wt(self.volumes) if self.stats else {}

    @property
    def seconds(self) -> float | None:
        return (self.stats or {}).get("inference", {}).get("seconds")


def cohort_rows(output_dir: str | os.PathLike, verify: bool = False) -> list[CaseRow]:
    """Every case of the cohort in ``output_dir`` (or, where nothing was submitted, every case with a stats file
    there) with its state and, when done, its stats."""
    output_dir = Path(output_dir)
    if CohortFolder(output_dir).read_record() is not None:
        states = cohort_states(output_dir, verify=verify)
    else:
        ids = sorted(p.name[:-len("-stats.json")] for p in output_dir.glob("*-stats.json"))
        states = [CaseState(case_id, DONE) for case_id in ids]
    rows = []
    for s in states:
        stats = None
        if s.state == DONE:
            stats = json.loads(CaseOutputs.of(s.case_id, output_dir).stats.read_text(encoding="utf-8"))
        rows.append(CaseRow(s, stats))
    return rows


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def csv_columns() -> list[str]:
    return (["case_id", "state", "seconds", "network_seconds", "device", "backend"]
            + [f"{r}_ml" for r in VOLUME_REGIONS] + [f"{r}_fraction" for r in FRACTION_REGIONS]
            + ["warnings", "detail"])


def write_csv(rows: list[CaseRow], path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(csv_columns())
            for row in rows:
                inference = (row.stats or {}).get("inference", {})
                vol, frac = row.volumes, row.fractions
                writer.writerow([row.state.case_id, row.state.state, _cell(row.seconds),
                                 _cell(inference.get("network_seconds")), inference.get("device", ""),
                                 inference.get("backend", "")]
                                + [_cell(vol.get(r)) for r in VOLUME_REGIONS]
                                + [_cell(frac.get(r)) for r in FRACTION_REGIONS]
                                + [" | ".join((row.stats or {}).get("warnings", [])), row.state.detail])
    return path


# --- the HTML page ----------------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]], section: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    return f'<table data-section="{section}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _num(stat: str, v, kind: str = "num") -> str:
    value = "nan" if v is None or not math.isfinite(float(v)) else repr(float(v))
    return f'<td class="num" data-stat="{stat}" data-value="{value}">{number_text(v, kind)}</td>'


def _text(v) -> str:
    return f"<td>{html.escape(str(v))}</td>"


def _describe_table(values: dict[str, list[float]], section: str) -> str:
    rows = []
    for region, v in values.items():
        d = an.describe(v)
        rows.append([f'<th data-region="{html.escape(region)}">{html.escape(region)}</th>', _num("n", d["n"], "int")]
                    + [_num(k, d[k]) for k in ("median", "q1", "q3", "mean", "sd")])
    return _table(["region", "n", "median", "Q1", "Q3", "mean", "SD"], rows, section)


def _proportion_figure(rows: list[CaseRow]):
    """One horizontal bar per case (largest WT on top): the shares of ET, NET, CC and ED of its whole tumor."""
    from matplotlib.figure import Figure

    shown = sorted((r for r in rows if r.stats and r.volumes["WT"] > 0), key=lambda r: r.volumes["WT"])
    fig = Figure(figsize=(8.0, max(2.0, 0.22 * len(shown) + 1.2)), dpi=90)
    ax = fig.subplots()
    left = [0.0] * len(shown)
    for region in ("ET", "NET", "CC", "ED"):
        share = [r.fractions[region] for r in shown]
        ax.barh(range(len(shown)), share, left=left, color=REGION_COLORS[region], edgecolor="black",
                linewidth=0.3, label=region)
        left = [a + b for a, b in zip(left, share)]
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([r.state.case_id for r in shown], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of the whole tumor (cases by WT volume)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, ncol=4, frameon=False)  # above the bars
    fig.tight_layout()
    return fig


def _sections(rows: list[CaseRow], evaluation_html: str) -> list[tuple[str, str, str]]:
    done = [r for r in rows if r.stats]
    volumes = {reg: [r.volumes[reg] for r in done] for reg in VOLUME_REGIONS}
    fractions = {reg: [r.fractions[reg] for r in done] for reg in FRACTION_REGIONS}
    out = [("cohort-summary", "Cohort", _summary(rows))]
    if done:
        out.append(("cohort-volumes", "Volumes per subregion (mL)",
                    png_img(distribution_figure([("cohort", volumes)], list(VOLUME_REGIONS), "volume (mL)"))
                    + _describe_table(volumes, "volumes")))
        out.append(("cohort-proportions", "Proportions of the whole tumor",
                    png_img(_proportion_figure(rows))
                    + png_img(distribution_figure([("cohort", fractions)], list(FRACTION_REGIONS),
                                                  "fraction of WT", ylim=(0, 1)))
                    + _describe_table(fractions, "fractions")
                    + "<p>Cases with an empty whole tumor have no proportions (counted as n/a).</p>"))
    slow = sorted((r for r in done if r.seconds is not None), key=lambda r: -r.seconds)[:SLOWEST]
    out.append(("cohort-slowest", f"Slowest cases (up to {SLOWEST})", _table(
        ["case", "seconds", "network seconds", "device"],
        [[_text(r.state.case_id), _num("seconds", r.seconds), _num("network_seconds",
                                                                     r.stats["inference"].get("network_seconds")),
          _text(r.stats["inference"].get("device", ""))] for r in slow], "slowest")))
    unfinished = [r for r in rows if r.state.state != DONE]
    out.append(("cohort-unfinished", "Failed and unfinished cases", _table(
        ["case", "state", "task", "detail"], [[_text(r.state.case_id), _text(r.state.state), _text(r.state.task or ""),
                                               _text(r.state.detail)] for r in unfinished], "unfinished")
        if unfinished else "<p>None: every case is done.</p>"))
    if evaluation_html:
        out.append(("cohort-evaluation", "Evaluation against the ground truth", evaluation_html))
    return out


def _summary(rows: list[CaseRow]) -> str:
    models = sorted({f"{r.stats['model'].get('name')} {r.stats['model'].get('version')}" for r in rows if r.stats})
    items = [("cases", summary_line([r.state for r in rows])), ("model", ", ".join(models) or "n/a"),
             ("written", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by pedtumorseg {__version__}")]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f'<table class="meta">{body}</table>'


def render(rows: list[CaseRow], evaluation_html: str = "") -> str:
    from pedtumorseg.evaluation.report import STYLE

    sections = _sections(rows, evaluation_html)
    nav = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>PedTumorSeg cohort report</title>'
            f"<style>{STYLE}</style></head><body><h1>PedTumorSeg cohort report</h1><nav><ol>{nav}</ol></nav>"
            f"{body}</body></html>\n")


def evaluation_body(output_dir: Path, gt_dir, csv_path: Path) -> tuple[str, list[str]]:
    """The evaluation report's contents over the finished cases (``evaluate_folder`` with the report's data; its
    CSV, summary and volumes files next to ``csv_path``), and its summary lines."""
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.evaluation.report import render_body

    result = evaluate_folder(output_dir, gt_dir, csv_path, report_data=True)
    return (render_body([("A", result)], labels={"A": str(output_dir)}, gt_label=str(gt_dir)),
            result.summary_lines())


def write_report(output_dir: str | os.PathLike, csv_path, html_path, gt_dir=None) -> list[str]:
    """Write the cohort CSV and HTML (and with ``gt_dir`` the evaluation's files beside the CSV); the lines to
    print."""
    from pedtumorseg.evaluation.report import require_matplotlib

    require_matplotlib(html_path)
    output_dir = Path(output_dir)
    rows = cohort_rows(output_dir)
    lines = [summary_line([r.state for r in rows])]
    evaluation_html = ""
    if gt_dir is not None:
        csv_path = Path(csv_path)
        evaluation_csv = csv_path.with_name(f"{csv_path.stem}-evaluation.csv")
        evaluation_html, more = evaluation_body(output_dir, gt_dir, evaluation_csv)
        lines += more
    write_csv(rows, csv_path)
    with atomic_output(html_path) as tmp:
        Path(tmp).write_text(render(rows, evaluation_html), encoding="utf-8")
    return lines + [f"cases: {csv_path}", f"report: {html_path}"]
