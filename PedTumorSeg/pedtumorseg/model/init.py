"""Small-scale Gaussian weight initialization (paper §2.5, eq. 3).

    w ~ N(0, (2 / fan_in) ** alpha)      i.e. variance (2/fan_in)^alpha, std (2/fan_in)^(alpha/2)

alpha = 1 is He (Kaiming) normal initialization. Because 2/fan_in < 1 for every layer we use, alpha > 1 gives
*smaller* weights than He init ("small-scale" / condensed regime of Luo et al. 2021 [11]; Hang et al. 2025 [2]
report that smaller initialization favours generalizing/"reasoning" over memorization). The paper does not
publish its alpha. Our default is ``DEFAULT_ALPHA = 1.2``: clearly inside the small-init regime (for a layer with
fan_in = 640 the std is 0.56x He; for fan_in = 27, a depthwise 3x3x3 kernel, 0.77x He) while staying close
enough to He that the un-normalized layers (transposed convs, segmentation heads, SE gates) do not start
with vanishing outputs. Every conv here except those is followed by InstanceNorm, so the forward signal is
renormalized regardless of alpha.

fan_in — the number of input terms summed into one output value:

* ``Conv{1,2,3}d``: (C_in / groups) * prod(kernel) — what ``torch.nn.init`` computes from the weight shape
  [C_out, C_in/groups, k...]. A depthwise conv (groups = C_in) therefore has fan_in = k^3.
* ``ConvTranspose{1,2,3}d``: the weight is stored as [C_in, C_out/groups, k...] and torch's helper would
  return (C_out/groups) * prod(k), which is *not* the number of summands of an output voxel. We use the true
  one: (C_in / groups) * prod(k_i / s_i) (each output voxel receives on average prod(k/s) kernel taps from every
  input channel of its group). For the usual kernel == stride upsampling this is exactly C_in / groups.

Biases are set to zero. Other modules (norms) are left as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_ALPHA = 1.2

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def conv_fan_in(module: nn.Module) -> float:
    """fan_in of a conv or transposed conv module, as defined in the module docstring."""
    if isinstance(module, _TRANSPOSED):
        c_in = module.in_channels // module.groups
        ratio = 1.0
        for k, s in zip(module.kernel_size, module.stride):
            ratio *= k / s
        return c_in * ratio
    if isinstance(module, _CONVS):
        return (module.in_channels // module.groups) * math.prod(module.kernel_size)
    raise TypeError(f"not a convolution: {type(module).__name__}")


def init_std(fan_in: float, alpha: float) -> float:
    """std = (2 / fan_in) ** (alpha / 2)."""
    return (2.0 / fan_in) ** (alpha / 2.0)


@torch.no_grad()
def small_scale_init_(module: nn.Module, alpha: float = DEFAULT_ALPHA) -> nn.Module:
    """Initialize one conv / transposed-conv module in place (others are ignored); returns the module.

    Use ``net.apply(lambda m: small_scale_init_(m, alpha))`` for a whole network.
    """
    if isinstance(module, _CONVS + _TRANSPOSED):
        module.weight.normal_(0.0, init_std(conv_fan_in(module), alpha))
        if module.bias is not None:
            module.bias.zero_()
    return module
