"""Engine internals: Gaussian map, sliding-window steps, TTA, fold averaging, batching, cancel, progress,
crop/uncrop, normalization and resampling (the last two compared with nnU-Net's own functions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedtumorseg.errors import PredictionError
from torch import nn

from pedtumorseg.conventions import NUM_CLASSES
from pedtumorseg.inference.engine import Engine, PredictOptions, compute_steps, gaussian_map, mirror_combinations, pad_amounts, resolve_device
from pedtumorseg.errors import Cancelled
from pedtumorseg.inference.preprocessing import bbox_of, nonzero_mask, preprocess, resample, separate_axis, zscore
from pedtumorseg.inference.export import logits_to_input_grid


# --- a minimal bundle and networks for the engine ----------------------------------------------------------

class FakeBundle:
    """What the engine reads from a bundle, with a network of the test's choosing."""

    def __init__(self, make_net, states, patch=(8, 8, 8), mirror_axes=(0, 1, 2), spacing=(1.0, 1.0, 1.0)):
        self.make_net, self.states = make_net, states
        self.folds = list(states)
        self.patch_size, self.mirror_axes, self.spacing_zyx = patch, mirror_axes, spacing
        self.use_mask_for_norm = (True,) * 4

    def build_network(self):
        return self.make_net().eval()

    def state_dict(self, fold):
        return self.states[fold]


class Counting(nn.Module):
    calls = 0

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        Counting.calls += 1
        return self.inner(x)


def symmetric_conv_net():
    """A 3x3x3 conv whose kernels are invariant under every flip: the net is mirror-equivariant."""
    conv = nn.Conv3d(4, NUM_CLASSES, 3, padding=1)
    return conv


def symmetric_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(NUM_CLASSES, 4, 3, 3, 3, generator=g)
    for axes in ([2], [3], [4]):
        w = (w + torch.flip(w, axes)) / 2
    return {"weight": w, "bias": torch.randn(NUM_CLASSES, generator=g)}


def random_conv_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(NUM_CLASSES, 4, 3, 3, 3, generator=g), "bias": torch.randn(NUM_CLASSES, generator=g)}


