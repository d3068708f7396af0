"""The module's end-to-end check, shared by ``PedTumorSegTest`` (in Slicer) and the slicer-core tests (outside it).

It does not depend on what the demo model finds: the module's result is compared with the command line's on the
same input files (the CLI post-processes with the same parameters the module's Session uses), every segment the
CLI produced must match voxel for voxel, a slider move on a label the CLI produced must change exactly what a
separate ``Session`` predicts, and the exports must equal the segments and leave no node behind.
MRML only (the scene and a ``ModuleLogic`` are passed in).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pedtumorseg.ui import assignment
from pedtumorseg.ui import results
from pedtumorseg.outputs import terminology
from pedtumorseg.conventions import CHANNELS, FOREGROUND_LABELS, LABEL_COLORS, LABEL_LONG_NAMES


def _check(condition, message: str) -> None:
    if not condition:
        raise AssertionError(message)


#: the self-test's phantom: a small one whose ground truth holds all four subregions (ET 360, NET 3953, CC 559,
#: ED 9809 voxels), not among the demo model's training (10000+) or held-out (20000+) seeds
SELF_TEST_SEED = 10


def load_phantom(loadVolume, folder, seed: int = SELF_TEST_SEED) -> dict:
    """Write the small phantom ``seed`` into ``folder`` and load its four volumes with ``loadVolume(path)``."""
    from pedtumorseg.conventions import BRATS_SUFFIXES
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom

    phantom = make_phantom(seed, "small")
    case = Path(write_phantom(phantom, folder))
    return {c: loadVolume(case / f"{phantom.case_id}-{BRATS_SUFFIXES[c]}.nii.gz") for c in CHANNELS}


def cli_labels(logic, volumes: dict, workdir, python: str, params, modelPath: str = "", timeout: float = 3600):
    """``(labels, geometry)`` of ``pedtumorseg predict``'s final label map (fold 0, no TTA, CPU, ``--set`` =
    ``params``) on the volumes as the module writes them (same storage node), read back with the core's reader."""
    from pedtumorseg.ui.background import BackgroundPrediction, build_predict_command, child_environment
    from pedtumorseg.conventions import BRATS_SUFFIXES
    from pedtumorseg.inputs.images import read_labels

    from .prediction_logic import MODULE_DIR

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files = {c: str(workdir / f"cli-{BRATS_SUFFIXES[c]}.nii.gz") for c in CHANNELS}
    for channel in CHANNELS:
        logic.prediction.writeVolume(volumes[channel], files[channel])
    bundle = logic.loadBundle(modelPath)
    sets = []
    for key, value in params.to_dict().items():
        sets += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    command = build_predict_command(python, files, workdir / "out", model=str(bundle.path), device="cpu",
                                    folds=list(bundle.folds)[:1], tta=False, case_id="cli", raw=False, extra=sets)
    run = BackgroundPrediction(command, workdir / "run", env=child_environment([MODULE_DIR]))
    run.start()
    try:
        run.wait(timeout=timeout)
        _check(run.returncode == 0 and run.result is not None, f"the CLI failed: {run.failure_message()}")
        import SimpleITK as sitk

        from pedtumorseg.geometry import Geometry

        path = run.result.outputs["seg"]
        return read_labels(path), Geometry.from_image(sitk.ReadImage(str(path)))
    finally:
        run.cleanup()


