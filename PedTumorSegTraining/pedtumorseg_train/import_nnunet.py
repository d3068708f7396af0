"""``pedtumorseg-train import-nnunet``: a trained nnU-Net v2 model folder -> a normal PedTumorSeg bundle.

Reads ``plans.json``, ``dataset.json`` and ``fold_K/checkpoint_final.pth`` (or ``checkpoint_best.pth``) of a
trainer folder (``<Trainer>__<Plans>__<configuration>``, or the dataset folder above it with ``--configuration``).
Nothing in the folder is executed: JSON is parsed, checkpoints are read with the weights-only unpickler
(``export.read_checkpoint``), and one that needs full unpickling is refused. The configuration's values are taken
through nnU-Net's own ``PlansManager`` (inheritance resolved, as its predictor reads them): network class and
kwargs (built later by dynamic-network-architectures from the allow-list in ``pedtumorseg.model.presets``),
spacing, patch size, transpose, per-channel normalization with the dataset's intensity properties; mirror axes
and trainer name from the checkpoint. Channels and labels are mapped from ``dataset.json`` names (``--channels`` /
``--labels`` when the names are not the usual ones). Every fold's weights are loaded into the built network before
anything is written; the bundle is written atomically.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from pedtumorseg.conventions import CHANNELS, LABEL_COLORS, LABEL_NAMES
from pedtumorseg.errors import InputError

from .export import CHECKPOINTS, _postprocess_defaults, clean_state_dict, read_checkpoint

#: dataset.json channel names (lower case, without spaces, '-', '_', '+') -> PedTumorSeg channel
CHANNEL_ALIASES = {
    "t1": {"t1", "t1n", "t1w", "t1native", "nativet1", "t1pre", "t1precontrast"},
    "t1ce": {"t1c", "t1ce", "t1gd", "t1contrast", "t1post", "t1postcontrast", "t1cgd", "t1wce", "t1wc"},
    "t2": {"t2", "t2w"},
    "flair": {"flair", "t2f", "t2flair", "t2wflair"},
}
#: label names (lower case, '_' / '-' as spaces) -> PedTumorSeg label (0: background, e.g. a resection cavity)
LABEL_ALIASES = {
    1: {"et", "enhancing tumor", "enhancing tumour", "enhancing", "enhancing tumor et"},
    2: {"net", "netc", "ncr", "ncr/net", "ncr net", "necrosis", "necrotic core", "necrotic tumor core",
        "non enhancing tumor", "non enhancing tumour", "nonenhancing tumor", "non enhancing tumor core",
        "non enhancing"},
    3: {"cc", "cyst", "cystic component", "cystic", "cysts"},
    4: {"ed", "edema", "oedema", "snfh", "peritumoral edema", "surrounding non enhancing flair hyperintensity"},
    0: {"rc", "resection cavity", "cavity"},
}
#: region names of region-based models -> the PedTumorSeg labels the region holds
REGION_ALIASES = {
    (1, 2, 3, 4): {"wt", "whole tumor", "whole tumour", "whole"},
    (1, 2, 3): {"tc", "tumor core", "tumour core", "core"},
}
SUPPORTED_PREPROCESSOR = "DefaultPreprocessor"
SUPPORTED_RESAMPLING = "resample_data_or_seg_to_shape"


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "missing (not an nnU-Net v2 trained model folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not valid JSON: {e}") from None


def _imported_postprocessing(present: list[int]) -> dict:
    """The paper's defaults for an imported model; its T1CE/T1 relabel (NET <-> ET) only for a model with both
    labels, since moving voxels into a label the model does not have would be a label the user never asked for."""
    params = _postprocess_defaults() or {}
    if params and not {1, 2} <= set(present):
        params["ratio_enabled"] = False
    return params


def find_model_folder(path: Path, configuration: str | None) -> Path:
    """The trainer folder holding ``plans.json``: ``path`` itself, else its one subfolder ``*__<configuration>``."""
    if not path.is_dir():
        raise InputError(path, "nnU-Net results folder not found")
    if (path / "plans.json").is_file():
        return path
    subs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "plans.json").is_file()
                  and (configuration is None or p.name.endswith(f"__{configuration}")))
    if len(subs) != 1:
        found = ", ".join(p.name for p in subs) or "none"
        raise InputError(path, f"expected one nnU-Net trainer folder with plans.json (found: {found}); pass the "
                               "trainer folder itself or --configuration")
    return subs[0]


def map_channels(dataset_json: dict, explicit: list[str] | None, path: Path) -> list[str]:
    """PedTumorSeg channel of each network input, in the model's channel order."""
    names = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(names, dict) or not names:
        raise InputError(path, "dataset.json has no channel_names")
    order = [names[k] for k in sorted(names, key=int)]
    if explicit:
        out = [c.lower() for c in explicit]
        if len(out) != len(order) or any(c not in CHANNELS for c in out) or len(set(out)) != len(out):
            raise InputError(path, f"--channels {' '.join(explicit)}: need {len(order)} distinct names of "
                                   f"{', '.join(CHANNELS)} (the model's channels: {', '.join(order)})")
        return out
    out = []
    for name in order:
        key = re.sub(r"[\s_\-+]+", "", str(name).lower())
        match = [c for c, aliases in CHANNEL_ALIASES.items() if key in aliases]
        if not match:
            raise InputError(path, f"channel name {name!r} is not one of the usual T1/T1CE/T2/FLAIR spellings; "
                                   "name the model's channels in order with --channels (e.g. --channels t1 t1ce t2 "
                                   "flair)")
        out.append(match[0])
    if len(set(out)) != len(out):
        raise InputError(path, f"channel names {order} map to {out}, a channel twice; use --channels")
    return out


