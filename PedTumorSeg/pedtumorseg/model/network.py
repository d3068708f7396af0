"""PedTumorSegNet: U-Net with a widened residual SE encoder and depthwise separable convolutions (paper §2.2-2.5).

Encoder (stage s, width E_s = encoder_width_factor * D_s):
  stage 0: stem ConvUnit(input_channels -> E_0, stride 1) then ``blocks_per_stage[0]`` ResidualSEBlocks;
  stage s > 0: ConvUnit(E_{s-1} -> E_s, kernel k_s, stride ``strides[s]``) then ``blocks_per_stage[s]`` blocks.
Decoder (stages s = L-2 ... 0, width D_s):
  ConvTranspose3d(C_deeper -> D_s, kernel = stride = strides[s+1]) upsampling, concatenation with the encoder
  skip (E_s channels), ``decoder_convs_per_stage`` ConvUnits (first (D_s + E_s) -> D_s, then D_s -> D_s; no
  residual, no SE), and a 1x1x1 segmentation head D_s -> num_classes (with bias).
Forward returns the head of the highest-resolution decoder stage, or with ``decoder.deep_supervision`` the
list of all L-1 heads, highest resolution first (nnU-Net convention).

Every constructor argument other than input_channels / num_classes / deep_supervision is JSON-serializable
(ints, floats, bools, lists) so that it can stand in nnU-Net plans' ``arch_kwargs`` and in our bundle manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pedtumorseg.model.blocks import ConvUnit, ResidualSEBlock, triple
from pedtumorseg.model.init import DEFAULT_ALPHA, small_scale_init_


def _per_stage(value, n: int, name: str) -> list:
    """Broadcast an int / 3-list to n stages, or validate a list of n entries."""
    if isinstance(value, int) or (isinstance(value, Sequence) and len(value) == 3
                                  and all(isinstance(v, int) for v in value) and n != 3):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name}: expected {n} entries (one per stage), got {len(value)}")
    return value


class Encoder(nn.Module):
    def __init__(self, input_channels: int, widths: list[int], strides: list, kernel_sizes: list,
                 blocks_per_stage: list[int], separable: bool, stem_separable: bool, se_reduction: int,
                 drop_path: float, conv_bias: bool):
        super().__init__()
        self.widths = list(widths)
        self.strides = [triple(s) for s in strides]
        stages = []
        c_prev = input_channels
        for s, (w, st, k, nb) in enumerate(zip(widths, strides, kernel_sizes, blocks_per_stage)):
            first = ConvUnit(c_prev, w, k, st, separable=stem_separable if s == 0 else separable, bias=conv_bias)
            blocks = [ResidualSEBlock(w, k, separable, se_reduction, drop_path, conv_bias) for _ in range(nb)]
            stages.append(nn.Sequential(first, *blocks))
            c_prev = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    def __init__(self, encoder: Encoder, widths: list[int], kernel_sizes: list, num_classes: int,
                 convs_per_stage: list[int], separable: bool, deep_supervision: bool, conv_bias: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(widths)
        ups, stages, heads = [], [], []
        c_deep = encoder.widths[-1]
        for s in range(n - 2, -1, -1):  # deepest decoder stage first
            st = encoder.strides[s + 1]
            ups.append(nn.ConvTranspose3d(c_deep, widths[s], st, st, bias=conv_bias))
            c_in = widths[s] + encoder.widths[s]
            convs = [ConvUnit(c_in if i == 0 else widths[s], widths[s], kernel_sizes[s], 1, separable,
                              bias=conv_bias) for i in range(convs_per_stage[s])]
            stages.append(nn.Sequential(*convs))
            heads.append(nn.Conv3d(widths[s], num_classes, 1, bias=True))
            c_deep = widths[s]
        self.upsample = nn.ModuleList(ups)
        self.stages = nn.ModuleList(stages)
        self.seg_heads = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor]):
        x = skips[-1]
        outputs = []
        n_dec = len(self.stages)
        for i, (up, stage, head) in enumerate(zip(self.upsample, self.stages, self.seg_heads)):
            x = stage(torch.cat((up(x), skips[-(i + 2)]), dim=1))
            if self.deep_supervision:
                outputs.append(head(x))
            elif i == n_dec - 1:
                outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]


class PedTumorSegNet(nn.Module):
    """See module docstring. Defaults are the paper configuration (6 stages, decoder 32..320).

    decoder_widths: D_s per stage; encoder widths are encoder_width_factor * D_s.
    strides: per stage, int or 3-list (default None = [1, 2, 2, ...]); kernel_sizes: int, or per stage int/3-list.
    blocks_per_stage: residual SE blocks per encoder stage; decoder_convs_per_stage: ConvUnits per decoder stage.
    depthwise_separable: separable ConvUnits in the encoder (downsampling convs and residual blocks);
    decoder_separable: the same for the decoder convs (None = same as depthwise_separable);
    stem_separable: the first conv (input_channels -> E_0); default False, a standard conv, because a depthwise
    conv over 4 MRI channels followed by a pointwise mix can only produce rank-4 features (and the dense stem
    costs only 27*4*64 = 6912 weights).
    se_reduction: SE hidden width = max(1, C // se_reduction), 0 = no SE (ablation); drop_path: DropPath p in the residual blocks;
    conv_bias: biases on the convs that are followed by InstanceNorm and on the transposed convs (default
    False; the seg heads and SE layers always have biases); init_alpha: small-scale init exponent.
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 decoder_widths: Sequence[int] = (32, 64, 128, 256, 320, 320),
                 encoder_width_factor: int = 2,
                 strides: Sequence | None = None,
                 kernel_sizes: Sequence | int = 3,
                 blocks_per_stage: Sequence[int] | int = (1, 3, 4, 6, 6, 6),
                 decoder_convs_per_stage: Sequence[int] | int = 2,
                 depthwise_separable: bool = True,
                 decoder_separable: bool | None = None,
                 stem_separable: bool = False,
                 se_reduction: int = 16,
                 drop_path: float = 0.05,
                 conv_bias: bool = False,
                 init_alpha: float = DEFAULT_ALPHA):
        super().__init__()
        n = len(decoder_widths)
        if n < 2:
            raise ValueError("need at least 2 stages")
        if strides is None:  # stage 0 stride 1, every other stage halves the resolution
            strides = [1] + [2] * (n - 1)
        strides = _per_stage(list(strides) if not isinstance(strides, int) else strides, n, "strides")
        kernel_sizes = _per_stage(kernel_sizes, n, "kernel_sizes")
        blocks_per_stage = _per_stage(blocks_per_stage, n, "blocks_per_stage")
        decoder_convs_per_stage = _per_stage(decoder_convs_per_stage, n, "decoder_convs_per_stage")
        if decoder_separable is None:
            decoder_separable = depthwise_separable
        self.input_channels = input_channels
        self.num_classes = num_classes
        self.init_alpha = float(init_alpha)
        self.decoder_widths = [int(w) for w in decoder_widths]
        self.encoder_widths = [int(encoder_width_factor * w) for w in decoder_widths]
        self.encoder = Encoder(input_channels, self.encoder_widths, strides, kernel_sizes, blocks_per_stage,
                               depthwise_separable, stem_separable, se_reduction, drop_path, conv_bias)
        self.decoder = Decoder(self.encoder, self.decoder_widths, kernel_sizes, num_classes,
                               decoder_convs_per_stage, decoder_separable, deep_supervision, conv_bias)
        self.apply(self.initialize)

    def initialize(self, module: nn.Module) -> None:
        """Small-scale init of one module (nnU-Net calls ``network.apply(network.initialize)``)."""
        small_scale_init_(module, self.init_alpha)

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))
