"""Training loss of the paper (§2.4, eq. 2):  Loss = -Dice + CE + HD + theta * N_FP / (N_pred + N_gt).

``PedTumorSegLoss(logits, target)`` = w_dice * (-SoftDice) + w_ce * CE + w_hd * HD + theta * FP, every term
switchable by setting its weight to 0 (a zero-weight term is not computed at all).

Term definitions (p = softmax probabilities, g = one-hot target, foreground classes c = 1..C-1 only, except CE):

* SoftDice (as nnU-Net's MemoryEfficientSoftDiceLoss with do_bg=False): per sample b and class c
  dice = (2 sum p g + smooth) / (sum p + sum g + smooth), smooth = 1e-5, mean over classes and samples; with
  ``batch_dice=True`` the sums also run over the batch before the ratio (mean over classes only).
* CE: ``torch.nn.functional.cross_entropy`` on the logits (all classes, mean over voxels and samples).
* FP (specificity regularizer, paper eq. 2): per foreground class c, FP_c = N_FP / (N_pred + N_gt), counted
  on the **hard** prediction (argmax over classes): N_pred = #voxels predicted c, N_gt = #voxels labelled c,
  N_FP = #voxels predicted c but not labelled c; 0/0 (class absent and not predicted) = 0. The forward value is
  exactly the published formula on voxel counts: a patch without ET in which the network predicts ET anywhere
  gets FP_ET = 1, one without ET and without ET prediction gets 0.
  Gradient (straight-through surrogate): the counts are not differentiable, so the term is computed as
  ``hard + soft - soft.detach()`` with soft = sum_{v in FP support} p_c(v) / (N_pred + N_gt): the soft
  probabilities of class c summed over the voxels that are *hard* false positives, over the (constant) hard
  denominator. The forward value is the hard one (the soft part cancels); the gradient is 1 / (N_pred + N_gt)
  on p_c at every false-positive voxel and 0 elsewhere. For an absent class with k stray voxels this is 1/k per stray voxel — largest exactly when one
  stray voxel would cost a lesion-wise Dice of 0. (The soft-count reading, N_FP = sum p (1 - g), gives ~1 with a
  gradient of order 1/N^2 for an absent class: it does not act; see the training README.)
  Default **per sample** (``fp_per_sample=True``): counts over the voxels of one patch, ratios averaged over
  samples and foreground classes; ``fp_per_sample=False`` pools the counts over the batch. theta = 0.1 (paper).
* HD (Karimi & Salcudean 2019, distance-transform Hausdorff loss, eq. 8 there), **normalized**:
  HD = sum_v (p - g)^2 w / sum_v w with w = d_G^a + d_P^a, a = 2, where d_G is the distance of each voxel to
  the boundary of the ground-truth mask of class c (edt(mask) + edt(~mask), in voxel units, so inside and
  outside voxels next to the boundary get 1) and d_P the same for the thresholded prediction (p > 0.5); per
  sample and foreground class, then averaged. An empty (or full) mask has no boundary: its field is 0; a
  (sample, class) with w = 0 everywhere contributes 0. The distance fields are computed without gradient by
  the ``edt`` package (C++, multi-threaded, ``HD_THREADS``) on the CPU, falling back to scipy when ``edt`` is
  not installed, and moved to the input's device.
  Why normalized: Karimi's un-normalized mean, mean_v (p-g)^2 w, scales with the square of the distances, i.e.
  with object and patch size (~82 for a radius-20 sphere in a 128^3 patch under a uniform untrained softmax,
  ~40x Dice+CE). Its gradient is then dominated by far
  background voxels of every foreground class, which it drives to 0 everywhere: the demo run with
  ``w_hd = 0.1`` on the un-normalized term had collapsed to background after 120 iterations. Dividing by sum w
  makes the term a distance-weighted mean squared error in [0, 1] — the same scale as Dice and CE, at any patch
  size — while keeping Karimi's relative weighting of voxels (far errors weigh more than boundary errors).
  Weight ``w_hd = 1`` by default, as in the paper's ``-Dice + CE + HD + FP``.

Targets are integer label maps (B, 1, *spatial) as nnU-Net passes them, or (B, *spatial).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from torch import nn

try:  # optional fast distance transforms (extra "training"); scipy otherwise
    import edt as _edt_lib
except ImportError:  # pragma: no cover - exercised when the extra is missing
    _edt_lib = None

DICE_SMOOTH = 1e-5
THETA = 0.1
HD_WEIGHT = 1.0
HD_ALPHA = 2.0
#: threads the ``edt`` package may use per distance transform
HD_THREADS = 2


def _label_map(target: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,1,*sp) or (B,*sp) -> (B,*sp) long."""
    if target.ndim == ndim:
        if target.shape[1] != 1:
            raise ValueError(f"target must be a label map (B,1,*spatial) or (B,*spatial), got {tuple(target.shape)}")
        target = target[:, 0]
    elif target.ndim != ndim - 1:
        raise ValueError(f"target shape {tuple(target.shape)} does not fit logits with {ndim} dims")
    return target.long()


