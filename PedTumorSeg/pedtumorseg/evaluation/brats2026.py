"""The BraTS 2026 scores, delegated to the challenge's own package ``brats-evaluation`` (optional extra
``pedtumorseg[brats2026]``).

That package runs panoptica with its bundled PED configuration: instances are the connected components of each
region (ET = 1, NETC = 2, CC = 3, ED = 4, TC = 1-3, WT = 1-4), matched one-to-one by maximum bipartite matching
on Dice; lesion-wise scores are the means over matched instances (panoptica's segmentation quality ``sq_*``),
global ones are computed on the whole region. Nothing is re-implemented here: this module only maps the
package's per-region result to rows with the columns :data:`COLUMNS`, as the challenge's own result parser
(``brats_evaluation.parse_seg_results``) reads it (an infinite global HD95 becomes 373 there and here).
"""

from __future__ import annotations

import math
from pathlib import Path

from pedtumorseg.errors import InputError

#: brats-evaluation's region key -> our region name
REGION_OF = {"et": "ET", "netc": "NET", "cc": "CC", "ed": "ED", "tc": "TC", "wt": "WT"}
#: our column -> panoptica's result key
RESULT_KEYS = {
    "lesion_dice": "sq_dsc", "lesion_hd95": "sq_hd95", "lesion_nsd": "sq_nsd",
    "dice": "global_bin_dsc", "hd95": "global_bin_hd95", "nsd": "global_bin_nsd",
    "num_tp_lesions": "tp", "num_fn_lesions": "fn", "num_fp_lesions": "fp",
    "precision": "prec", "recall": "rec", "f1": "rq",
}
COLUMNS: tuple[str, ...] = tuple(RESULT_KEYS)
GLOBAL_HD95_INF = 373.0  # the challenge parser's value for an infinite global HD95

_evaluator = None


def _package():
    try:
        import brats_evaluation
        from panoptica import Panoptica_Evaluator
    except ImportError as exc:
        raise ImportError("--scorer brats2026 needs the optional package brats-evaluation: "
                          "pip install 'pedtumorseg[brats2026]'") from exc
    return brats_evaluation, Panoptica_Evaluator


def evaluator():
    """The panoptica evaluator of brats-evaluation's bundled PED configuration (built once)."""
    global _evaluator
    if _evaluator is None:
        brats_evaluation, evaluator_class = _package()
        _evaluator = evaluator_class.load_from_config(str(brats_evaluation.config_path("ped")))
    return _evaluator


def evaluate_files(pred_path: str | Path, gt_path: str | Path, case_id: str) -> list[dict]:
    """One row per region (``region`` + :data:`COLUMNS`) of the BraTS 2026 scores of a label-file pair."""
    brats_evaluation, _ = _package()
    result = brats_evaluation.evaluate_single_exam(str(pred_path), str(gt_path), case_id, evaluator())
    if "error" in result:
        raise InputError(pred_path, f"brats-evaluation could not score it against {Path(gt_path).name}: "
                                    f"{result['error']}")
    rows = []
    for key, region in REGION_OF.items():
        values = result.get(key, {})
        row = {"region": region}
        for column, result_key in RESULT_KEYS.items():
            v = values.get(result_key)
            row[column] = math.nan if v is None else float(v)
        if math.isinf(row["hd95"]):
            row["hd95"] = GLOBAL_HD95_INF
        rows.append(row)
    return rows
