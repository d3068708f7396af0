"""Brain extraction: decide from the image whether skull and scalp are still there, and strip them (deepbet).

Detection rule (``detect_skull``), on one image (the T1CE as read):

1. the *head* is the largest connected region above 10 % of the image's 99th percentile, holes filled;
2. the image counts as **skull-stripped** when both hold:
   - the background is constant: at least 90 % of the voxels outside the head hold one value, the most frequent
     one there (brain-extraction tools write a constant there, usually 0, while the brain itself may hold values
     below it, e.g. -3 from interpolation; a scanner image has noise in the air), and
   - the head is brain-sized: at most 2000 mL (an adult brain is 1100-1700 mL; a head with skull and scalp of a
     child older than about one year is larger);
3. otherwise skull and scalp are taken to be present.

The decision and the numbers behind it go into the log and into ``<ID>-stats.json``; ``--skull-strip yes|no``
overrides it. Stripping runs deepbet (MIT; its two small TorchScript networks ship inside its PyPI wheel, part of
the optional ``[raw]`` extra) on the T1, the sequence it was trained on.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.inputs.dicom import RAW_EXTRA_HINT
from pedtumorseg.errors import InputError

HEAD_THRESHOLD = 0.10
CONSTANT_BACKGROUND = 0.90
MAX_BRAIN_ML = 2000.0


@dataclass
class SkullDecision:
    skull: bool
    reason: str
    background_constant_fraction: float
    head_volume_ml: float
    background_value: float = 0.0

    def to_dict(self) -> dict:
        return {"skull_detected": self.skull, "reason": self.reason,
                "background_value": self.background_value,
                "background_constant_fraction": round(self.background_constant_fraction, 4),
                "head_volume_ml": round(self.head_volume_ml, 1)}


def head_mask(array: np.ndarray) -> np.ndarray:
    """Largest connected region above ``HEAD_THRESHOLD`` x the 99th percentile, holes filled."""
    high = float(np.percentile(array, 99))
    fg = array > HEAD_THRESHOLD * high if high > 0 else array > array.min()
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


def detect_skull(image: sitk.Image) -> SkullDecision:
    """Whether ``image`` still shows skull and scalp (rule in the module docstring)."""
    array = sitk.GetArrayViewFromImage(image)
    head = head_mask(array)
    outside = array[~head]
    background, constant = 0.0, 1.0
    if outside.size:
        values, counts = np.unique(outside, return_counts=True)
        background, constant = float(values[np.argmax(counts)]), float(counts.max() / outside.size)
    volume = float(head.sum() * np.prod(image.GetSpacing()) / 1000.0)
    if constant >= CONSTANT_BACKGROUND and volume <= MAX_BRAIN_ML:
        return SkullDecision(False, f"skull-stripped: constant background ({constant:.0%} of the outside at "
                                    f"{background:g}) and a brain-sized head ({volume:.0f} mL)", constant, volume,
                             background)
    why = (f"background not constant (at most {constant:.0%} of the outside at one value)"
           if constant < CONSTANT_BACKGROUND else f"head of {volume:.0f} mL is larger than a brain ({MAX_BRAIN_ML:.0f} mL)")
    return SkullDecision(True, f"skull and scalp present: {why}", constant, volume, background)


def deepbet_available() -> bool:
    try:
        import deepbet  # noqa: F401
    except ImportError:
        return False
    return True


def deepbet_mask(image: sitk.Image, path=None, device: str = "cpu", reason: str = "--skull-strip yes") -> sitk.Image:
    """Brain mask (uint8 0/1, on ``image``'s grid) of a T1-weighted head image by deepbet; ``reason`` says why it is
    stripped (the detection's reason, or the option), for the message when deepbet is not installed."""
    try:
        import nibabel as nib
        from deepbet.bet import BrainExtraction
    except ImportError:
        raise InputError(path, f"skull stripping was chosen ({reason}) but needs the optional raw-input packages "
                               f"({RAW_EXTRA_HINT}); if the images are already skull-stripped, give --skull-strip no"
                         ) from None
    with tempfile.TemporaryDirectory(prefix="pedtumorseg-bet-") as tmp:
        src = Path(tmp) / "t1.nii.gz"
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(src))
        bet = BrainExtraction(no_gpu=not str(device).startswith("cuda"))
        _, mask_img, _ = bet.run(str(src))
        mask = np.asarray(mask_img.get_fdata()) > 0.5
        out = Path(tmp) / "mask.nii.gz"
        nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine).to_filename(str(out))
        result = sitk.ReadImage(str(out), sitk.sitkUInt8)
    if result.GetSize() != image.GetSize():
        raise InputError(path, f"brain mask of size {result.GetSize()} does not match the image {image.GetSize()}")
    result.CopyInformation(image)
    if not sitk.GetArrayViewFromImage(result).any():
        raise InputError(path, "skull stripping found no brain in the T1 image")
    return result
