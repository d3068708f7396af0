"""The bundle manifest (DEVELOPING "Model bundle"): its format constants, fold keys, and ``validate_manifest``, which
refuses with one ``BundleError`` line anything a loader could not use safely."""

from __future__ import annotations

from pathlib import PurePosixPath

from pedtumorseg.conventions import CHANNELS, NUM_CLASSES
from pedtumorseg.errors import BundleError

FORMAT = "pedtumorseg-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

#: what a bundle is for (optional ``intended_use``; absent: ``research``). A ``demonstration`` bundle (the shipped
#: one: trained on synthetic phantoms) is marked wherever its result is shown: console, stats, overlay, Slicer.
INTENDED_USES: tuple[str, ...] = ("demonstration", "research")
#: where the ``postprocessing`` values come from (optional ``postprocessing_source``; absent: not recorded):
#: ``defaults`` the paper's defaults written by export / import-nnunet, ``fitted`` by fit-postprocessing on a
#: training set (details under ``training.postprocessing_fit``), ``given`` set by hand
POSTPROCESSING_SOURCES: tuple[str, ...] = ("defaults", "fitted", "given")

#: keys every manifest must have (``description``, ``colors``, ``postprocessing``, ``num_classes`` optional)
REQUIRED_KEYS: tuple[str, ...] = (
    "format", "format_version", "name", "version", "labels", "channels", "spacing_zyx", "patch_size",
    "normalization", "network", "folds", "weights", "mirror_axes", "files",
)


def fold_key(fold) -> str:
    """Manifest key of a fold: ``0`` / ``"0"`` -> ``"0"``; ``"all"`` stays ``"all"``."""
    if isinstance(fold, bool):
        raise ValueError(f"invalid fold {fold!r}")
    if isinstance(fold, int):
        return str(fold)
    s = str(fold)
    if s.isdigit():
        return str(int(s))
    if s == "all":
        return s
    raise ValueError(f"invalid fold {fold!r}")


def fold_value(key: str):
    return int(key) if key.isdigit() else key


def _is_int_list(v, n=None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v))


