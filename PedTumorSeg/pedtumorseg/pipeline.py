"""One case or a folder of cases from files to outputs: the path shared by the CLI and Slicer's headless batch.

files -> ``raw_input.prepare_case`` (``io.load_case`` for BraTS-preprocessed inputs) -> ``engine.Engine.predict``
-> ``postprocess.postprocess`` -> ``<ID>-seg.nii.gz``, ``<ID>-stats.json`` (and ``<ID>-seg-raw.nii.gz``,
``<ID>-overlay.png``, ``<ID>-seg.dcm`` on request, ``<ID>-brain-mask.nii.gz`` when a brain mask was used).

A run is configured once: :meth:`Predictor.load` resolves the bundle, device, folds/TTA (or a quality preset),
post-processing overrides and raw-input options; ``predict_case`` and ``run_batch`` take that object.

Before the inference the outputs are checked (a writable folder that holds none of the case's inputs, a case id
that stays inside it) and temporary files a killed earlier run left are removed. Every file is written
atomically and read back before it counts. A case counts as finished when its stats file (written last) and its
label map read back intact, so a batch that stopped half-way resumes at the first unfinished case and re-runs a
case whose files were cut short. If anything fails, the files already written for that case are removed (no
partial output).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import SimpleITK as sitk

from .bundle import Bundle, default_bundle_path, load_bundle
from .conventions import CHANNELS
from .engine import Engine, PredictOptions
from .errors import Cancelled, InputError
from .io import (CaseFiles, Geometry, check_case_id, check_output_folder, find_cases, read_labels,
                 remove_stale_temporaries, write_image, write_labels)
from .postprocess import PostprocessParams, postprocess
from .raw_input import RawOptions, find_dicom_studies, prepare_case
from .report import stats_dict, write_json, write_overlay_png

Progress = Callable[[float, str], None]


def output_paths(case_id: str, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where the outputs of ``case_id`` go (DEVELOPING.md: CLI output files); ``InputError`` for a case id that
    would name a file outside ``out_dir``."""
    out = Path(out_dir)
    check_case_id(case_id)
    paths = {
        "seg": out / f"{case_id}-seg.nii.gz",
        "raw": out / f"{case_id}-seg-raw.nii.gz",
        "stats": out / f"{case_id}-stats.json",
        "overlay": out / f"{case_id}-overlay.png",
        "brain_mask": out / f"{case_id}-brain-mask.nii.gz",
        "dicom_seg": out / f"{case_id}-seg.dcm",
        "t1_prepared": out / f"{case_id}-t1-prepared.nii.gz",
        "t1ce_prepared": out / f"{case_id}-t1ce-prepared.nii.gz",
    }
    for p in paths.values():  # confined to out_dir, whatever the id holds
        if p.parent != out:
            raise InputError(None, f"case id {case_id!r} would write {p} outside the output folder {out}")
    return paths


def is_finished(case_id: str, out_dir: str | os.PathLike) -> bool:
    """Whether the case's outputs are complete and intact: the stats file (written last) parses and names the
    case, and the label map reads back in full on the grid the stats record. A case whose files were cut short
    (a full disk, a killed process) is not finished, so a resumed batch runs it again."""
    paths = output_paths(case_id, out_dir)
    if not (paths["stats"].is_file() and paths["seg"].is_file()):
        return False
    try:
        stats = json.loads(paths["stats"].read_text(encoding="utf-8"))
        size = list(stats["geometry"]["size_xyz"]) if stats["case_id"] == case_id else None
        for kind in ("seg", "raw"):  # the raw labels only where an earlier run wrote them
            if kind == "seg" or paths[kind].exists():
                if list(read_labels(paths[kind]).shape[::-1]) != size:
                    return False
    except (OSError, ValueError, InputError, KeyError, TypeError):
        return False
    return True


def check_outputs_spare_inputs(files: CaseFiles, out_dir: str | os.PathLike) -> None:
    """``InputError`` if ``out_dir`` is a folder holding the case's own files (its ground truth
    ``<ID>-seg.nii.gz`` would be overwritten, or outputs mistaken for ground truth later), or if any output path
    is one of the case's input files."""
    out = Path(out_dir)
    inputs = [Path(p) for p in files.images.values()] + ([Path(files.seg)] if files.seg else [])
    if out.is_dir():
        for folder in {p.parent for p in inputs}:
            if _same_file(out, folder):
                raise InputError(out, f"the output folder is the folder of the input files of case {files.case_id}; "
                                      "outputs would overwrite or mix with them (e.g. the ground truth "
                                      f"{files.case_id}-seg.nii.gz): choose another output folder")
    for p in output_paths(files.case_id, out).values():
        for q in inputs:
            if _same_file(p, q):
                raise InputError(q, f"input file would be overwritten by the output {p}: choose another output "
                                    "folder")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def prepare_output_folder(files: CaseFiles, out_dir: str | os.PathLike) -> None:
    """Everything about the outputs that can be checked before the inference: a usable case id, a writable
    output folder that is not an input folder; and the temporary files a killed earlier run left, removed."""
    paths = output_paths(files.case_id, out_dir)
    check_output_folder(out_dir)
    check_outputs_spare_inputs(files, out_dir)
    for p in paths.values():
        remove_stale_temporaries(p)