def _label_of(name: str, path: Path) -> int:
    key = _key(name)
    for label, aliases in LABEL_ALIASES.items():
        if key in aliases:
            return label
    raise InputError(path, f"label name {name!r} is not one of the known BraTS names (ET, NET/NETC/NCR, CC, "
                           "ED/SNFH, RC); map the model's label values with --labels, e.g. --labels 1=ET 2=NET 3=ED")


def _explicit_labels(explicit: list[str], path: Path) -> dict[int, int]:
    names = {n: v for v, n in LABEL_NAMES.items()} | {"background": 0, "BG": 0}
    out = {}
    for item in explicit:
        value, _, name = item.partition("=")
        if not value.strip().isdigit() or name.strip().upper() not in {k.upper() for k in names}:
            raise InputError(path, f"--labels {item!r}: expected VALUE=NAME with NAME one of ET, NET, CC, ED, "
                                   "background")
        out[int(value)] = next(v for k, v in names.items() if k.upper() == name.strip().upper())
    return out


def map_labels(dataset_json: dict, explicit: list[str] | None, path: Path) -> tuple[str, list[int], dict]:
    """``(activation, label of each output channel, report)``. Label-based: output channel i is nnU-Net label
    value i. Region-based (``regions_class_order``): channel i paints ``regions_class_order[i]``, which is mapped
    from the region's name: the labels of its region not inside any later region (must be one label)."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(path, "dataset.json has no labels")
    given = _explicit_labels(explicit, path) if explicit else None
    labels = {n: v for n, v in labels.items() if _key(n) != "ignore"}  # nnU-Net's ignore label: not an output
    if "regions_class_order" not in dataset_json:
        values = sorted((int(v), n) for n, v in labels.items())
        if [v for v, _ in values] != list(range(len(values))):
            raise InputError(path, f"label values {[v for v, _ in values]} are not 0..{len(values) - 1}")
        out = [0] + [given[v] if given and v in given else _label_of(n, path) for v, n in values[1:]]
        if given and set(given) - {v for v, _ in values}:
            raise InputError(path, f"--labels names values {sorted(set(given) - {v for v, _ in values})} the "
                                   "model does not have")
        return "softmax", out, {n: LABEL_NAMES.get(m, "background") for (_, n), m in zip(values, out)}
    order = [int(c) for c in dataset_json["regions_class_order"]]
    regions = [(n, r) for n, r in labels.items() if _key(n) != "background"]
    if len(regions) != len(order):
        raise InputError(path, f"{len(regions)} regions but regions_class_order has {len(order)} entries")
    sets = [_region_labels(n, path) for n, _ in regions]
    universe = {1, 2, 4} | ({3} if any(s == {3} for s in sets) else set())
    out = []
    for i, (name, _) in enumerate(regions):
        if given and order[i] in given:
            out.append(given[order[i]])
            continue
        rest = (sets[i] & universe) - set().union(*sets[i + 1:])
        if len(rest) != 1:
            raise InputError(path, f"region {name!r} (painted as {order[i]}) does not name one label; map the "
                                   "painted values with --labels, e.g. --labels 1=ED 2=NET 3=ET")
        out.append(rest.pop())
    return "sigmoid", out, {n: LABEL_NAMES.get(m, "background") for (n, _), m in zip(regions, out)}


def _region_labels(name: str, path: Path) -> set[int]:
    key = _key(name)
    for labels, aliases in REGION_ALIASES.items():
        if key in aliases:
            return set(labels)
    return {_label_of(name, path)} - {0}


def read_configuration(plans: dict, configuration: str, path: Path) -> dict:
    """The configuration's network, spacing, patch, transpose and normalization, as nnU-Net's ``PlansManager``
    resolves them; refuses what the engine does not reproduce (cascades, 2D, other preprocessors/resampling)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pedtumorseg.model.presets import ALLOWED_CLASSES, DNA_OP_KEYS
    if configuration not in plans.get("configurations", {}):
        raise InputError(path, f"no configuration {configuration!r} in the plans (has: "
                               f"{', '.join(plans.get('configurations', {}))})")
    try:
        pm = PlansManager(plans)
        cm = pm.get_configuration(configuration)
        cls, kwargs = cm.network_arch_class_name, dict(cm.network_arch_init_kwargs)
        req, raw = list(cm.network_arch_init_kwargs_req_import), cm.configuration
        spacing, patch, tf = list(cm.spacing), list(cm.patch_size), [int(a) for a in pm.transpose_forward]
        props = pm.foreground_intensity_properties_per_channel
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise InputError(path, f"configuration {configuration!r}: unreadable plans ({type(e).__name__}: {e})") from None
    if cm.previous_stage_name is not None:
        raise InputError(path, f"configuration {configuration!r} is a cascade stage (needs {cm.previous_stage_name}'s "
                               "segmentation); import a standalone 3D configuration")
    if len(patch) != 3:
        raise InputError(path, f"configuration {configuration!r} is {len(patch)}D; only 3D configurations are imported")
    if cls not in ALLOWED_CLASSES:
        raise InputError(path, f"network class {cls} is not one this project builds (allowed: "
                               f"{', '.join(sorted(ALLOWED_CLASSES))})")
    if set(req) - set(DNA_OP_KEYS):
        raise InputError(path, f"network kwargs {sorted(set(req) - set(DNA_OP_KEYS))} name classes to import; only "
                               f"{', '.join(DNA_OP_KEYS)} may")
    if raw.get("preprocessor_name", SUPPORTED_PREPROCESSOR) != SUPPORTED_PREPROCESSOR:
        raise InputError(path, f"preprocessor {raw['preprocessor_name']} is not nnU-Net's {SUPPORTED_PREPROCESSOR}")
    expected = {"resampling_fn_data": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}}
    for key, kw in expected.items():
        got = {k: raw.get(f"{key}_kwargs", {}).get(k, v) for k, v in kw.items()}
        if raw.get(key, SUPPORTED_RESAMPLING) != SUPPORTED_RESAMPLING or got != kw:
            raise InputError(path, f"{key} {raw.get(key)} {raw.get(f'{key}_kwargs')} differs from nnU-Net's default "
                                   f"({SUPPORTED_RESAMPLING} {kw}), which is what the engine reproduces")
    return {"class": cls, "kwargs": kwargs, "spacing_net": spacing, "patch_size": patch, "transpose_forward": tf,
            "schemes": list(cm.normalization_schemes), "use_mask_for_norm": [bool(b) for b in cm.use_mask_for_norm],
            "intensity_properties": props}