def safe_member_name(name: str) -> bool:
    """Whether ``name`` is a plain relative POSIX path (no absolute path, drive, ``..``, backslash or NUL)."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return False
    return all(part not in ("..", "") for part in p.parts) and ".." not in p.parts


def validate_manifest(manifest, path=None, *, check_files: bool = True) -> None:
    """Raise ``BundleError(path, problem)`` unless ``manifest`` is a valid bundle manifest.

    ``check_files=False`` skips the checks of ``weights`` / ``files`` (used before writing, when they are not
    filled in yet).
    """
    def bad(problem):
        raise BundleError(path, problem)

    if not isinstance(manifest, dict):
        bad("manifest.json is not a JSON object")
    if manifest.get("format") != FORMAT:
        bad(f"not a PedTumorSeg bundle (manifest format is {manifest.get('format')!r}, expected {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        bad(f"unsupported bundle format_version {manifest.get('format_version')!r} (this version reads "
            f"{FORMAT_VERSION})")
    keys = REQUIRED_KEYS if check_files else tuple(k for k in REQUIRED_KEYS if k not in ("weights", "files"))
    missing = [k for k in keys if k not in manifest]
    if missing:
        bad(f"manifest.json lacks required key(s): {', '.join(missing)}")
    _check_data_layout(manifest, bad)
    _check_network(manifest, bad)
    fold_keys = _check_folds(manifest, bad)
    _check_postprocessing(manifest, bad)
    if manifest.get("intended_use", "research") not in INTENDED_USES:
        bad(f"intended_use must be one of {', '.join(INTENDED_USES)}, got {manifest['intended_use']!r}")
    if check_files:
        _check_files(manifest, fold_keys, bad)


def _check_data_layout(manifest: dict, bad) -> None:
    """Channels, labels, spacing, patch, orientation, mirror axes and normalization."""
    if list(manifest["channels"]) != list(CHANNELS):
        bad(f"channel order {manifest['channels']!r} differs from the required {list(CHANNELS)!r}")
    from pedtumorseg.inference.model_io import check_model_io
    n_inputs = check_model_io(manifest, bad)
    if "num_classes" in manifest and manifest["num_classes"] != NUM_CLASSES:
        bad(f"num_classes {manifest['num_classes']!r} differs from {NUM_CLASSES}")
    sp = manifest["spacing_zyx"]
    if not (isinstance(sp, list) and len(sp) == 3 and all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                                         and s > 0 for s in sp)):
        bad(f"spacing_zyx must be 3 positive numbers, got {sp!r}")
    if not (_is_int_list(manifest["patch_size"], 3) and all(p > 0 for p in manifest["patch_size"])):
        bad(f"patch_size must be 3 positive integers, got {manifest['patch_size']!r}")
    if "orientation" in manifest:
        from pedtumorseg.inputs.orientation import is_valid_code
        if not is_valid_code(manifest["orientation"]):
            bad(f"orientation must be a code like 'LPS' (one letter of L/R, P/A, S/I each), got "
                f"{manifest['orientation']!r}")
    axes = manifest["mirror_axes"]
    if not (_is_int_list(axes) and all(0 <= a <= 2 for a in axes) and len(set(axes)) == len(axes)):
        bad(f"mirror_axes must be distinct integers in 0..2, got {axes!r}")
    norm = manifest["normalization"]
    if not isinstance(norm, dict) or norm.get("scheme") not in ("zscore", "nnunet"):
        bad(f"unsupported normalization {norm!r} (schemes 'zscore', 'nnunet')")
    umn = norm.get("use_mask_for_norm", [False] * n_inputs)
    if not (isinstance(umn, list) and len(umn) == n_inputs and all(isinstance(b, bool) for b in umn)):
        bad(f"normalization.use_mask_for_norm must be {n_inputs} booleans, got {umn!r}")
    if norm["scheme"] == "nnunet":
        from pedtumorseg.inference.model_io import check_nnunet_normalization
        check_nnunet_normalization(norm, n_inputs, bad)


def _check_network(manifest: dict, bad) -> None:
    net = manifest["network"]
    if not isinstance(net, dict) or not isinstance(net.get("class"), str) or not isinstance(net.get("kwargs", {}),
                                                                                            dict):
        bad(f"network must be an object with 'class' and 'kwargs', got {net!r}")
    from pedtumorseg.model.classes import ALLOWED_CLASSES
    if net["class"] not in ALLOWED_CLASSES:
        bad(f"unknown network class {net['class']!r} (allowed: {', '.join(sorted(ALLOWED_CLASSES))})")


def _check_folds(manifest: dict, bad) -> list[str]:
    folds = manifest["folds"]
    if not isinstance(folds, list) or not folds:
        bad(f"folds must be a non-empty list, got {folds!r}")
    try:
        fold_keys = [fold_key(f) for f in folds]
    except ValueError as e:
        bad(f"folds {folds!r}: {e}")
    if len(set(fold_keys)) != len(fold_keys):
        bad(f"folds {folds!r} has duplicates")
    return fold_keys


def _check_postprocessing(manifest: dict, bad) -> None:
    pp = manifest.get("postprocessing", {})
    if not isinstance(pp, dict):
        bad(f"postprocessing must be an object, got {pp!r}")
    from pedtumorseg.postprocess import PostprocessParams
    try:
        PostprocessParams.from_dict(dict(pp))
    except ValueError as e:
        bad(f"postprocessing defaults: {e}")
    source = manifest.get("postprocessing_source", "defaults")
    if source not in POSTPROCESSING_SOURCES:
        bad(f"postprocessing_source must be one of {', '.join(POSTPROCESSING_SOURCES)}, got {source!r}")


def _check_files(manifest: dict, fold_keys: list[str], bad) -> None:
    weights, files = manifest["weights"], manifest["files"]
    if not isinstance(weights, dict) or not isinstance(files, dict):
        bad("weights and files must be objects")
    for k in fold_keys:
        if k not in weights:
            bad(f"fold {k} is listed in folds but has no weights entry")
        name = weights[k]
        if not isinstance(name, str) or not name.endswith(".safetensors"):
            bad(f"fold {k} weights {name!r} is not a .safetensors file")
        if name not in files:
            bad(f"fold {k} weights file {name} has no sha256 in files")
    for name, digest in files.items():
        if not safe_member_name(name):
            bad(f"file name {name!r} in files is not a plain relative path")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            bad(f"sha256 of {name} is not a 64-digit hex string: {digest!r}")
