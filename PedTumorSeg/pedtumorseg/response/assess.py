"""One patient's response assessment: volumes, lesions matched over the timepoints, the 2D measurements, target
lesions and their sum of products (SPD), and the category of each follow-up by 2D and by volume.

Measurability: both diameters at least ``max(criterion.min_diameter_mm, criterion.slice_thickness_factor x slice
thickness)`` (the slice thickness taken as the scan's slice spacing) and, where the criterion asks for it, the
lesion seen on ``min_slices`` axial slices. Target lesions are the baseline's measurable lesions of the measured
kind with the largest products, up to the criterion's number; a target that disappears counts 0, one that
shrinks below measurability keeps its measured product. The volume read-out is the measured kind's total volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedtumorseg.arrays import volumes
from pedtumorseg.response.criteria import Clinical, Criterion
from pedtumorseg.response.lesions import MEASURED_REGIONS, components, match_lesions, region_mask
from pedtumorseg.response.measure import measure_lesion
from pedtumorseg.response.readout import categorize_result
from pedtumorseg.response.register import Alignment, align, identity_alignment, labels_on_baseline
from pedtumorseg.response.timepoints import Timepoint

SUGGESTION = ("The categories are a suggestion for the reader, computed from the segmentation alone and the "
              "clinical facts given; the criteria also weigh non-measurable disease, clinical status, "
              "corticosteroids and the time since radiotherapy, and a reader confirms every measurement.")


@dataclass
class LesionObservation:
    kind: str
    track_id: int
    timepoint: int
    status: str
    volume_ml: float
    measurement: dict | None
    longest_mm: float
    perpendicular_mm: float
    measurable: bool
    target: bool = False
    fragments_mm2: tuple[float, ...] = ()  # a split lesion: the products of its further parts

    @property
    def product_mm2(self) -> float:
        """The main part's LD x PD plus the products of the fragments it split into (the criteria sum them)."""
        return self.longest_mm * self.perpendicular_mm + sum(self.fragments_mm2)


def physical_ends(ends_yx_mm, slice_index: int, image) -> list[list[float]]:
    """Caliper endpoints given in mm from the corner of voxel (0, 0) of a slice, as physical (LPS, mm) points of
    ``image`` (what a viewer, or a Slicer markups line, needs)."""
    sx, sy = image.GetSpacing()[:2]
    return [list(image.TransformContinuousIndexToPhysicalPoint((x / sx - 0.5, y / sy - 0.5, float(slice_index))))
            for y, x in ends_yx_mm]


def axial_warning(image) -> str | None:
    """A warning when the scan's slices are not roughly axial (the criteria measure on axial images)."""
    normal = np.asarray(image.GetDirection(), float).reshape(3, 3)[:, 2]
    if abs(normal[2]) < 0.8:
        return (f"the slices are not axial (slice normal {np.round(normal, 2).tolist()} in LPS): the 2D measurement "
                "is made on this scan's own slices")
    return None


def measurable_limit_mm(criterion: Criterion, spacing_zyx) -> float:
    return max(criterion.min_diameter_mm, criterion.slice_thickness_factor * float(spacing_zyx[0]))


def _observe(kind: str, timepoints: list[Timepoint], alignments: list[Alignment], criterion: Criterion,
             slice_rule: str) -> list[LesionObservation]:
    """Every lesion of ``kind`` at every timepoint, matched into tracks (absent ones as rows with status only)."""
    region = MEASURED_REGIONS[kind]
    maps = [components(region_mask(tp.labels, region)) for tp in timepoints]
    on_base = [maps[0]] + [labels_on_baseline(m, tp.t1ce, timepoints[0].t1ce, a)
                           for m, tp, a in zip(maps[1:], timepoints[1:], alignments[1:])]
    tracks = match_lesions(on_base, [int(m.max()) for m in maps])
    rows = []
    for track in tracks:
        for t, tp in enumerate(timepoints):
            numbers = track.components_at(t)
            if not numbers:
                rows.append(LesionObservation(kind, track.track_id, t, track.status(t), 0.0, None, 0.0, 0.0, False))
                continue
            rows.append(_measure(kind, track, t, tp, [maps[t] == c for c in numbers], criterion, slice_rule))
    return rows


