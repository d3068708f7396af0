"""Network presets and a safe class resolver.

``paper``: the published configuration (6 stages, decoder widths 32..320, encoder 2x, blocks 1,3,4,6,6,6,
depthwise separable convs, SE 1/16, DropPath 0.05) for 4 input channels and 5 outputs; for 128^3 patches.
``demo``: the same design, much smaller (5 stages, decoder widths 8..64, blocks 1,1,2,2,2) for fast CPU
inference / CI; its total stride is 16, so patches like 64^3 or 96x96x64 fit.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Sequence

from torch import nn

from .init import DEFAULT_ALPHA

NETWORK_CLASS = "pedtumorseg.model.network.PedTumorSegNet"
#: class paths that ``build_network`` (and the bundle loader through it) will instantiate
ALLOWED_CLASSES: frozenset[str] = frozenset({NETWORK_CLASS})

_COMMON = {
    "encoder_width_factor": 2,
    "kernel_sizes": 3,
    "decoder_convs_per_stage": 2,
    "depthwise_separable": True,
    "decoder_separable": True,
    "stem_separable": False,
    "se_reduction": 16,
    "drop_path": 0.05,
    "conv_bias": False,
    "init_alpha": DEFAULT_ALPHA,
}

PRESETS: dict[str, dict] = {
    "paper": {
        **_COMMON,
        "decoder_widths": [32, 64, 128, 256, 320, 320],
        "strides": [1, 2, 2, 2, 2, 2],
        "blocks_per_stage": [1, 3, 4, 6, 6, 6],
    },
    "demo": {
        **_COMMON,
        "decoder_widths": [8, 16, 32, 64, 64],
        "strides": [1, 2, 2, 2, 2],
        "blocks_per_stage": [1, 1, 2, 2, 2],
    },
}


def _resize(values: list, n: int) -> list:
    """Truncate or extend (repeating the last entry) a per-stage list to n stages."""
    return list(values[:n]) + [values[-1]] * max(0, n - len(values))


def network_kwargs(preset: str = "paper", strides: Sequence | None = None,
                   kernel_sizes: Sequence | None = None) -> dict:
    """JSON-serializable constructor kwargs of a preset.

    ``strides`` / ``kernel_sizes`` (per stage, ints or 3-lists, e.g. nnU-Net plans' ``strides`` and
    ``kernel_sizes``) override the preset's; their length sets the number of stages, and the per-stage lists
    (decoder widths, blocks) are truncated or extended by repeating their last entry.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown network preset {preset!r}; known: {sorted(PRESETS)}")
    kw = copy.deepcopy(PRESETS[preset])
    n = len(kw["decoder_widths"])
    if strides is not None:
        n = len(strides)
        kw["strides"] = [s if isinstance(s, int) else [int(v) for v in s] for s in strides]
    if kernel_sizes is not None:
        if len(kernel_sizes) != n:
            raise ValueError(f"kernel_sizes has {len(kernel_sizes)} entries, strides {n}")
        kw["kernel_sizes"] = [k if isinstance(k, int) else [int(v) for v in k] for k in kernel_sizes]
    kw["decoder_widths"] = _resize(kw["decoder_widths"], n)
    kw["blocks_per_stage"] = _resize(kw["blocks_per_stage"], n)
    if strides is None and not isinstance(kw["strides"], int):
        kw["strides"] = _resize(kw["strides"], n)
    return kw


def resolve_class(class_path: str) -> type[nn.Module]:
    """Import a network class by dotted path — only those in ``ALLOWED_CLASSES``."""
    if class_path not in ALLOWED_CLASSES:
        raise ValueError(f"network class {class_path!r} is not allowed; allowed: {sorted(ALLOWED_CLASSES)}")
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def build_network(class_path: str, kwargs: dict, input_channels: int, num_classes: int,
                  deep_supervision: bool = False) -> nn.Module:
    cls = resolve_class(class_path)
    return cls(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
               **kwargs)
