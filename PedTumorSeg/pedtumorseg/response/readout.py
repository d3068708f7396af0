"""The per-timepoint read-out of an assessment, from its lesion rows alone: the targets' sum of products, the
category by 2D and by volume, their agreement and the confirmation by the next scan.

Working on the result (the ``response.json`` content) rather than on images makes a reader's correction cheap:
``edit_diameters`` takes the two diameters of one lesion as the reader measured them (in Slicer: the markups lines
moved), marks the row ``edited`` and recomputes every category; nothing else changes.
"""

from __future__ import annotations

from pedtumorseg.errors import UsageError
from pedtumorseg.response.criteria import Clinical, Criterion, categorize, confirmations


def _series(result: dict) -> list[tuple[float, float, bool, bool]]:
    kind = result["measured"]
    rows = [r for r in result["lesions"] if r["kind"] == kind]
    out = []
    for tp in result["timepoints"]:
        at = [r for r in rows if r["timepoint"] == tp["name"]]
        spd = sum(r["product_mm2"] for r in at if r["target"])  # LD x PD, plus a split lesion's fragments
        gone = not any(r["volume_ml"] > 0 for r in at)
        new = any(r["status"] == "new" and r["measurable"] for r in at)
        out.append((spd, tp["measured_volume_ml"], gone, new))
    return out


def categorize_result(result: dict, criterion: Criterion) -> dict:
    """Fill in each timepoint's ``spd_mm2``, ``category_2d``, ``category_volume``, ``categories_agree`` and
    ``confirmed_by_next_scan`` (in place; returns ``result``)."""
    kind = result["measured"]
    series = _series(result)
    cats = []
    for t, (tp, (spd, vol, gone, new)) in enumerate(zip(result["timepoints"], series)):
        tp["spd_mm2"] = round(spd, 3)
        if t == 0:
            tp["category_2d"] = tp["category_volume"] = tp["categories_agree"] = None
            cats.append(None)
            continue
        clinical = Clinical(**tp["clinical"])
        c2 = categorize(criterion.thresholds("2d", kind), series[0][0], min(s[0] for s in series[:t]), spd,
                        disease_gone=gone, new_lesion=new, clinical=clinical)
        cv = categorize(criterion.thresholds("volume", kind), series[0][1], min(s[1] for s in series[:t]), vol,
                        disease_gone=gone, new_lesion=new, clinical=clinical)
        tp["category_2d"], tp["category_volume"] = c2.to_dict(), cv.to_dict()
        tp["categories_agree"] = c2.category == cv.category
        cats.append(c2.category)
    for tp, confirmed in zip(result["timepoints"], confirmations(cats, criterion.confirm)):
        tp["confirmed_by_next_scan"] = confirmed
    return result


def edit_diameters(result: dict, criterion: Criterion, timepoint: str, track: int, longest_mm: float,
                   perpendicular_mm: float) -> dict:
    """A reader's diameters for one lesion of the measured kind (``UsageError`` for an unknown one); the row keeps
    the computed values under ``computed`` and the categories are recomputed (in place; returns ``result``)."""
    if not (longest_mm >= perpendicular_mm >= 0):
        raise UsageError(None, f"diameters {longest_mm} x {perpendicular_mm} mm: the longest comes first, both >= 0")
    rows = [r for r in result["lesions"] if r["kind"] == result["measured"] and r["timepoint"] == timepoint
            and r["track"] == track and r["volume_ml"] > 0]
    if not rows:
        raise UsageError(None, f"no lesion {track} of kind {result['measured']} at timepoint {timepoint}")
    row = rows[0]
    tp = next(t for t in result["timepoints"] if t["name"] == timepoint)
    row.setdefault("computed", {k: row[k] for k in ("longest_mm", "perpendicular_mm", "product_mm2", "measurable")})
    slices = (row["measurement"] or {}).get("slices_with_lesion", criterion.min_slices)
    fragments = sum((row["measurement"] or {}).get("fragments_product_mm2", []))
    row.update(longest_mm=round(float(longest_mm), 3), perpendicular_mm=round(float(perpendicular_mm), 3),
               product_mm2=round(float(longest_mm) * float(perpendicular_mm) + fragments, 3), edited=True,
               measurable=bool(min(longest_mm, perpendicular_mm) >= tp["measurable_limit_mm"] - 1e-9
                               and slices >= criterion.min_slices))
    return categorize_result(result, criterion)