#: ``--quality`` presets: which folds and whether to mirror (test-time augmentation)
QUALITY_PRESETS = ("fast", "full")


@dataclass
class Predictor:
    """One resolved run configuration: the loaded bundle and its engine, the post-processing parameters (bundle
    defaults with ``--set`` overrides applied) and the raw-input options. The CLI, ``run_batch``, Slicer's
    ``batch.py`` and the module all build one with :meth:`load`."""

    bundle: Bundle
    engine: Engine
    params: PostprocessParams | None = None
    raw: RawOptions = field(default_factory=RawOptions)
    quality: str | None = None

    def __post_init__(self):
        if self.params is None:
            self.params = self.bundle.postprocessing

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, device: str = "auto",
             folds: Sequence[int] | None = None, tta: bool = True, step_size: float = 0.5,
             quality: str | None = None, overrides: Sequence[str] | None = None,
             raw: RawOptions | None = None, backend: str = "torch") -> "Predictor":
        """Load the bundle once and resolve everything a run needs.

        ``quality`` (``fast``: the bundle's first fold without TTA; ``full``: all folds with TTA) replaces
        ``folds``/``tta`` when given. ``overrides`` are ``KEY=VALUE`` post-processing settings (``--set``).
        ``backend``: ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (the fastest installed on a CPU).
        """
        bundle = load_bundle(model if model is not None else default_bundle_path())
        if quality is not None:
            if quality not in QUALITY_PRESETS:
                raise ValueError(f"quality must be one of {', '.join(QUALITY_PRESETS)}, got {quality!r}")
            folds, tta = ([bundle.folds[0]], False) if quality == "fast" else (None, True)
        options = PredictOptions(device=device, folds=None if folds is None else list(folds), tta=tta,
                                 step_size=step_size, backend=backend)
        params = bundle.postprocessing
        if overrides:
            params = params.with_overrides(list(overrides))
        return cls(bundle=bundle, engine=Engine(bundle, options), params=params, raw=raw or RawOptions(),
                   quality=quality)

    def model_info(self) -> dict:
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "folds": list(self.engine.folds),
            "tta": bool(self.engine.options.tta),
            "device": str(self.engine.device),
            "backend": self.engine.backend,
        }

    def describe(self) -> str:
        """One line for logs: model, folds/TTA, device."""
        return (f"model {self.bundle.name} {self.bundle.version}, folds {list(self.engine.folds)}, "
                f"TTA {'on' if self.engine.options.tta else 'off'}, device {self.engine.device}")


@dataclass
class CaseResult:
    case_id: str
    outputs: dict[str, Path]
    stats: dict


