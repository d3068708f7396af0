"""Size and cost of the PedTumorSegNet presets.

For each preset (and the dense, depthwise_separable=False, variant of the paper preset) prints the per-stage
encoder/decoder widths, parameters (total, encoder, decoder) and FLOPs of one forward pass of a
1x4x128^3 patch (deep supervision off). FLOPs are counted by torch.utils.flop_counter.FlopCounterMode,
which counts convolutions / transposed convolutions only, as 2 x multiply-accumulates; instance norm,
activations and the SE gates' element-wise products are not counted. The pass runs on the "meta" device
(shapes only, no arithmetic), so it takes seconds. A forward-hook count of conv MACs cross-checks the number.

    python benchmarks/model_report.py [--patch 128 128 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pedtumorseg.model import PRESETS, PedTumorSegNet, network_kwargs


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def hook_macs(net: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv3d / ConvTranspose3d, from their output/input shapes."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = math.prod(m.kernel_size)
        if isinstance(m, nn.ConvTranspose3d):  # every input voxel scatters C_out/groups * k taps
            total += inp[0].numel() * (m.out_channels // m.groups) * k
        else:  # every output voxel gathers C_in/groups * k taps
            total += out.numel() * (m.in_channels // m.groups) * k

    handles = [m.register_forward_hook(conv_hook) for m in net.modules()
               if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return total


def report(name: str, kwargs: dict, patch: tuple[int, int, int]) -> dict:
    with torch.device("meta"):
        net = PedTumorSegNet(4, 5, deep_supervision=False, **kwargs).eval()
        x = torch.empty(1, 4, *patch)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = net(x)
    flops = fc.get_total_flops()
    macs = hook_macs(net, x)
    row = {
        "preset": name,
        "encoder_widths": net.encoder_widths,
        "decoder_widths": net.decoder_widths,
        "params_total": count(net),
        "params_encoder": count(net.encoder),
        "params_decoder": count(net.decoder),
        "fp32_bytes": 4 * count(net),
        "patch": list(patch),
        "output_shape": list(out.shape),
        "flops": flops,
        "conv_macs_hooks": macs,
    }
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    patch = tuple(args.patch)
    dense = network_kwargs("paper")
    dense.update(depthwise_separable=False, decoder_separable=False)
    variants = [(name, network_kwargs(name)) for name in PRESETS] + [("paper-dense", dense)]
    rows = []
    for name, kw in variants:
        r = report(name, kw, patch)
        rows.append(r)
        print(f"== {name}  (1x4x{'x'.join(map(str, patch))})")
        print(f"   encoder widths {r['encoder_widths']}")
        print(f"   decoder widths {r['decoder_widths']}")
        print(f"   parameters     total {r['params_total']:,}  encoder {r['params_encoder']:,}  "
              f"decoder {r['params_decoder']:,}  ({r['fp32_bytes'] / 1e6:.1f} MB fp32)")
        print(f"   FLOPs          {r['flops'] / 1e9:,.1f} GFLOP (= 2 x {r['flops'] / 2e9:,.1f} G conv MACs; "
              f"hook count {r['conv_macs_hooks'] / 1e9:,.1f} G MACs)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
