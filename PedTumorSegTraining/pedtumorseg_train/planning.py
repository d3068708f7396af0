"""Fingerprint, plan and preprocess a raw dataset with nnU-Net v2, then switch its 3d_fullres configuration to
our network.

1. ``extract_fingerprints`` (nnU-Net's ``DatasetFingerprintExtractor``);
2. ``plan_experiments`` with nnU-Net's default ``ExperimentPlanner`` under the plans identifier
   ``PedTumorSegPlans_<preset>`` (``--spacing`` is passed as nnU-Net's ``overwrite_target_spacing``);
3. rewrite the plans: only ``3d_fullres`` is kept; its ``architecture`` names
   ``pedtumorseg.model.network.PedTumorSegNet`` with ``network_kwargs(preset, strides, kernel_sizes)`` where the
   strides/kernels are nnU-Net's planned ones (or, with ``--patch-size``, nnU-Net's
   ``get_pool_and_conv_props`` topology for that patch, whose divisibility padding may enlarge it);
   batch size 2 (paper §3);
4. ``preprocess`` that configuration with that plans identifier.

Normalization stays nnU-Net's plan (ZScoreNormalization per channel, ``use_mask_for_norm`` from the
fingerprint); export copies it into the bundle manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pedtumorseg.model.presets import NETWORK_CLASS, PRESETS, network_kwargs

CONFIGURATION = "3d_fullres"
BATCH_SIZE = 2
MIN_FEATURE_MAP = 4  # nnU-Net's UNet_featuremap_min_edge_length


def plans_identifier(preset: str) -> str:
    return f"PedTumorSegPlans_{preset}"


def _as_lists(seq) -> list[list[int]]:
    return [[int(v) for v in s] for s in seq]


def topology_for_patch(spacing_zyx, patch_size_zyx):
    """nnU-Net's (strides, kernel_sizes, patch size padded to divisibility) for a patch at a spacing."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    _, strides, kernels, patch, _ = get_pool_and_conv_props(list(spacing_zyx), list(patch_size_zyx),
                                                            MIN_FEATURE_MAP, 999999)
    return _as_lists(strides), _as_lists(kernels), [int(p) for p in patch]


def customize_configuration(config: dict, preset: str, patch_size=None, batch_size: int = BATCH_SIZE,
                            arch_overrides: dict | None = None) -> dict:
    """Our 3d_fullres configuration from nnU-Net's planned one (a new dict)."""
    config = json.loads(json.dumps(config))
    arch = config["architecture"]["arch_kwargs"]
    strides, kernels = _as_lists(arch["strides"]), _as_lists(arch["kernel_sizes"])
    patch = [int(p) for p in config["patch_size"]]
    if patch_size is not None:
        strides, kernels, patch = topology_for_patch(config["spacing"], patch_size)
    kwargs = network_kwargs(preset, strides=strides, kernel_sizes=kernels)
    if arch_overrides:
        kwargs.update(arch_overrides)
    config["architecture"] = {"network_class_name": NETWORK_CLASS, "arch_kwargs": kwargs,
                              "_kw_requires_import": []}
    config["patch_size"] = patch
    config["batch_size"] = int(batch_size)
    return config


def plan(dataset_id: int, preset: str = "paper", patch_size=None, spacing=None, num_processes: int = 2,
         batch_size: int = BATCH_SIZE, arch_overrides: dict | None = None, log=print) -> Path:
    """Plan + preprocess; returns the written plans file."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    ident = plans_identifier(preset)
    extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True, clean=True,
                         verbose=False, show_progress_bar=False)
    # nnU-Net's planner sets torch's thread count from nnUNet_n_proc_DA, which must then be positive
    saved_da = os.environ.get("nnUNet_n_proc_DA")
    if saved_da is not None and int(saved_da) < 1:
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        plan_experiments([dataset_id], overwrite_plans_name=ident,
                         overwrite_target_spacing=None if spacing is None else [float(s) for s in spacing])
    finally:
        if saved_da is not None:
            os.environ["nnUNet_n_proc_DA"] = saved_da
    plans_file = Path(str(nnUNet_preprocessed)) / convert_id_to_dataset_name(dataset_id) / f"{ident}.json"
    plans = load_json(str(plans_file))
    config = customize_configuration(plans["configurations"][CONFIGURATION], preset, patch_size, batch_size,
                                     arch_overrides)
    plans["configurations"] = {CONFIGURATION: config}
    plans["pedtumorseg"] = {"preset": preset, "patch_size_override": None if patch_size is None else list(patch_size),
                            "spacing_override": None if spacing is None else list(spacing)}
    save_json(plans, str(plans_file), sort_keys=False)
    log(f"plans {plans_file}: spacing {config['spacing']}, patch {config['patch_size']}, "
        f"strides {config['architecture']['arch_kwargs']['strides']}")
    preprocess([dataset_id], plans_identifier=ident, configurations=(CONFIGURATION,),
               num_processes=(num_processes,), verbose=False, show_progress_bar=False)
    return plans_file