def one_hot(labels: torch.Tensor, num_classes: int, spatial_dims: int = 3) -> torch.Tensor:
    """(B,*sp) or (B,1,*sp) integer labels with ``spatial_dims`` spatial axes -> (B, num_classes, *sp) float32."""
    if labels.ndim == spatial_dims + 2:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be (B,1,*spatial) or (B,*spatial), got {tuple(labels.shape)}")
        labels = labels[:, 0]
    elif labels.ndim != spatial_dims + 1:
        raise ValueError(f"labels shape {tuple(labels.shape)} has not {spatial_dims} spatial axes")
    labels = labels.long()
    out = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.unsqueeze(1), 1.0)


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, smooth: float = DICE_SMOOTH,
              batch_dice: bool = False) -> torch.Tensor:
    """Mean soft Dice over foreground classes (channel 0 = background is skipped). probs, onehot: (B,C,*sp)."""
    p, g = probs[:, 1:].float(), onehot[:, 1:].float()
    axes = tuple(range(2, p.ndim))
    inter, sp, sg = (p * g).sum(axes), p.sum(axes), g.sum(axes)
    if batch_dice:
        inter, sp, sg = inter.sum(0), sp.sum(0), sg.sum(0)
    return ((2 * inter + smooth) / (sp + sg + smooth).clamp_min(1e-8)).mean()


def fp_counts(probs: torch.Tensor, onehot: torch.Tensor, per_sample: bool = True):
    """Hard counts (N_FP, N_pred, N_gt) per foreground class (and sample if per_sample) and the FP support mask.

    The prediction is the argmax over all classes (background included), as at inference.
    """
    pred = probs.detach().argmax(1)
    pred_1h = one_hot(pred, probs.shape[1], probs.ndim - 2)[:, 1:]
    g = onehot[:, 1:].float()
    support = pred_1h * (1 - g)  # hard false positives of each foreground class
    axes = tuple(range(2, g.ndim))
    n_fp, n_pred, n_gt = support.sum(axes), pred_1h.sum(axes), g.sum(axes)
    if not per_sample:
        n_fp, n_pred, n_gt = n_fp.sum(0), n_pred.sum(0), n_gt.sum(0)
    return n_fp, n_pred, n_gt, support


def fp_penalty(probs: torch.Tensor, onehot: torch.Tensor, per_sample: bool = True) -> torch.Tensor:
    """Mean over foreground classes (and samples if per_sample) of N_FP / (N_pred + N_gt) on hard counts, with
    the straight-through gradient of sum_{FP support} p / (N_pred + N_gt) (module docstring); 0/0 = 0."""
    p = probs[:, 1:].float()
    n_fp, n_pred, n_gt, support = fp_counts(probs, onehot, per_sample)
    denom = n_pred + n_gt
    safe = denom.clamp_min(1.0)
    axes = tuple(range(2, p.ndim))
    soft_fp = (p * support).sum(axes)
    if not per_sample:
        soft_fp = soft_fp.sum(0)
    soft = torch.where(denom > 0, soft_fp / safe, torch.zeros_like(soft_fp))
    hard = torch.where(denom > 0, n_fp / safe, torch.zeros_like(n_fp))
    return (hard + soft - soft.detach()).mean()