def predict_case(files: CaseFiles, out_dir: str | os.PathLike, predictor: Predictor, *,
                 params: PostprocessParams | None = None, write_raw: bool = False, overlay: bool = False,
                 dicom_seg: bool = False, progress: Progress | None = None,
                 cancel: Callable[[], bool] | None = None, raw_only: bool = False) -> CaseResult:
    """Segment one case and write its outputs into ``out_dir``.

    ``params`` defaults to the predictor's resolved post-processing parameters. Raw inputs (DICOM, unregistered,
    with skull) are prepared by ``raw_input.prepare_case`` with ``predictor.raw``; when a brain mask was used it
    is written as ``<ID>-brain-mask.nii.gz``; ``dicom_seg`` writes ``<ID>-seg.dcm`` (T1CE given as DICOM).
    ``raw_only``: no post-processing; only the raw labels (``raw``) and stats of them (``postprocessing``
    null) are written, and, when the inputs were prepared (registered or brain-extracted), the T1 and T1CE as
    the network saw them on the T1CE grid (``t1_prepared``, ``t1ce_prepared``, float32) next to the brain mask:
    what a caller that post-processes the raw labels itself (the Slicer module's ``Session``) needs, since the
    input files are then on other grids or still hold the skull.
    The outputs are checked before the inference (``prepare_output_folder``). On any failure nothing of this case
    is left in ``out_dir``.
    """
    params = predictor.params if params is None else params
    report = progress or (lambda fraction, message: None)
    start = time.perf_counter()
    if dicom_seg and not Path(files.images["t1ce"]).is_dir():
        raise InputError(files.images["t1ce"], "--dicom-seg needs the T1CE as a DICOM series folder")
    prepare_output_folder(files, out_dir)
    prepared = prepare_case(files, predictor.raw, predictor.bundle, device=str(predictor.engine.device),
                            progress=lambda f, m: report(0.1 * f, m))
    case = prepared.case
    report(0.1, f"{case.case_id}: loaded")

    def engine_progress(fraction: float, message: str) -> None:
        report(0.1 + 0.82 * fraction, message)

    prediction = prepared.predict(predictor.engine, predictor.bundle.orientation, progress=engine_progress,
                                  cancel=cancel)
    if cancel is not None and cancel():
        raise Cancelled("cancelled")
    raw = prediction.labels
    t1, t1ce = case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")]
    final = raw if raw_only else postprocess(raw, t1, t1ce, case.geometry.spacing_zyx, params,
                                             mask=prepared.brain_mask)
    report(0.95, f"{case.case_id}: post-processed")

    paths = output_paths(case.case_id, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        if not raw_only:
            write_labels(final, case.geometry, paths["seg"])
            written.append(paths["seg"])
        if write_raw or raw_only:
            write_labels(raw, case.geometry, paths["raw"])
            written.append(paths["raw"])
        if overlay:
            write_overlay_png(case.images, final, case.geometry, paths["overlay"])
            written.append(paths["overlay"])
        if prepared.brain_mask is not None:
            write_labels(prepared.brain_mask.astype("uint8"), case.geometry, paths["brain_mask"])
            written.append(paths["brain_mask"])
        if raw_only and (prepared.raw or prepared.brain_mask is not None):
            for ch in ("t1", "t1ce"):
                write_image(case.images[CHANNELS.index(ch)].astype("float32"), case.geometry,
                            paths[f"{ch}_prepared"])
                written.append(paths[f"{ch}_prepared"])
        if dicom_seg:
            from .dicom_seg import write_dicom_seg
            write_dicom_seg(final, files.images["t1ce"], paths["dicom_seg"], model=predictor.model_info())
            written.append(paths["dicom_seg"])
        stats = stats_dict(case.case_id, final, case.geometry, model=predictor.model_info(),
                           postprocessing=None if raw_only else params.to_dict(), warnings=case.warnings)
        stats["input"] = prepared.info
        stats["inference"] = {"backend": predictor.engine.backend, "device": str(predictor.engine.device),
                              "network_seconds": prediction.info.get("seconds"),
                              "seconds": round(time.perf_counter() - start, 3)}
        write_json(stats, paths["stats"])  # last: marks the case finished
        written.append(paths["stats"])
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    report(1.0, f"{case.case_id}: done")
    return CaseResult(case.case_id, {k: p for k, p in paths.items() if p in written}, stats)


def session_from_raw_only(outputs: Mapping[str, str | os.PathLike], input_files: Sequence[str | os.PathLike],
                          params: PostprocessParams, case_id: str = "case"):
    """``(Session, (t1, t1ce))`` for the outputs of a ``raw_only`` run (``predict_case(..., raw_only=True)`` or
    ``pedtumorseg predict --raw-only``): its raw labels with the images the network saw. Inputs that were
    prepared (raw scans: registered, brain-extracted) come from the run's ``t1_prepared`` / ``t1ce_prepared``
    outputs with its brain mask; otherwise the input files (T1, T1CE, T2, FLAIR) are read again, as the run read
    them. The Slicer module post-processes every result this way."""
    from .io import case_from_files, load_case
    from .postprocess import Session

    if "raw" not in outputs:
        raise RuntimeError(f"the prediction process did not report its raw label file (got {sorted(outputs)})")
    mask = None
    if "t1_prepared" in outputs:
        t1_image = sitk.ReadImage(str(outputs["t1_prepared"]), sitk.sitkFloat32)
        geometry = Geometry.from_image(t1_image)
        t1 = sitk.GetArrayFromImage(t1_image)
        t1ce = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["t1ce_prepared"]), sitk.sitkFloat32))
        if "brain_mask" in outputs:
            mask = read_labels(outputs["brain_mask"], geometry) > 0
    else:
        case = load_case(case_from_files(*input_files, case_id=case_id))
        geometry = case.geometry
        t1, t1ce = case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")]
    raw = read_labels(outputs["raw"], geometry)
    return Session(raw, t1, t1ce, geometry.spacing_zyx, params, mask=mask), (t1, t1ce)


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def lines(self) -> list[str]:
        out = [f"{len(self.done)} segmented, {len(self.skipped)} already finished (skipped), "
               f"{len(self.failed)} failed"]
        out += [f"FAILED {case_id}: {message}" for case_id, message in self.failed]
        return out


