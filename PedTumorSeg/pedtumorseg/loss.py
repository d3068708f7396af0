"""Training loss of the paper (§2.4, eq. 2):  Loss = -Dice + CE + HD + theta * N_FP / (N_pred + N_gt).

``PedTumorSegLoss(logits, target)`` = w_dice * (-SoftDice) + w_ce * CE + w_hd * HD + theta * FP, every term
switchable by setting its weight to 0 (a zero-weight term is not computed at all).

Term definitions (p = softmax probabilities, g = one-hot target, foreground classes c = 1..C-1 only, except CE):

* SoftDice (as nnU-Net's MemoryEfficientSoftDiceLoss with do_bg=False): per sample b and class c
  dice = (2 sum p g + smooth) / (sum p + sum g + smooth), smooth = 1e-5, mean over classes and samples; with
  ``batch_dice=True`` the sums also run over the batch before the ratio (mean over classes only).
* CE: ``torch.nn.functional.cross_entropy`` on the logits (all classes, mean over voxels and samples).
* FP (specificity regularizer): soft counts N_FP = sum p (1 - g), N_pred = sum p, N_gt = sum g;
  FP = N_FP / (N_pred + N_gt + fp_eps), averaged over the foreground classes. Default **per sample**
  (``fp_per_sample=True``): sums run over the voxels of one case, then the ratio is averaged over samples, so a
  case without ET gets FP_ET = N_pred / (N_pred + eps) ~ 1 for any appreciable ET probability mass — the
  situation the paper targets (a lesion-wise Dice of 0 for a false-positive absent class). With
  ``fp_per_sample=False`` the counts are pooled over the batch. ``fp_eps = 1.0`` (one voxel of probability
  mass): it keeps 0/0 at 0 when a class is absent from both, and makes the penalty of an absent class fall
  off only once the predicted mass is below about one voxel (with a tiny eps the term would be a constant 1
  with vanishing gradient for any mass above 1e-5 voxels). theta = 0.1 (paper).
* HD (Karimi & Salcudean 2019, distance-transform Hausdorff loss, eq. 8 there):
  HD = mean over voxels of (p - g)^2 * (d_G^a + d_P^a), a = 2, where d_G is the distance of each voxel to the
  boundary of the ground-truth mask of class c (edt(mask) + edt(~mask), in voxel units, so inside and outside
  voxels next to the boundary get 1) and d_P the same for the thresholded prediction (p > 0.5). Both fields are
  computed without gradient with ``scipy.ndimage.distance_transform_edt`` on the CPU, per sample and class,
  and moved back to the input's device. An empty (or full) mask has no boundary: its field is 0. Averaged over
  foreground classes and samples.
  Weight: ``w_hd = 0.1`` by default, not the paper's implicit 1. The term's magnitude grows with the square
  of the distances, i.e. with object and patch size: for a sphere of radius 20 in a 128^3 patch and a
  uniform untrained softmax (p = 0.2) it is ~82 for that class (measured), ~40x the Dice+CE terms, and its
  gradient is largest on far background voxels. 0.1 keeps it from swamping Dice/CE at the start while it
  still matters once errors are confined to the boundary. Karimi's schedule (raising the HD weight during
  training) is not implemented; set ``w_hd`` from the trainer if wanted.
  Cost: one EDT pair (d_G or d_P) on 128^3 took ~0.8 s on our shared 2-core CPU; masks that are empty skip it.

Targets are integer label maps (B, 1, *spatial) as nnU-Net passes them, or (B, *spatial).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from torch import nn

DICE_SMOOTH = 1e-5
FP_EPS = 1.0
THETA = 0.1
HD_WEIGHT = 0.1
HD_ALPHA = 2.0


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


def fp_penalty(probs: torch.Tensor, onehot: torch.Tensor, per_sample: bool = True,
               eps: float = FP_EPS) -> torch.Tensor:
    """Mean over foreground classes (and samples if per_sample) of N_FP / (N_pred + N_gt + eps)."""
    p, g = probs[:, 1:].float(), onehot[:, 1:].float()
    axes = tuple(range(2, p.ndim))
    n_fp, n_pred, n_gt = (p * (1 - g)).sum(axes), p.sum(axes), g.sum(axes)
    if not per_sample:
        n_fp, n_pred, n_gt = n_fp.sum(0), n_pred.sum(0), n_gt.sum(0)
    return (n_fp / (n_pred + n_gt + eps)).mean()


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (voxels) of every voxel to the boundary of a boolean mask; 0 everywhere if the mask is empty/full."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or mask.all():
        return np.zeros(mask.shape, dtype=np.float32)
    return (distance_transform_edt(mask) + distance_transform_edt(~mask)).astype(np.float32)


def hausdorff_dt(probs: torch.Tensor, onehot: torch.Tensor, alpha: float = HD_ALPHA) -> torch.Tensor:
    """Karimi & Salcudean's HD_DT loss: mean_voxels (p-g)^2 (d_G^a + d_P^a), mean over fg classes and samples."""
    p, g = probs[:, 1:].float(), onehot[:, 1:].float()
    with torch.no_grad():
        g_np = g.detach().cpu().numpy() > 0.5
        pred_np = p.detach().cpu().numpy() > 0.5
        weight = np.zeros(g_np.shape, dtype=np.float32)
        for b in range(g_np.shape[0]):
            for c in range(g_np.shape[1]):
                weight[b, c] = boundary_distance(g_np[b, c]) ** alpha + boundary_distance(pred_np[b, c]) ** alpha
        weight_t = torch.from_numpy(weight).to(p.device)
    axes = tuple(range(2, p.ndim))
    return ((p - g) ** 2 * weight_t).mean(axes).mean()


class PedTumorSegLoss(nn.Module):
    """w_dice * (-SoftDice) + w_ce * CE + w_hd * HD + theta * FP on logits (B,C,*sp) and labels (B,1,*sp).

    After each call ``last_terms`` holds the detached unweighted terms (dice, ce, hd, fp) that were computed.
    """

    def __init__(self, w_dice: float = 1.0, w_ce: float = 1.0, w_hd: float = HD_WEIGHT, theta: float = THETA,
                 batch_dice: bool = False, dice_smooth: float = DICE_SMOOTH, hd_alpha: float = HD_ALPHA,
                 fp_per_sample: bool = True, fp_eps: float = FP_EPS):
        super().__init__()
        self.w_dice, self.w_ce, self.w_hd, self.theta = float(w_dice), float(w_ce), float(w_hd), float(theta)
        self.batch_dice, self.dice_smooth, self.hd_alpha = bool(batch_dice), float(dice_smooth), float(hd_alpha)
        self.fp_per_sample, self.fp_eps = bool(fp_per_sample), float(fp_eps)
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
            terms["hd"] = hausdorff_dt(probs, onehot, self.hd_alpha)
            total = total + self.w_hd * terms["hd"]
        if self.theta:
            terms["fp"] = fp_penalty(probs, onehot, self.fp_per_sample, self.fp_eps)
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
