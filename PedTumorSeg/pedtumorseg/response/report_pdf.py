"""``response.pdf``: the HTML report's content as pages of a PDF (matplotlib's ``PdfPages``, no further
dependency): the criterion and the note that every category is a suggestion; the timeline of volumes and sums of
products; the timepoint table (transposed: one column per timepoint); per timepoint the measured slice with both
diameters drawn as calipers; the lesion table (:data:`LESION_ROWS_PER_PAGE` rows a page).

The pages are listed by ``report.pdf_pages`` (with the HTML report's own figures); here the text and table pages
and the PDF itself. Text is written with TrueType fonts (``pdf.fonttype`` 42) so that a PDF reader can search and
copy it.
"""

from __future__ import annotations

import io
import textwrap

LESION_ROWS_PER_PAGE = 30
_A4_LANDSCAPE = (11.69, 8.27)


def text_page(result: dict):
    from matplotlib.figure import Figure

    crit = result["criterion"]
    fig = Figure(figsize=_A4_LANDSCAPE)
    fig.text(0.05, 0.93, f"Response assessment: {crit['name']}", fontsize=16, weight="bold")
    paragraphs = [result["note"],
                  f"Criterion: {crit['name']} ({crit['source']}). Measured: {result['measured']} "
                  f"({result['measured_region']}); slice rule {result['slice_rule']}; measurable: "
                  f"{crit['measurable']}; up to {crit['max_target_lesions']} target lesions.",
                  "Notes: " + "; ".join(crit["notes"])]
    y = 0.86
    for paragraph in paragraphs:
        lines = textwrap.wrap(paragraph, 120)
        fig.text(0.05, y, "\n".join(lines), fontsize=10, va="top")
        y -= 0.035 * (len(lines) + 1)
    return fig


def table_page(title: str, header: list[str], rows: list[list[str]], font: float = 8.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=_A4_LANDSCAPE)
    ax = fig.add_axes((0.03, 0.03, 0.94, 0.88))
    ax.set_axis_off()
    fig.text(0.03, 0.94, title, fontsize=13, weight="bold")
    table = ax.table(cellText=rows or [[""] * len(header)], colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(font)
    table.auto_set_column_width(list(range(len(header))))
    return fig


def render_pdf(result: dict, figures) -> bytes:
    """The pages ``figures`` (matplotlib figures, drawn one at a time) as PDF bytes, with the criterion in the
    title and the note as the subject (nothing written: the caller writes them with the other files)."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    buf = io.BytesIO()
    crit = result["criterion"]
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        with PdfPages(buf, metadata={"Title": f"PedTumorSeg response assessment: {crit['name']}",
                                     "Subject": result["note"], "Creator": "pedtumorseg response"}) as pdf:
            for fig in figures:
                pdf.savefig(fig)
    return buf.getvalue()
