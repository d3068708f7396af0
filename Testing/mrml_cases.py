"""Cases on a real Slicer MRML scene (slicer-core); run by ``test_slicer_mrml.py`` in a process of its own.

Not collected by the main suite (the file name does not start with ``test_``): importing ``slicer`` here would load
Slicer's C++ libraries into the suite's process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
slicerio = pytest.importorskip("slicerio")

from slicer_harness import SlicerScene, moduleLogic  # noqa: E402

from pedtumorseg.ui import controls, results
from pedtumorseg.outputs import terminology  # noqa: E402
from pedtumorseg.conventions import BRATS_SUFFIXES, CHANNELS, LABEL_COLORS, LABEL_LONG_NAMES  # noqa: E402
from pedtumorseg.postprocess import PostprocessParams, Session  # noqa: E402

#: an oblique direction whose first two axes are flipped against LPS, as in a file stored in RAS orientation
OBLIQUE_DIRECTION = tuple((np.array(sitk.VersorTransform((0.3, -0.2, 0.1), 0.5).GetMatrix()).reshape(3, 3)
                           @ np.diag([-1.0, -1.0, 1.0])).ravel())
ANISOTROPIC_SPACING = (0.9, 1.2, 2.0)


def _ids(scene):
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


def _synthetic(tmp_path, name="CASE-t1c", direction=OBLIQUE_DIRECTION, spacing=ANISOTROPIC_SPACING):
    """A reference volume file and a Session of hand-placed labels on its grid (z, y, x) = (30, 40, 50)."""
    raw = np.zeros((30, 40, 50), np.uint8)
    raw[3:6, 3:6, 3:6] = 1  # ET 27 voxels
    raw[3:6, 14:18, 3:6] = 2  # NET 36
    raw[14:16, 3:5, 14:16] = 3  # CC 8
    raw[14:18, 14:18, 14:18] = 4  # ED 64
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(50, 60, raw.shape).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(direction)
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(image, str(path))
    t1 = sitk.GetArrayFromImage(image)
    params = PostprocessParams(ratio_enabled=False, min_volume_et=0.0, min_volume_cc=0.0)
    return path, raw, Session(raw, t1, t1, tuple(reversed(spacing)), params)


@pytest.fixture
def harness():
    return SlicerScene()


def test_segments_geometry_terminology_and_no_leftover_nodes(harness, tmp_path):
    path, raw, session = _synthetic(tmp_path)
    reference = harness.loadVolume(path)
    logic = moduleLogic(harness, tmp_path / "tmp")
    before = set(_ids(harness.scene))
    node = logic.setResult(session, reference)
    added = set(_ids(harness.scene)) - before
    assert added == {node.GetID(), node.GetDisplayNode().GetID()}  # the node and its display node only
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(4)] == ["label_1", "label_2", "label_3", "label_4"]
    for label in (1, 2, 3, 4):
        segment = segmentation.GetSegment(f"label_{label}")
        assert segment.GetName() == LABEL_LONG_NAMES[label]
        np.testing.assert_allclose(segment.GetColor(), LABEL_COLORS[label], atol=1e-6)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert harness.terminologies.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTerminologyContextName() == terminology.TERMINOLOGY_CONTEXT
        assert entry.GetCategoryObject().GetCodeValue() == "49755003"
        assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue(),
                entry.GetTypeObject().GetCodeMeaning()) == terminology.TERMINOLOGY_TYPES[label]
        assert entry.GetRegionObject().GetCodeMeaning() == "Brain"
        assert harness.terminologies.SerializeTerminologyEntry(entry) == terminology.terminology_entry(label)
        np.testing.assert_array_equal(logic.sync.segmentArray(label), raw == label)
    # beside the T1CE in the subject hierarchy
    sh = harness.scene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == sh.GetItemParent(sh.GetItemByDataNode(reference))

    # exports: geometry of the T1CE, labels 1-4 as uint8, the .seg.nrrd read back with slicerio, the CSV
    nodesBefore = _ids(harness.scene)
    out = tmp_path / "out"
    logic.exportLabelmap(out / "case-seg.nii.gz")
    exported = sitk.ReadImage(str(out / "case-seg.nii.gz"))
    t1ce = sitk.ReadImage(str(path))
    assert exported.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(exported), raw)
    np.testing.assert_allclose(exported.GetDirection(), t1ce.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(exported.GetOrigin(), t1ce.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(exported.GetSpacing(), t1ce.GetSpacing(), atol=1e-6)
    logic.exportSegmentation(out / "case.seg.nrrd")
    seg = slicerio.read_segmentation(str(out / "case.seg.nrrd"))
    byId = {s["id"]: s for s in seg["segments"]}
    assert sorted(byId) == ["label_1", "label_2", "label_3", "label_4"]
    voxels = np.asarray(seg["voxels"])
    for label in (1, 2, 3, 4):
        s = byId[f"label_{label}"]
        assert s["name"] == LABEL_LONG_NAMES[label]
        assert tuple(s["terminology"]["type"]) == terminology.TERMINOLOGY_TYPES[label]
        # slicerio gives x, y, z voxel order on the segmentation's own extent; this one is the T1CE's
        layer = voxels if voxels.ndim == 3 else voxels[s.get("layer", 0)]
        mask = (layer == s["labelValue"]).transpose(2, 1, 0)
        offset = [int(o) for o in seg.get("referenceImageExtentOffset", [0, 0, 0])]
        full = np.zeros(raw.shape, bool)
        full[offset[2]:offset[2] + mask.shape[0], offset[1]:offset[1] + mask.shape[1],
             offset[0]:offset[0] + mask.shape[2]] = mask
        np.testing.assert_array_equal(full, raw == label)
    logic.exportCsv(out / "volumes.csv")
    assert (out / "volumes.csv").read_text() == results.results_csv(results.results_table(raw, session.spacing_zyx))
    assert _ids(harness.scene) == nodesBefore  # no node left behind, not even the export's color table
    assert sorted(p.name for p in out.iterdir()) == ["case-seg.nii.gz", "case.seg.nrrd", "volumes.csv"]
    # the segmentation node's own storage (none yet) is not changed by the export
    assert node.GetStorageNode() is None


def _paint(node, segmentId, ijk, reference, erase=False):
    """One voxel painted (or erased) as Slicer's segment editor logic does: a modifier labelmap merged into the
    segment in mask mode (erase: the inverted modifier in minimum mode)."""
    import vtk

    image = slicer.vtkOrientedImageData()
    i, j, k = ijk
    image.SetExtent(i, i, j, j, k, k)
    m = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(m)
    image.SetImageToWorldMatrix(m)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0 if erase else 1)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(image, node, segmentId, logic.MODE_MERGE_MIN if erase else logic.MODE_MERGE_MASK)


def test_slider_moves_hand_edits_and_deleted_segments(harness, tmp_path):
    path, raw, session = _synthetic(tmp_path)
    reference = harness.loadVolume(path)
    logic = moduleLogic(harness, tmp_path / "tmp")
    node = logic.setResult(session, reference)
    sync = logic.sync
    t1 = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # the session's T1 and T1CE (the same image)
    shadow = Session(raw, t1, t1, session.spacing_zyx, session.params)
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()

    writes = sync.writes  # segment writes so far (the public count of what a move cost)

    def stamp():
        segment = node.GetSegmentation().GetSegment(sync.segmentIds[1])
        return segment.GetRepresentation(binary).GetMTime()

    # a move writes only the segments the Session names; the others keep their voxels
    expected = shadow.update(min_volume_et=100.0)
    assert logic.updatePostprocessing({"min_volume_et": 100.0}) == expected == {1}
    assert sync.writes == writes + 1  # one segment written: ET
    for label in (1, 2, 3, 4):
        np.testing.assert_array_equal(sync.segmentArray(label), (raw == label) & (label != 1))
    after = stamp()
    assert logic.updatePostprocessing({"min_volume_et": 100.0}) == set()  # no change, no write
    assert sync.writes == writes + 1 and stamp() == after
    assert logic.updatePostprocessing({"min_volume_et": 0.0}) == {1}
    np.testing.assert_array_equal(sync.segmentArray(1), raw == 1)
    # untouched since the module's writes: recognised by modified time, without reading the labelmaps
    realCrop = sync.segmentCrop
    sync.segmentCrop = lambda label: pytest.fail("read a segment")
    assert sync.editedLabels({1, 2, 3, 4}) == set()
    sync.segmentCrop = realCrop

    # layers merged by Slicer (as after loading a .seg.nrrd) are not hand edits, and writes still work
    node.GetSegmentation().CollapseBinaryLabelmaps(False)
    assert sync.editedLabels({1, 2, 3, 4}) == set()
    assert logic.updatePostprocessing({"min_volume_net": 100.0}) == {2}
    for label in (1, 2, 3, 4):
        np.testing.assert_array_equal(sync.segmentArray(label), (raw == label) & (label != 2))
    assert logic.updatePostprocessing({"min_volume_net": 0.0}) == {2}

    # a painted voxel (outside the tumor box) is an edit: refused -> kept and protected, table shows it
    nodesBefore = _ids(harness.scene)
    _paint(node, sync.segmentIds[4], (45, 35, 25), reference)
    asked = []
    assert logic.updatePostprocessing({"min_volume_ed": 1000.0},
                                      confirmOverwrite=lambda labels: asked.append(set(labels)) or False) == set()
    assert asked == [{4}] and 4 in sync.protected
    edited = sync.segmentArray(4)
    assert edited.sum() == 65 and edited[25, 35, 45] == 1
    rows = {row.region: row for row in logic.resultsRows()}
    assert rows["ED"].volume_ml == pytest.approx(65 * float(np.prod(ANISOTROPIC_SPACING)) / 1000.0)
    assert logic.updatePostprocessing({"min_volume_ed": 0.0},
                                      confirmOverwrite=lambda labels: pytest.fail("asked again")) == set()
    # an erased voxel inside the box, accepted overwrite -> rewritten from the session
    _paint(node, sync.segmentIds[2], (3, 14, 3), reference, erase=True)
    assert sync.editedLabels({2}) == {2}
    assert logic.updatePostprocessing({"min_volume_net": 100.0}, confirmOverwrite=lambda labels: True) == {2}
    assert not sync.segmentArray(2).any()
    # a deleted segment counts as edited; overwritten, it comes back with its id, name, color and terminology
    node.GetSegmentation().RemoveSegment(sync.segmentIds[3])
    assert logic.updatePostprocessing({"min_volume_cc": 100.0}, confirmOverwrite=lambda labels: True) == {3}
    segment = node.GetSegmentation().GetSegment(sync.segmentIds[3])
    assert sync.segmentIds[3] == "label_3" and segment.GetName() == "Cystic component"
    assert segment.GetTerminology() == terminology.terminology_entry(3)
    assert logic.updatePostprocessing({"min_volume_cc": 0.0}) == {3}
    np.testing.assert_array_equal(sync.segmentArray(3), raw == 3)
    assert _ids(harness.scene) == nodesBefore

    # ratio_low dragged above ratio_high is clamped, not an error
    logic.updatePostprocessing({"ratio_enabled": True, "ratio_low": 3.0})
    assert session.params.ratio_low == round(session.params.ratio_high - 0.01, 2) < session.params.ratio_high


def test_a_slider_move_goes_one_way_through_the_parameter_node(harness, tmp_path):
    """widget -> parameter node -> one clamp (written back to the node, as the slider then shows it) -> session ->
    the changed segments; the node update the clamp makes is not a second pass."""
    path, raw, session = _synthetic(tmp_path)
    logic = moduleLogic(harness, tmp_path / "tmp")
    logic.setResult(session, harness.loadVolume(path))
    sync = logic.sync
    p = type("ParameterNode", (), {name: getattr(session.params, name) for name in controls.PANEL_PARAMETERS})()
    assert logic.applyControls(p) == set()  # the node holds the session's values: nothing to do
    writes = sync.writes
    p.min_volume_et = 100.0  # a slider bound to the node moved
    assert logic.applyControls(p) == {1} and sync.writes == writes + 1
    assert session.params.min_volume_et == 100.0
    assert logic.applyControls(p) == set() and sync.writes == writes + 1  # the same values again: no pass
    p.ratio_enabled, p.ratio_low = True, session.params.ratio_high + 1.0  # dragged past ratio_high
    logic.applyControls(p)
    assert p.ratio_low == session.params.ratio_low == round(session.params.ratio_high - 0.01, 2)
    after = sync.writes
    assert logic.applyControls(p) == set() and sync.writes == after  # the clamp's own node update: no second pass


def _write_oblique_phantom(tmp_path):
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom

    folder = Path(write_phantom(make_phantom(3, "small"), tmp_path / "oblique"))
    for file in folder.glob("*.nii.gz"):  # the same voxels, stored oblique, flipped and anisotropic
        image = sitk.ReadImage(str(file))
        image.SetDirection(OBLIQUE_DIRECTION)
        image.SetSpacing(ANISOTROPIC_SPACING)
        sitk.WriteImage(image, str(file))
    case_id = folder.name
    return {c: folder / f"{case_id}-{BRATS_SUFFIXES[c]}.nii.gz" for c in CHANNELS}


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique-anisotropic-ras"])
def test_apply_with_the_demo_bundle_equals_the_cli(harness, tmp_path, oblique):
    """Load the four volumes, Apply (one-way: the process returns raw labels, the Session post-processes), compare
    every segment with the CLI's -seg.nii.gz, move a slider, export: the module's self-test on slicer-core."""
    pytest.importorskip("torch")
    pytest.importorskip("nilearn")
    from PedTumorSegLib.self_test import check_phantom_run, load_phantom

    if oblique:
        files = _write_oblique_phantom(tmp_path)
        volumes = {c: harness.loadVolume(files[c]) for c in CHANNELS}
    else:  # as the self-test in Slicer loads it
        volumes = load_phantom(harness.loadVolume, tmp_path / "plain")
    logic = moduleLogic(harness, tmp_path / "tmp")
    paramNode = type("P", (), {f"{c}Volume": None for c in CHANNELS})()
    logic.autoAssignInputs(paramNode, onlyEmpty=True)
    assert logic.selectedInputs(paramNode) == volumes
    nodesBefore = set(_ids(harness.scene))
    facts = check_phantom_run(logic, harness.scene, volumes, tmp_path / "work", sys.executable, log=lambda m: None,
                              terminologies=harness.terminologies)
    assert facts["labels_produced"]
    node = logic.segmentationNode
    assert set(_ids(harness.scene)) - nodesBefore == {node.GetID(), node.GetDisplayNode().GetID()}
    assert not any((tmp_path / "tmp").iterdir())  # the run's temporary folder is gone
    # geometry of the segmentation = the T1CE's
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volumes["t1ce"]
    np.testing.assert_array_equal(logic.sync.shape, tuple(reversed(volumes["t1ce"].GetImageData().GetDimensions())))


def test_parameter_decisions_on_the_scene(harness, tmp_path):
    """autoAssignInputs (label maps never; onlyEmpty keeps choices), inputProblems, currentParams (clamped),
    resetPostprocessingControls / needsDefaultsReset with the demo bundle."""
    logic = moduleLogic(harness, tmp_path / "tmp")
    paths = {}
    for suffix in ("t1n", "t1c", "t2w", "t2f", "seg"):
        image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
        paths[suffix] = tmp_path / f"case-{suffix}.nii.gz"
        sitk.WriteImage(image, str(paths[suffix]))
    nodes = {s: harness.loadVolume(paths[s], f"case-{s}") for s in ("t1n", "t1c", "t2w", "t2f")}
    labelmap = harness.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "case-t1c-label")
    fields = [f"{c}Volume" for c in CHANNELS] + ["modelPath", "postprocessDefaultsOf"] + list(controls.PANEL_PARAMETERS)
    p = type("ParameterNode", (), dict.fromkeys(fields))()
    p.modelPath, p.postprocessDefaultsOf = "", ""
    assert logic.inputProblems(p)
    p.t2Volume = nodes["t1n"]  # the user's choice for T2 is kept by onlyEmpty
    logic.autoAssignInputs(p, onlyEmpty=True)
    assert (p.t1Volume, p.t1ceVolume, p.t2Volume, p.flairVolume) == (None, nodes["t1c"], nodes["t1n"], nodes["t2f"])
    logic.autoAssignInputs(p, onlyEmpty=False)
    assert logic.selectedInputs(p) == {"t1": nodes["t1n"], "t1ce": nodes["t1c"], "t2": nodes["t2w"],
                                       "flair": nodes["t2f"]}
    assert labelmap not in logic.selectedInputs(p).values() and logic.inputProblems(p) == []
    bundle = logic.loadBundle("")
    # the panel's model line marks the shipped demonstration model as such
    first, second = logic.modelDescription(bundle).split("\n")
    assert first == f"{bundle.name} {bundle.version} (1 fold(s))"
    assert second.startswith("DEMONSTRATION ONLY:") and "not for patients" in second
    assert logic.needsDefaultsReset(p, bundle)
    logic.resetPostprocessingControls(p, bundle)
    assert not logic.needsDefaultsReset(p, bundle)
    assert all(getattr(p, name) == getattr(bundle.postprocessing, name) for name in controls.PANEL_PARAMETERS)
    p.ratio_low = p.ratio_high + 0.5  # the sliders can cross; the parameters cannot
    params = logic.currentParams(p)
    assert params.ratio_low == round(params.ratio_high - 0.01, 2) and params.normalization == \
        bundle.postprocessing.normalization


def test_a_model_without_cc_gets_three_segments_and_exports_label_values(harness, tmp_path):
    """A bundle listing labels 1, 2, 4 (an imported model without a cystic label): one segment per label it has,
    and the exported label map keeps the values (ED stays 4, not the third segment's 3)."""
    path, raw, _ = _synthetic(tmp_path)
    raw[raw == 3] = 0
    t1 = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    session = Session(raw, t1, t1, tuple(reversed(ANISOTROPIC_SPACING)),
                      PostprocessParams(ratio_enabled=False, min_volume_et=0.0, min_volume_cc=0.0))
    reference = harness.loadVolume(path)
    logic = moduleLogic(harness, tmp_path / "tmp")
    node = logic.setResult(session, reference, labels=(1, 2, 4))
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == [
        "label_1", "label_2", "label_4"]
    logic.exportLabelmap(tmp_path / "out" / "case-seg.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case-seg.nii.gz"))),
                                  raw)