def _normalization(conf: dict, n_inputs: int, path: Path) -> dict:
    if len(conf["schemes"]) != n_inputs or len(conf["use_mask_for_norm"]) != n_inputs:
        raise InputError(path, f"plans normalize {len(conf['schemes'])} channels, dataset.json names {n_inputs}")
    props = []
    for c, scheme in enumerate(conf["schemes"]):
        p = (conf["intensity_properties"] or {}).get(str(c))
        if scheme == "CTNormalization" and p is None:
            raise InputError(path, f"channel {c} uses CTNormalization but the plans hold no intensity properties "
                                   "for it (foreground_intensity_properties_per_channel)")
        props.append({k: float(p[k]) for k in ("mean", "std", "percentile_00_5", "percentile_99_5")}
                     if scheme == "CTNormalization" else None)
    return {"scheme": "nnunet", "schemes": conf["schemes"], "use_mask_for_norm": conf["use_mask_for_norm"],
            "intensity_properties": props}


def fold_folders(model: Path, folds: list | None, checkpoint: str) -> dict:
    """fold -> checkpoint file, for the requested folds (default: every ``fold_*`` holding the checkpoint)."""
    name = CHECKPOINTS[checkpoint]
    if folds is None:
        found = sorted((p for p in model.glob("fold_*") if (p / name).is_file()), key=lambda p: p.name)
        folds = [p.name[5:] for p in found]
        if not folds:
            raise InputError(model, f"no fold_*/{name} in the model folder")
    out = {}
    for f in folds:
        key = "all" if str(f) == "all" else int(f)
        ckpt = model / f"fold_{key}" / name
        if not ckpt.is_file():
            raise InputError(ckpt, f"missing: fold {key} has no {name}")
        out[key] = ckpt
    return out


