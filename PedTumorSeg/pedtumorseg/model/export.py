"""The export form of a network: the same weights, written with operators that ONNX runtimes compute as
accurately as PyTorch does.

Why: ONNX Runtime's ``InstanceNormalization`` and ``ReduceMean`` (and OpenVINO's ``MVN``) accumulate a sum over
all voxels of a channel in float32 — about 2 M terms for a 128^3 patch — which costs ~1e-4 relative error per
normalisation (PyTorch's reductions are blocked/pairwise and stay at ~1e-7). Through the ~80 normalisations of
the paper network this grows into 1e-1 logit differences and flipped labels. The export form keeps every
reduction short: a spatial mean is taken one axis at a time (mean over x, then y, then z; each a sum of <= 128
terms, and a mean of equal-sized means is the mean), and the instance norm is computed in two passes
(mean, then the mean of squared deviations), so there is no cancellation either.

``export_form(net)`` returns a deep copy of ``net`` with every ``nn.InstanceNorm3d`` and every
``SqueezeExcite`` replaced by such a module that shares nothing with the original; the original network (and
its ``state_dict``) is left as it is. The replaced modules compute the same function as the originals (in
exact arithmetic; in float32 to rounding, see Testing/test_backends.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pedtumorseg.model.blocks import SqueezeExcite


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the axes 2.. of x (keepdim), one axis at a time, last axis first.

    Means and sums alternate (the sums scaled afterwards) so that graph optimisers which merge consecutive
    reductions of one kind (OpenVINO's ReduceMerge, then its MVN fusion) cannot turn the chain back into one
    long reduction."""
    scale = 1.0
    for i, axis in enumerate(range(x.ndim - 1, 1, -1)):
        if i % 2:
            scale /= x.shape[axis]
            x = x.sum(dim=axis, keepdim=True)
        else:
            x = x.mean(dim=axis, keepdim=True)
    return x * scale if scale != 1.0 else x


class TwoPassInstanceNorm(nn.Module):
    """3D instance norm (biased variance, eps inside the square root, optional affine) from two short-reduction
    passes; the same function as ``nn.InstanceNorm3d`` without running stats."""

    def __init__(self, norm: nn.InstanceNorm3d):
        super().__init__()
        if norm.track_running_stats:
            raise ValueError("instance norms with running statistics are not supported by the export form")
        self.eps = float(norm.eps)
        c = norm.num_features
        weight = norm.weight.detach().clone() if norm.affine else torch.ones(c)
        bias = norm.bias.detach().clone() if norm.affine else torch.zeros(c)
        shape = (1, c, 1, 1, 1)
        # parameters (not buffers): the TorchScript ONNX exporter drops deduplicated buffers
        self.weight = nn.Parameter(weight.reshape(shape), requires_grad=False)
        self.bias = nn.Parameter(bias.reshape(shape), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - spatial_mean(x)
        var = spatial_mean(d * d)
        return d * (torch.rsqrt(var + self.eps) * self.weight) + self.bias


class ShortReductionSqueezeExcite(nn.Module):
    """``SqueezeExcite`` with the global squeeze taken by ``spatial_mean``."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.fc1 = copy.deepcopy(se.fc1)
        self.fc2 = copy.deepcopy(se.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(spatial_mean(x)))))
        return x * gate


def _replace(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.InstanceNorm3d):
            setattr(module, name, TwoPassInstanceNorm(child))
        elif isinstance(child, SqueezeExcite):
            setattr(module, name, ShortReductionSqueezeExcite(child))
        else:
            _replace(child)


def export_form(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` (in eval mode) with instance norms and SE squeezes in their export form."""
    out = copy.deepcopy(net).eval()
    _replace(out)
    return out
