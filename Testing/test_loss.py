"""Tests of the training loss (paper eq. 2) with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pedtumorseg.loss import (DeepSupervisionLoss, PedTumorSegLoss, boundary_distance, deep_supervision_weights,
                              fp_penalty, hausdorff_dt, one_hot, soft_dice)


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


def test_fp_term_hand_computed():
    # N_FP = 0.2 + 0.1 = 0.3; N_pred = 1.8; N_gt = 2; eps = 1 -> 0.3 / 4.8 = 0.0625
    assert fp_penalty(probs_1d(P), onehot_1d(G)).item() == pytest.approx(0.0625, rel=1e-6)
    assert fp_penalty(probs_1d(P), onehot_1d(G), eps=0.0).item() == pytest.approx(0.3 / 3.8, rel=1e-6)


def test_fp_term_zero_inside_gt_and_grows_with_false_positives():
    g = onehot_1d(G)
    assert fp_penalty(probs_1d([0.9, 0.6, 0.0, 0.0]), g).item() == 0.0
    values = [fp_penalty(probs_1d([0.9, 0.6, fp, fp]), g).item() for fp in (0.0, 0.1, 0.3, 0.6, 1.0)]
    assert values == sorted(values) and values[0] == 0 and values[-1] > values[1] > 0
    # 1.0 at both outside voxels: N_FP 2, N_pred 3.5, N_gt 2 -> 2 / 6.5
    assert values[-1] == pytest.approx(2 / 6.5, rel=1e-6)


def test_fp_term_per_sample_vs_pooled():
    p = torch.cat([probs_1d(P), probs_1d([0, 0, 0.5, 0.5])])
    g = torch.cat([onehot_1d(G), onehot_1d([0, 0, 0, 0])])
    # sample 2 lacks the class: N_FP = N_pred = 1, N_gt = 0 -> 1 / (1 + 1) = 0.5; mean with 0.0625 = 0.28125
    assert fp_penalty(p, g).item() == pytest.approx(0.28125, rel=1e-6)
    # pooled: N_FP 1.3, N_pred 2.8, N_gt 2 -> 1.3 / 5.8
    assert fp_penalty(p, g, per_sample=False).item() == pytest.approx(1.3 / 5.8, rel=1e-6)


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
    # sum                          = [5,2,2,2,5,13]
    # (p-g)^2 = [0.01,0.36,0.04,0.36,0.04,0]
    # products = [0.05,0.72,0.08,0.72,0.20,0] -> sum 1.77, mean over 6 voxels = 0.295
    assert hausdorff_dt(p, g).item() == pytest.approx(0.295, rel=1e-6)
    # a = 1: weights [3,2,2,2,3,5] -> products [0.03,0.72,0.08,0.72,0.12,0] = 1.67 / 6
    assert hausdorff_dt(p, g, alpha=1.0).item() == pytest.approx(1.67 / 6, rel=1e-6)


def test_hd_term_empty_masks_and_class_average():
    # class absent and never predicted above 0.5: both fields 0 -> 0 even with p = 0.4
    p = probs_1d([0.4] * 6, shape=(1, 1, 6))
    g = onehot_1d([0] * 6, shape=(1, 1, 6))
    assert hausdorff_dt(p, g).item() == 0.0
    # two foreground classes: class 1 as in the 1D test (0.295), class 2 empty -> mean 0.1475
    fg1 = torch.tensor([0.1, 0.6, 0.8, 0.4, 0.2, 0.0])
    probs = torch.stack([1 - fg1, fg1, torch.zeros(6)]).reshape(1, 3, 1, 1, 6)
    onehot = one_hot(torch.tensor([0, 0, 1, 1, 0, 0]).reshape(1, 1, 1, 6), 3)
    assert hausdorff_dt(probs, onehot).item() == pytest.approx(0.295 / 2, rel=1e-6)


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
    expected = (-soft_dice(probs, oh) + ce + 0.1 * hausdorff_dt(probs, oh) + 0.1 * fp_penalty(probs, oh))
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
    # fg p = [0.75, 0.75], g = [1, 0]: N_FP 0.75, N_pred 1.5, N_gt 1 -> 0.75 / 3.5; * 0.1
    assert fp_only(logits, target).item() == pytest.approx(0.1 * 0.75 / 3.5, rel=1e-5)
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
