"""One case or a folder of cases from files to outputs: the path shared by the CLI and Slicer's headless batch.

files -> ``io.load_case`` -> ``engine.Engine.predict`` -> ``postprocess.postprocess`` -> ``<ID>-seg.nii.gz``,
``<ID>-stats.json`` (and ``<ID>-seg-raw.nii.gz``, ``<ID>-overlay.png`` on request).

A case counts as finished when its stats file exists: it is written last, so a batch that stopped half-way
resumes at the first unfinished case. If anything fails, the files already written for that case are removed
(no partial output).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .bundle import Bundle, default_bundle_path, load_bundle
from .conventions import CHANNELS
from .engine import Engine, PredictOptions
from .errors import Cancelled
from .io import CaseFiles, find_cases, load_case, write_labels
from .postprocess import PostprocessParams, postprocess
from .report import stats_dict, write_json, write_overlay_png

Progress = Callable[[float, str], None]


def output_paths(case_id: str, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Where the outputs of ``case_id`` go (DEVELOPING.md: CLI output files)."""
    out = Path(out_dir)
    return {
        "seg": out / f"{case_id}-seg.nii.gz",
        "raw": out / f"{case_id}-seg-raw.nii.gz",
        "stats": out / f"{case_id}-stats.json",
        "overlay": out / f"{case_id}-overlay.png",
    }


def is_finished(case_id: str, out_dir: str | os.PathLike) -> bool:
    paths = output_paths(case_id, out_dir)
    return paths["stats"].is_file() and paths["seg"].is_file()


@dataclass
class Predictor:
    """A loaded bundle and its engine, ready for many cases."""

    bundle: Bundle
    engine: Engine

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, device: str = "auto",
             folds: Sequence[int] | None = None, tta: bool = True, step_size: float = 0.5,
             backend: str = "torch") -> "Predictor":
        bundle = load_bundle(model if model is not None else default_bundle_path())
        options = PredictOptions(device=device, folds=None if folds is None else list(folds), tta=tta,
                                 step_size=step_size, backend=backend)
        return cls(bundle=bundle, engine=Engine(bundle, options))

    def model_info(self) -> dict:
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "folds": list(self.engine.folds),
            "tta": bool(self.engine.options.tta),
            "device": str(self.engine.device),
            "backend": self.engine.backend,
        }


@dataclass
class CaseResult:
    case_id: str
    outputs: dict[str, Path]
    stats: dict


def predict_case(files: CaseFiles, out_dir: str | os.PathLike, predictor: Predictor, *,
                 params: PostprocessParams | None = None, write_raw: bool = False, overlay: bool = False,
                 progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> CaseResult:
    """Segment one case and write its outputs into ``out_dir``.

    ``params`` defaults to the bundle's post-processing defaults. On any failure nothing of this case is left
    in ``out_dir``.
    """
    params = predictor.bundle.postprocessing if params is None else params
    report = progress or (lambda fraction, message: None)
    start = time.perf_counter()
    case = load_case(files)
    report(0.0, f"{case.case_id}: loaded")

    def engine_progress(fraction: float, message: str) -> None:
        report(0.02 + 0.9 * fraction, message)

    prediction = predictor.engine.predict(case.images, case.geometry.spacing_zyx, progress=engine_progress,
                                          cancel=cancel)
    if cancel is not None and cancel():
        raise Cancelled("cancelled")
    raw = prediction.labels
    t1, t1ce = case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")]
    final = postprocess(raw, t1, t1ce, case.geometry.spacing_zyx, params)
    report(0.95, f"{case.case_id}: post-processed")

    paths = output_paths(case.case_id, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        write_labels(final, case.geometry, paths["seg"])
        written.append(paths["seg"])
        if write_raw:
            write_labels(raw, case.geometry, paths["raw"])
            written.append(paths["raw"])
        if overlay:
            write_overlay_png(case.images, final, case.geometry, paths["overlay"])
            written.append(paths["overlay"])
        stats = stats_dict(case.case_id, final, case.geometry, model=predictor.model_info(),
                           postprocessing=params.to_dict(), warnings=case.warnings)
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
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in [0, {num_parts - 1}] for --num-parts {num_parts}, got {part_id}")
    return list(items[part_id::num_parts])


def run_batch(input_dir: str | os.PathLike, output_dir: str | os.PathLike, *, predictor: Predictor | None = None,
              model: str | os.PathLike | None = None, device: str = "auto", folds: Sequence[int] | None = None,
              tta: bool = True, step_size: float = 0.5, backend: str = "torch",
              params: PostprocessParams | None = None,
              num_parts: int = 1, part_id: int = 0, write_raw: bool = False, overlay: bool = False,
              progress: Callable[[int, int, str, str], None] | None = None) -> BatchSummary:
    """Segment every case under ``input_dir`` (each sub-folder holding a BraTS-named case).

    Finished cases are skipped (resume); one case's failure does not stop the others; every failure is listed in
    the summary. ``progress(index, total, case_id, status)`` is called after each case with status
    ``done``/``skipped``/``failed``.
    """
    problems: list = []
    found = find_cases(input_dir, problems=problems)
    # incomplete case folders are failures of their own case, sharded like the others
    entries = sorted([(f.case_id, f) for f in found] + [(folder.name, exc) for folder, exc in problems],
                     key=lambda entry: entry[0])
    cases = shard(entries, num_parts, part_id)
    summary = BatchSummary()
    todo = []
    for case_id, files in cases:
        if isinstance(files, Exception):
            summary.failed.append((case_id, str(files)))
        elif is_finished(case_id, output_dir):
            summary.skipped.append(case_id)
        else:
            todo.append(files)
    if todo and predictor is None:
        predictor = Predictor.load(model, device=device, folds=folds, tta=tta, step_size=step_size,
                                   backend=backend)
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
            predict_case(files, output_dir, predictor, params=params, write_raw=write_raw, overlay=overlay)
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


__all__ = ["Predictor", "CaseResult", "BatchSummary", "predict_case", "run_batch", "output_paths", "is_finished",
           "shard"]