def _edt(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (voxels) of every True voxel to the nearest False voxel."""
    if _edt_lib is not None:
        return _edt_lib.edt(np.ascontiguousarray(mask, dtype=np.uint8), black_border=False, parallel=HD_THREADS)
    return distance_transform_edt(mask)


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (voxels) of every voxel to the boundary of a boolean mask; 0 everywhere if the mask is empty/full."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or mask.all():
        return np.zeros(mask.shape, dtype=np.float32)
    return (_edt(mask) + _edt(~mask)).astype(np.float32)


def hausdorff_weights(probs: torch.Tensor, onehot: torch.Tensor, alpha: float = HD_ALPHA) -> torch.Tensor:
    """w = d_G^a + d_P^a per sample and foreground class, (B, C-1, *sp) float32 on the input's device."""
    with torch.no_grad():
        g_np = onehot[:, 1:].detach().cpu().numpy() > 0.5
        pred_np = probs[:, 1:].detach().float().cpu().numpy() > 0.5
        weight = np.zeros(g_np.shape, dtype=np.float32)
        for b in range(g_np.shape[0]):
            for c in range(g_np.shape[1]):
                weight[b, c] = boundary_distance(g_np[b, c]) ** alpha + boundary_distance(pred_np[b, c]) ** alpha
        return torch.from_numpy(weight).to(probs.device)


def hausdorff_dt(probs: torch.Tensor, onehot: torch.Tensor, alpha: float = HD_ALPHA,
                 normalize: bool = True) -> torch.Tensor:
    """Karimi & Salcudean's HD_DT loss per sample and foreground class, averaged.

    ``normalize=True`` (default): sum_v (p-g)^2 w / sum_v w (0 where w is 0 everywhere); ``False``: Karimi's
    mean_v (p-g)^2 w."""
    p, g = probs[:, 1:].float(), onehot[:, 1:].float()
    weight_t = hausdorff_weights(probs, onehot, alpha)
    axes = tuple(range(2, p.ndim))
    err = ((p - g) ** 2 * weight_t)
    if not normalize:
        return err.mean(axes).mean()
    total_w = weight_t.sum(axes)
    return torch.where(total_w > 0, err.sum(axes) / total_w.clamp_min(1e-12), torch.zeros_like(total_w)).mean()


class PedTumorSegLoss(nn.Module):
    """w_dice * (-SoftDice) + w_ce * CE + w_hd * HD + theta * FP on logits (B,C,*sp) and labels (B,1,*sp).

    After each call ``last_terms`` holds the detached unweighted terms (dice, ce, hd, fp) that were computed.
    """

    def __init__(self, w_dice: float = 1.0, w_ce: float = 1.0, w_hd: float = HD_WEIGHT, theta: float = THETA,
                 batch_dice: bool = False, dice_smooth: float = DICE_SMOOTH, hd_alpha: float = HD_ALPHA,
                 fp_per_sample: bool = True, hd_normalize: bool = True):
        super().__init__()
        self.w_dice, self.w_ce, self.w_hd, self.theta = float(w_dice), float(w_ce), float(w_hd), float(theta)
        self.batch_dice, self.dice_smooth, self.hd_alpha = bool(batch_dice), float(dice_smooth), float(hd_alpha)
        self.fp_per_sample, self.hd_normalize = bool(fp_per_sample), bool(hd_normalize)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = _label_map(target, logits.ndim)
        logits = logits.float()
        probs = torch.softmax(logits, 1)
        onehot = one_hot(labels, logits.shape[1], logits.ndim - 2)
        total = logits.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        if self.w_dice:
            terms["dice"] = soft_dice(probs, onehot, self.dice_smooth, self.batch_dice)
            total = total - self.w_dice * terms["dice"]
        if self.w_ce:
            terms["ce"] = F.cross_entropy(logits, labels)
            total = total + self.w_ce * terms["ce"]
        if self.w_hd:
            terms["hd"] = hausdorff_dt(probs, onehot, self.hd_alpha, self.hd_normalize)
            total = total + self.w_hd * terms["hd"]
        if self.theta:
            terms["fp"] = fp_penalty(probs, onehot, self.fp_per_sample)
            total = total + self.theta * terms["fp"]
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return total


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's deep-supervision weights: 1/2^i for output i (0 = highest resolution), the lowest-resolution
    output's weight set to 0, normalized to sum 1 (nnUNetTrainer._build_loss). n = 1 gives [1.0]."""
    if n < 1:
        raise ValueError("need at least one output")
    if n == 1:
        return [1.0]
    w = [1.0 / 2**i for i in range(n)]
    w[-1] = 0.0
    s = sum(w)
    return [x / s for x in w]


class DeepSupervisionLoss(nn.Module):
    """sum_i weights[i] * loss(outputs[i], targets[i]) over lists (highest resolution first); zero weights skipped."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]):
        super().__init__()
        if not any(w != 0 for w in weights):
            raise ValueError("at least one deep-supervision weight must be non-zero")
        self.loss = loss
        self.weights = [float(w) for w in weights]

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(outputs) != len(targets) or len(outputs) > len(self.weights):
            raise ValueError(f"{len(outputs)} outputs, {len(targets)} targets, {len(self.weights)} weights")
        total = None
        for w, out, tgt in zip(self.weights, outputs, targets):
            if w != 0:
                term = w * self.loss(out, tgt)
                total = term if total is None else total + term
        return total