def read_fold(ckpt: Path, configuration: str, plans: dict) -> tuple[dict, list[int], dict]:
    """``(state dict, mirror axes, info)`` of one checkpoint, read without executing anything in it."""
    import pickle
    try:
        data = read_checkpoint(ckpt)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise InputError(ckpt, f"the checkpoint holds Python objects{what} that only full unpickling could "
                               "create, which could run code; refused (nnU-Net's own checkpoints hold only tensors "
                               "and plain values)") from None
    except (RuntimeError, OSError, EOFError) as e:
        raise InputError(ckpt, f"not a readable PyTorch checkpoint: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise InputError(ckpt, "not an nnU-Net checkpoint (no network_weights)")
    init = data.get("init_args") or {}
    if init.get("configuration", configuration) != configuration:
        raise InputError(ckpt, f"trained on configuration {init['configuration']!r}, not {configuration!r}")
    arch = (init.get("plans") or {}).get("configurations", {}).get(configuration, {}).get("architecture")
    if arch is not None and arch != plans["configurations"][configuration].get("architecture", arch):
        raise InputError(ckpt, "trained with plans whose architecture differs from plans.json (mismatched plans)")
    axes = data.get("inference_allowed_mirroring_axes")
    info = {"checkpoint": ckpt.name, "trainer": data.get("trainer_name"),
            "epoch": int(data["current_epoch"]) if isinstance(data.get("current_epoch"), int) else None}
    return clean_state_dict(data["network_weights"]), [int(a) for a in (axes or [])], info


def _check_weights(conf: dict, n_in: int, n_out: int, states: dict, files: dict) -> None:
    """Every fold's weights loaded strictly into the network the plans describe (before anything is written)."""
    from pedtumorseg.model.presets import MissingPackageError, build_network
    try:
        net = build_network(conf["class"], conf["kwargs"], n_in, n_out)
    except MissingPackageError as e:
        raise InputError(None, str(e)) from None
    except (TypeError, ValueError) as e:
        raise InputError(files[next(iter(files))].parent.parent / "plans.json",
                         f"cannot build {conf['class']}: {e}") from None
    for fold, state in states.items():
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise InputError(files[fold], f"weights do not fit the network of plans.json with {n_in} input and "
                                          f"{n_out} output channels ({detail[:200]})") from None


def import_nnunet(results: str | Path, out: str | Path, folds: list | None = None, checkpoint: str = "final",
                  configuration: str | None = None, channels: list[str] | None = None,
                  labels: list[str] | None = None, name: str | None = None, version: str = "1.0.0",
                  orientation: str | None = None, zip: bool = True, log=print) -> Path:
    """Convert an nnU-Net v2 trained model folder into a bundle at ``out`` (module docstring)."""
    from pedtumorseg.inference.bundle import load_bundle, write_bundle
    from pedtumorseg.inputs.orientation import DEFAULT_ORIENTATION

    model = find_model_folder(Path(results), configuration)
    configuration = configuration or (model.name.rsplit("__", 1)[-1] if "__" in model.name else "3d_fullres")
    plans, dataset_json = _read_json(model / "plans.json"), _read_json(model / "dataset.json")
    conf = read_configuration(plans, configuration, model / "plans.json")
    inputs = map_channels(dataset_json, channels, model / "dataset.json")
    activation, out_labels, label_report = map_labels(dataset_json, labels, model / "dataset.json")
    norm = _normalization(conf, len(inputs), model / "plans.json")
    files = fold_folders(model, folds, checkpoint)
    states, axes, info = {}, None, {}
    for fold, ckpt in files.items():
        states[fold], fold_axes, info[str(fold)] = read_fold(ckpt, configuration, plans)
        if axes is not None and fold_axes != axes:
            raise InputError(ckpt, f"mirror axes {fold_axes} differ from the other folds' {axes}")
        axes = fold_axes
    _check_weights(conf, len(inputs), len(out_labels), states, files)
    tf = conf["transpose_forward"]
    back = sorted(range(3), key=lambda i: tf[i])  # inverse permutation
    present = sorted({v for v in out_labels if v})
    trainer = next((i["trainer"] for i in info.values() if i["trainer"]), model.name.split("__")[0])
    manifest = {
        "name": name or f"{plans.get('dataset_name', model.parent.name)} ({trainer})", "version": version,
        "description": f"nnU-Net v2 model {model.name} of {plans.get('dataset_name', '?')}, imported",
        "labels": {str(v): LABEL_NAMES[v] for v in present},
        "colors": {str(v): list(LABEL_COLORS[v]) for v in present},
        "channels": list(CHANNELS), "inputs": inputs,
        "outputs": {"activation": activation, "labels": out_labels},
        "transpose_forward": tf,
        "spacing_zyx": [float(conf["spacing_net"][back[j]]) for j in range(3)],
        "patch_size": [int(p) for p in conf["patch_size"]],
        "normalization": norm,
        "network": {"class": conf["class"], "kwargs": conf["kwargs"]},
        "mirror_axes": axes,
        # nnU-Net reads voxels as stored (BraTS: LPS, as SimpleITK reads them); NibabelIOWithReorient makes them RAS
        "orientation": orientation or ("RAS" if plans.get("image_reader_writer") == "NibabelIOWithReorient"
                                       else DEFAULT_ORIENTATION),
        "postprocessing": _imported_postprocessing(present),
        "postprocessing_source": "defaults",  # not fitted to this model: fit-postprocessing records "fitted"
        "training": {"framework": "nnU-Net v2", "imported_from": str(model.resolve()), "trainer": trainer,
                     "plans": plans.get("plans_name"), "dataset": plans.get("dataset_name"),
                     "configuration": configuration, "checkpoint": CHECKPOINTS[checkpoint],
                     "channel_mapping": {str(i): c for i, c in enumerate(inputs)},
                     "label_mapping": label_report, "folds": info,
                     "imported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    write_bundle(out, manifest, states, zip=zip)
    bundle = load_bundle(out)  # verify: manifest, checksums, network builds, weights load
    for fold in bundle.folds:
        bundle.build_network().load_state_dict(bundle.state_dict(fold))
    log(f"wrote {out}: {conf['class'].rsplit('.', 1)[-1]}, folds {list(files)}, inputs {inputs}, labels "
        f"{[LABEL_NAMES[v] for v in present]} ({activation})")
    return Path(out)
