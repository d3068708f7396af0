"""A real Slicer MRML scene outside Slicer, from ``slicer-core`` (PyPI), set up as Slicer's application does.

Used by ``test_slicer_mrml.py`` (in a process of its own: the ``slicer`` module is process-wide) and by
``benchmarks/bench_slider_mrml.py``. Nothing here is a fake: the scene, the application logic with its color logic,
and the Volumes, Segmentations, Terminologies and Subject Hierarchy module logics are Slicer's C++ classes,
registered with the application logic under their module names as Slicer's module manager does.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "PedTumorSeg"


class SlicerScene:
    def __init__(self, terminologyDirectory: str | None = None):
        import slicer
        import vtk

        self.scene = slicer.vtkMRMLScene()
        self.app = slicer.vtkSlicerApplicationLogic()
        self.app.SetMRMLScene(self.scene)
        self.app.GetColorLogic().SetMRMLScene(self.scene)
        self.app.GetColorLogic().AddDefaultColorNodes()
        self.app.SetSliceLogics(vtk.vtkCollection())
        self.app.SetViewLogics(vtk.vtkCollection())
        self.app.SetModuleLogic("Colors", self.app.GetColorLogic())  # volume display nodes get their color tables
        self.volumes = self._register(slicer.vtkSlicerVolumesLogic(), "Volumes")
        # without Slicer's terminology JSON files the logic still parses and serializes entries; it only cannot
        # look codes up in the dictionaries (and logs that it found none)
        self.terminologies = self._register(slicer.vtkSlicerTerminologiesModuleLogic(), "Terminologies",
                                            terminologyDirectory or str(REPO / "Testing" / "no-terminology-files"))
        self.segmentations = self._register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
        self.subjectHierarchy = self._register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy")

    def _register(self, logic, name: str, shareDirectory: str | None = None):
        if shareDirectory is not None:
            logic.SetModuleShareDirectory(shareDirectory)
        logic.SetMRMLScene(self.scene)
        logic.SetMRMLApplicationLogic(self.app)
        self.app.SetModuleLogic(name, logic)
        return logic

    def loadVolume(self, path, name: str | None = None):
        """``AddArchetypeVolume`` of the Volumes logic: what Slicer's "Add data" does for a volume file."""
        node = self.volumes.AddArchetypeVolume(str(path), name or Path(path).name.split(".")[0])
        if node is None:
            raise RuntimeError(f"could not load {path}")
        return node

    def nodeIds(self) -> list:
        return sorted(self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes()))


def moduleLogic(harness: SlicerScene, tempRoot: Path, python: str | None = None):
    """``PedTumorSegLib.logic.ModuleLogic`` on the harness's scene: temporary folders under ``tempRoot``, the
    prediction process run by ``python`` (default: this interpreter) with the module folder on its path."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    from PedTumorSegLib.logic import ModuleLogic

    counter = iter(range(1_000_000))

    def tempDirectory():
        folder = Path(tempRoot) / f"run{next(counter)}"
        folder.mkdir(parents=True)
        return str(folder)

    return ModuleLogic(harness.scene, tempDirectory, lambda: python or sys.executable)
