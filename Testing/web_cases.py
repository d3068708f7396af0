"""The web app's workflow (``pedtumorseg.web.workflow.CaseWorkflow``) on a real MRML scene (slicer-core), without a
browser; run by ``test_web.py`` in a process of its own (the file name does not start with ``test_``: importing
``slicer`` would load Slicer's C++ libraries into the suite's process).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
hd = pytest.importorskip("highdicom")

from conftest import write_dicom_study, write_tiny_bundle
from pedtumorseg.conventions import CHANNELS
from slicer_harness import SlicerScene


def _study(folder: Path) -> Path:
    """A small synthetic head (48x48x32 voxels of 2.5 mm: a brain-sized ellipsoid with a brighter lesion, no skull)
    as a DICOM study; the T1 on a grid of its own (3 mm, shifted), so that the run registers the scans as it
    registers raw scans."""
    rng = np.random.default_rng(7)
    z, y, x = np.meshgrid(*(2.5 * (np.arange(n) - n / 2) for n in (32, 48, 48)), indexing="ij")
    brain = (x / 50) ** 2 + (y / 55) ** 2 + (z / 35) ** 2 < 1
    lesion = (x - 12) ** 2 + (y + 8) ** 2 + z ** 2 < 14 ** 2
    images = {}
    for i, channel in enumerate(CHANNELS):
        array = brain * (300.0 + 60 * i + 40 * np.sin(x / 9) * np.cos(y / 11)) + lesion * (250.0 - 40 * i)
        array = np.clip(np.rint(array + rng.normal(0, 5, array.shape) * brain), 0, 32767).astype(np.int16)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.5, 2.5, 2.5))
        image.SetOrigin((-60.0, -60.0, -40.0))
        images[channel] = image
    t1 = images["t1"]
    images["t1"] = sitk.Resample(t1, [40, 40, 26], sitk.Transform(), sitk.sitkLinear, (-58.7, -58.7, -38.7),
                                 (3.0, 3.0, 3.0), t1.GetDirection(), 0, sitk.sitkInt16)
    return write_dicom_study(folder, images, patient="DOE^JANE")


def _erase_block(node, segmentId, reference, lo, hi):
    """Voxels ``lo..hi`` (i, j, k of the reference) erased from a segment as Slicer's segment editor logic does
    (the inverted modifier labelmap merged in minimum mode)."""
    import vtk

    image = slicer.vtkOrientedImageData()
    image.SetExtent(lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, node, segmentId, logic.MODE_MERGE_MIN)


def _run(workflow, timeout_s=300):
    workflow.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = workflow.poll()
        if outcome is not None:
            return outcome
        time.sleep(0.2)
    raise AssertionError("the run did not finish")


def test_a_dicom_study_opens_applies_and_exports_a_dicom_seg(tmp_path):
    """Long on purpose: open (series -> scene on their own grids, assigned, no patient name), Apply (the raw way:
    registration), a hand edit, export: the DICOM SEG references the T1CE series and holds the exported labels."""
    import pydicom
    from pedtumorseg.inputs.dicom import read_series, series_files
    from pedtumorseg.web.workflow import CaseWorkflow, grid_problem

    study = _study(tmp_path / "data" / "STUDY-1")
    harness = SlicerScene()
    workflow = CaseWorkflow(harness.scene, harness.volumes, str(write_tiny_bundle(tmp_path / "tiny.zip")), "CPU",
                            workRoot=tmp_path / "work")
    assignment = workflow.openCase(study)
    assert assignment == {"t1": "T1: T1 MPRAGE SAG", "t1ce": "T1CE: T1 MPRAGE AX POST GAD", "t2": "T2: T2 TSE AX",
                          "flair": "T2-FLAIR: T2 FLAIR COR"}
    names = [harness.scene.GetNthNode(i).GetName() or "" for i in range(harness.scene.GetNumberOfNodes())]
    assert not any("DOE" in n or "JANE" in n for n in names)
    for channel in CHANNELS:  # each volume on its series' own grid
        node = getattr(workflow.params, channel + "Volume")
        assert grid_problem(node, read_series(workflow.case.images[channel])) is None
    assert workflow.inputProblems() == []

    outcome, message = _run(workflow)
    assert outcome == "done", message
    assert {"t1_prepared", "t1ce_prepared"} <= set(workflow.logic.lastRun.outputs)  # the raw way: T1 registered
    sync = workflow.logic.sync
    block = (slice(12, 20), slice(18, 30), slice(18, 30))  # z, y, x around the lesion
    shown = sum(sync.segmentArray(label).astype(int) for label in sync.segmentIds)
    assert shown[block].any()  # the model labelled some of it: the edit below changes the export
    for segmentId in sync.segmentIds.values():  # erased from every segment by hand
        _erase_block(sync.segmentationNode, segmentId, workflow.params.t1ceVolume, (18, 18, 12), (29, 29, 19))
    written = workflow.export(tmp_path / "out")
    assert workflow.notWritten == {}
    assert set(written) == {"labelmap", "segmentation", "csv", "stats", "png", "dicom_seg"}
    assert Path(written["dicom_seg"]).name == "STUDY-1-seg.dcm"

    series = workflow.case.images["t1ce"]
    t1ce = read_series(series)
    labelmap = sitk.ReadImage(written["labelmap"])
    assert labelmap.GetSize() == t1ce.GetSize()  # the T1CE series' own grid
    np.testing.assert_allclose(labelmap.GetOrigin(), t1ce.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labelmap.GetSpacing(), t1ce.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(labelmap.GetDirection(), t1ce.GetDirection(), atol=1e-6)
    labels = sitk.GetArrayFromImage(labelmap)
    assert not labels[block].any() and labels.any()  # the hand edit is in the export

    seg = hd.seg.segread(written["dicom_seg"])
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series_files(series)]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    back = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in sources], combine_segments=True)
    assert np.array_equal(np.asarray(back, np.uint8), labels)
    assert json.loads(Path(written["stats"]).read_text())["case_id"] == "STUDY-1"

    # a T1CE series whose FrameOfReferenceUID an anonymizer removed: the rest is exported, the page hears why
    for f in series_files(series):
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    again = workflow.export(tmp_path / "again")
    assert "dicom_seg" not in again and set(again) == {"labelmap", "segmentation", "csv", "stats", "png"}
    assert workflow.notWritten == {"dicom_seg": "DICOM SEG not written: the T1CE series lacks FrameOfReferenceUID "
                                                "(some anonymizers remove it), which a DICOM SEG must reference"}
    assert not list((tmp_path / "again").glob("*.dcm"))

    caseFolder = workflow._caseFolder
    workflow.closeCase()
    assert not caseFolder.exists() and workflow.volumes == {}
