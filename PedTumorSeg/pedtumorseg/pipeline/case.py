"""One case from files to outputs (``predict_case``): the stages in their order.

files -> ``inputs.prepare_case`` -> ``inference.Engine.predict`` -> ``inference.export.to_case_grid`` ->
``postprocess.postprocess`` -> ``<ID>-seg.nii.gz``, ``<ID>-stats.json`` (and ``<ID>-seg-raw.nii.gz``,
``<ID>-overlay.png``, ``<ID>-seg.dcm`` on request, ``<ID>-brain-mask.nii.gz`` when a brain mask was used).

Before the inference the outputs are checked once (``outputs.paths.prepare_outputs``: a writable folder that holds
none of the case's inputs, a case id that stays inside it, leftovers of killed runs removed) and so is what a
requested DICOM SEG needs. Every file is written atomically and read back before it counts; the stats file is
written last and marks the case finished. If anything fails, the files already written for that case are removed
(no partial output).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.errors import Cancelled, UsageError
from pedtumorseg.files import write_json
from pedtumorseg.inference.export import needs_probabilities, to_case_grid
from pedtumorseg.inputs.cases import CaseFiles
from pedtumorseg.inputs.prepare import PreparedCase, prepare_case
from pedtumorseg.outputs.images import write_image, write_labels
from pedtumorseg.outputs.paths import CaseOutputs, prepare_outputs
from pedtumorseg.outputs.stats import stats_dict
from pedtumorseg.pipeline.predictor import Predictor
from pedtumorseg.postprocess import PostprocessParams, postprocess
from pedtumorseg.progress import ProgressCallback, no_progress, scaled

log = logging.getLogger(__name__)


@dataclass
class CaseResult:
    case_id: str
    outputs: dict[str, Path]  # output kind -> file written
    stats: dict
    not_written: dict[str, str] = field(default_factory=dict)  # requested output kind -> why it could not be made


@dataclass(frozen=True)
class Requested:
    """Which optional outputs a run asks for (``--raw``, ``--overlay``, ``--dicom-seg``, ``--raw-only``)."""

    write_raw: bool = False
    overlay: bool = False
    dicom_seg: bool = False
    raw_only: bool = False


def predict_case(files: CaseFiles, out_dir: str | os.PathLike, predictor: Predictor, *,
                 params: PostprocessParams | None = None, write_raw: bool = False, overlay: bool = False,
                 dicom_seg: bool = False, progress: ProgressCallback | None = None,
                 cancel: Callable[[], bool] | None = None, raw_only: bool = False,
                 outputs: CaseOutputs | None = None, warn: Callable[[str], None] | None = None) -> CaseResult:
    """Segment one case and write its outputs into ``out_dir``.

    ``params`` defaults to the predictor's resolved post-processing parameters. Raw inputs (DICOM, unregistered,
    with skull) are prepared with ``predictor.raw``; when a brain mask was used it is written as
    ``<ID>-brain-mask.nii.gz``; ``dicom_seg`` writes ``<ID>-seg.dcm`` (T1CE given as DICOM): what it needs is
    checked before the inference, and when the series lacks it the NIfTI outputs are still written and the reason
    is in ``CaseResult.not_written`` (and the stats' warnings).
    ``raw_only``: no post-processing; only the raw labels (``raw``) and stats of them (``postprocessing`` null) are
    written, and, when the inputs were prepared (registered or brain-extracted), the T1 and T1CE as the network saw
    them on the T1CE grid (``t1_prepared``, ``t1ce_prepared``, float32) next to the brain mask: what a caller that
    post-processes the raw labels itself (the Slicer module's ``Session``) needs.
    ``outputs``: the case's outputs as ``prepare_outputs`` checked them (default: checked here). ``warn(message)``
    hears what the user should know at once (default: the log).
    """
    params = predictor.params if params is None else params
    report = progress or no_progress
    wanted = Requested(write_raw, overlay, dicom_seg, raw_only)
    start = time.perf_counter()
    warn = warn or (lambda message: log.warning("warning: %s", message))
    not_written = _check_dicom_seg(files, warn) if dicom_seg else {}
    if outputs is None:
        outputs = prepare_outputs(files, out_dir)
    prepared = prepare_case(files, predictor.raw, predictor.bundle, device=str(predictor.engine.device),
                            progress=scaled(report, 0.0, 0.1))
    case = prepared.case
    notice = predictor.bundle.demonstration_notice
    for message in prepared.info.get("consistency", {}).get("warnings", []) + ([notice] if notice else []):
        warn(message)  # before the inference: the user may stop it
    report(0.1, f"{case.case_id}: loaded")
    net = prepared.network
    prediction = predictor.engine.predict(net.images, net.geometry.spacing_zyx, progress=scaled(report, 0.1, 0.92),
                                          cancel=cancel, probabilities=True if needs_probabilities(prepared) else None)
    to_case_grid(prediction, prepared)
    if cancel is not None and cancel():
        raise Cancelled("cancelled")
    raw = prediction.labels
    t1, t1ce = case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")]
    final = raw if raw_only else postprocess(raw, t1, t1ce, case.geometry.spacing_zyx, params,
                                             mask=prepared.brain_mask)
    report(0.95, f"{case.case_id}: post-processed")
    stats = stats_dict(case.case_id, final, case.geometry, model=predictor.model_info(),
                       postprocessing=None if raw_only else params.to_dict(),
                       warnings=case.warnings + list(not_written.values()) + ([notice] if notice else []))
    stats["input"] = prepared.info
    stats["inference"] = {"backend": predictor.engine.backend, "device": str(predictor.engine.device),
                          "network_seconds": prediction.info.get("seconds")}
    written = _write_outputs(prepared, raw, final, files, outputs, wanted, not_written, predictor, stats, start)
    report(1.0, f"{case.case_id}: done")
    return CaseResult(case.case_id, written, stats, not_written)


def _check_dicom_seg(files: CaseFiles, warn: Callable[[str], None]) -> dict[str, str]:
    """``{}`` when a DICOM SEG can be written for this case, else ``{"dicom_seg": why not}`` (``warn``-ed now,
    before the inference). A T1CE that is not a DICOM series is a command-line mistake."""
    from pedtumorseg.outputs.dicom_seg import dicom_seg_problem

    t1ce = Path(files.images["t1ce"])
    if not t1ce.is_dir():
        raise UsageError(t1ce, "--dicom-seg needs the T1CE as a DICOM series folder")
    problem = dicom_seg_problem(t1ce)
    if problem is None:
        return {}
    message = f"{t1ce}: DICOM SEG not written: {problem} (the NIfTI outputs are written)"
    warn(message)
    return {"dicom_seg": message}


def _write_outputs(prepared: PreparedCase, raw, final, files: CaseFiles, outputs: CaseOutputs, wanted: Requested,
                   not_written: dict, predictor: Predictor, stats: dict, start: float) -> dict[str, Path]:
    """Write every output of the case, the stats last; on any failure remove what was written and re-raise."""
    case = prepared.case
    outputs.folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def keep(kind: str, path: Path) -> None:
        written[kind] = path

    try:
        if not wanted.raw_only:
            keep("seg", write_labels(final, case.geometry, outputs.seg))
        if wanted.write_raw or wanted.raw_only:
            keep("raw", write_labels(raw, case.geometry, outputs.raw))
        if wanted.overlay:
            from pedtumorseg.outputs.overlay import write_overlay_png
            keep("overlay", write_overlay_png(case.images, final, case.geometry, outputs.overlay, case_id=case.case_id,
                                              model=f"{predictor.bundle.name} {predictor.bundle.version}",
                                              notice=predictor.bundle.demonstration_notice))
        if prepared.brain_mask is not None:
            keep("brain_mask", write_labels(prepared.brain_mask.astype("uint8"), case.geometry, outputs.brain_mask))
        if wanted.raw_only and (prepared.raw or prepared.brain_mask is not None):
            for ch, path in (("t1", outputs.t1_prepared), ("t1ce", outputs.t1ce_prepared)):
                keep(f"{ch}_prepared", write_image(case.images[CHANNELS.index(ch)].astype("float32"), case.geometry,
                                                   path))
        if wanted.dicom_seg and "dicom_seg" not in not_written:
            from pedtumorseg.outputs.dicom_seg import write_dicom_seg
            keep("dicom_seg", write_dicom_seg(final, files.images["t1ce"], outputs.dicom_seg,
                                              model=predictor.model_info()))
        stats["inference"]["seconds"] = round(time.perf_counter() - start, 3)
        keep("stats", write_json(stats, outputs.stats))  # last: marks the case finished
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return {kind: path for kind, path in outputs.paths().items() if kind in written}
