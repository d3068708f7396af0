"""nnU-Net v2 compatible preprocessing (3d_fullres, identity transpose) and its inverse, written for PedTumorSeg.

Behaviour reproduced (our own implementation):

- crop: mask = any channel != 0, holes filled (``scipy.ndimage.binary_fill_holes``); crop to the mask's bounding box;
- z-score per channel in float32: with ``use_mask_for_norm`` mean/std over the mask only (voxels outside the mask
  are 0 in every channel by construction and stay 0), else over the whole cropped image; ``std`` floored at 1e-8;
  an all-zero input (empty mask) is normalized over the whole image (nnU-Net would produce NaN there);
- resampling (only when the shape changes): new shape ``round(spacing / target * shape)``; data with order-3
  splines, logits with order 1, both in float64 with edge ("nearest") boundary handling, pixel-centre alignment
  and the result clipped to the input range (what ``skimage.transform.resize(mode="edge", anti_aliasing=False)``
  does, here with ``scipy.ndimage.zoom(grid_mode=True)``); if the current or target spacing is anisotropic
  (max/min > 3) and exactly one axis is the low-resolution one, slices are resized in-plane and the low-res axis
  is resampled with nearest neighbour (nnU-Net's ``order_z=0``);
- inverse: logits resampled (order 1) to the cropped shape, softmax, argmax, pasted into the full grid; outside
  the crop the probabilities are background = 1.

One deliberate difference from nnU-Net's predictor: inside the crop box, voxels outside the crop mask (no image
data in any channel: outside the skull-stripped brain) are background too (probability 1), where nnU-Net keeps
the network's output. nnU-Net already declares them background everywhere outside the mask's bounding box, and
its training maps their labels to background (the preprocessor marks them -1, the data loader sets -1 to 0), so
tumor there is never a finding, only an artefact: the demo network, trained on 32^3 patches that rarely reach the
corners of the box, predicted NET or CC blobs of up to 565 voxels in the empty corners of 2 of 50 held-out
phantoms. With an image that has no zeros (not skull-stripped) the mask is the whole box and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from pedtumorseg.arrays import bounding_box, nonzero_mask  # noqa: F401  (nonzero_mask: any channel != 0, holes filled)

ANISO_THRESHOLD = 3.0


def bbox_of(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a boolean mask as slices; the whole array when the mask is empty."""
    return bounding_box(mask) or tuple(slice(0, n) for n in mask.shape)


def zscore(data: np.ndarray, mask: np.ndarray | None, use_mask: tuple[bool, ...] | list[bool]) -> np.ndarray:
    """Per-channel z-score in place on a float32 (C, z, y, x) array (see module docstring)."""
    eps = 1e-8
    for c in range(data.shape[0]):
        ch = data[c]
        if use_mask[c] and mask is not None and mask.any():  # (an all-zero case: whole-image stats, no NaN)
            vals = ch[mask]
            mean, std = vals.mean(), vals.std()
            ch[mask] = (vals - mean) / max(std, eps)
        else:
            mean, std = ch.mean(), ch.std()
            ch -= mean
            ch /= max(std, eps)
    return data


def normalize(data: np.ndarray, mask: np.ndarray | None, normalization: dict) -> np.ndarray:
    """Per-channel normalization in place on a float32 (C, z, y, x) array by a bundle's ``normalization``:
    ``zscore`` (``zscore`` above) or ``nnunet`` (one nnU-Net v2 scheme per channel, as its
    ``default_normalization_schemes``: ``ZScoreNormalization`` as ``zscore``; ``CTNormalization`` clipped to the
    dataset's foreground percentiles 0.5 / 99.5, minus its foreground mean, over max(std, 1e-8);
    ``RescaleTo01Normalization`` (x - min) / max(max - min, 1e-8); ``NoNormalization`` unchanged)."""
    use_mask = normalization.get("use_mask_for_norm", [False] * data.shape[0])
    if normalization.get("scheme", "zscore") == "zscore":
        return zscore(data, mask, use_mask)
    for c, (scheme, props) in enumerate(zip(normalization["schemes"], normalization.get(
            "intensity_properties", [None] * data.shape[0]))):
        ch = data[c]
        if scheme == "ZScoreNormalization":
            zscore(data[c:c + 1], mask, use_mask[c:c + 1])
        elif scheme == "CTNormalization":
            np.clip(ch, props["percentile_00_5"], props["percentile_99_5"], out=ch)
            ch -= props["mean"]
            ch /= max(props["std"], 1e-8)
        elif scheme == "RescaleTo01Normalization":
            ch -= ch.min()
            ch /= max(ch.max(), 1e-8)
        elif scheme != "NoNormalization":
            raise ValueError(f"unknown normalization scheme {scheme!r}")
    return data


