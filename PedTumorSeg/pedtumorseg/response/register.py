"""Each follow-up brought onto the baseline: the project's rigid registration of the follow-up T1CE to the
baseline T1CE (``inputs.registration.register_rigid``), its quality check, and follow-up label maps drawn on the
baseline grid (nearest neighbour) for lesion matching. Measurements never use the resampled maps: each scan is
measured on its own grid.

Quality check: the normalized mutual information (``inputs.consistency.normalized_mutual_information``) of the
baseline T1CE and the registered follow-up T1CE over the voxels where both hold image data. Two T1CE scans of one
head share their anatomy far beyond what unrelated heads do. Measured: three real BraTS T1CE scans moved (2 and 6
degrees, 6 mm) and resliced to 1x1x3 mm, registered back: 1.19-1.33; the synthetic patient of
``phantoms.series`` 1.39-1.43 (the same head with other tissue texture 1.12); pairs of different real patients
(all in the same atlas space) 1.003-1.009, a phantom against another anatomy 1.018. Below :data:`NMI_REFUSE`
(1.05, between the two groups) the timepoint is refused, as it is when fewer than :data:`MIN_OVERLAP` of the
baseline's head voxels are covered after registration. Follow-ups months apart, after surgery or on another
scanner score lower than these moved copies; the margin to 1.05 is kept wide for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.errors import InputError
from pedtumorseg.inputs.consistency import normalized_mutual_information
from pedtumorseg.inputs.registration import RigidResult, register_rigid

MIN_OVERLAP = 0.5
NMI_REFUSE = 1.05


@dataclass
class Alignment:
    transform: sitk.Transform  # baseline point -> follow-up point
    registration: RigidResult | None
    nmi: float | None  # None at the baseline itself
    overlap: float

    def to_dict(self) -> dict:
        return {"registered": self.registration is not None,
                "registration": self.registration.to_dict() if self.registration else None,
                "nmi_after": None if self.nmi is None else round(self.nmi, 4), "nmi_refused_below": NMI_REFUSE,
                "baseline_head_covered": round(self.overlap, 4)}


def identity_alignment() -> Alignment:
    return Alignment(sitk.Euler3DTransform(), None, None, 1.0)


def resample_to(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform, labels: bool) -> sitk.Image:
    """``image`` drawn on ``reference``'s grid through ``transform`` (reference point -> image point)."""
    interp = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    return sitk.Resample(image, reference, transform, interp, 0.0, image.GetPixelID())


def align(baseline_t1ce: sitk.Image, follow_t1ce: sitk.Image, path, register: bool = True) -> Alignment:
    """The rigid transform from the baseline to a follow-up and its quality; ``InputError`` naming ``path`` (the
    follow-up's T1CE) when the two do not look like one patient's head."""
    result = register_rigid(baseline_t1ce, follow_t1ce) if register else None
    transform = result.transform if result else sitk.Euler3DTransform()
    moved = sitk.GetArrayFromImage(resample_to(sitk.Cast(follow_t1ce, sitk.sitkFloat32),
                                               sitk.Cast(baseline_t1ce, sitk.sitkFloat32), transform, False))
    base = sitk.GetArrayFromImage(baseline_t1ce).astype(np.float32)
    head = base > 0
    both = head & (moved > 0)
    overlap = float(both.sum()) / max(int(head.sum()), 1)
    if overlap < MIN_OVERLAP or both.sum() < 1000:
        raise InputError(path, f"after registration only {100 * overlap:.0f} % of the baseline head is covered: "
                               "not the same patient, or a scan of another body part?")
    nmi = normalized_mutual_information(base[both], moved[both])
    if nmi < NMI_REFUSE:
        raise InputError(path, f"registered to the baseline, the T1CE shares no anatomy with it (normalized mutual "
                               f"information {nmi:.3f} < {NMI_REFUSE}): a different patient?")
    return Alignment(transform, result, float(nmi), overlap)


def labels_on_baseline(labels: np.ndarray, follow_t1ce: sitk.Image, baseline_t1ce: sitk.Image,
                       alignment: Alignment) -> np.ndarray:
    """An integer map of the follow-up (its grid) drawn on the baseline grid (nearest neighbour), for matching.

    A component smaller than a baseline voxel may hold no baseline voxel centre and vanish from the drawing (then
    it would match nothing and count as new): each such component is drawn at the baseline voxel nearest its
    centroid (when that voxel is inside the grid and free)."""
    labels = np.asarray(labels).astype(np.int32)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(follow_t1ce)
    out = sitk.GetArrayFromImage(resample_to(image, baseline_t1ce, alignment.transform, True))
    lost = np.setdiff1d(np.unique(labels), np.unique(out))
    lost = lost[lost > 0]
    if lost.size:
        inverse = alignment.transform.GetInverse()
        for number, centre in zip(lost, ndimage.center_of_mass(labels > 0, labels, lost)):
            point = inverse.TransformPoint(follow_t1ce.TransformContinuousIndexToPhysicalPoint(
                tuple(float(c) for c in centre[::-1])))
            index = baseline_t1ce.TransformPhysicalPointToIndex(point)[::-1]
            if all(0 <= i < n for i, n in zip(index, out.shape)) and out[index] == 0:
                out[index] = number
    return out