def shard(items: Sequence, num_parts: int, part_id: int) -> list:
    """The ``part_id``-th of ``num_parts`` interleaved shares of ``items`` (stable for a sorted input)."""
    check_shard(num_parts, part_id)
    return list(items[part_id::num_parts])


def check_shard(num_parts: int, part_id: int) -> None:
    """``ValueError`` (a command-line mistake) unless ``0 <= part_id < num_parts``."""
    if num_parts < 1:
        raise ValueError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in [0, {num_parts - 1}] for --num-parts {num_parts}, got {part_id}")


def run_batch(input_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
              predictor: Predictor | Callable[[], Predictor] | None = None,
              model: str | os.PathLike | None = None, device: str = "auto", folds: Sequence[int] | None = None,
              tta: bool = True, step_size: float = 0.5, backend: str = "torch",
              params: PostprocessParams | None = None,
              num_parts: int = 1, part_id: int = 0, write_raw: bool = False, overlay: bool = False,
              dicom_seg: bool = False,
              progress: Callable[[int, int, str, str], None] | None = None) -> BatchSummary:
    """Segment every case under ``input_dir`` (each sub-folder holding a BraTS-named case or a DICOM study).

    ``predictor`` is the resolved run (:meth:`Predictor.load`) or a function that returns it (called only when
    the up-front checks passed and there is work to do); without one it is loaded from ``model``,
    ``device``, ``folds``, ``tta``, ``step_size`` when there is work to do.

    Finished cases are skipped (resume); one case's failure does not stop the others; every failure is listed in
    the summary. ``progress(index, total, case_id, status)`` is called after each case with status
    ``done``/``skipped``/``failed``.

    Refused up front with ``InputError``, before any inference: an input folder without any case folder, two
    case folders with the same case id (their outputs would overwrite each other), an unusable output folder or
    one that is a case folder.
    """
    check_shard(num_parts, part_id)
    problems: list = []
    found = find_cases(input_dir, problems=problems)
    found += find_dicom_studies(input_dir, {f.case_id for f in found} | {p.name for p, _ in problems}, problems)
    if not found and not problems:
        raise InputError(input_dir, "no case folders found (expected sub-folders with '<ID>-t1n', '-t1c', '-t2w', "
                                    "'-t2f' images, or legacy '<ID>_t1', '_t1ce', '_t2', '_flair')")
    by_id: dict[str, Path] = {}
    for f in found:  # case-insensitively: on macOS and Windows the output files would be the same
        other = by_id.setdefault(f.case_id.casefold(), f.images["t1ce"].parent)
        if other != f.images["t1ce"].parent:
            raise InputError(input_dir, f"case id {f.case_id} appears in two case folders ({other} and "
                                        f"{f.images['t1ce'].parent}); their outputs would overwrite each other")
    check_output_folder(output_dir)
    for f in found:
        check_outputs_spare_inputs(f, output_dir)
    # incomplete case folders are failures of their own case, sharded like the others
    entries = sorted([(f.case_id, f) for f in found] + [(folder.name, exc) for folder, exc in problems],
                     key=lambda entry: entry[0])
    cases = shard(entries, num_parts, part_id)
    summary = BatchSummary()
    todo = []
    for case_id, files in cases:
        if isinstance(files, Exception):
            summary.failed.append((case_id, str(files)))
            continue
        for p in output_paths(case_id, output_dir).values():
            remove_stale_temporaries(p)
        if is_finished(case_id, output_dir):
            summary.skipped.append(case_id)
        else:
            todo.append(files)
    if todo and predictor is None:
        predictor = Predictor.load(model, device=device, folds=folds, tta=tta, step_size=step_size,
                                   backend=backend)
    elif todo and callable(predictor) and not isinstance(predictor, Predictor):  # a loader: the model loads only after the checks above
        predictor = predictor()
    total = len(cases)
    index = 0
    for status, case_ids in (("failed", [c for c, _ in summary.failed]), ("skipped", summary.skipped)):
        for case_id in case_ids:
            index += 1
            if progress:
                progress(index, total, case_id, status)
    for files in todo:
        index += 1
        try:
            predict_case(files, output_dir, predictor, params=params, write_raw=write_raw, overlay=overlay,
                         dicom_seg=dicom_seg)
            summary.done.append(files.case_id)
            status = "done"
        except Cancelled:
            raise
        except Exception as exc:  # e.g. a MemoryError on one large case: that case fails, the others go on
            summary.failed.append((files.case_id, str(exc) or type(exc).__name__))
            status = "failed"
        if progress:
            progress(index, total, files.case_id, status)
    return summary


__all__ = ["Predictor", "RawOptions", "QUALITY_PRESETS", "CaseResult", "BatchSummary", "predict_case", "run_batch",
           "output_paths", "is_finished", "shard", "check_shard", "check_outputs_spare_inputs", "prepare_output_folder"]
