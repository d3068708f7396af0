"""Fingerprint, plan and preprocess a raw dataset with nnU-Net v2, then switch one configuration to a preset's
network.

1. ``extract_fingerprints`` (nnU-Net's ``DatasetFingerprintExtractor``);
2. ``plan_experiments`` with the preset's experiment planner (``pedtumorseg.model.presets.BASELINES``: nnU-Net's
   default ``ExperimentPlanner``, or ``nnUNetPlannerResEncM`` for ``resenc``) under the plans identifier
   ``PedTumorSegPlans_<preset>`` (``--spacing`` is passed as nnU-Net's ``overwrite_target_spacing``);
3. rewrite the plans: only the preset's configuration (``3d_fullres``, or ``2d`` for ``resselka2d``) is kept;
   its ``architecture`` names the preset's class with ``baseline_kwargs(preset, strides, kernel_sizes, patch)``
   where the strides/kernels are nnU-Net's planned ones (or, with ``--patch-size``, nnU-Net's
   ``get_pool_and_conv_props`` topology for that patch, whose divisibility padding may enlarge it); for
   ``nnunet`` / ``resenc`` without a patch override the planner's own ``arch_kwargs`` are kept unchanged.
   ``arch_overrides`` replace kwargs (a per-stage list given shorter or longer than the topology is truncated
   or extended by repeating its last entry). Batch size 2 for 3D (paper §3), the planner's for 2D, unless given;
4. ``preprocess`` that configuration with that plans identifier.

Normalization stays nnU-Net's plan (ZScoreNormalization per channel, ``use_mask_for_norm`` from the
fingerprint); export copies it into the bundle manifest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pedtumorseg.errors import UsageError
from pedtumorseg.model.presets import BASELINES, DNA_CLASSES, DNA_OP_KEYS, baseline_kwargs

CONFIGURATION = "3d_fullres"  # of the PedTumorSegNet presets
BATCH_SIZE = 2
MIN_FEATURE_MAP = 4  # nnU-Net's UNet_featuremap_min_edge_length


def configuration_of(preset: str) -> str:
    """nnU-Net configuration a preset trains with (``3d_fullres`` or ``2d``)."""
    if preset not in BASELINES:
        raise UsageError(None, f"unknown preset {preset!r}; known: {sorted(BASELINES)}")
    return BASELINES[preset]["configuration"]


def plans_identifier(preset: str) -> str:
    return f"PedTumorSegPlans_{preset}"


def _as_lists(seq) -> list[list[int]]:
    return [[int(v) for v in s] for s in seq]


def topology_for_patch(spacing, patch_size):
    """nnU-Net's (strides, kernel_sizes, patch size padded to divisibility) for a patch at a spacing (2 or 3 axes)."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    _, strides, kernels, patch, _ = get_pool_and_conv_props(list(spacing), list(patch_size), MIN_FEATURE_MAP, 999999)
    return _as_lists(strides), _as_lists(kernels), [int(p) for p in patch]


def _apply_overrides(kwargs: dict, overrides: dict | None) -> dict:
    for key, value in (overrides or {}).items():
        old = kwargs.get(key)
        if (isinstance(value, list) and value and isinstance(old, list) and old and len(value) != len(old)
                and not isinstance(value[0], list)):
            value = list(value[:len(old)]) + [value[-1]] * max(0, len(old) - len(value))
        kwargs[key] = value
    return kwargs


def customize_configuration(config: dict, preset: str, patch_size=None, batch_size: int | None = BATCH_SIZE,
                            arch_overrides: dict | None = None) -> dict:
    """The preset's configuration from nnU-Net's planned one (a new dict)."""
    config = json.loads(json.dumps(config))
    arch = config["architecture"]["arch_kwargs"]
    strides, kernels = _as_lists(arch["strides"]), _as_lists(arch["kernel_sizes"])
    patch = [int(p) for p in config["patch_size"]]
    cls = BASELINES[preset]["class"]
    if patch_size is not None:
        if len(patch_size) < len(patch):
            raise UsageError(None, f"--patch-size needs {len(patch)} values for the {preset} preset, got "
                                   f"{list(patch_size)}")
        patch_size = [int(p) for p in patch_size][-len(patch):]  # a 2D configuration takes the last two
        strides, kernels, patch = topology_for_patch(config["spacing"][-len(patch):], patch_size)
        kwargs = baseline_kwargs(preset, strides, kernels, patch)
    elif cls in DNA_CLASSES and config["architecture"]["network_class_name"] == cls:
        kwargs = arch  # the planner's own architecture
    else:
        kwargs = baseline_kwargs(preset, strides, kernels, patch)
    kwargs = _apply_overrides(kwargs, arch_overrides)
    config["architecture"] = {"network_class_name": cls, "arch_kwargs": kwargs,
                              "_kw_requires_import": list(DNA_OP_KEYS) if cls in DNA_CLASSES else []}
    config["patch_size"] = patch
    if batch_size is not None:
        config["batch_size"] = int(batch_size)
    return config


def plan(dataset_id: int, preset: str = "paper", patch_size=None, spacing=None, num_processes: int = 2,
         batch_size: int | None = None, arch_overrides: dict | None = None, log=print) -> Path:
    """Plan + preprocess; returns the written plans file. ``batch_size`` None: 2 for 3D, the planner's for 2D."""
    configuration = configuration_of(preset)
    if batch_size is None and configuration == CONFIGURATION:
        batch_size = BATCH_SIZE
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
        plan_experiments([dataset_id], experiment_planner_class_name=BASELINES[preset]["planner"],
                         overwrite_plans_name=ident,
                         overwrite_target_spacing=None if spacing is None else [float(s) for s in spacing])
    finally:
        if saved_da is not None:
            os.environ["nnUNet_n_proc_DA"] = saved_da
    plans_file = Path(str(nnUNet_preprocessed)) / convert_id_to_dataset_name(dataset_id) / f"{ident}.json"
    plans = load_json(str(plans_file))
    config = customize_configuration(plans["configurations"][configuration], preset, patch_size, batch_size,
                                     arch_overrides)
    plans["pedtumorseg"] = {"preset": preset, "configuration": configuration,
                            "planner": BASELINES[preset]["planner"],
                            "planned_architecture": plans["configurations"][configuration]["architecture"],
                            "planned_patch_size": plans["configurations"][configuration]["patch_size"],
                            "patch_size_override": None if patch_size is None else list(patch_size),
                            "spacing_override": None if spacing is None else list(spacing)}
    plans["configurations"] = {configuration: config}
    save_json(plans, str(plans_file), sort_keys=False)
    log(f"plans {plans_file}: {configuration}, {config['architecture']['network_class_name']}, spacing "
        f"{config['spacing']}, patch {config['patch_size']}, strides {config['architecture']['arch_kwargs'].get('strides')}")
    preprocess([dataset_id], plans_identifier=ident, configurations=(configuration,),
               num_processes=(num_processes,), verbose=False, show_progress_bar=False)
    return plans_file
