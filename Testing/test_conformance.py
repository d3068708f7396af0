"""Conformance of the engine with nnU-Net v2's own predictor (same network, same weights, same case).

nnU-Net's ``nnUNetPredictor`` is built and initialised manually (no trainer lookup) with plans written here from
the bundle's values. Stock nnU-Net 2.8 accumulates the sliding-window logits and weights in float16, which alone
moves its logits by up to ~1e-2 relative; the strict comparison (>= 99.9 % same label, max |p diff| < 1e-3) is
therefore made against nnU-Net with float32 accumulators (``fp32_accumulation``: nothing else changed), and the
comparison with stock nnU-Net is held to what float16 accumulation allows.

The engine differs from nnU-Net's predictor in one documented place (``pedtumorseg.inference.preprocessing``): voxels
inside the crop box but outside the crop mask (no image data) are background. The comparison applies the same
rule to nnU-Net's output (``masked``); everywhere else the two must agree as above.

To keep CPU time low the phantom is reduced to a block around the tumor (everything else set to 0, so cropping
to the non-zero box still runs) and the demo network runs on small patches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunet_harness import (build_bundle, fp32_accumulation, make_manifest, nnunet_predict,  # noqa: E402
                            phantom_stack, reference_setup, spread_init_)

from pedtumorseg.conventions import CHANNELS, NUM_CLASSES  # noqa: E402
from pedtumorseg.inference.engine import Engine, PredictOptions  # noqa: E402
from pedtumorseg.model.presets import NETWORK_CLASS, build_network, network_kwargs  # noqa: E402

BLOCK = (22, 34, 30)  # voxels kept around the tumor


@pytest.fixture(scope="module")
def case():
    images, spacing = phantom_stack(3, "small")
    from pedtumorseg.phantoms.clean import make_phantom
    seg = make_phantom(3, "small").seg
    centre = [int(np.mean(ix)) for ix in np.nonzero(seg)]
    box = tuple(slice(max(0, c - b // 2), max(0, c - b // 2) + b) for c, b in zip(centre, BLOCK))
    reduced = np.zeros_like(images)
    reduced[(slice(None), *box)] = images[(slice(None), *box)]
    reduced = reduced[:, 4:-4, 6:-6, 6:-6]  # a margin of zeros remains around the block
    assert (reduced != 0).any(axis=0).sum() > 0.8 * np.prod(BLOCK)
    return reduced, spacing


@pytest.fixture(scope="module")
def weights():
    kwargs = network_kwargs("demo")
    torch.manual_seed(0)
    net = spread_init_(build_network(NETWORK_CLASS, kwargs, len(CHANNELS), NUM_CLASSES), seed=1)
    return kwargs, {k: v.clone() for k, v in net.state_dict().items()}


def masked(images, seg, probs):
    """nnU-Net's output with the engine's one difference applied: no image data -> background, probability 1."""
    from pedtumorseg.arrays import nonzero_mask
    outside = ~nonzero_mask(images)
    seg, probs = seg.copy(), probs.copy()
    seg[outside] = 0
    probs[:, outside] = 0
    probs[0, outside] = 1
    return seg, probs


def run_both(tmp_path, images, spacing, bundle_spacing, weights, tta=True, stock=False):
    kwargs, state = weights
    manifest = make_manifest(bundle_spacing, (16, 32, 32), kwargs)
    bundle = build_bundle(tmp_path, manifest, state)
    pred = Engine(bundle, PredictOptions(device="cpu", probabilities=True, tta=tta, precision="fp32")).predict(
        images, spacing)
    predictor = reference_setup(manifest, state, "cpu", tta=tta)
    with fp32_accumulation():
        seg32, probs32 = nnunet_predict(predictor, images, spacing)
    out = {"fp32": masked(images, seg32, probs32)}
    if stock:
        out["stock"] = masked(images, *nnunet_predict(predictor, images, spacing))
    return pred, out


def agreement(pred, seg, probs):
    assert seg.shape == pred.labels.shape and probs.shape == pred.probabilities.shape
    return float((pred.labels == seg).mean()), float(np.abs(pred.probabilities - probs).max())


def test_same_spacing_matches_nnunet(tmp_path, case, weights):
    images, spacing = case
    pred, ref = run_both(tmp_path, images, spacing, spacing, weights, tta=True, stock=True)
    fg = pred.labels[pred.labels > 0]
    counts = np.bincount(fg, minlength=NUM_CLASSES)
    assert (counts > 20).sum() >= 3, f"predictions too uniform to test agreement: {counts}"
    same, diff = agreement(pred, *ref["fp32"])
    print(f"\nsame spacing vs nnU-Net (fp32 accumulators): same label {same:.6f}, max |p diff| {diff:.2e}")
    assert same >= 0.999 and diff < 1e-3
    same_s, diff_s = agreement(pred, *ref["stock"])
    print(f"same spacing vs stock nnU-Net (fp16 accumulators): same label {same_s:.6f}, max |p diff| {diff_s:.2e}")
    assert same_s >= 0.995 and diff_s < 0.25


def test_resampled_spacing_matches_nnunet(tmp_path, case, weights):
    images, spacing = case
    bundle_spacing = (3.0, 3.25, 3.5)  # differs from the case's 2.5 mm on every axis: resampling both ways
    pred, ref = run_both(tmp_path, images, spacing, bundle_spacing, weights, tta=False)
    cropped = tuple(s.stop - s.start for s in pred.info["bbox"])
    assert all(n < c for n, c in zip(pred.info["network_shape"], cropped))  # resampling ran
    assert len(np.unique(pred.labels)) >= 3
    same, diff = agreement(pred, *ref["fp32"])
    print(f"\nresampled ({spacing} -> {bundle_spacing}) vs nnU-Net (fp32 accumulators): same label {same:.6f}, "
          f"max |p diff| {diff:.2e}")
    assert same >= 0.999 and diff < 1e-3


def test_real_case_grid(tmp_path, real_case_dir):
    import SimpleITK as sitk
    from pedtumorseg.conventions import BRATS_SUFFIXES
    imgs = [sitk.ReadImage(str(next(real_case_dir.glob(f"*-{BRATS_SUFFIXES[c]}.nii*")))) for c in CHANNELS]
    images = np.stack([sitk.GetArrayFromImage(i).astype(np.float32) for i in imgs])
    spacing = tuple(reversed(imgs[1].GetSpacing()))
    kwargs = {**network_kwargs("demo"), "decoder_widths": [4, 8, 8], "strides": [1, 2, 2],
              "blocks_per_stage": [1, 1, 1]}
    net = build_network(NETWORK_CLASS, kwargs, 4, NUM_CLASSES)
    bundle = build_bundle(tmp_path, make_manifest((3.0, 3.0, 3.0), (32, 64, 64), kwargs), net.state_dict())
    pred = Engine(bundle, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(images, spacing)
    assert pred.labels.shape == (155, 240, 240) and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (5, 155, 240, 240) and pred.probabilities.dtype == np.float32
    assert np.isfinite(pred.probabilities).all()
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
    from pedtumorseg.arrays import nonzero_mask
    outside = ~nonzero_mask(images)  # outside the skull-stripped brain (holes filled): background, p = 1
    assert outside.any() and (pred.labels[outside] == 0).all() and (pred.probabilities[0][outside] == 1).all()
    assert pred.labels.max() < NUM_CLASSES


@pytest.mark.parametrize("preset", ["nnunet", "resenc"])
def test_nnunet_architectures_match_nnunet(tmp_path, case, preset):
    """nnU-Net's own U-Nets (PlainConvUNet, ResidualEncoderUNet, as the ``nnunet`` / ``resenc`` presets plan
    them, narrowed) in a bundle: the engine gives nnU-Net's predictor's labels."""
    from pedtumorseg.model.presets import BASELINES, dna_kwargs
    images, spacing = case
    kwargs = dna_kwargs(preset, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3)
    kwargs["features_per_stage"] = [8, 16, 32]
    cls = BASELINES[preset]["class"]
    torch.manual_seed(0)
    net = spread_init_(build_network(cls, kwargs, len(CHANNELS), NUM_CLASSES), seed=2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    manifest = make_manifest(spacing, (16, 32, 32), kwargs)
    manifest["network"]["class"] = cls
    bundle = build_bundle(tmp_path, manifest, state)
    pred = Engine(bundle, PredictOptions(device="cpu", probabilities=True, tta=True, precision="fp32")).predict(
        images, spacing)
    predictor = reference_setup(manifest, state, "cpu", tta=True)
    with fp32_accumulation():
        seg, probs = masked(images, *nnunet_predict(predictor, images, spacing))
    assert len(np.unique(pred.labels)) >= 3, "predictions too uniform to test agreement"
    same, diff = agreement(pred, seg, probs)
    print(f"\n{preset} ({cls.rsplit('.', 1)[1]}) vs nnU-Net (fp32 accumulators): same label {same:.6f}, "
          f"max |p diff| {diff:.2e}")
    assert same >= 0.999 and diff < 1e-3
