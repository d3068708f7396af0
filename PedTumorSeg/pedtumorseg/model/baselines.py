"""Baseline networks of the seed papers that no maintained package ships, built from their descriptions.

``LightUNet3D`` (Cecchin, Dugo, Soldà, "Improved 3D U-Net for Brain Tumor Segmentation on BraTS Dataset"):
three resolution levels; every block is two (Conv3d 3^3 with bias -> InstanceNorm3d -> LeakyReLU(0.01));
downsampling by 3D max pooling; upsampling by ConvTranspose3d (kernel = stride) and concatenation with the
skip; Dropout(0.3) before the final 1x1x1 conv; Kaiming init for LeakyReLU. Widths 16, 32, 64 (the paper gives
only the total: with 4 output classes this network has exactly the paper's 340,596 parameters; InstanceNorm
without affine parameters, PyTorch's default). ``strides`` (per level, the first is 1) sets the pooling.

``ResSELKAUNet2D`` (ResSE-LKA-UNet, 2D): encoder level s = ResSE block (two 3x3 conv -> BatchNorm -> ReLU on
the residual branch, 1x1 conv + BN shortcut when the width changes, then squeeze-and-excitation: global
average pool, FC C -> C/16, ReLU, FC, sigmoid, channel gate) followed by Large Kernel Attention (depthwise
5x5 -> depthwise 7x7 -> pointwise 1x1 -> BN -> sigmoid, multiplied onto its input); max pooling between
levels; at the bottleneck a Context Extraction module (sum of a 1x1 conv, a 3x3 conv and a global-average-pool
-> 1x1 conv branch, then BN -> ReLU); decoder stages: ConvTranspose2d (kernel = stride), concatenation with the
skip, a ResSE block; a 1x1 head. The paper does not give widths; default 32, 64, ... doubling (capped at
512) over the stages of nnU-Net's 2d topology. Deep supervision (used in the paper) is not implemented.

Neither class supports deep supervision (``deep_supervision=True`` raises); the trainer turns it off for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _per_stage_strides(strides, n: int, dims: int) -> list[tuple[int, ...]]:
    if strides is None:
        strides = [1] + [2] * (n - 1)
    if len(strides) != n:
        raise ValueError(f"strides: expected {n} entries (one per stage), got {len(strides)}")
    out = []
    for s in strides:
        t = (int(s),) * dims if isinstance(s, int) else tuple(int(v) for v in s)
        if len(t) != dims:
            raise ValueError(f"stride {s!r} is not an int or {dims} ints")
        out.append(t)
    return out


def _no_deep_supervision(cls_name: str, deep_supervision: bool) -> None:
    if deep_supervision:
        raise ValueError(f"{cls_name} has no deep supervision heads")


# --- LightUNet3D --------------------------------------------------------------------------------------------

class _DoubleConv3d(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, negative_slope: float):
        super().__init__(
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=True), nn.InstanceNorm3d(c_out),
            nn.LeakyReLU(negative_slope, inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1, bias=True), nn.InstanceNorm3d(c_out),
            nn.LeakyReLU(negative_slope, inplace=True))


class LightUNet3D(nn.Module):
    """See module docstring. ``widths``: channels per level; ``strides``: pooling per level (first = 1)."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 widths: Sequence[int] = (16, 32, 64), strides: Sequence | None = None, dropout: float = 0.3,
                 negative_slope: float = 0.01):
        super().__init__()
        _no_deep_supervision(type(self).__name__, deep_supervision)
        n = len(widths)
        if n < 2:
            raise ValueError("need at least 2 levels")
        self.strides = _per_stage_strides(strides, n, 3)
        self.encoder = nn.ModuleList()
        c = input_channels
        for w in widths:
            self.encoder.append(_DoubleConv3d(c, int(w), negative_slope))
            c = int(w)
        self.pools = nn.ModuleList(nn.MaxPool3d(s, s) for s in self.strides[1:])
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for s in range(n - 2, -1, -1):
            self.upsample.append(nn.ConvTranspose3d(int(widths[s + 1]), int(widths[s]), self.strides[s + 1],
                                                    self.strides[s + 1]))
            self.decoder.append(_DoubleConv3d(2 * int(widths[s]), int(widths[s]), negative_slope))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv3d(int(widths[0]), num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=negative_slope, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pools[i - 1](x)
            x = block(x)
            skips.append(x)
        x = skips[-1]
        for i, (up, block) in enumerate(zip(self.upsample, self.decoder)):
            x = block(torch.cat((up(x), skips[-(i + 2)]), dim=1))
        return self.head(self.dropout(x))


# --- ResSELKAUNet2D -----------------------------------------------------------------------------------------

class _ResSEBlock2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, se_reduction: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.shortcut = (nn.Identity() if c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)))
        hidden = max(1, c_out // se_reduction)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_out, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, c_out), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.shortcut(x) + self.residual(x)
        return f * self.se(f)[:, :, None, None]


class _LargeKernelAttention2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw5 = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.dw7 = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.pw = nn.Conv2d(c, c, 1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.bn(self.pw(self.dw7(self.dw5(x)))))


class _ContextExtraction2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.local1 = nn.Conv2d(c, c, 1, bias=False)
        self.local3 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.glob = nn.Conv2d(c, c, 1, bias=False)
        self.out = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.local1(x) + self.local3(x) + self.glob(self.pool(x)))


class ResSELKAUNet2D(nn.Module):
    """See module docstring. ``widths``: channels per stage (the last is the bottleneck); ``strides``: 2D pooling
    per stage (first = 1)."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 widths: Sequence[int] = (32, 64, 128, 256, 512), strides: Sequence | None = None,
                 se_reduction: int = 16):
        super().__init__()
        _no_deep_supervision(type(self).__name__, deep_supervision)
        n = len(widths)
        if n < 2:
            raise ValueError("need at least 2 stages")
        widths = [int(w) for w in widths]
        self.strides = _per_stage_strides(strides, n, 2)
        self.encoder = nn.ModuleList()
        c = input_channels
        for s, w in enumerate(widths):
            parts = [_ResSEBlock2d(c, w, se_reduction)]
            parts.append(_ContextExtraction2d(w) if s == n - 1 else _LargeKernelAttention2d(w))
            self.encoder.append(nn.Sequential(*parts))
            c = w
        self.pools = nn.ModuleList(nn.MaxPool2d(s, s) for s in self.strides[1:])
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for s in range(n - 2, -1, -1):
            self.upsample.append(nn.ConvTranspose2d(widths[s + 1], widths[s], self.strides[s + 1],
                                                    self.strides[s + 1]))
            self.decoder.append(_ResSEBlock2d(2 * widths[s], widths[s], se_reduction))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = self.pools[i - 1](x)
            x = stage(x)
            skips.append(x)
        x = skips[-1]
        for i, (up, block) in enumerate(zip(self.upsample, self.decoder)):
            x = block(torch.cat((up(x), skips[-(i + 2)]), dim=1))
        return self.head(x)
