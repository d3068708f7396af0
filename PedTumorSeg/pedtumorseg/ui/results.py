"""The results table of a label map: volume (mL) and share of the whole tumor per region, shown and as CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Iterable

from pedtumorseg.arrays import volumes
from pedtumorseg.conventions import CC, ED, ET, LABEL_LONG_NAMES, NET, REGIONS


RESULT_COLUMNS: tuple[str, ...] = ("Region", "Description", "Volume (mL)", "Fraction of WT")
_REGION_DESCRIPTIONS = {
    "ET": LABEL_LONG_NAMES[ET], "NET": LABEL_LONG_NAMES[NET], "CC": LABEL_LONG_NAMES[CC], "ED": LABEL_LONG_NAMES[ED],
    "TC": "Tumor core (ET + NET + CC)", "WT": "Whole tumor (ET + NET + CC + ED)",
}


@dataclass(frozen=True)
class ResultRow:
    """One region of the results table; ``fraction_of_wt`` is None when the whole tumor is empty."""

    region: str
    description: str
    volume_ml: float
    fraction_of_wt: float | None

    def display(self) -> tuple[str, str, str, str]:
        """The four cells as shown (mL with 2 decimals, the share as a percentage, "-" when undefined)."""
        share = "-" if self.fraction_of_wt is None else f"{self.fraction_of_wt * 100:.1f} %"
        return self.region, self.description, f"{self.volume_ml:.2f}", share


def results_table(labels, spacing_zyx) -> list[ResultRow]:
    """One row per region ET, NET, CC, ED, TC, WT."""
    v = volumes(labels, spacing_zyx)
    return [ResultRow(region, _REGION_DESCRIPTIONS[region], float(v["volumes_ml"][region]), v["fraction_of_wt"][region])
            for region in REGIONS]


def results_csv(rows: Iterable[ResultRow]) -> str:
    """CSV text of a :func:`results_table` (full precision, the share in [0, 1], empty when undefined)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["region", "description", "volume_ml", "fraction_of_wt"])
    for row in rows:
        share = "" if row.fraction_of_wt is None else repr(float(row.fraction_of_wt))
        writer.writerow([row.region, row.description, repr(float(row.volume_ml)), share])
    return buffer.getvalue()