def check_phantom_run(logic, scene, volumes: dict, workdir, python: str, log=print, terminologies=None) -> dict:
    """Predict with the module logic (Fast, CPU), compare with the CLI, move a slider, export; raises
    AssertionError on the first difference. Returns a few facts for the caller's log."""
    from pedtumorseg.inputs.images import read_labels
    from pedtumorseg.postprocess import Session

    workdir = Path(workdir)
    _check(assignment.assign_inputs([v.GetName() for v in volumes.values()]) == {c: volumes[c].GetName() for c in CHANNELS},
           "the phantom's volume names are not assigned to their channels")

    log("Predicting with the module logic (demo bundle, CPU, Fast)")
    node = logic.predictSync(volumes, "", quality="Fast", device="CPU")
    sync = logic.sync
    session = logic.session
    segmentation = node.GetSegmentation()
    _check(segmentation.GetNumberOfSegments() == 4, "expected four segments")
    for label in FOREGROUND_LABELS:
        segment = segmentation.GetSegment(sync.segmentIds[label])
        _check(segment is not None and segment.GetName() == LABEL_LONG_NAMES[label], f"segment {label} name")
        _check(np.allclose(segment.GetColor(), LABEL_COLORS[label], atol=1e-6), f"segment {label} color")
        _check(segment.GetTerminology() == terminology.terminology_entry(label), f"segment {label} terminology")
        if terminologies is not None:
            import slicer

            entry = slicer.vtkSlicerTerminologyEntry()
            _check(terminologies.DeserializeTerminologyEntry(segment.GetTerminology(), entry),
                   f"segment {label}: Slicer cannot read its terminology")
            _check(entry.GetTypeObject().GetCodeValue() == terminology.TERMINOLOGY_TYPES[label][1],
                   f"segment {label}: terminology type code")

    log("Running the command line on the same files with the same post-processing")
    cli, cliGeometry = cli_labels(logic, volumes, workdir / "cli", python, session.params)
    _check(cli.shape == session.labels.shape, "the CLI's label map is not on the T1CE grid")
    _check(np.array_equal(cli, session.labels), "the module's labels differ from the command line's")
    produced = [label for label in FOREGROUND_LABELS if (cli == label).any()]
    _check(produced, "the command line produced no tumor label at all on the phantom")
    for label in FOREGROUND_LABELS:
        _check(np.array_equal(sync.segmentArray(label), (cli == label).astype(np.uint8)),
               f"segment {LABEL_LONG_NAMES[label]} differs from the command line's label {label}")

    nodes = scene.GetNumberOfNodes()
    logic.exportLabelmap(workdir / "module-seg.nii.gz")
    _check(scene.GetNumberOfNodes() == nodes, "the label map export left nodes in the scene")
    import SimpleITK as sitk

    from pedtumorseg.geometry import Geometry

    exported = sitk.ReadImage(str(workdir / "module-seg.nii.gz"))
    _check(exported.GetPixelID() == sitk.sitkUInt8 and np.array_equal(sitk.GetArrayFromImage(exported), cli),
           "the exported label map differs from the command line's -seg.nii.gz")
    geometry = Geometry.from_image(exported)
    _check(geometry.size == cliGeometry.size and np.allclose(geometry.spacing, cliGeometry.spacing, atol=1e-5)
           and np.allclose(geometry.origin, cliGeometry.origin, atol=1e-3)
           and np.allclose(geometry.direction, cliGeometry.direction, atol=1e-5),
           f"the exported label map's grid {geometry} differs from the command line's {cliGeometry}")

    log("Moving a minimum-volume slider on a label the command line produced")
    label = max(produced, key=lambda lab: int((cli == lab).sum()))
    key = {1: "min_volume_et", 2: "min_volume_net", 3: "min_volume_cc", 4: "min_volume_ed"}[label]
    volume = float((cli == label).sum()) * float(np.prod(session.spacing_zyx))
    changes = {"components_enabled": True, key: float(np.ceil(volume + 1.0))}
    shadow = Session(session.raw_labels, *logic.prediction.lastImages, session.spacing_zyx, session.params)
    expected = shadow.update(**changes)
    changed = logic.updatePostprocessing(changes)
    _check(changed == expected and label in changed, f"rewritten labels {changed}, expected {expected}")
    for other in FOREGROUND_LABELS:
        _check(np.array_equal(sync.segmentArray(other), (shadow.labels == other).astype(np.uint8)),
               f"segment {LABEL_LONG_NAMES[other]} after the slider move")

    log("Exporting")
    before = scene.GetNumberOfNodes()
    out = workdir / "export-seg.nii.gz"
    logic.exportLabelmap(out)
    exported = read_labels(out)
    _check(exported.dtype == np.uint8 and np.array_equal(exported, shadow.labels), "exported label map")
    logic.exportSegmentation(workdir / "export.seg.nrrd")
    _check((workdir / "export.seg.nrrd").is_file(), "no .seg.nrrd written")
    logic.exportCsv(workdir / "volumes.csv")
    _check((workdir / "volumes.csv").read_text(encoding="utf-8")
           == results.results_csv(results.results_table(shadow.labels, session.spacing_zyx)), "exported CSV")
    _check(scene.GetNumberOfNodes() == before, "an export left nodes in the scene")
    return {"labels_produced": produced, "slider_label": label}


def run_self_test(logic, scene, loadVolume, pipInstall, terminologies=None, log=print) -> dict:
    """The module's self-test inside Slicer (``PedTumorSegTest``): requirements, a phantom written to a temporary
    folder and loaded with ``loadVolume(path)``, then :func:`check_phantom_run` with Slicer's ``PythonSlicer``."""
    import tempfile

    from pedtumorseg.ui.background import find_python_slicer

    _check(logic.ensureRequirements(askConfirmation=False), "the module's requirements could not be installed")
    try:
        import nilearn  # noqa: F401  (the phantom's MNI152 anatomy; needed by this test only)
    except ModuleNotFoundError:
        pipInstall("nilearn")
    with tempfile.TemporaryDirectory() as tmp:
        log("Writing and loading a phantom case")
        volumes = load_phantom(loadVolume, tmp)
        return check_phantom_run(logic, scene, volumes, Path(tmp) / "work", find_python_slicer(), log=log,
                                 terminologies=terminologies)