def _measure(kind: str, track, t: int, tp: Timepoint, parts: list[np.ndarray], criterion: Criterion,
             slice_rule: str) -> LesionObservation:
    """One lesion at one timepoint: its main part measured (calipers in LPS too), its fragments' products."""
    m = measure_lesion(parts[0], tp.spacing_zyx, slice_rule)
    ld, pd = m.chosen.longest_mm, m.chosen.perpendicular_mm
    measurable = (min(ld, pd) >= measurable_limit_mm(criterion, tp.spacing_zyx) - 1e-9
                  and m.slices_with_lesion >= criterion.min_slices)
    fragments = tuple(measure_lesion(p, tp.spacing_zyx, slice_rule).product_mm2 for p in parts[1:])
    vol = float(sum(int(p.sum()) for p in parts)) * tp.geometry.voxel_volume_mm3 / 1000.0
    record = m.to_dict()
    for key, ends in (("longest_ends_lps_mm", m.chosen.longest_ends), ("perpendicular_ends_lps_mm",
                                                                       m.chosen.perpendicular_ends)):
        record["chosen"][key] = physical_ends(ends, m.chosen.slice_index, tp.t1ce)
    record["fragments_product_mm2"] = [round(f, 3) for f in fragments]
    return LesionObservation(kind, track.track_id, t, track.status(t), vol, record, ld, pd, measurable,
                             fragments_mm2=fragments)


def _targets(rows: list[LesionObservation], max_targets: int) -> set[int]:
    base = sorted((r for r in rows if r.timepoint == 0 and r.measurable), key=lambda r: (-r.product_mm2, r.track_id))
    return {r.track_id for r in base[:max_targets]}


def assess(timepoints: list[Timepoint], criterion: Criterion, measured: str | None = None,
           slice_rule: str = "largest_diameter", clinical: dict[str, Clinical] | None = None,
           register: bool = True, progress=None) -> dict:
    """The whole assessment as a JSON-ready dict (see the module docstring and README's "Response assessment").

    Long on purpose: it is the one place where the steps meet, each a call, in the order the docstring lists.
    """
    report = progress or (lambda message: None)
    kind = measured or criterion.measured
    clinical_list = [(clinical or {}).get(tp.name, Clinical()) for tp in timepoints]
    alignments = [identity_alignment()]
    for tp in timepoints[1:]:
        report(f"registering {tp.name} to {timepoints[0].name}")
        alignments.append(align(timepoints[0].t1ce, tp.t1ce, tp.t1ce_path, register=register))
    report("lesions and measurements")
    rows = {k: _observe(k, timepoints, alignments, criterion, slice_rule) for k in MEASURED_REGIONS}
    targets = _targets(rows[kind], criterion.max_targets)
    for r in rows[kind]:
        r.target = r.track_id in targets
    out_tps = []
    for t, tp in enumerate(timepoints):
        vols = volumes(tp.labels, tp.spacing_zyx)["volumes_ml"]
        out_tps.append({
            "name": tp.name, "seg": str(tp.seg_path), "t1ce": str(tp.t1ce_path), "segmented_here": tp.segmented_here,
            "spacing_zyx_mm": list(tp.spacing_zyx),
            "measurable_limit_mm": measurable_limit_mm(criterion, tp.spacing_zyx),
            "volumes_ml": {k: round(v, 4) for k, v in vols.items()},
            "alignment_to_baseline": alignments[t].to_dict(), "clinical": clinical_list[t].to_dict(),
            "measured_volume_ml": round(vols[MEASURED_REGIONS[kind]], 4),
            "warnings": [w for w in (axial_warning(tp.t1ce),) if w]})
    lesions = [{"kind": r.kind, "track": r.track_id, "timepoint": timepoints[r.timepoint].name, "status": r.status,
                "volume_ml": round(r.volume_ml, 4), "longest_mm": round(r.longest_mm, 3),
                "perpendicular_mm": round(r.perpendicular_mm, 3), "product_mm2": round(r.product_mm2, 3),
                "measurable": r.measurable, "target": r.target, "measurement": r.measurement}
               for k in MEASURED_REGIONS for r in rows[k]]
    result = {"format": "pedtumorseg-response", "format_version": 1, "criterion": criterion.to_dict(),
              "measured": kind, "measured_region": MEASURED_REGIONS[kind], "slice_rule": slice_rule,
              "axial": "the slices of each scan's own grid (its third ITK axis)", "note": SUGGESTION,
              "timepoints": out_tps, "lesions": lesions}
    return categorize_result(result, criterion)
