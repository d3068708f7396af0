"""Network presets and a safe class resolver.

PedTumorSegNet presets (``PRESETS``; constructor kwargs from ``network_kwargs``):

``paper``: the published configuration (6 stages, decoder widths 32..320, encoder 2x, blocks 1,3,4,6,6,6,
depthwise separable convs, SE 1/16, DropPath 0.05) for 4 input channels and 5 outputs; for 128^3 patches.
``demo``: the same design, much smaller (5 stages, decoder widths 8..64, blocks 1,1,2,2,2) for fast CPU
inference / CI; its total stride is 16, so patches like 64^3 or 96x96x64 fit.

Baselines of the seed papers (``BASELINES``; their kwargs come from ``baseline_kwargs`` and the training
package's planner): ``nnunet`` (nnU-Net's default PlainConvUNet), ``resenc`` (nnU-Net's ResidualEncoderUNet,
ResEnc-M planner), ``resunet`` (MONAI's residual UNet), ``segresnet`` and ``unetr`` (MONAI), ``light3d``
(:class:`~pedtumorseg.model.baselines.LightUNet3D`) and ``resselka2d`` (the 2D
:class:`~pedtumorseg.model.baselines.ResSELKAUNet2D`, nnU-Net's ``2d`` configuration).

``build_network`` instantiates only the classes in ``ALLOWED_CLASSES``. The dynamic_network_architectures
(installed with nnU-Net) and MONAI classes are imported lazily, only when a plan or bundle names them; their
layer types (nnU-Net plans' ``conv_op``, ``norm_op``, ``dropout_op``, ``nonlin``, given as dotted names) are
resolved from ``ALLOWED_OPS`` only.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Sequence

from torch import nn

from pedtumorseg.model.classes import (  # noqa: F401  (re-exported: the presets' names)
    ALLOWED_CLASSES, DNA_CLASSES, LIGHT_UNET3D, MONAI_CLASSES, MONAI_SEGRESNET, MONAI_UNET, MONAI_UNETR, NETWORK_CLASS,
    PLAIN_UNET, RESENC_UNET, RESSELKA_UNET2D)
from pedtumorseg.model.init import DEFAULT_ALPHA

_OPS = {"conv": ("Conv2d", "Conv3d"), "instancenorm": ("InstanceNorm2d", "InstanceNorm3d"),
        "batchnorm": ("BatchNorm2d", "BatchNorm3d"), "dropout": ("Dropout", "Dropout2d", "Dropout3d"),
        "activation": ("LeakyReLU", "ReLU", "PReLU", "GELU")}
#: layer types a dynamic_network_architectures kwargs entry may name, by module path or as ``torch.nn.<Name>``
#: (nnU-Net's planners write e.g. ``torch.nn.modules.conv.Conv3d`` and ``torch.nn.LeakyReLU``)
ALLOWED_OPS: frozenset[str] = frozenset(
    [f"torch.nn.modules.{mod}.{name}" for mod, names in _OPS.items() for name in names]
    + [f"torch.nn.{name}" for names in _OPS.values() for name in names])
DNA_OP_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")
#: the package that provides an optional class, for the error message when it is missing
PACKAGE_HINT = {**{c: "dynamic_network_architectures (installed with nnunetv2: pip install 'pedtumorseg[train]')"
                   for c in DNA_CLASSES},
                **{c: "monai (pip install 'pedtumorseg[baselines]')" for c in MONAI_CLASSES}}


class MissingPackageError(ImportError):
    """The package providing an allow-listed network class is not installed."""


#: preset name -> network class, nnU-Net configuration and experiment planner (PedTumorSegNet presets included)
BASELINES: dict[str, dict] = {
    "paper": {"class": NETWORK_CLASS, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "demo": {"class": NETWORK_CLASS, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "nnunet": {"class": PLAIN_UNET, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "resenc": {"class": RESENC_UNET, "configuration": "3d_fullres", "planner": "nnUNetPlannerResEncM"},
    "resunet": {"class": MONAI_UNET, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "segresnet": {"class": MONAI_SEGRESNET, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "unetr": {"class": MONAI_UNETR, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "light3d": {"class": LIGHT_UNET3D, "configuration": "3d_fullres", "planner": "ExperimentPlanner"},
    "resselka2d": {"class": RESSELKA_UNET2D, "configuration": "2d", "planner": "ExperimentPlanner"},
}

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


def _stage_list(v) -> list:
    return [s if isinstance(s, int) else [int(x) for x in s] for s in v]


def dna_kwargs(kind: str, strides: Sequence, kernel_sizes: Sequence) -> dict:
    """nnU-Net 2.8's planned ``arch_kwargs`` (as its plans JSON holds them) of ``PlainConvUNet`` (``kind="nnunet"``,
    default planner) or ``ResidualEncoderUNet`` (``kind="resenc"``, ResEnc planners) for a topology: features
    min(32 * 2^s, 320 in 3D / 512 in 2D); 2 convs per encoder and decoder stage (plain) or 1, 3, 4, 6, 6, ...
    residual blocks and 1 decoder conv (resenc); InstanceNorm(eps 1e-5, affine), LeakyReLU, conv bias."""
    n = len(strides)
    dims = 1 if isinstance(strides[0], int) else len(strides[0])
    dims = 3 if dims == 1 else dims
    cap = 320 if dims == 3 else 512
    kw = {"n_stages": n, "features_per_stage": [min(cap, 32 * 2 ** i) for i in range(n)],
          "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": _stage_list(kernel_sizes),
          "strides": _stage_list(strides)}
    if kind == "nnunet":
        kw["n_conv_per_stage"] = [2] * n
        kw["n_conv_per_stage_decoder"] = [2] * (n - 1)
    elif kind == "resenc":
        kw["n_blocks_per_stage"] = _resize([1, 3, 4, 6, 6, 6], n)
        kw["n_conv_per_stage_decoder"] = [1] * (n - 1)
    else:
        raise KeyError(f"unknown dynamic_network_architectures preset {kind!r}")
    kw.update({"conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
               "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
               "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}})
    return kw


def baseline_kwargs(preset: str, strides: Sequence, kernel_sizes: Sequence, patch_size: Sequence) -> dict:
    """JSON-serializable constructor kwargs of any preset for a topology (nnU-Net's ``strides`` /
    ``kernel_sizes`` per stage, the first stride 1) and patch size.

    PedTumorSegNet presets: ``network_kwargs``. ``nnunet`` / ``resenc``: ``dna_kwargs``. ``resunet``: MONAI
    ``UNet`` with two residual units per level, InstanceNorm, PReLU, kernel 3, widths min(32 * 2^s, 320) over the
    topology's stages and its strides. ``segresnet``: MONAI ``SegResNet`` of the BraTS paper (Myronenko 2018:
    32 initial filters, blocks down 1, 2, 2, 4, up 1, 1, 1, group norm); needs a patch divisible by 8.
    ``unetr``: MONAI ``UNETR`` as published (ViT-B, 16^3 patches, hidden 768, 12 heads, feature size 16,
    instance norm); its ``img_size`` is the patch size, which must be divisible by 16. ``light3d``:
    ``LightUNet3D`` (widths 16, 32, 64) with the topology's first 3 strides. ``resselka2d``:
    ``ResSELKAUNet2D`` with the (2D) topology's strides and widths min(32 * 2^s, 512).
    """
    if preset in PRESETS:
        return network_kwargs(preset, strides=strides, kernel_sizes=kernel_sizes)
    if preset in ("nnunet", "resenc"):
        return dna_kwargs(preset, strides, kernel_sizes)
    patch = [int(p) for p in patch_size]
    strides = _stage_list(strides)
    n = len(strides)
    if preset == "resunet":
        return {"spatial_dims": 3, "channels": [min(320, 32 * 2 ** i) for i in range(n)], "strides": strides[1:],
                "kernel_size": 3, "up_kernel_size": 3, "num_res_units": 2, "norm": "INSTANCE"}
    if preset == "segresnet":
        if any(p % 8 for p in patch):
            raise ValueError(f"segresnet needs a patch size divisible by 8, got {patch}")
        return {"spatial_dims": 3, "init_filters": 32, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]}
    if preset == "unetr":
        if any(p % 16 for p in patch):
            raise ValueError(f"unetr needs a patch size divisible by 16 (its ViT patches), got {patch}")
        return {"spatial_dims": 3, "img_size": patch, "feature_size": 16, "hidden_size": 768, "mlp_dim": 3072,
                "num_heads": 12, "proj_type": "conv", "norm_name": "instance", "res_block": True}
    if preset == "light3d":
        if n < 3:
            raise ValueError(f"light3d needs at least 3 stages in the topology, got {n}")
        return {"widths": [16, 32, 64], "strides": strides[:3]}
    if preset == "resselka2d":
        return {"widths": [min(512, 32 * 2 ** i) for i in range(n)], "strides": strides}
    raise KeyError(f"unknown network preset {preset!r}; known: {sorted(BASELINES)}")


def supports_deep_supervision(class_path: str) -> bool:
    """Whether the class takes ``deep_supervision=True`` and exposes ``decoder.deep_supervision`` (nnU-Net's
    convention)."""
    return class_path == NETWORK_CLASS or class_path in DNA_CLASSES


def resolve_class(class_path: str) -> type[nn.Module]:
    """Import a network class by dotted path — only those in ``ALLOWED_CLASSES``; ``MissingPackageError`` names
    the package to install when an optional one is absent."""
    if class_path not in ALLOWED_CLASSES:
        raise ValueError(f"network class {class_path!r} is not allowed; allowed: {sorted(ALLOWED_CLASSES)}")
    module_name, _, name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MissingPackageError(f"network class {class_path} needs {PACKAGE_HINT.get(class_path, module_name)}, "
                                  "which is not installed") from e
    return getattr(module, name)


def _resolve_op(value):
    if value is None:
        return None
    if value not in ALLOWED_OPS:
        raise ValueError(f"layer type {value!r} is not allowed; allowed: {sorted(ALLOWED_OPS)}")
    module_name, _, name = value.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _monai_value(v):
    """MONAI's layer factories take (name, {args}) tuples; JSON gives lists."""
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], dict):
        return tuple(v)
    return v


def build_network(class_path: str, kwargs: dict, input_channels: int, num_classes: int,
                  deep_supervision: bool = False) -> nn.Module:
    cls = resolve_class(class_path)
    kwargs = dict(kwargs)
    if class_path in DNA_CLASSES:
        for key in DNA_OP_KEYS:
            kwargs[key] = _resolve_op(kwargs.get(key))
        net = cls(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                  **kwargs)
        if hasattr(net, "initialize"):  # as nnU-Net's get_network_from_plans
            net.apply(net.initialize)
        return net
    if class_path in MONAI_CLASSES:
        if deep_supervision:
            raise ValueError(f"{class_path} has no deep supervision heads")
        return cls(in_channels=input_channels, out_channels=num_classes,
                   **{k: _monai_value(v) for k, v in kwargs.items()})
    return cls(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
               **kwargs)


def spatial_dims(class_path: str, kwargs: dict | None = None) -> int:
    """2 for slice-wise (2D) networks (``ResSELKAUNet2D``, a 2D dynamic_network_architectures U-Net), else 3."""
    if class_path == RESSELKA_UNET2D:
        return 2
    if class_path in DNA_CLASSES and str((kwargs or {}).get("conv_op", "")).endswith("Conv2d"):
        return 2
    return 3
