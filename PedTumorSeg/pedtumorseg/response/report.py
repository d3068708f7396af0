"""The response assessment's files: ``response.json`` (everything), ``response-timepoints.csv`` (one row per
timepoint), ``response-lesions.csv`` (one row per lesion and timepoint), ``response.html`` (self-contained:
the timeline of volumes and sums of products, and per timepoint the measured slice with both diameters drawn as
calipers) and ``response.pdf`` (the same, ``report_pdf``). Every file is written atomically; the reports need
matplotlib (``pedtumorseg[report]``).
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pedtumorseg.files import atomic_output, write_json
from pedtumorseg.response.lesions import MEASURED_REGIONS, region_mask

TIMEPOINT_COLUMNS = ("timepoint", "ET_ml", "NET_ml", "CC_ml", "ED_ml", "TC_ml", "WT_ml", "measured", "spd_mm2",
                     "measured_volume_ml", "category_2d", "change_2d_vs_baseline_pct", "change_2d_vs_nadir_pct",
                     "category_volume", "change_volume_vs_baseline_pct", "change_volume_vs_nadir_pct",
                     "categories_agree", "confirmed_by_next_scan", "nmi_after_registration")
LESION_COLUMNS = ("kind", "track", "timepoint", "status", "volume_ml", "longest_mm", "perpendicular_mm",
                  "product_mm2", "measurable", "target", "slice")


def _csv_text(columns, rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def timepoint_rows(result: dict) -> list[dict]:
    rows = []
    for tp in result["timepoints"]:
        c2, cv = tp["category_2d"] or {}, tp["category_volume"] or {}
        rows.append({"timepoint": tp["name"], **{f"{k}_ml": v for k, v in tp["volumes_ml"].items()},
                     "measured": result["measured"], "spd_mm2": tp["spd_mm2"],
                     "measured_volume_ml": tp["measured_volume_ml"], "category_2d": c2.get("category"),
                     "change_2d_vs_baseline_pct": c2.get("change_vs_baseline_pct"),
                     "change_2d_vs_nadir_pct": c2.get("change_vs_nadir_pct"), "category_volume": cv.get("category"),
                     "change_volume_vs_baseline_pct": cv.get("change_vs_baseline_pct"),
                     "change_volume_vs_nadir_pct": cv.get("change_vs_nadir_pct"),
                     "categories_agree": tp["categories_agree"], "confirmed_by_next_scan": tp["confirmed_by_next_scan"],
                     "nmi_after_registration": tp["alignment_to_baseline"]["nmi_after"]})
    return rows


def lesion_rows(result: dict) -> list[dict]:
    return [{**{k: les[k] for k in LESION_COLUMNS if k in les},
             "slice": (les["measurement"] or {}).get("chosen", {}).get("slice") if les["measurement"] else None}
            for les in result["lesions"]]


def write_text(text: str, path: Path) -> Path:
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def _timeline_figure(result: dict):
    from matplotlib.figure import Figure

    names = [tp["name"] for tp in result["timepoints"]]
    fig = Figure(figsize=(9, 3.4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    for region, color in (("ET", "red"), ("TC", "purple"), ("WT", "gray")):
        ax1.plot(names, [tp["volumes_ml"][region] for tp in result["timepoints"]], "o-", color=color, label=region)
    ax1.set_ylabel("volume (mL)")
    ax1.legend()
    ax2.plot(names, [tp["spd_mm2"] for tp in result["timepoints"]], "s-", color="black")
    ax2.set_ylabel(f"sum of products, {result['measured']} (mm²)")
    fig.tight_layout()
    return fig


def _caliper_figure(tp, result: dict, t: int):
    """The measured slice of the largest target (else the largest lesion) with both diameters drawn."""
    from matplotlib.figure import Figure

    rows = [les for les in result["lesions"] if les["kind"] == result["measured"] and les["timepoint"] == tp.name
            and les["measurement"]]
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.subplots()
    ax.set_axis_off()
    if not rows:
        ax.text(0.5, 0.5, "no lesion of the measured kind", ha="center", va="center")
        return fig
    les = max(rows, key=lambda r: (r["target"], r["product_mm2"]))
    chosen = les["measurement"]["chosen"]
    image = sitk.GetArrayFromImage(tp.t1ce)[chosen["slice"]]
    sz, sy, sx = tp.spacing_zyx
    extent = (0, image.shape[1] * sx, image.shape[0] * sy, 0)
    ax.imshow(image, cmap="gray", extent=extent, interpolation="nearest")
    mask = region_mask(tp.labels[chosen["slice"]], MEASURED_REGIONS[result["measured"]])
    ys, xs = (np.arange(n) * s + s / 2 for n, s in zip(mask.shape, (sy, sx)))
    ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=["yellow"], linewidths=0.8)
    (ly0, lx0), (ly1, lx1) = chosen["longest_ends_yx_mm"]
    half = max(chosen["longest_mm"], 30.0)  # the lesion and its surroundings, at least 60 mm wide
    cy, cx = (ly0 + ly1) / 2, (lx0 + lx1) / 2
    ax.set_xlim(cx - half, cx + half)
    ax.set_ylim(cy + half, cy - half)
    for ends, color in ((chosen["longest_ends_yx_mm"], "red"), (chosen["perpendicular_ends_yx_mm"], "cyan")):
        (y0, x0), (y1, x1) = ends
        ax.plot([x0, x1], [y0, y1], "-o", color=color, markersize=3, linewidth=1.5)
    ax.set_title(f"{tp.name}: slice {chosen['slice']}, lesion {les['track']}\n{chosen['longest_mm']:.1f} x "
                 f"{chosen['perpendicular_mm']:.1f} mm", fontsize=9)
    return fig


def _table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(result: dict, timepoints) -> str:
    from pedtumorseg.evaluation.figures import png_img

    crit = result["criterion"]
    parts = [f"<h1>Response assessment: {html.escape(crit['name'])}</h1>",
             f"<p class='note'>{html.escape(result['note'])}</p>",
             f"<p>Criterion: {html.escape(crit['name'])} ({html.escape(crit['source'])}). Measured: "
             f"{html.escape(result['measured'])} ({html.escape(result['measured_region'])}); slice rule "
             f"{html.escape(result['slice_rule'])}; measurable: {html.escape(crit['measurable'])}; up to "
             f"{crit['max_target_lesions']} target lesions. Notes: {html.escape('; '.join(crit['notes']))}</p>",
             "<h2>Timeline</h2>", png_img(_timeline_figure(result)),
             _table(TIMEPOINT_COLUMNS, timepoint_rows(result)), "<h2>Measured slices</h2><div class='row'>"]
    parts += [png_img(_caliper_figure(tp, result, t)) for t, tp in enumerate(timepoints)]
    parts += ["</div><h2>Lesions</h2>", _table(LESION_COLUMNS, lesion_rows(result))]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}.note{background:#fff3cd;padding:.5em}"
             ".row img{margin:4px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>PedTumorSeg response</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _cell(value) -> str:
    return "" if value is None else str(value)


def pdf_pages(result: dict, timepoints):
    """The PDF report's pages as figures, in order (``report_pdf``): the HTML report's content."""
    from pedtumorseg.response.report_pdf import LESION_ROWS_PER_PAGE, table_page, text_page

    yield text_page(result)
    yield _timeline_figure(result)
    rows = timepoint_rows(result)
    yield table_page("Timepoints", ["", *(r["timepoint"] for r in rows)],
                      [[c, *(_cell(r.get(c)) for r in rows)] for c in TIMEPOINT_COLUMNS[1:]])
    for t, tp in enumerate(timepoints):
        yield _caliper_figure(tp, result, t)
    lesions = lesion_rows(result)
    for start in range(0, max(len(lesions), 1), LESION_ROWS_PER_PAGE):
        part = lesions[start:start + LESION_ROWS_PER_PAGE]
        yield table_page(f"Lesions ({start + 1}-{start + len(part)} of {len(lesions)})", list(LESION_COLUMNS),
                          [[_cell(r.get(c)) for c in LESION_COLUMNS] for r in part])


def write_outputs(result: dict, timepoints, out: Path, html_report: bool = True) -> dict[str, Path]:
    """Every file of the assessment into ``out``; returns kind -> path. With ``html_report`` also the HTML report
    and the same as a PDF (``report_pdf``). Both are rendered before any file is written, so a failure leaves no
    partial set."""
    from pedtumorseg.response.report_pdf import render_pdf

    out = Path(out)
    page = render_html(result, timepoints) if html_report else None
    pdf = render_pdf(result, pdf_pages(result, timepoints)) if html_report else None
    written = {"json": write_json(result, out / "response.json"),
               "timepoints_csv": write_text(_csv_text(TIMEPOINT_COLUMNS, timepoint_rows(result)),
                                            out / "response-timepoints.csv"),
               "lesions_csv": write_text(_csv_text(LESION_COLUMNS, lesion_rows(result)), out / "response-lesions.csv")}
    if page is not None:
        written["html"] = write_text(page, out / "response.html")
        with atomic_output(out / "response.pdf") as tmp:
            Path(tmp).write_bytes(pdf)
        written["pdf"] = out / "response.pdf"
    return written
