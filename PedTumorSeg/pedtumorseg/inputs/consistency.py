"""Do the four images belong together, in the slots they were given? Measured on the case as the network will see
it (on the T1CE grid, registered and brain-masked where that was done), before any inference.

**Alignment.** Normalized mutual information ``NMI = (H(A) + H(B)) / H(A, B)`` (48 bins between the 0.5th and
99.5th percentiles, every second voxel) of the T1CE and each other sequence, over the voxels where both hold
image data. Measured on the four real labelled BraTS gliomas, the real BraTS 2023 case and phantoms: the same
examination scored 1.020-1.243 for every pair (registered raw phantoms 1.106-1.177); the T1CE of one patient
beside the T1/T2/FLAIR of another (all in the same atlas space, so their brains overlap) 1.005-1.015, a phantom's
T2 beside a real T1CE 1.005-1.010. The thresholds sit between: refused below 1.012 (shared anatomy no better than
another patient's in the same atlas space), a warning up to 1.016.
Below :data:`NMI_REFUSE` the images share no anatomy: the case is refused. Between it and :data:`NMI_WARN` the
alignment is implausible: a warning (a refusal with ``--strict``).

**Slots.** Three contrast relations inside the brain (z-scores by median and inter-quartile range), each
measured on the same real cases and phantoms, correct and with the slots swapped:

- T1 vs T1CE: contrast only ever raises T1CE (vessels, choroid plexus, dura, enhancing tumour), so the upper tail
  of ``z(T1CE) - z(T1)`` is longer than its lower tail: the ratio of the 99th-50th to the 50th-1st percentile
  spread was 1.7-5.7 on real cases (1.0 on phantoms without enhancement) and 0.17-0.59 swapped;
- T2 vs FLAIR: the brightest T2 voxels (CSF) are dark on FLAIR, the brightest FLAIR voxels (lesions) bright on
  T2: ``median T2 of the top 3 % FLAIR - median FLAIR of the top 3 % T2`` was +0.99 to +5.8 correct and the same
  negated swapped;
- T1 vs T2: T1 is skewed towards dark (CSF), T2 towards bright: ``skew(T2) - skew(T1)`` was +1.2 to +2.8 correct,
  negated swapped (judged only when the two relations above hold, since either swap moves it too).

A relation beyond its threshold against the expected sign is reported with the numbers (a warning; a refusal with
``--strict``); DICOM series whose own description and sequence parameters name another sequence than their slot
are reported the same way. The numbers go into the stats (``input.consistency``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from pedtumorseg.conventions import CHANNEL_LONG_NAMES, CHANNELS

NMI_REFUSE = 1.012
NMI_WARN = 1.016
#: the T1CE/T1 tail ratio below which the two look swapped (its inverse: the swapped value of a clear case)
ENHANCEMENT_SWAPPED = 0.75
#: T2/FLAIR and T1/T2 relations below these (against the expected positive sign) look swapped
T2_FLAIR_SWAPPED = -0.5
T1_T2_SWAPPED = -0.5
_BINS = 48
#: below this share of the T1CE's image data held by both images, they do not show the same head
MIN_OVERLAP = 0.25
#: fewer voxels (after taking every second one) than this: too few for the statistics; not judged
MIN_VOXELS = 1000


@dataclass
class Consistency:
    """The measured numbers, the problems that make a case unusable (``refuse``) and those worth a warning."""

    numbers: dict
    refuse: list[str] = field(default_factory=list)
    warn: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.numbers, "refused": list(self.refuse), "warnings": list(self.warn)}


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = _BINS) -> float:
    """``(H(A) + H(B)) / H(A, B)`` of two equally long samples (1 for independent images, 2 for identical)."""
    def quantize(v):
        lo, hi = np.percentile(v, [0.5, 99.5])
        return np.clip(((v - lo) / (hi - lo + 1e-9) * bins).astype(np.int64), 0, bins - 1)

    joint = np.bincount(quantize(a) * bins + quantize(b), minlength=bins * bins).astype(np.float64) / a.size

    def entropy(p):
        p = p[p > 0]
        return float(-np.sum(p * np.log(p)))

    joint2 = joint.reshape(bins, bins)
    return (entropy(joint2.sum(1)) + entropy(joint2.sum(0))) / max(entropy(joint), 1e-12)


def _z(v: np.ndarray) -> np.ndarray:
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return (v - med) / max(q3 - q1, 1e-6)


def check_case(images: np.ndarray, paths: dict, series_guess: dict | None = None) -> Consistency:
    """Alignment and slot checks of a (4, z, y, x) stack in channel order (see the module docstring). ``paths``:
    channel -> the file or series the user gave (named in the messages); ``series_guess``: channel -> the sequence
    a DICOM series' own tags name (None where unknown)."""
    sub = images[:, ::2, ::2, ::2]
    t1, t1ce, t2, flair = (sub[CHANNELS.index(c)] for c in CHANNELS)
    result = Consistency({"alignment_nmi": {}})
    reference = max(int(np.count_nonzero(t1ce)), 1)
    for ch, image in (("t1", t1), ("t2", t2), ("flair", flair)):
        both = (t1ce > 0) & (image > 0)
        if both.sum() < MIN_OVERLAP * reference:
            result.refuse.append(f"{paths[ch]}: {CHANNEL_LONG_NAMES[ch]} and the T1CE hardly overlap (image data "
                                 f"in both at {100 * both.sum() / reference:.0f} % of the T1CE's)")
            continue
        if both.sum() < MIN_VOXELS:  # too small an image to judge its alignment by its statistics
            result.numbers["alignment_nmi"][ch] = None
            continue
        nmi = normalized_mutual_information(t1ce[both], image[both])
        result.numbers["alignment_nmi"][ch] = round(nmi, 4)
        what = (f"{paths[ch]}: {CHANNEL_LONG_NAMES[ch]} and the T1CE share little anatomy (normalized mutual "
                f"information {nmi:.3f}; one examination of one patient scores >= 1.020)")
        if nmi < NMI_REFUSE:
            result.refuse.append(what + ": a different patient or examination?")
        elif nmi < NMI_WARN:
            result.warn.append(what + ": check that it is the same patient and that the alignment is right")
    brain = (t1 > 0) & (t1ce > 0) & (t2 > 0) & (flair > 0)
    if brain.sum() >= MIN_VOXELS:
        _slot_relations(result, *(_z(x[brain]) for x in (t1, t1ce, t2, flair)), paths)
    for ch, guess in (series_guess or {}).items():
        if guess is not None and guess != ch:
            result.warn.append(f"{paths[ch]}: given as {CHANNEL_LONG_NAMES[ch]}, but its DICOM description and "
                               f"sequence parameters say {CHANNEL_LONG_NAMES[guess]}")
    return result


