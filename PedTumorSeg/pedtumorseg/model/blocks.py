"""Building blocks of PedTumorSegNet (paper §2.2-2.3).

* ``ConvUnit``: conv -> InstanceNorm(affine) -> LeakyReLU(0.01). With ``separable=True`` it is the 3D
  depthwise separable unit of paper Fig. 3 (right): depthwise k^3 conv (groups = C_in, carries the stride)
  -> norm -> act -> pointwise 1x1x1 conv -> norm -> act. ``final_act=False`` drops the last activation
  (used for the second unit of a residual branch). Convs have no bias by default (``bias=False``): every conv
  is followed by InstanceNorm, which subtracts any per-channel constant, so a bias would be a dead parameter.
* ``SqueezeExcite``: global 3D squeeze (mean over all spatial axes), 1x1x1 conv C -> max(1, C // 16), ReLU,
  1x1x1 conv -> C, sigmoid; the input is multiplied by the per-channel gate.
* ``DropPath``: stochastic depth per sample; training only; survivors rescaled by 1 / (1 - p).
* ``ResidualSEBlock``: y = act(x + SE(DropPath(F(x)))), F = ConvUnit(C, C) -> ConvUnit(C, C, final_act=False).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NEGATIVE_SLOPE = 0.01
NORM_EPS = 1e-5


def triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    """An int or a 3-sequence -> a 3-tuple of ints."""
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, eps=NORM_EPS, affine=True)


def act() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


class ConvUnit(nn.Sequential):
    """conv-norm-act (standard) or dwconv-norm-act-pwconv-norm[-act] (separable)."""

    def __init__(self, c_in: int, c_out: int, kernel_size=3, stride=1, separable: bool = True,
                 final_act: bool = True, bias: bool = False):
        k, s = triple(kernel_size), triple(stride)
        pad = tuple(x // 2 for x in k)
        layers: list[nn.Module] = []
        if separable:
            layers += [nn.Conv3d(c_in, c_in, k, s, pad, groups=c_in, bias=bias), norm(c_in), act(),
                       nn.Conv3d(c_in, c_out, 1, 1, 0, bias=bias), norm(c_out)]
        else:
            layers += [nn.Conv3d(c_in, c_out, k, s, pad, bias=bias), norm(c_out)]
        if final_act:
            layers.append(act())
        super().__init__(*layers)
        self.separable = separable


class SqueezeExcite(nn.Module):
    """Channel attention with a global 3D squeeze: gate = sigmoid(W2 relu(W1 mean_zyx(x)))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv3d(channels, self.hidden, 1, bias=True)
        self.fc2 = nn.Conv3d(self.hidden, channels, 1, bias=True)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)  # all three spatial axes
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class DropPath(nn.Module):
    """Drops the whole input of a sample with probability p (training only); survivors scaled by 1/(1-p)."""

    def __init__(self, p: float = 0.05):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
        mask.bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ResidualSEBlock(nn.Module):
    """y = LeakyReLU(x + SE(DropPath(F(x)))) with F = ConvUnit -> ConvUnit(final_act=False) (paper eq. 1)."""

    def __init__(self, channels: int, kernel_size=3, separable: bool = True, se_reduction: int = 16,
                 drop_path: float = 0.05, bias: bool = False):
        super().__init__()
        self.branch = nn.Sequential(
            ConvUnit(channels, channels, kernel_size, 1, separable, final_act=True, bias=bias),
            ConvUnit(channels, channels, kernel_size, 1, separable, final_act=False, bias=bias),
        )
        self.drop_path = DropPath(drop_path)
        # se_reduction 0 switches the squeeze-and-excitation off (ablation)
        self.se = SqueezeExcite(channels, se_reduction) if se_reduction else nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.se(self.drop_path(self.branch(x))))
