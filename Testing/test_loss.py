"""Tests of the training loss (paper eq. 2) with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pedtumorseg.model.loss import DeepSupervisionLoss, PedTumorSegLoss, boundary_distance, deep_supervision_weights, fp_penalty, hausdorff_dt, one_hot, soft_dice


def probs_1d(fg: list[float], shape=(1, 1, 4)) -> torch.Tensor:
    """(1, 2, *shape) probabilities: background 1 - p, foreground p, laid out along x."""
    p = torch.tensor(fg, dtype=torch.float32).reshape(1, 1, *shape)
    return torch.cat([1 - p, p], 1)


def onehot_1d(labels: list[int], shape=(1, 1, 4), classes=2) -> torch.Tensor:
    return one_hot(torch.tensor(labels).reshape(1, *shape), classes)


P = [0.9, 0.6, 0.2, 0.1]
G = [1, 1, 0, 0]


def test_one_hot_accepts_both_target_shapes():
    a = one_hot(torch.tensor([[[[0, 2, 1]]]]), 3)  # (B, z, y, x) = (1, 1, 1, 3)
    b = one_hot(torch.tensor([[[[[0, 2, 1]]]]]), 3)  # (B, 1, z, y, x)
    assert torch.equal(a, b) and a.shape == (1, 3, 1, 1, 3)
    assert a[0, :, 0, 0, 1].tolist() == [0, 0, 1]


def test_soft_dice_hand_computed():
    # intersection 0.9 + 0.6 = 1.5; sum p = 1.8; sum g = 2
    # dice = (2*1.5 + 1e-5) / (1.8 + 2 + 1e-5) = 3.00001 / 3.80001
    #      = 3/3.8 + 1e-5*(3.8-3)/3.8^2 = 0.7894737 + 0.0000006 = 0.7894742
    d = soft_dice(probs_1d(P), onehot_1d(G))
    assert d.item() == pytest.approx(3.00001 / 3.80001, rel=1e-6)
    assert d.item() == pytest.approx(0.7894742, rel=1e-6)


def test_soft_dice_batch_and_per_sample():
    p = torch.cat([probs_1d(P), probs_1d([0, 0, 0.5, 0.5])])
    g = torch.cat([onehot_1d(G), onehot_1d([0, 0, 0, 0])])
    # sample 2: (0 + 1e-5) / (1 + 0 + 1e-5) = 9.9999e-6
    per_sample = (3.00001 / 3.80001 + 1e-5 / 1.00001) / 2
    assert soft_dice(p, g).item() == pytest.approx(per_sample, rel=1e-6)
    # batch: inter 1.5, sum p 2.8, sum g 2 -> 3.00001 / 4.80001 = 0.625
    assert soft_dice(p, g, batch_dice=True).item() == pytest.approx(3.00001 / 4.80001, rel=1e-6)


def test_soft_dice_averages_foreground_classes_only():
    # 3 classes; class 1 perfect (dice (2+s)/(2+s) = 1), class 2 absent and not predicted ((0+s)/(0+s) = 1),
    # background probabilities are wrong but ignored
    p = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]).T.reshape(1, 3, 1, 1, 4)
    g = one_hot(torch.tensor([1, 1, 0, 0]).reshape(1, 1, 1, 4), 3)
    # class 1: inter 2, sum p 3, sum g 2 -> 4.00001 / 5.00001 = 0.8; class 2: 1e-5 / 1e-5 = 1 -> mean 0.9
    assert soft_dice(p, g).item() == pytest.approx((4.00001 / 5.00001 + 1.0) / 2, rel=1e-6)


def _fp_with_grad(fg, labels, per_sample=True):
    """fp_penalty value and d value / d p_foreground for 1D two-class examples (one list per sample)."""
    fg_t = torch.tensor(fg, dtype=torch.float32).reshape(len(fg), 1, 1, 1, -1).requires_grad_()
    probs = torch.cat([1 - fg_t.detach(), fg_t], 1)
    onehot = one_hot(torch.tensor(labels).reshape(len(labels), 1, 1, -1), 2)
    value = fp_penalty(probs, onehot, per_sample)
    value.backward()
    return value.item(), fg_t.grad.reshape(len(fg), -1).tolist()


def test_fp_term_is_the_formula_on_hard_counts():
    # p > 0.5 everywhere it is predicted: pred [1,1,0,0] = gt -> N_FP 0 -> 0, no gradient
    value, grad = _fp_with_grad([P], [G])
    assert value == 0.0 and grad == [[0.0, 0.0, 0.0, 0.0]]
    # pred [1,1,1,0], gt [1,1,0,0]: N_FP 1, N_pred 3, N_gt 2 -> 1/5; gradient 1/5 on the false-positive voxel only
    value, grad = _fp_with_grad([[0.9, 0.6, 0.7, 0.1]], [G])
    assert value == pytest.approx(0.2, rel=1e-6)
    assert grad[0] == pytest.approx([0.0, 0.0, 0.2, 0.0])


def test_fp_term_acts_on_an_absent_class():
    # class absent, one stray voxel predicted: N_FP = N_pred = 1, N_gt = 0 -> 1 (the paper's "Dice 0" case);
    # the gradient on that voxel's probability is 1 / (1 + 0) = 1. The soft-count reading would give
    # N_FP/(N_pred + eps) = 1.0/2.0 with a gradient of eps/(N+eps)^2 = 0.25 spread over all voxels.
    value, grad = _fp_with_grad([[0.1, 0.6, 0.2, 0.1]], [[0, 0, 0, 0]])
    assert value == 1.0 and grad[0] == pytest.approx([0.0, 1.0, 0.0, 0.0])
    # absent and not predicted anywhere (all p <= 0.5): 0/0 = 0, nothing to push
    value, grad = _fp_with_grad([[0.4, 0.5, 0.2, 0.1]], [[0, 0, 0, 0]])
    assert value == 0.0 and grad == [[0.0, 0.0, 0.0, 0.0]]


def test_fp_term_gradient_does_not_vanish_on_a_large_patch():
    # 32^3 patch, class absent, 3 stray voxels: value 1, gradient 1/3 on each stray voxel (soft counts with eps 1
    # would give ~1/(N+1)^2 ~ 1e-9 here)
    n = 32 ** 3
    fg = torch.full((n,), 0.2)
    fg[[5, 77, 1000]] = 0.7
    value, grad = _fp_with_grad([fg.tolist()], [[0] * n])
    assert value == 1.0
    g = torch.tensor(grad[0])
    assert g[[5, 77, 1000]].tolist() == pytest.approx([1 / 3] * 3) and g.abs().sum().item() == pytest.approx(1.0)


def test_fp_term_per_sample_vs_pooled():
    fg = [[0.9, 0.6, 0.7, 0.1], [0.0, 0.0, 0.6, 0.6]]
    labels = [G, [0, 0, 0, 0]]
    # sample 1: 1/5; sample 2 (class absent): N_FP 2, N_pred 2, N_gt 0 -> 1; mean 0.6
    value, grad = _fp_with_grad(fg, labels)
    assert value == pytest.approx(0.6, rel=1e-6)
    # d mean / d p: sample 1 voxel 2: 0.2 / 2; sample 2 voxels 2, 3: (1/2) / 2
    assert grad == [pytest.approx([0, 0, 0.1, 0]), pytest.approx([0, 0, 0.25, 0.25])]
    # pooled: N_FP 3, N_pred 5, N_gt 2 -> 3/7
    value, _ = _fp_with_grad(fg, labels, per_sample=False)
    assert value == pytest.approx(3 / 7, rel=1e-6)


def test_fp_term_matches_an_independent_count_on_random_maps():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(2, 5, 6, 7, 8)).astype(np.float32))
    labels = rng.integers(0, 5, size=(2, 6, 7, 8))
    labels[1][labels[1] == 3] = 0  # class 3 absent from sample 2
    probs = torch.softmax(logits, 1)
    pred = logits.numpy().argmax(1)
    expected = []
    for b in range(2):
        for c in range(1, 5):
            n_fp = np.sum((pred[b] == c) & (labels[b] != c))
            denom = np.sum(pred[b] == c) + np.sum(labels[b] == c)
            expected.append(n_fp / denom if denom else 0.0)
    got = fp_penalty(probs, one_hot(torch.from_numpy(labels), 5)).item()
    assert got == pytest.approx(np.mean(expected), rel=1e-6)


def test_boundary_distance_1d_and_empty():
    # mask 001100: inside edt [0,0,1,1,0,0], outside edt [2,1,0,0,1,2] -> [2,1,1,1,1,2]
    d = boundary_distance(np.array([0, 0, 1, 1, 0, 0], bool).reshape(1, 1, 6))
    assert d.ravel().tolist() == [2, 1, 1, 1, 1, 2]
    assert not boundary_distance(np.zeros((2, 2, 2), bool)).any()
    assert not boundary_distance(np.ones((2, 2, 2), bool)).any()


def test_hd_term_hand_computed_1d():
    p = probs_1d([0.1, 0.6, 0.8, 0.4, 0.2, 0.0], shape=(1, 1, 6))
    g = onehot_1d([0, 0, 1, 1, 0, 0], shape=(1, 1, 6))
    # d_G (gt 001100)            = [2,1,1,1,1,2] -> ^2 [4,1,1,1,1,4]
    # p > 0.5 = 011000: d_P       = [1,1,1,1,2,3] -> ^2 [1,1,1,1,4,9]
    # w = sum                     = [5,2,2,2,5,13], sum w = 29
    # (p-g)^2 = [0.01,0.36,0.04,0.36,0.04,0]
    # products = [0.05,0.72,0.08,0.72,0.20,0] -> sum 1.77; normalized 1.77 / 29, Karimi's mean 1.77 / 6 = 0.295
    assert hausdorff_dt(p, g).item() == pytest.approx(1.77 / 29, rel=1e-6)
    assert hausdorff_dt(p, g, normalize=False).item() == pytest.approx(0.295, rel=1e-6)
    # a = 1: weights [3,2,2,2,3,5] (sum 17) -> products [0.03,0.72,0.08,0.72,0.12,0] = 1.67
    assert hausdorff_dt(p, g, alpha=1.0).item() == pytest.approx(1.67 / 17, rel=1e-6)
    assert hausdorff_dt(p, g, alpha=1.0, normalize=False).item() == pytest.approx(1.67 / 6, rel=1e-6)


def test_hd_term_empty_masks_and_class_average():
    # class absent and never predicted above 0.5: both fields 0 -> 0 even with p = 0.4
    p = probs_1d([0.4] * 6, shape=(1, 1, 6))
    g = onehot_1d([0] * 6, shape=(1, 1, 6))
    assert hausdorff_dt(p, g).item() == 0.0
    # two foreground classes: class 1 as in the 1D test (1.77 / 29), class 2 empty -> half of it
    fg1 = torch.tensor([0.1, 0.6, 0.8, 0.4, 0.2, 0.0])
    probs = torch.stack([1 - fg1, fg1, torch.zeros(6)]).reshape(1, 3, 1, 1, 6)
    onehot = one_hot(torch.tensor([0, 0, 1, 1, 0, 0]).reshape(1, 1, 1, 6), 3)
    assert hausdorff_dt(probs, onehot).item() == pytest.approx(1.77 / 29 / 2, rel=1e-6)


def test_hd_term_normalized_is_bounded_and_patch_size_free():
    # uniform untrained softmax (p = 0.2) and a sphere of radius r in a patch of edge n: Karimi's mean grows
    # with the squared distances (patch size), the normalized term stays in [0, 1] and nearly constant
    values = {}
    for n, r in ((32, 5), (64, 10)):
        z, y, x = np.ogrid[:n, :n, :n]
        sphere = ((z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2) < r ** 2
        g = one_hot(torch.from_numpy(sphere.astype(np.int64))[None], 2)
        p = torch.cat([torch.full((1, 1, n, n, n), 0.8), torch.full((1, 1, n, n, n), 0.2)], 1)
        values[n] = (hausdorff_dt(p, g).item(), hausdorff_dt(p, g, normalize=False).item())
    assert values[64][1] > 3.5 * values[32][1] > 3.5 * 1.0  # raw: ~4x per doubling, far above Dice/CE's scale
    assert 0 < values[32][0] < 1 and values[64][0] == pytest.approx(values[32][0], rel=0.05)


def test_boundary_distance_edt_matches_scipy():
    edt = pytest.importorskip("edt")  # noqa: F841
    from scipy.ndimage import distance_transform_edt
    from pedtumorseg.model import loss
    assert loss._edt_lib is not None
    rng = np.random.default_rng(0)
    mask = rng.random((12, 13, 14)) > 0.6
    expected = distance_transform_edt(mask) + distance_transform_edt(~mask)
    assert np.allclose(boundary_distance(mask), expected, atol=1e-4)


def test_total_loss_combines_terms_and_backpropagates():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6, 6, requires_grad=True)
    target = torch.randint(0, 5, (2, 1, 6, 6, 6))
    target[0, 0, :3] = 0  # make sure the thresholded prediction and masks are non-trivial somewhere
    loss_fn = PedTumorSegLoss()
    loss = loss_fn(logits, target)
    probs = torch.softmax(logits.detach(), 1)
    oh = one_hot(target, 5)
    ce = torch.nn.functional.cross_entropy(logits.detach(), target[:, 0])
    expected = (-soft_dice(probs, oh) + ce + 1.0 * hausdorff_dt(probs, oh) + 0.1 * fp_penalty(probs, oh))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(loss_fn.last_terms) == {"dice", "ce", "hd", "fp"}
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # (B, *spatial) targets give the same value
    assert loss_fn(logits.detach(), target[:, 0]).item() == pytest.approx(loss.item(), rel=1e-6)


def test_total_loss_switches_and_ce_hand_computed():
    # two voxels, 2 classes: logits [0, ln 3] -> softmax [0.25, 0.75]
    logits = torch.tensor([0.0, math.log(3)]).reshape(1, 2, 1, 1, 1).repeat(1, 1, 1, 1, 2)
    target = torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2)
    ce_only = PedTumorSegLoss(w_dice=0, w_ce=1, w_hd=0, theta=0)
    # CE = (-ln 0.75 - ln 0.25) / 2 = (0.287682 + 1.386294) / 2 = 0.836988
    assert ce_only(logits, target).item() == pytest.approx(0.836988, rel=1e-5)
    assert set(ce_only.last_terms) == {"ce"}
    fp_only = PedTumorSegLoss(w_dice=0, w_ce=0, w_hd=0, theta=0.1)
    # fg p = [0.75, 0.75] -> both voxels predicted fg, g = [1, 0]: N_FP 1, N_pred 2, N_gt 1 -> 1/3; * 0.1
    assert fp_only(logits, target).item() == pytest.approx(0.1 / 3, rel=1e-5)
    dice_only = PedTumorSegLoss(w_dice=2, w_ce=0, w_hd=0, theta=0)
    # dice = (2*0.75 + 1e-5) / (1.5 + 1 + 1e-5); loss = -2 * dice
    assert dice_only(logits, target).item() == pytest.approx(-2 * 1.50001 / 2.50001, rel=1e-5)


def test_deep_supervision_weights_match_nnunet():
    # 1, 1/2, 1/4, 1/8, (1/16 -> 0); sum 15/8 -> 8/15, 4/15, 2/15, 1/15, 0
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert deep_supervision_weights(2) == pytest.approx([1.0, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def test_deep_supervision_loss_weights_and_skips_zero():
    calls = []

    def fake_loss(out, tgt):
        calls.append(out.shape[-1])
        return (out - tgt).abs().mean()

    ds = DeepSupervisionLoss(fake_loss, [0.5, 0.25, 0.0])
    outs = [torch.full((1, 1, 4), 2.0), torch.full((1, 1, 2), 4.0), torch.full((1, 1, 1), 100.0)]
    tgts = [torch.zeros(1, 1, 4), torch.zeros(1, 1, 2), torch.zeros(1, 1, 1)]
    assert ds(outs, tgts).item() == pytest.approx(0.5 * 2 + 0.25 * 4)
    assert calls == [4, 2]  # the zero-weight level is not evaluated
    with pytest.raises(ValueError):
        DeepSupervisionLoss(fake_loss, [0.0, 0.0])


def test_deep_supervision_with_real_loss_backward():
    torch.manual_seed(1)
    outs = [torch.randn(1, 5, 8, 8, 8, requires_grad=True), torch.randn(1, 5, 4, 4, 4, requires_grad=True)]
    tgts = [torch.randint(0, 5, (1, 1, 8, 8, 8)), torch.randint(0, 5, (1, 1, 4, 4, 4))]
    ds = DeepSupervisionLoss(PedTumorSegLoss(), deep_supervision_weights(2))
    ds(outs, tgts).backward()
    assert outs[0].grad.abs().sum() > 0 and outs[1].grad is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loss_on_cuda_matches_cpu():
    torch.manual_seed(2)
    logits = torch.randn(2, 5, 8, 8, 8)
    target = torch.randint(0, 5, (2, 1, 8, 8, 8))
    cpu = PedTumorSegLoss()(logits, target)
    lg = logits.cuda().requires_grad_()
    gpu = PedTumorSegLoss()(lg, target.cuda())
    gpu.backward()
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-4)
