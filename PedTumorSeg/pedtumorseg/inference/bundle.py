"""Model bundles (DEVELOPING.md, "Model bundle"): write, verify and load.

A bundle is a folder or a ``.zip`` holding ``manifest.json`` and one ``fold_K.safetensors`` per fold. Loading
validates the manifest, checks the sha256 of every file listed in ``manifest["files"]`` and refuses with a
one-line :class:`~pedtumorseg.errors.BundleError` on any problem. Weights are read with safetensors only —
nothing is ever unpickled.

Zip bundles are checked member by member before anything is extracted (no absolute paths, no ``..``, no
symlinks, no duplicate names) and extracted once into a cache folder keyed by the zip's sha256
(``$PEDTUMORSEG_CACHE`` or ``~/.cache/pedtumorseg/bundles``, falling back to the system temp dir). A cached
extraction is trusted only as far as the named zip vouches for it: its ``manifest.json`` must equal the zip's
own byte for byte and every file's sha256 must match that manifest on every load; otherwise it is extracted
afresh from the zip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.errors import BundleError
from pedtumorseg.inference.manifest import (FORMAT, FORMAT_VERSION, MANIFEST, fold_key, fold_value, safe_member_name,
                                           validate_manifest)

log = logging.getLogger(__name__)
DEMO_BUNDLE_NAME = "pedtumorseg-demo.zip"
DEMO_BUNDLE_ENV = "PEDTUMORSEG_DEMO_BUNDLE"
CACHE_ENV = "PEDTUMORSEG_CACHE"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# --- the loaded bundle ------------------------------------------------------------------------------------

@dataclass
class Bundle:
    """A verified bundle on disk (a folder; zips are extracted to the cache first)."""

    path: Path  # what the user gave (folder or .zip)
    root: Path  # folder holding manifest.json and the weights (a zip's: its extraction in the cache)
    manifest: dict
    manifest_bytes: bytes = field(default=b"", repr=False)  # the manifest as the zip (or folder) holds it
    _states: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def intended_use(self) -> str:
        return str(self.manifest.get("intended_use", "research"))

    @property
    def demonstration_notice(self) -> str:
        """The line shown wherever a demonstration model's result appears; empty for any other bundle."""
        return (f"{self.name} {self.version} is a demonstration model trained on synthetic phantoms only, not for "
                f"patients: on real scans it outlines too little and adds false lesions"
                if self.intended_use == "demonstration" else "")

    @property
    def folds(self) -> list:
        return [fold_value(fold_key(f)) for f in self.manifest["folds"]]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.manifest["spacing_zyx"])

    @property
    def orientation(self) -> str:
        """Anatomical orientation of the training data's voxel axes (``LPS`` when the manifest does not say)."""
        from pedtumorseg.inputs.orientation import DEFAULT_ORIENTATION
        return str(self.manifest.get("orientation", DEFAULT_ORIENTATION)).upper()

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.manifest["patch_size"])

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        return tuple(int(a) for a in self.manifest["mirror_axes"])

    @property
    def normalization(self) -> dict:
        norm = dict(self.manifest["normalization"])
        norm.setdefault("use_mask_for_norm", [False] * self.io.num_inputs)
        return norm

    @property
    def use_mask_for_norm(self) -> tuple[bool, ...]:
        return tuple(bool(b) for b in self.normalization["use_mask_for_norm"])

    @property
    def io(self):
        """What the network reads and writes (``model_io.ModelIO``: inputs, outputs, transpose, labels)."""
        from pedtumorseg.inference.model_io import model_io
        return model_io(self.manifest)

    @property
    def network_class(self) -> str:
        return self.manifest["network"]["class"]

    @property
    def network_kwargs(self) -> dict:
        return dict(self.manifest["network"].get("kwargs", {}))

    @property
    def spatial_dims(self) -> int:
        """2 for a slice-wise network (predicted slice by slice, patch ``[1, y, x]``), else 3."""
        from pedtumorseg.model.presets import spatial_dims
        return spatial_dims(self.network_class, self.network_kwargs)

    @property
    def postprocessing(self):
        from pedtumorseg.postprocess import PostprocessParams
        return PostprocessParams.from_dict(dict(self.manifest.get("postprocessing", {})))

    def build_network(self):
        """A fresh network of the bundle's class (allow-listed), without deep supervision, in eval mode."""
        from pedtumorseg.model.presets import MissingPackageError, build_network
        try:
            net = build_network(self.network_class, self.network_kwargs, self.io.num_inputs, self.io.num_outputs,
                                deep_supervision=False)
        except MissingPackageError as e:
            raise BundleError(self.path, str(e)) from e
        except (TypeError, ValueError) as e:
            raise BundleError(self.path, f"cannot build network {self.network_class}: {e}") from e
        return net.eval()

    @property
    def sha256(self) -> str:
        """Content key of the bundle: the sha256 of its manifest (the zip's own, for a zip), which holds the sha256
        of every file (the same for a folder and its zip). Derived files (ONNX exports) are cached under it."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    def weights_file(self, fold) -> Path:
        key = fold_key(fold)
        if key not in self.manifest["weights"] or key not in [fold_key(f) for f in self.manifest["folds"]]:
            raise BundleError(self.path, f"fold {fold!r} is not in this bundle (folds: {self.folds})")
        return self.root / self.manifest["weights"][key]

    def state_dict(self, fold) -> dict:
        """The fold's weights as CPU tensors (cached). The bytes are read once and checked against the sha256 the
        manifest lists (a zip's own manifest: the zip is the source of truth), then parsed from those very bytes
        with safetensors, so what is verified is what is loaded. A zip's cached extraction that differs is
        extracted again from the zip, with one warning line; any other mismatch is refused."""
        key = fold_key(fold)
        if key not in self._states:
            from safetensors.torch import load as load_safetensors

            name = self.manifest["weights"].get(key)
            data = self._verified_bytes(self.weights_file(fold), name)
            try:
                self._states[key] = load_safetensors(data)
            except Exception as e:  # safetensors raises its own (version-dependent) error types
                raise BundleError(self.path, f"{name}: cannot read weights: {e}") from e
        return self._states[key]

    def _verified_bytes(self, path: Path, name: str) -> bytes:
        expected = self.manifest["files"][name]
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        if hashlib.sha256(data).hexdigest() == expected:
            return data
        if self.path == self.root:  # a folder bundle: nothing to repair it from
            raise BundleError(self.path, f"checksum mismatch for {name} (expected sha256 {expected[:12]}...): the "
                                         "file is corrupt or was modified")
        log.warning("warning: %s: the cached extraction of %s differed from the zip (modified in %s); extracted "
                    "again from the zip", self.path, name, self.root)
        self.root = _extract_zip(self.path, self.manifest_bytes, fresh=True)
        data = (self.root / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(self.path, f"checksum mismatch for {name} inside the zip: the bundle is corrupt")
        return data


def load_fold_weights(bundle, net, fold, network: str = "the network described in manifest.json",
                      path: str | os.PathLike | None = None) -> None:
    """Load ``bundle``'s weights of ``fold`` into ``net`` (strict: every key, every shape). Weights that do not
    fit raise ``BundleError`` naming ``path`` and the weights file, ``network`` and the first
    mismatch (default: the bundle the user gave, never a file in the cache). Shared by the engine and the training
    CLI's ``--init-weights``."""
    try:
        net.load_state_dict(bundle.state_dict(fold))
    except RuntimeError as e:  # torch lists every mismatching tensor; the first one says enough
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        member = bundle.manifest["weights"].get(fold_key(fold), f"fold {fold}")
        raise BundleError(path if path is not None else bundle.path,
                          f"{member}: weights do not fit {network} ({detail[:200]})") from None


# --- loading ----------------------------------------------------------------------------------------------

def _parse_manifest(data: bytes, origin: Path) -> dict:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(origin, f"{MANIFEST} is not valid JSON: {e}") from e


def _check_zip_members(zf: zipfile.ZipFile, origin: Path) -> list[zipfile.ZipInfo]:
    members, seen = [], set()
    for info in zf.infolist():
        name = info.filename
        mode = (info.external_attr >> 16) & 0xFFFF
        if stat.S_ISLNK(mode):
            raise BundleError(origin, f"zip member {name!r} is a symbolic link; refusing to extract")
        clean = name[:-1] if info.is_dir() and name.endswith("/") else name
        if not safe_member_name(clean):
            raise BundleError(origin, f"zip member {name!r} would be extracted outside the bundle folder "
                                      "(absolute path or '..'); refusing to extract")
        if clean in seen:
            raise BundleError(origin, f"zip member {name!r} appears twice")
        seen.add(clean)
        members.append(info)
    return members


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    home = Path.home() / ".cache" / "pedtumorseg" / "bundles"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "pedtumorseg-bundles"


def _manifest_in_zip(zpath: Path) -> bytes:
    """The bytes of the zip's own ``manifest.json`` (top level, or one folder down)."""
    try:
        with zipfile.ZipFile(zpath) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            found = [n for n in names if n == MANIFEST] or [n for n in names if n.count("/") == 1
                                                              and n.endswith("/" + MANIFEST)]
            if len(found) != 1:
                raise BundleError(zpath, f"no {MANIFEST} in the bundle")
            return zf.read(found[0])
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise BundleError(zpath, f"not a readable zip file: {e}") from e


def _extract_zip(zpath: Path, manifest_bytes: bytes, fresh: bool = False) -> Path:
    """The cache folder holding ``zpath``'s contents, keyed by the sha256 of the zip's manifest (which lists the
    sha256 of every file). A cached extraction is reused only if its ``manifest.json`` is byte for byte the zip's
    own; its files are checked against it when they are read (``Bundle.state_dict``). Otherwise, or with
    ``fresh``, it is extracted again from the zip."""
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    target = cache_dir() / digest
    if target.is_dir():
        cached = target / MANIFEST
        if not fresh and cached.is_file() and not cached.is_symlink() and cached.read_bytes() == manifest_bytes:
            return target
        shutil.rmtree(target, ignore_errors=True)  # modified after extraction: extract afresh
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(zpath, f"not a readable zip file: {e}") from e
    with zf:
        members = _check_zip_members(zf, zpath)  # every member checked before anything is written
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=target.parent))
        try:
            _write_members(zf, members, tmp)
            tmp = _unwrap_single_folder(tmp, target.parent, digest)
            try:
                tmp.rename(target)
            except OSError:
                if not target.is_dir():  # not a concurrent extraction that won the race
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _write_members(zf: zipfile.ZipFile, members: list, folder: Path) -> None:
    for info in members:
        dest = folder.joinpath(*PurePosixPath(info.filename.rstrip("/")).parts)
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _unwrap_single_folder(tmp: Path, parent: Path, digest: str) -> Path:
    """A bundle zipped as a folder: its manifest one level down; that folder becomes the extraction."""
    if (tmp / MANIFEST).is_file():
        return tmp
    subs = [p for p in tmp.iterdir() if p.is_dir() and (p / MANIFEST).is_file()]
    if len(subs) != 1:
        return tmp
    staged = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=parent))
    staged.rmdir()
    subs[0].rename(staged)
    shutil.rmtree(tmp)
    return staged


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Validate a bundle folder or ``.zip``; raise ``BundleError`` naming the problem and the bundle the user gave.

    A zip's manifest is read from the zip itself, and its extraction in the cache is used only as far as that
    manifest vouches for it: weights are checked against it when they are read (``Bundle.state_dict``)."""
    origin = Path(path)
    if not origin.exists():
        raise BundleError(origin, "model bundle not found")
    if origin.is_dir():
        mf = origin / MANIFEST
        if not mf.is_file():
            raise BundleError(origin, f"no {MANIFEST} in the bundle")
        manifest_bytes, root = mf.read_bytes(), origin
    elif zipfile.is_zipfile(origin):
        manifest_bytes = _manifest_in_zip(origin)
        validate_manifest(_parse_manifest(manifest_bytes, origin), origin)  # before anything is extracted
        root = _extract_zip(origin, manifest_bytes)
    else:
        raise BundleError(origin, "not a bundle folder or .zip file")
    manifest = _parse_manifest(manifest_bytes, origin)
    validate_manifest(manifest, origin)
    bundle = Bundle(path=origin, root=root, manifest=manifest, manifest_bytes=manifest_bytes)
    for key in [fold_key(f) for f in manifest["folds"]]:
        name = manifest["weights"][key]
        if not (root / name).is_file() and root == origin:
            raise BundleError(origin, f"weights file {name} of fold {key} is missing")
    for name in set(manifest["files"]) - set(manifest["weights"].values()):  # other listed files: small
        bundle._verified_bytes(root / name, name)
    return bundle


# --- writing ----------------------------------------------------------------------------------------------

def write_bundle(out_path: str | os.PathLike, manifest: dict, fold_state_dicts: dict, zip: bool = True) -> Path:
    """Write a bundle: ``fold_K.safetensors`` per fold, ``manifest.json`` with ``folds``, ``weights`` and the
    sha256 of every file. ``zip=True`` writes one uncompressed ``.zip`` at ``out_path``, else a folder.

    Atomic: everything is built in a temporary folder next to the target and renamed into place; an existing
    target is replaced only once the new bundle is complete.
    """
    import torch
    from safetensors.torch import save_file

    out = Path(out_path)
    if not fold_state_dicts:
        raise BundleError(out, "no fold weights to write")
    manifest = json.loads(json.dumps(manifest))  # deep copy, and proves it is JSON-serializable
    manifest.setdefault("format", FORMAT)
    manifest.setdefault("format_version", FORMAT_VERSION)
    manifest.setdefault("channels", list(CHANNELS))
    keys = [fold_key(f) for f in fold_state_dicts]
    manifest["folds"] = [fold_value(k) for k in keys]
    manifest["weights"] = {k: f"fold_{k}.safetensors" for k in keys}
    manifest.pop("files", None)
    validate_manifest(manifest, out, check_files=False)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        content = tmp / "bundle"
        content.mkdir()
        files = {}
        for fold, state in fold_state_dicts.items():
            name = manifest["weights"][fold_key(fold)]
            tensors = {}
            for k, v in state.items():
                if not isinstance(v, torch.Tensor):
                    raise BundleError(out, f"fold {fold}: state entry {k!r} is not a tensor")
                tensors[k] = v.detach().to("cpu").contiguous().clone()
            save_file(tensors, str(content / name), metadata={"fold": fold_key(fold)})
            files[name] = sha256_file(content / name)
        manifest["files"] = files
        (content / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        if zip:
            staged = tmp / out.name
            with zipfile.ZipFile(staged, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.write(content / MANIFEST, MANIFEST)
                for name in files:
                    zf.write(content / name, name)
        else:
            staged = content
        _replace(staged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replace(staged: Path, out: Path) -> None:
    if out.is_dir() and not out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        try:
            staged.rename(out)
        except BaseException:
            old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, out)


# --- the shipped demo bundle ------------------------------------------------------------------------------

def default_bundle_path() -> Path:
    """The shipped demo bundle: ``$PEDTUMORSEG_DEMO_BUNDLE``, else ``Resources/Models/pedtumorseg-demo.zip`` of
    the source checkout or of the installed Slicer module."""
    env = os.environ.get(DEMO_BUNDLE_ENV)
    if env:
        p = Path(env)
        if not p.exists():
            raise BundleError(p, f"demo bundle named by {DEMO_BUNDLE_ENV} does not exist")
        return p
    package = Path(__file__).resolve().parents[1]  # the pedtumorseg folder
    candidates = [package.parent.parent / "Resources" / "Models" / DEMO_BUNDLE_NAME,  # source checkout
                  package.parent / "Resources" / "Models" / DEMO_BUNDLE_NAME]  # installed Slicer module
    for c in candidates:
        if c.exists():
            return c
    raise BundleError(candidates[0], "the demo model bundle is not installed (looked in "
                      + " and ".join(str(c.parent) for c in candidates)
                      + f"); pass a bundle with --model or set {DEMO_BUNDLE_ENV}")
