"""BraTS-PED case folders -> an nnU-Net v2 raw dataset (``DatasetNNN_Name``).

Every case is validated with the core I/O (``pedtumorseg.inputs.images.load_case`` + ``read_labels`` on the case's T1CE
grid). Accepted cases become ``imagesTr/<case>_0000..0003.nii.gz`` in the fixed channel order T1, T1CE, T2,
FLAIR and ``labelsTr/<case>.nii.gz`` (labels 1-4 unchanged). A ``.nii.gz`` input that is already on the T1CE
grid is hard-linked (or copied when linking fails); any other image (another format, or resampled onto the
T1CE grid by ``load_case``) is written from the validated array on the T1CE grid. Rejected cases are listed with
their reason on stderr and in ``<dataset>/rejected.txt``. Every image is read in full first (a truncated file is
rejected, see ``pedtumorseg.inputs``), and a conversion without any usable case writes nothing.

Orientation: nnU-Net trains on the voxel arrays as stored. Every case is brought to ``TRAINING_ORIENTATION``
(LPS, how SimpleITK reads BraTS files) by exact axis flips/permutations (``pedtumorseg.inputs.orientation``), so that
one anatomy-to-axis mapping holds for the whole dataset; ``dataset.json`` records it as ``pedtumorseg_orientation``
and the export writes it into the bundle manifest, where the engine reorients every input to it.

``dataset.json`` also lists every case's files under nnU-Net's ``dataset`` key (paths relative to the dataset
folder, cases sorted as nnU-Net sorts them). The files are the same ``imagesTr`` / ``labelsTr`` ones; the list
only spares nnU-Net its own file discovery, which forks a 12-process pool in every fingerprint, planning,
integrity-check and preprocessing call just to match file names. Forking a process that already runs threads
(torch, pytest) can hang: in one run of the training tests a forked worker blocked on the pool's queue lock and
``Pool.__exit__`` waited for it forever (20 min, no CPU). With the list, no fork happens.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import SimpleITK as sitk

from pedtumorseg.conventions import CHANNELS, IMAGE_EXTENSIONS, LABEL_NAMES
from pedtumorseg.errors import InputError, UsageError
from pedtumorseg.geometry import Geometry
from pedtumorseg.files import check_output_folder
from pedtumorseg.inputs.cases import find_case
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.outputs.images import write_image, write_labels
from pedtumorseg.inputs.orientation import DEFAULT_ORIENTATION, orientation_code, reorient_array, reorient_stack

FILE_ENDING = ".nii.gz"
#: nnU-Net channel index -> name, in the fixed channel order
CHANNEL_NAMES = {"0": "T1", "1": "T1CE", "2": "T2", "3": "FLAIR"}
LABELS = {"background": 0, **{name: value for value, name in sorted(LABEL_NAMES.items())}}
#: voxel-axis orientation of every converted case (and so of the trained model)
TRAINING_ORIENTATION = DEFAULT_ORIENTATION


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 0 < int(dataset_id) < 1000:
        raise UsageError(None, f"dataset id must be in 1..999, got {dataset_id}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _same_grid_as(path: Path, geometry: Geometry) -> bool:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    g = Geometry(tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing()),
                 tuple(float(o) for o in reader.GetOrigin()), tuple(float(d) for d in reader.GetDirection()))
    return g.same_grid(geometry)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def convert_case(files, images_dir: Path, labels_dir: Path) -> list[str]:
    """Validate and write one case; returns the case's warnings. Raises ``InputError`` to reject it."""
    if files.seg is None:
        raise InputError(files.images["t1ce"].parent, "no label map ('<ID>-seg') in the case folder")
    case = load_case(files)
    labels = read_labels(files.seg, case.geometry)
    geometry, images = case.geometry, case.images
    reorient = orientation_code(geometry) != TRAINING_ORIENTATION
    if reorient:
        images, geometry = reorient_stack(images, case.geometry, TRAINING_ORIENTATION)
        labels, _ = reorient_array(labels, case.geometry, TRAINING_ORIENTATION)
    written = []
    try:
        for i, ch in enumerate(CHANNELS):
            src = Path(files.images[ch])
            dst = images_dir / f"{case.case_id}_{i:04d}{FILE_ENDING}"
            if not reorient and src.name.lower().endswith(FILE_ENDING) and _same_grid_as(src, geometry):
                _link_or_copy(src, dst)
            else:
                write_image(images[i], geometry, dst)
            written.append(dst)
        seg_dst = labels_dir / f"{case.case_id}{FILE_ENDING}"
        if not reorient and Path(files.seg).name.lower().endswith(FILE_ENDING) and \
                sitk.ReadImage(str(files.seg)).GetPixelID() in (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16,
                                                                 sitk.sitkInt16):
            _link_or_copy(Path(files.seg), seg_dst)
        else:
            write_labels(labels, geometry, seg_dst)
        written.append(seg_dst)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return list(case.warnings)