def images_with_box(shape=(20, 22, 18), seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((4, *shape), dtype=np.float32)
    img[:, 3:17, 2:20, 4:15] = rng.normal(100, 20, (4, 14, 18, 11))
    return img


# --- geometry ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image, tile, step", [
    ((110, 64, 64), (64, 64, 64), 0.5), ((128, 128, 128), (64, 64, 64), 0.5), ((155, 240, 240), (128, 128, 128), 0.5),
    ((65, 97, 33), (32, 48, 32), 0.5), ((100, 100, 100), (64, 64, 64), 0.25), ((64, 64, 64), (64, 64, 64), 1.0),
    ((77, 201, 131), (40, 56, 72), 0.7),
])
def test_steps_equal_nnunet(image, tile, step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    assert compute_steps(image, tile, step) == compute_steps_for_sliding_window(image, tile, step)


def test_steps_refuse_small_image_and_bad_step():
    with pytest.raises(ValueError):
        compute_steps((10, 64, 64), (16, 16, 16), 0.5)
    with pytest.raises(ValueError):
        compute_steps((64, 64, 64), (16, 16, 16), 0.0)


@pytest.mark.parametrize("tile", [(16, 16, 16), (9, 12, 7), (32, 24, 40)])
def test_gaussian_map(tile):
    g = gaussian_map(tile)
    c = tuple(t // 2 for t in tile)
    assert g.shape == tile and g.dtype == np.float32 and g[c] == pytest.approx(10.0) and g.max() == g[c]
    assert (g > 0).all()
    for ax, t in enumerate(tile):  # symmetric about the centre voxel
        k = min(c[ax], t - 1 - c[ax])
        lo = np.take(g, range(c[ax] - k, c[ax]), axis=ax)
        hi = np.take(g, range(c[ax] + k, c[ax], -1), axis=ax)
        np.testing.assert_allclose(lo, hi, rtol=1e-6)
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    ref = compute_gaussian(tile, 1. / 8, 10, dtype=torch.float32, device=torch.device("cpu")).numpy()
    np.testing.assert_allclose(g, ref, rtol=1e-6)


def test_pad_and_mirrors():
    assert pad_amounts((10, 20, 30), (16, 16, 33)) == [(3, 3), (0, 0), (1, 2)]
    assert mirror_combinations((0, 1, 2)) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert mirror_combinations(()) == [()]


def test_device_and_options():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(PredictionError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(PredictionError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    b = FakeBundle(symmetric_conv_net, {0: symmetric_state()})
    with pytest.raises(ValueError, match="precision"):
        Engine(b, PredictOptions(device="cpu", probabilities=True, precision="fp8"))


# --- preprocessing vs nnU-Net ------------------------------------------------------------------------------

def test_nonzero_crop_fills_holes():
    img = np.zeros((2, 10, 10, 10), dtype=np.float32)
    img[0, 2:8, 3:9, 1:6] = 1
    img[0, 4, 5, 3] = 0  # a hole: inside the mask after filling
    img[1, 9, 9, 9] = 5  # a second channel widens the box
    mask = nonzero_mask(img)
    assert mask[4, 5, 3]
    assert bbox_of(mask) == (slice(2, 10), slice(3, 10), slice(1, 10))
    from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask
    np.testing.assert_array_equal(mask, create_nonzero_mask(img))


def test_zscore_matches_nnunet():
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
    rng = np.random.default_rng(1)
    data = np.zeros((4, 12, 14, 16), dtype=np.float32)
    data[:, 2:10, 3:12, 1:15] = rng.gamma(3.0, 50.0, (4, 8, 9, 14)).astype(np.float32)
    mask = nonzero_mask(data)
    seg = np.where(mask, 0, -1)
    ours = zscore(data.copy(), mask, [True, True, False, True])
    for c, use in enumerate([True, True, False, True]):
        ref = ZScoreNormalization(use_mask_for_norm=use, intensityproperties={}).run(data[c].copy(), seg)
        np.testing.assert_array_equal(ours[c], ref)
    assert (ours[0][~mask] == 0).all()


@pytest.mark.parametrize("shape, cur, new, order", [
    ((17, 20, 23), (1.0, 1.0, 1.0), (1.3, 0.8, 1.1), 3),
    ((17, 20, 23), (2.5, 2.5, 2.5), (3.0, 3.25, 3.5), 1),
    ((9, 30, 28), (5.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3),  # anisotropic input: separate z (order 0 along z)
    ((20, 16, 18), (1.0, 1.0, 1.0), (4.0, 1.2, 1.2), 3),  # anisotropic target
    ((20, 16, 18), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 3),  # no-op
])
def test_resample_matches_nnunet(shape, cur, new, order):
    from nnunetv2.preprocessing.resampling.default_resampling import (compute_new_shape,
                                                                       resample_data_or_seg_to_shape)
    rng = np.random.default_rng(2)
    data = rng.normal(0, 1, (2, *shape)).astype(np.float32)
    new_shape = compute_new_shape(shape, cur, new)
    ref = resample_data_or_seg_to_shape(data, new_shape, cur, new, is_seg=False, order=order, order_z=0,
                                        force_separate_z=None)
    ours = resample(data, new_shape, cur, new, order)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    if max(cur) / min(cur) > 3 or max(new) / min(new) > 3:
        assert separate_axis(cur, new) == 0


def test_crop_uncrop_inverse_exact():
    img = images_with_box()
    pre = preprocess(img, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (True,) * 4)
    assert pre.bbox == (slice(3, 17), slice(2, 20), slice(4, 15)) and pre.data.shape[1:] == (14, 18, 11)
    rng = np.random.default_rng(3)
    lab = rng.integers(0, NUM_CLASSES, pre.data.shape[1:])
    logits = (20.0 * np.eye(NUM_CLASSES, dtype=np.float32)[lab]).transpose(3, 0, 1, 2)
    probs, labels = logits_to_input_grid(np.ascontiguousarray(logits), pre)
    assert labels.shape == img.shape[1:] and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[pre.bbox], lab)
    outside = np.ones(img.shape[1:], bool)
    outside[pre.bbox] = False
    assert (labels[outside] == 0).all() and (probs[0][outside] == 1).all() and (probs[1:, outside] == 0).all()
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)


def test_no_tumor_outside_the_crop_mask():
    """Inside the crop box, voxels with no image data in any channel (a corner cut out of the brain, a hole that
    reaches the surface) are background whatever the logits, with probability 1; voxels with data keep the
    argmax. An image without zeros keeps every voxel (mask None)."""
    img = images_with_box()
    img[:, 3:8, 2:9, 4:8] = 0  # an empty corner of the box (open to the outside: not a hole)
    for target in [(1.0, 1.0, 1.0), (2.0, 1.5, 1.0)]:
        pre = preprocess(img, (1.0, 1.0, 1.0), target, (True,) * 4)
        assert pre.bbox == (slice(3, 17), slice(2, 20), slice(4, 15)) and pre.mask is not None
        logits = np.zeros((NUM_CLASSES, *pre.data.shape[1:]), dtype=np.float32)
        logits[2] = 5  # NET everywhere
        probs, labels = logits_to_input_grid(logits, pre)
        data = nonzero_mask(img)
        assert (labels[data] == 2).all() and (labels[~data] == 0).all()
        assert (probs[0][~data] == 1).all() and (probs[1:, ~data] == 0).all()
        np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)
    full = np.random.default_rng(1).normal(100, 20, (4, 6, 7, 8)).astype(np.float32)
    assert preprocess(full, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (True,) * 4).mask is None


def test_uncrop_after_resampling_restores_shape():
    img = images_with_box()
    pre = preprocess(img, (1.0, 1.0, 1.0), (2.0, 1.5, 1.0), (True,) * 4)
    assert pre.data.shape[1:] == (7, 12, 11)
    logits = np.zeros((NUM_CLASSES, *pre.data.shape[1:]), dtype=np.float32)
    logits[2] = 5
    probs, labels = logits_to_input_grid(logits, pre)
    assert labels.shape == img.shape[1:] and (labels[pre.bbox] == 2).all()


# --- the engine ---------------------------------------------------------------------------------------------

def test_tta_with_mirror_equivariant_net():
    img = images_with_box()
    sym = FakeBundle(symmetric_conv_net, {0: symmetric_state()})
    a = Engine(sym, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(img, (1, 1, 1))
    b = Engine(sym, PredictOptions(device="cpu", probabilities=True, tta=True)).predict(img, (1, 1, 1))
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    asym = FakeBundle(symmetric_conv_net, {0: random_conv_state()})
    c = Engine(asym, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(img, (1, 1, 1))
    d = Engine(asym, PredictOptions(device="cpu", probabilities=True, tta=True)).predict(img, (1, 1, 1))
    assert np.abs(c.probabilities - d.probabilities).max() > 1e-3  # the check above can fail


def test_tta_runs_every_flip_combination():
    img = images_with_box()
    Counting.calls = 0
    b = FakeBundle(lambda: Counting(symmetric_conv_net()), {0: {"inner." + k: v for k, v in symmetric_state().items()}})
    eng = Engine(b, PredictOptions(device="cpu", probabilities=True, tta=True, batch_size=1))
    eng.predict(img, (1, 1, 1))
    steps = compute_steps((14, 18, 11), (8, 8, 8), 0.5)
    assert Counting.calls == 8 * np.prod([len(s) for s in steps])


def constant_net():
    conv = nn.Conv3d(4, NUM_CLASSES, 1)
    return conv


def constant_state(bias):
    return {"weight": torch.zeros(NUM_CLASSES, 4, 1, 1, 1), "bias": torch.tensor(bias, dtype=torch.float32)}


def test_fold_logits_averaged():
    img = images_with_box()
    b0, b1 = [4.0, 0.0, 1.0, 0.0, -2.0], [0.0, 6.0, 1.0, 0.0, 2.0]
    b = FakeBundle(constant_net, {0: constant_state(b0), 1: constant_state(b1)})
    eng = Engine(b, PredictOptions(device="cpu", probabilities=True, tta=True))
    pre = preprocess(img, (1, 1, 1), (1, 1, 1), (True,) * 4)
    logits = eng.predict_logits(pre.data)
    expected = (np.array(b0) + np.array(b1)) / 2
    np.testing.assert_allclose(logits, np.broadcast_to(expected[:, None, None, None], logits.shape), atol=1e-5)
    pred = eng.predict(img, (1, 1, 1))
    p = torch.softmax(torch.tensor(expected), 0).numpy()  # softmax of averaged logits, not averaged softmax
    np.testing.assert_allclose(pred.probabilities[(slice(None), *pre.bbox)][:, 0, 0, 0], p, atol=1e-6)
    assert (pred.labels[pre.bbox] == 1).all()
    one = Engine(b, PredictOptions(device="cpu", probabilities=True, folds=[1])).predict_logits(pre.data)
    np.testing.assert_allclose(one[:, 0, 0, 0], b1, atol=1e-5)


def test_batch_size_independence_and_padding():
    img = images_with_box()
    b = FakeBundle(symmetric_conv_net, {0: random_conv_state(4)}, patch=(8, 16, 16))
    res = [Engine(b, PredictOptions(device="cpu", probabilities=True, tta=True, batch_size=bs)).predict(img, (1, 1, 1))
           for bs in (1, 3, 64)]
    for r in res[1:]:
        np.testing.assert_allclose(r.probabilities, res[0].probabilities, atol=1e-5)
        assert (r.labels == res[0].labels).mean() > 0.9999
    small = FakeBundle(symmetric_conv_net, {0: random_conv_state(4)}, patch=(32, 32, 32))  # image < patch: padded
    r = Engine(small, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(img, (1, 1, 1))
    assert r.labels.shape == img.shape[1:] and np.isfinite(r.probabilities).all()


def test_cancel_within_one_batch():
    img = images_with_box()
    Counting.calls = 0
    b = FakeBundle(lambda: Counting(symmetric_conv_net()), {0: {"inner." + k: v for k, v in symmetric_state().items()}})
    eng = Engine(b, PredictOptions(device="cpu", probabilities=True, tta=True, batch_size=4))
    with pytest.raises(Cancelled):
        eng.predict(img, (1, 1, 1), cancel=lambda: Counting.calls >= 3)
    assert Counting.calls == 3


def test_progress_monotonic_to_one():
    img = images_with_box()
    seen = []
    b = FakeBundle(symmetric_conv_net, {0: symmetric_state(), 1: random_conv_state()})
    Engine(b, PredictOptions(device="cpu", probabilities=True, tta=True, batch_size=5)).predict(
        img, (1, 1, 1), progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(m, str) and m for _, m in seen)
    assert len(seen) > 10  # per batch


def test_all_zero_input_gives_background():
    img = np.zeros((4, 10, 12, 9), dtype=np.float32)
    b = FakeBundle(constant_net, {0: constant_state([3.0, 0.0, 0.0, 0.0, 0.0])})
    r = Engine(b, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(img, (1, 1, 1))
    assert np.isfinite(r.probabilities).all() and (r.labels == 0).all()


def test_rejects_wrong_channel_count():
    b = FakeBundle(constant_net, {0: constant_state([0.0] * 5)})
    with pytest.raises(ValueError, match=r"images must be \(4, z, y, x\)"):
        Engine(b, PredictOptions(device="cpu")).predict(np.zeros((3, 8, 8, 8), np.float32), (1, 1, 1))
