"""The per-case stats JSON: what a clinician reads (volumes in mL of each subregion and its share of the whole
tumor, as in the clinical comparison of Vossough et al.) and the provenance needed to reproduce the result (model,
post-processing, input handling, inference)."""

from __future__ import annotations

import numpy as np

from pedtumorseg import __version__
from pedtumorseg.arrays import volumes
from pedtumorseg.geometry import Geometry


def stats_dict(case_id: str, labels: np.ndarray, geometry: Geometry, *, model: dict, postprocessing: dict | None,
               warnings: list[str] | None = None) -> dict:
    """JSON-ready summary of one segmented case.

    ``model`` holds at least ``name`` and ``version`` of the bundle; ``postprocessing`` is the
    ``PostprocessParams.to_dict()`` that produced ``labels`` (None for labels before post-processing).
    """
    vol = volumes(labels, geometry.spacing_zyx)
    return {
        "case_id": case_id,
        "volumes_ml": vol["volumes_ml"],
        "fraction_of_wt": vol["fraction_of_wt"],
        "model": model,
        "postprocessing": postprocessing,
        "geometry": {
            "size_xyz": list(geometry.size),
            "spacing_xyz": list(geometry.spacing),
            "origin_xyz": list(geometry.origin),
            "direction": list(geometry.direction),
        },
        "warnings": list(warnings or []),
        "software": {"pedtumorseg": __version__},
    }
