"""The way back: network output onto the grid of the input, as nnU-Net's ``export_prediction`` does, in one place.

Two steps, both here:

1. :func:`logits_to_input_grid` (called by the engine): logits on the network grid -> resampled (order 1) to the
   cropped input shape -> softmax -> argmax, pasted into the full input grid. Outside the crop box, and inside it
   wherever no channel holds image data (``preprocessing.Preprocessed.mask``), the result is background.
2. :func:`to_case_grid` (called by the pipeline): the engine's result on the network input's grid mapped onto the
   case's T1CE grid: nothing to do for ``same``, the inverse axis permutation for ``reoriented`` (exact), and for
   ``resampled`` raw scans the class probabilities resampled linearly (background 1 outside the network grid), the
   labels their argmax there, and background outside the brain mask.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pedtumorseg.geometry import Geometry
from pedtumorseg.inference.preprocessing import Preprocessed, resample
from pedtumorseg.inputs.orientation import orientation_code, reorient_array, reorient_stack
from pedtumorseg.inputs.prepare import REORIENTED, RESAMPLED, PreparedCase


def needs_probabilities(prepared: PreparedCase) -> bool:
    """Whether :func:`to_case_grid` needs the engine's full probability map (raw scans: it is resampled)."""
    return prepared.network.route == RESAMPLED


def to_case_grid(prediction, prepared: PreparedCase):
    """``prediction`` (an ``engine.Prediction`` on ``prepared.network``'s grid) moved onto the case grid, in place."""
    route = prepared.network.route
    if route == REORIENTED:
        current = orientation_code(prepared.case.geometry)
        net_geometry = prepared.network.geometry
        if prediction.probabilities is not None:  # the full-grid map only where the engine was asked for it
            prediction.probabilities, _ = reorient_stack(prediction.probabilities, net_geometry, current)
        prediction.labels, _ = reorient_array(prediction.labels, net_geometry, current)
        prediction.info["reoriented"] = {"from": current, "to": orientation_code(net_geometry)}
    elif route == RESAMPLED:
        probabilities = probabilities_to_grid(prediction.probabilities, prepared.network.geometry,
                                              prepared.case.geometry)
        labels = probabilities.argmax(0).astype(np.uint8)
        if prepared.brain_mask is not None:
            labels[~prepared.brain_mask] = 0
        prediction.probabilities, prediction.labels = probabilities, labels
    return prediction


def probabilities_to_grid(probabilities: np.ndarray, source: Geometry, target: Geometry) -> np.ndarray:
    """(C, ...) class probabilities on ``source`` resampled (linear) onto ``target``; outside ``source``: background."""
    ref = target.reference_image()
    out = np.empty((probabilities.shape[0],) + target.shape_zyx, np.float32)
    for c in range(probabilities.shape[0]):
        image = source.to_image(np.ascontiguousarray(probabilities[c], dtype=np.float32))
        out[c] = sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear,
                                                      1.0 if c == 0 else 0.0, sitk.sitkFloat32))
    return out


def logits_to_input_grid(logits: np.ndarray, pre: Preprocessed, full_probabilities: bool = True, io=None
                         ) -> tuple[np.ndarray | None, np.ndarray]:
    """(C, z', y', x') logits on the network grid -> probabilities (C, *input_shape) float32 (None unless
    ``full_probabilities``) and labels uint8 (argmax of the probabilities, as nnU-Net; with ``io``, a
    ``model_io.ModelIO``: the model's activation and label mapping, ``ModelIO.to_classes``). Outside the crop mask
    (``pre.mask``; outside the box as well) the labels are 0 and the probabilities background = 1."""
    import torch

    logits = resample(logits, pre.cropped_shape, pre.target_spacing, pre.input_spacing, order=1)
    t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    del logits
    if io is None:
        probs_c = torch.softmax(t, 0).numpy()
        labels_c = None
    else:
        probs_c, labels_c = io.to_classes(t)
    del t
    if pre.mask is not None:  # no image data there: background (see the module docstring)
        outside = ~pre.mask
        probs_c[:, outside] = 0.0
        probs_c[0, outside] = 1.0
        if labels_c is not None:
            labels_c[outside] = 0
    if labels_c is None:
        labels_c = probs_c.argmax(0).astype(np.uint8)
    labels = np.zeros(pre.input_shape, dtype=np.uint8)
    labels[pre.bbox] = labels_c
    if not full_probabilities:
        return None, labels
    probs = np.zeros((probs_c.shape[0], *pre.input_shape), dtype=np.float32)
    probs[0] = 1.0
    probs[(slice(None), *pre.bbox)] = probs_c
    return probs, labels
