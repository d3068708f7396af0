"""Keep a segmentation node in sync with a post-processing :class:`pedtumorseg.postprocess.Session`.

MRML only: Slicer's MRML and segmentation classes, vtk, numpy and the core package ``pedtumorseg`` (no Qt, no
``slicer.util``, no ``slicer.mrmlScene``: the scene is passed in), so that it runs on ``slicer-core`` from PyPI as
it runs in Slicer.

Writes touch only what changed: a segment is written as the tight box of its voxels (the Session's labels are 0
outside the raw tumor's box whatever the parameters), through ``SetBinaryLabelmapToSegment`` in replace mode.
Hand edits are found without reading whole volumes: a segment whose labelmap object and modified time are the
ones the last write left is unchanged; otherwise its labelmap (the segment's own extent) is cropped to its voxels
and compared with what was written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vtk
from vtk.util import numpy_support

import slicer
from pedtumorseg.ui import results
from pedtumorseg.arrays import Crop, crop
from pedtumorseg.outputs import terminology
from pedtumorseg.conventions import FOREGROUND_LABELS, LABEL_COLORS, LABEL_LONG_NAMES
from pedtumorseg.files import atomic_output

#: name prefix of the temporary nodes an export adds (all removed before the export returns)
EXPORT_PREFIX = "__PedTumorSegExport__"


def _binaryName() -> str:
    return slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()


def _nodeIds(scene) -> set:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


class RemoveAddedNodes:
    """Context manager: every node added to ``scene`` inside the block is removed at its end (also on errors).

    Slicer's exports add helper nodes of their own (``ExportSegmentsToLabelmapNode`` adds a color table named after
    the segmentation); removing by name would miss them, so the scene is compared before and after.
    """

    def __init__(self, scene):
        self.scene = scene

    def __enter__(self):
        self._before = _nodeIds(self.scene)
        return self

    def __exit__(self, *exc):
        # remove dependents first: display and storage nodes go with their data node, so skip IDs already gone
        for nodeId in sorted(_nodeIds(self.scene) - self._before, reverse=True):
            node = self.scene.GetNodeByID(nodeId)
            if node is not None:
                self.scene.RemoveNode(node)
        return False


@dataclass(frozen=True)
class _Written:
    """What the module last wrote into a segment: its voxels, and the labelmap object and modified time after it."""

    voxels: Crop | None
    labelmap: object
    mtime: int | None


class SegmentationSync:
    """Four segments (ET, NET, CC, ED) of ``segmentationNode`` showing ``session.labels`` on ``referenceNode``'s grid.

    ``session.labels`` must be on the reference volume's voxel grid, in the array order of its image data
    (slice, row, column), as the prediction process's outputs are for the T1CE it was given.
    """

    def __init__(self, scene, session, referenceNode, segmentationNode=None, labels=FOREGROUND_LABELS):
        self.scene = scene
        self.labels = tuple(sorted(labels))  # the labels the model produces: one segment each
        self.session = session
        self.referenceNode = referenceNode
        dims = referenceNode.GetImageData().GetDimensions()
        self.shape = tuple(int(d) for d in reversed(dims))
        if tuple(session.labels.shape) != self.shape:
            raise ValueError(f"labels of shape {tuple(session.labels.shape)} do not fit the reference volume "
                             f"{referenceNode.GetName()} of shape {self.shape}")
        self._ijkToRas = vtk.vtkMatrix4x4()
        referenceNode.GetIJKToRASMatrix(self._ijkToRas)
        raw = crop(session.raw_labels)
        # nothing outside the raw tumor's box ever becomes a label, whatever the parameters
        self._box = None if raw is None else raw.box
        self.segmentIds: dict[int, str] = {}
        self.protected: set[int] = set()  # labels the user chose to keep (hand edits not overwritten)
        self.writes = 0  # segment writes so far (what a slider move cost)
        self._written: dict[int, _Written] = {}
        self.segmentationNode = self._prepare(segmentationNode)
        for label in self.labels:
            self._write(label)
        self.segmentationNode.GetDisplayNode().SetVisibility(True)

    # -- segments ---------------------------------------------------------------------------------------------
    def _prepare(self, segmentationNode):
        if segmentationNode is None:
            segmentationNode = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                            self.referenceNode.GetName() + " tumor segmentation")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(self.referenceNode)
        segmentationNode.SetSourceRepresentationToBinaryLabelmap()
        segmentation = segmentationNode.GetSegmentation()
        segmentation.RemoveAllSegments()
        for label in self.labels:
            self.segmentIds[label] = self._addSegment(segmentation, label)
        # beside the inputs in the subject hierarchy: same parent as the T1CE volume
        shNode = self.scene.GetSubjectHierarchyNode()
        if shNode is not None:
            referenceItem = shNode.GetItemByDataNode(self.referenceNode)
            segmentationItem = shNode.GetItemByDataNode(segmentationNode)
            if referenceItem and segmentationItem:
                shNode.SetItemParent(segmentationItem, shNode.GetItemParent(referenceItem))
        return segmentationNode

    @staticmethod
    def _addSegment(segmentation, label: int) -> str:
        """An empty segment ``label_<n>`` with its name, color and terminology; returns its ID."""
        segmentId = segmentation.AddEmptySegment(f"label_{label}", LABEL_LONG_NAMES[label], list(LABEL_COLORS[label]))
        segment = segmentation.GetSegment(segmentId)
        segment.SetTerminology(terminology.terminology_entry(label))
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
        return segmentId

    def _sessionCrop(self, label: int) -> Crop | None:
        if self._box is None:
            return None
        return crop(self.session.labels[self._box] == label, tuple(s.start for s in self._box))

    def _orientedImage(self, voxels: Crop):
        """A vtkOrientedImageData on the reference grid holding the crop at its start voxel (slice, row, column)."""
        image = slicer.vtkOrientedImageData()
        (k0, j0, i0), (nk, nj, ni) = voxels.start, voxels.array.shape
        image.SetExtent(i0, i0 + ni - 1, j0, j0 + nj - 1, k0, k0 + nk - 1)
        image.SetImageToWorldMatrix(self._ijkToRas)
        scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(voxels.array, dtype=np.uint8).ravel(), deep=True,
                                             array_type=vtk.VTK_UNSIGNED_CHAR)
        image.GetPointData().SetScalars(scalars)
        return image

    def _write(self, label: int) -> None:
        segmentation = self.segmentationNode.GetSegmentation()
        if segmentation.GetSegment(self.segmentIds[label]) is None:
            # deleted by the user, who then agreed to overwrite: recreate it as the module made it (writing to a
            # missing ID would add a bare segment named after the ID, without color or terminology)
            self.segmentIds[label] = self._addSegment(segmentation, label)
        segmentId = self.segmentIds[label]
        voxels = self._sessionCrop(label)
        if voxels is None:
            segmentation.ClearSegment(segmentId)
        elif not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                self._orientedImage(voxels), self.segmentationNode, segmentId,
                slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE):
            raise RuntimeError(f"writing the segment {LABEL_LONG_NAMES[label]} failed")
        self._remember(label, voxels)
        self.writes += 1

    def _remember(self, label: int, voxels: Crop | None) -> None:
        labelmap = self.segmentationNode.GetSegmentation().GetSegment(self.segmentIds[label]).GetRepresentation(
            _binaryName())
        self._written[label] = _Written(voxels, labelmap, None if labelmap is None else labelmap.GetMTime())

    # -- reading segments back ----------------------------------------------------------------------------------
    def segmentCrop(self, label: int):
        """The voxels of the (existing) segment on the reference grid as an ``arrays.Crop``; None when it is empty.
        Reads only the segment's own labelmap extent."""
        segment = self.segmentationNode.GetSegmentation().GetSegment(self.segmentIds[label])
        labelmap = segment.GetRepresentation(_binaryName())
        if labelmap is None:
            return None
        if not self._onReferenceGrid(labelmap):
            labelmap = self._resampled(labelmap)
        extent = labelmap.GetExtent()
        if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
            return None
        dims = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        array = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims)
        mask = array == segment.GetLabelValue()  # layers shared by several segments hold one value per segment
        # only the part on the reference grid counts (an edit cannot reach outside it in Slicer anyway)
        lo = [max(0, -e) for e in (extent[4], extent[2], extent[0])]
        hi = [min(d, s - e) for d, s, e in zip(dims, self.shape, (extent[4], extent[2], extent[0]))]
        if any(a >= b for a, b in zip(lo, hi)):
            return None
        mask = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
        return crop(mask, (extent[4] + lo[0], extent[2] + lo[1], extent[0] + lo[2]))

    def _onReferenceGrid(self, labelmap) -> bool:
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        return all(abs(matrix.GetElement(r, c) - self._ijkToRas.GetElement(r, c)) < 1e-6
                   for r in range(3) for c in range(4))

    def _resampled(self, labelmap):
        reference = slicer.vtkOrientedImageData()
        reference.SetImageToWorldMatrix(self._ijkToRas)
        reference.SetExtent(0, self.shape[2] - 1, 0, self.shape[1] - 1, 0, self.shape[0] - 1)
        out = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference, out)
        return out

    def segmentArray(self, label: int):
        """The segment as a full uint8 0/1 array on the reference grid; ``None`` when it was deleted."""
        if self.segmentationNode.GetSegmentation().GetSegment(self.segmentIds[label]) is None:
            return None
        array = np.zeros(self.shape, np.uint8)
        voxels = self.segmentCrop(label)
        if voxels is not None:
            array[voxels.box] = voxels.array
        return array

    def editedLabels(self, labels) -> set:
        """Labels among ``labels`` whose segment differs from what was last written (deleted ones included)."""
        edited = set()
        segmentation = self.segmentationNode.GetSegmentation()
        for label in labels:
            if label not in self._written:
                continue
            written = self._written[label]
            segment = segmentation.GetSegment(self.segmentIds[label])
            if segment is None:
                edited.add(label)
                continue
            current = segment.GetRepresentation(_binaryName())
            if current is not None and current is written.labelmap and current.GetMTime() == written.mtime:
                continue  # untouched since the module wrote it
            now = self.segmentCrop(label)
            if (now is None and written.voxels is None) or (now is not None and now.same_as(written.voxels)):
                self._remember(label, written.voxels)  # touched but equal (e.g. layers merged): fast next time
            else:
                edited.add(label)
        return edited

    # -- post-processing -------------------------------------------------------------------------------------------
    def update(self, changes: dict, confirmOverwrite=None) -> set:
        """Apply (already clamped) parameter changes to the session; rewrite only the changed segments, asking
        before overwriting hand edits.

        ``confirmOverwrite(labels) -> bool``; without it, edited segments are kept (and protected from then on).
        Returns the labels rewritten.
        """
        changed = (self.session.update(**changes) & set(self.labels)) - self.protected
        if not changed:
            return set()
        # every segment is checked, not only the changed ones: segments that do not overlap share one labelmap
        # layer in Slicer, so a write stamps them all, and an edit made before it must not be stamped away
        edited = self.editedLabels(set(self.labels) - self.protected)
        if edited & changed and not (confirmOverwrite is not None and confirmOverwrite(edited & changed)):
            self.protected |= edited & changed
            changed -= edited
        for label in sorted(changed):
            self._write(label)
        for label in set(self.labels) - changed - edited - self.protected:
            self._remember(label, self._written[label].voxels)  # unchanged content; the layer's new stamp
        return changed

    def labelsShown(self):
        """Labels as the segments show them: the session's, or with hand edits (kept or not yet), read from the
        segments."""
        if not self.protected and not self.editedLabels(set(FOREGROUND_LABELS)):
            return self.session.labels
        labels = np.zeros(self.shape, np.uint8)
        for label in self.labels:
            array = self.segmentArray(label)
            if array is not None:
                labels[array > 0] = label
        return labels

    def resultsRows(self):
        """``results.results_table`` of the segmentation as shown."""
        return results.results_table(self.labelsShown(), self.session.spacing_zyx)

    # -- export -------------------------------------------------------------------------------------------------------
    def exportLabelmap(self, path) -> str:
        """BraTS label map (uint8: 1 ET, 2 NET, 3 CC, 4 ED) of the segments on the reference grid; no node is left in
        the scene and no partial file on failure."""
        segmentIds = vtk.vtkStringArray()
        for label in self.labels:  # export order: value k for the k-th segment, mapped back to the label below
            segmentIds.InsertNextValue(self.segmentIds[label])
        with RemoveAddedNodes(self.scene):
            labelmapNode = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", EXPORT_PREFIX + "labelmap")
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    self.segmentationNode, segmentIds, labelmapNode, self.referenceNode,
                    slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise RuntimeError("exporting the segments to a label map failed")
            cast = vtk.vtkImageCast()
            cast.SetInputData(labelmapNode.GetImageData())
            cast.SetOutputScalarTypeToUnsignedChar()
            cast.Update()
            values = numpy_support.vtk_to_numpy(labelmapNode.GetImageData().GetPointData().GetScalars())
            if values.min() < 0 or values.max() > len(self.labels):
                raise RuntimeError(f"unexpected label values {np.unique(values).tolist()} in the export")
            labelmapNode.SetAndObserveImageData(cast.GetOutput())
            if self.labels != FOREGROUND_LABELS:  # a model with fewer labels: positions back to label values
                out = numpy_support.vtk_to_numpy(labelmapNode.GetImageData().GetPointData().GetScalars())
                out[...] = np.asarray((0, *self.labels), out.dtype)[out]
                labelmapNode.GetImageData().Modified()
            self._writeWithStorageNode(slicer.vtkMRMLVolumeArchetypeStorageNode(), labelmapNode, path)
        return str(path)

    def exportSegmentation(self, path) -> str:
        """The segmentation node as ``.seg.nrrd`` (the node's own storage node and file name are not changed)."""
        with RemoveAddedNodes(self.scene):
            self._writeWithStorageNode(slicer.vtkMRMLSegmentationStorageNode(), self.segmentationNode, path)
        return str(path)

    def exportCsv(self, path) -> str:
        """The volumes table as CSV (``results.results_csv``)."""
        text = results.results_csv(self.resultsRows())
        with atomic_output(path) as tmp:  # no partial or leftover temporary file on failure
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write(text)
        return str(path)

    @staticmethod
    def _writeWithStorageNode(storageNode, node, path) -> None:
        # a storage node outside the scene: the node keeps its own storage node and modified state
        with atomic_output(path) as tmp:
            storageNode.SetFileName(str(tmp))
            storageNode.SetUseCompression(True)
            if not storageNode.WriteData(node):
                raise RuntimeError(f"could not write {path}")