def compute_new_shape(shape, spacing, new_spacing) -> tuple[int, ...]:
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, new_spacing))


def _lowres_axis(spacing) -> int | None:
    spacing = np.asarray(spacing, dtype=float)
    if spacing.max() / spacing.min() <= ANISO_THRESHOLD:
        return None
    axes = np.flatnonzero(spacing.max() / spacing == 1)
    return int(axes[0]) if len(axes) == 1 else -1  # -1: anisotropic but not a single low-res axis


def separate_axis(current_spacing, new_spacing) -> int | None:
    """The axis nnU-Net resamples separately (order 0), or None."""
    for sp in (current_spacing, new_spacing):
        ax = _lowres_axis(sp)
        if ax is not None:
            return None if ax == -1 else ax
    return None


def _resize(vol: np.ndarray, new_shape, order: int) -> np.ndarray:
    """Resize a float64 array to new_shape: pixel-centre aligned spline (order), edge mode, clipped to input range."""
    if tuple(vol.shape) == tuple(new_shape):
        return vol.copy()
    factors = [n / o for n, o in zip(new_shape, vol.shape)]
    out = ndi.zoom(vol, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    lo, hi = vol.min(), vol.max()
    np.clip(out, lo, hi, out=out)
    return out


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    scale = n_in / n_out
    coords = scale * (np.arange(n_out) + 0.5) - 0.5
    idx = ndi.map_coordinates(np.arange(n_in, dtype=float), [coords], order=0, mode="nearest")
    return np.rint(idx).astype(np.intp)


def resample(data: np.ndarray, new_shape, current_spacing, new_spacing, order: int) -> np.ndarray:
    """Resample a (C, z, y, x) array to new_shape like nnU-Net's default ``resample_data_or_seg_to_shape``."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    axis = separate_axis(current_spacing, new_spacing)
    out = np.empty((data.shape[0], *new_shape), dtype=data.dtype)
    for c in range(data.shape[0]):
        vol = data[c].astype(np.float64)
        if axis is None:
            out[c] = _resize(vol, new_shape, order)
            continue
        inplane = [n for a, n in enumerate(new_shape) if a != axis]
        moved = np.moveaxis(vol, axis, 0)
        tmp = np.stack([_resize(s, inplane, order) for s in moved])
        if tmp.shape[0] != new_shape[axis]:
            tmp = tmp[_nearest_indices(tmp.shape[0], new_shape[axis])]
        out[c] = np.moveaxis(tmp, 0, axis)
    return out


@dataclass
class Preprocessed:
    data: np.ndarray  # (C, z, y, x) float32, cropped, normalized, resampled
    input_shape: tuple[int, ...]
    bbox: tuple[slice, ...]
    cropped_shape: tuple[int, ...]
    input_spacing: tuple[float, ...]
    target_spacing: tuple[float, ...]
    mask: np.ndarray | None = None  # the crop mask inside ``bbox`` (cropped_shape, bool); None: the whole box


def preprocess(images: np.ndarray, spacing_zyx, target_spacing, use_mask_for_norm, normalization: dict | None = None
               ) -> Preprocessed:
    """Crop, normalize (``normalization``, a bundle's, else z-score with ``use_mask_for_norm``), resample."""
    data = np.array(images, dtype=np.float32)  # copy
    if data.ndim != 4:
        raise ValueError(f"images must be (C, z, y, x), got shape {data.shape}")
    mask = nonzero_mask(data)
    box = bbox_of(mask)
    data = data[(slice(None), *box)]
    mask = mask[box]
    cropped_shape = tuple(data.shape[1:])
    new_shape = compute_new_shape(cropped_shape, spacing_zyx, target_spacing)
    if normalization is None:
        zscore(data, mask, use_mask_for_norm)
    else:
        normalize(data, mask, normalization)
    data = resample(data, new_shape, spacing_zyx, target_spacing, order=3)
    return Preprocessed(np.ascontiguousarray(data, dtype=np.float32), tuple(images.shape[1:]), box, cropped_shape,
                        tuple(float(s) for s in spacing_zyx), tuple(float(s) for s in target_spacing),
                        None if mask.all() else mask)