def _slot_relations(result: Consistency, t1, t1ce, t2, flair, paths: dict) -> None:
    diff = t1ce - t1
    p1, p50, p99 = np.percentile(diff, [1, 50, 99])
    enhancement = float((p99 - p50) / max(p50 - p1, 1e-6))
    top_t2, top_flair = t2 > np.percentile(t2, 97), flair > np.percentile(flair, 97)
    t2_flair = float(np.median(t2[top_flair]) - np.median(flair[top_t2]))
    t1_t2 = float(stats.skew(t2) - stats.skew(t1))
    result.numbers["slots"] = {"t1ce_t1_enhancement_tail_ratio": round(enhancement, 3),
                               "t2_flair_csf_lesion_relation": round(t2_flair, 3),
                               "t2_minus_t1_skewness": round(t1_t2, 3)}
    if enhancement < ENHANCEMENT_SWAPPED:
        result.warn.append(f"{paths['t1ce']}: the T1CE shows less contrast uptake than the T1 (tail ratio "
                           f"{enhancement:.2f}, expected > 1): are T1 and T1CE swapped?")
    if t2_flair < T2_FLAIR_SWAPPED:
        result.warn.append(f"{paths['flair']}: the brightest T2 voxels are bright on FLAIR and the brightest FLAIR "
                           f"voxels dark on T2 (relation {t2_flair:.2f}, expected > 0): are T2 and FLAIR swapped?")
    if t1_t2 < T1_T2_SWAPPED and enhancement >= ENHANCEMENT_SWAPPED and t2_flair >= T2_FLAIR_SWAPPED:
        # (only when the two checks above passed: a T1CE in the T1 slot or a FLAIR in the T2 slot moves it too)
        result.warn.append(f"{paths['t2']}: the T2 is skewed towards dark and the T1 towards bright (skewness "
                           f"difference {t1_t2:.2f}, expected > 0): are T1 and T2 swapped?")