def _has_image_files(folder: Path) -> bool:
    return any(p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS) for p in folder.iterdir())


def discover_cases(brats_dir: Path) -> tuple[list, list[tuple[str, str]]]:
    """Cases in ``brats_dir`` itself (if it holds image files) and in each sub-folder; a folder whose case is
    incomplete or ambiguous is rejected with the core's reason instead of stopping the conversion."""
    cases, rejected = [], []
    if not brats_dir.is_dir():
        return cases, [(str(brats_dir), f"{brats_dir}: not a folder")]
    folders = ([brats_dir] if _has_image_files(brats_dir) else []) + sorted(p for p in brats_dir.iterdir()
                                                                           if p.is_dir())
    for folder in folders:
        try:
            cases.append(find_case(folder))
        except InputError as exc:
            rejected.append((folder.name, str(exc)))
    return cases, rejected


def convert(brats_dir: str | os.PathLike, raw_dir: str | os.PathLike, dataset_id: int = 1,
            name: str = "PedTumorSeg", log=print) -> tuple[Path, list[str], list[tuple[str, str]]]:
    """Convert every case under ``brats_dir``. Returns (dataset folder, accepted ids, [(case, reason)]).

    The dataset is built in a hidden folder next to it and published only when at least one case was accepted:
    its ``imagesTr/`` and ``labelsTr/`` then replace the old ones (a re-conversion never mixes cases; other
    files of the dataset folder are kept). ``InputError`` when ``brats_dir`` holds no case or no usable case, or
    ``raw_dir`` cannot be written; nothing is left behind then.
    """
    brats_dir, raw_dir = Path(brats_dir), Path(raw_dir)
    out = raw_dir / dataset_folder_name(dataset_id, name)
    if not brats_dir.is_dir():
        raise InputError(brats_dir, "not a folder")
    cases, rejected = discover_cases(brats_dir)
    if not cases and not rejected:
        raise InputError(brats_dir, "no case folders found (expected folders with '<ID>-t1n', '-t1c', '-t2w', "
                                    "'-t2f' and '-seg' files)")
    check_output_folder(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for stale in raw_dir.glob(f".{out.name}.tmp-*"):  # left by a killed conversion
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=raw_dir))
    try:
        images_dir, labels_dir = staging / "imagesTr", staging / "labelsTr"
        images_dir.mkdir()
        labels_dir.mkdir()
        accepted: list[str] = []
        seen: set[str] = set()
        for files in cases:
            if files.case_id in seen:
                rejected.append((files.case_id, f"{files.images['t1ce']}: duplicate case id"))
                continue
            seen.add(files.case_id)
            try:
                for w in convert_case(files, images_dir, labels_dir):
                    log(f"warning: {w}")
                accepted.append(files.case_id)
            except InputError as exc:
                rejected.append((files.case_id, str(exc)))
        for case_id, reason in rejected:
            print(f"rejected {case_id}: {reason}", file=sys.stderr)
        if not accepted:
            raise InputError(brats_dir, f"no usable case ({len(rejected)} rejected); no dataset written")
        (staging / "rejected.txt").write_text("".join(f"{c}\t{r}\n" for c, r in rejected))
        dataset_json = {
            "channel_names": CHANNEL_NAMES,
            "labels": LABELS,
            "numTraining": len(accepted),
            "file_ending": FILE_ENDING,
            "name": name,
            "description": f"converted by pedtumorseg-train convert from {brats_dir}",
            "pedtumorseg_orientation": TRAINING_ORIENTATION,
            "dataset": {case_id: {"images": [f"imagesTr/{case_id}_{i:04d}{FILE_ENDING}" for i in range(len(CHANNELS))],
                                  "label": f"labelsTr/{case_id}{FILE_ENDING}"}
                        for case_id in sorted(accepted)},
        }
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
        out.mkdir(exist_ok=True)
        for sub in ("imagesTr", "labelsTr"):
            if (out / sub).exists():
                (out / sub).rename(staging / f"old-{sub}")  # removed with the staging folder
            (staging / sub).rename(out / sub)
        for fname in ("rejected.txt", "dataset.json"):
            os.replace(staging / fname, out / fname)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{out}: {len(accepted)} cases accepted, {len(rejected)} rejected")
    return out, accepted, rejected
