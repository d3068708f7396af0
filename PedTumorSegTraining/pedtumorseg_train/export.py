"""nnU-Net training output -> a PedTumorSeg model bundle (manifest + one safetensors file per fold).

Checkpoints are read with ``torch.load(weights_only=True)`` (plus the numpy scalar types nnU-Net's logger puts
into them), only ``network_weights`` and ``inference_allowed_mirroring_axes`` are used, and ``module.`` /
``_orig_mod.`` prefixes (DDP / torch.compile) are stripped. The bundle never contains a pickle.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np
import torch

from pedtumorseg.conventions import CHANNELS, LABEL_COLORS, LABEL_NAMES, NUM_CLASSES
from pedtumorseg.inputs.orientation import DEFAULT_ORIENTATION

CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth", "latest": "checkpoint_latest.pth"}
_PREFIXES = ("module.", "_orig_mod.")


def _safe_globals() -> list:
    out = [np.dtype, np.ndarray]
    try:
        out.append(np._core.multiarray.scalar)  # numpy >= 2
    except AttributeError:  # pragma: no cover
        out.append(np.core.multiarray.scalar)
    for name in ("Float64DType", "Float32DType", "Int64DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            out.append(getattr(np.dtypes, name))
    try:
        out.append(np._core.multiarray._reconstruct)
    except AttributeError:  # pragma: no cover
        pass
    return out


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Our own nnU-Net checkpoint, unpickled with the restricted (weights-only) unpickler."""
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def clean_state_dict(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value.detach().cpu().contiguous()
    return out


def _postprocess_defaults() -> dict | None:
    """The core's default post-processing parameters (None if the core has no post-processing module)."""
    try:
        from pedtumorseg.postprocess import PostprocessParams
    except ImportError:
        return None
    return PostprocessParams().to_dict()


def build_manifest(plans: dict, dataset_json: dict, folds: list, mirror_axes, name: str, version: str,
                   description: str, training: dict, postprocessing: dict | None = None) -> dict:
    from pedtumorseg.model.presets import spatial_dims
    configuration = plans.get("pedtumorseg", {}).get("configuration", "3d_fullres")
    config = plans["configurations"][configuration]
    if plans.get("transpose_forward", [0, 1, 2]) != [0, 1, 2]:
        raise ValueError(f"plans transpose_forward {plans['transpose_forward']} is not the identity; the core engine "
                         "expects (z, y, x) order")
    schemes = set(config["normalization_schemes"])
    if schemes != {"ZScoreNormalization"}:
        raise ValueError(f"normalization {sorted(schemes)} not supported by the bundle format (zscore only)")
    labels = {str(v): n for v, n in sorted(LABEL_NAMES.items())}
    arch = config["architecture"]
    spacing, patch, axes = list(config["spacing"]), list(config["patch_size"]), [int(a) for a in (mirror_axes or [])]
    if spatial_dims(arch["network_class_name"], arch["arch_kwargs"]) == 2:
        # slice-wise network: the slice axis keeps each case's spacing at inference (nnU-Net's 2d); the manifest
        # records the dataset's median slice spacing there, a patch of 1 slice, and 3D mirror axes
        spacing = [plans["original_median_spacing_after_transp"][0], *spacing[-2:]]
        patch = [1, *patch[-2:]]
        axes = [a + 1 for a in axes]
    source = "defaults" if postprocessing is None else "given"
    if postprocessing is None:
        postprocessing = _postprocess_defaults()
    manifest = {
        "format": "pedtumorseg-bundle", "format_version": 1,
        "name": name, "version": version, "description": description,
        "labels": labels,
        "colors": {str(v): list(c) for v, c in sorted(LABEL_COLORS.items())},
        "channels": list(CHANNELS),
        "num_classes": NUM_CLASSES,
        "spacing_zyx": [float(s) for s in spacing],
        "patch_size": [int(p) for p in patch],
        "normalization": {"scheme": "zscore", "use_mask_for_norm": [bool(b) for b in config["use_mask_for_norm"]]},
        "network": {"class": arch["network_class_name"], "kwargs": arch["arch_kwargs"]},
        "folds": folds,
        "weights": {str(f): f"fold_{f}.safetensors" for f in folds},
        "mirror_axes": axes,
        # the voxel-axis orientation of the training data (convert.py brings every case to it)
        "orientation": str(dataset_json.get("pedtumorseg_orientation", DEFAULT_ORIENTATION)),
        "postprocessing": postprocessing, "postprocessing_source": source,
        "training": training,
    }
    if postprocessing is None:  # optional in the manifest: the loader then uses the core defaults
        del manifest["postprocessing"], manifest["postprocessing_source"]
    return manifest


def export(dataset_id: int, folds: list, out: str | os.PathLike, preset: str = "paper", checkpoint: str = "final",
           name: str = "PedTumorSeg", version: str = "0.0.0", description: str = "",
           postprocessing: dict | None = None, extra_training_info: dict | None = None, zip: bool = True,
           tag: str | None = None, intended_use: str = "research", log=print) -> Path:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from pedtumorseg.inference.bundle import load_bundle, write_bundle

    from .trainer import results_folder
    base = Path(results_folder(dataset_id, preset, tag=tag))
    plans = load_json(str(base / "plans.json"))
    dataset_json = load_json(str(base / "dataset.json"))
    folds = [f if f == "all" else int(f) for f in folds]
    states, mirror_axes, fold_info = {}, None, {}
    for f in folds:
        ckpt_path = base / f"fold_{f}" / CHECKPOINTS[checkpoint]
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"{ckpt_path}: no {checkpoint} checkpoint for fold {f}")
        ckpt = read_checkpoint(ckpt_path)
        states[f] = clean_state_dict(ckpt["network_weights"])
        axes = ckpt.get("inference_allowed_mirroring_axes")
        axes = [int(a) for a in axes] if axes is not None else []
        if mirror_axes is not None and axes != mirror_axes:
            raise ValueError(f"fold {f} mirror axes {axes} differ from {mirror_axes}")
        mirror_axes = axes
        fold_info[str(f)] = {"checkpoint": ckpt_path.name, "epochs_trained": int(ckpt["current_epoch"])}
        epochs_file = base / f"fold_{f}" / "epochs.jsonl"
        if epochs_file.is_file():
            lines = epochs_file.read_text().strip().splitlines()
            if lines:
                fold_info[str(f)]["last_epoch"] = json.loads(lines[-1])
    training = {"framework": "nnU-Net v2", "trainer": "pedtumorseg_train.trainer.PedTumorSegTrainer",
                "plans": plans.get("plans_name"), "dataset": plans.get("dataset_name"),
                "preset": plans.get("pedtumorseg", {}).get("preset", preset),
                "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "folds": fold_info, **(extra_training_info or {})}
    manifest = build_manifest(plans, dataset_json, folds, mirror_axes, name, version, description, training,
                              postprocessing)
    manifest["intended_use"] = intended_use  # "demonstration": marked wherever its results are shown
    out = Path(out)
    write_bundle(out, manifest, states, zip=zip)
    bundle = load_bundle(out)  # verify: checksums, network builds, weights load
    for f in folds:
        net = bundle.build_network()
        net.load_state_dict(bundle.state_dict(f))
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), folds {folds}")
    return out
