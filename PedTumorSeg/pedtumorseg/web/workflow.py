"""One browser session's case, the Slicer module's workflow without Qt: the case's volumes in a real MRML scene,
the inputs auto-assigned, Apply in the module's background process, the result kept in sync by the module's own
``PedTumorSegLib.logic.ModuleLogic`` (same ``SegmentationSync``, same post-processing ``Session``), exports.

Nothing here knows trame: ``app`` binds it to the browser, the tests drive it on a ``slicer-core`` scene.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.files import write_json
from pedtumorseg.inputs.cases import CaseFiles, find_any_case
from pedtumorseg.ui import controls
from pedtumorseg.web.checks import slicer_lib_path


@dataclass
class WebParameters:
    """The attributes of the module's parameter node (``PedTumorSegParameterNode``) that ``ModuleLogic`` reads and
    writes: the four inputs, the output segmentation, the model, the run options and the post-processing controls."""

    t1Volume: object = None
    t1ceVolume: object = None
    t2Volume: object = None
    flairVolume: object = None
    outputSegmentation: object = None
    modelPath: str = ""
    postprocessDefaultsOf: str = ""
    device: str = controls.DEVICE_CHOICES[0]
    quality: str = controls.QUALITY_CHOICES[0]
    skullStrip: str = controls.RAW_SCAN_CHOICES[0]
    register: str = controls.RAW_SCAN_CHOICES[0]
    controls: dict = field(default_factory=dict)

    def __getattr__(self, name):  # the post-processing controls (ratio_high, min_volume_et, ...)
        values = self.__dict__.get("controls", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in _CONTROL_NAMES:
            self.__dict__.setdefault("controls", {})[name] = value
        else:
            object.__setattr__(self, name, value)


_CONTROL_NAMES = tuple(spec.name for spec in controls.slider_specs())
#: the largest difference (mm) between a volume node's IJK-to-RAS matrix and its series' grid that counts as equal
GRID_TOLERANCE_MM = 1e-4


def grid_problem(node, image) -> str | None:
    """Why the volume node's voxel grid (size and IJK-to-RAS matrix) is not the SimpleITK ``image``'s (LPS),
    None when it is the same."""
    import vtk

    size = tuple(node.GetImageData().GetDimensions())
    if size != tuple(image.GetSize()):
        return f"size {size} instead of {tuple(image.GetSize())}"
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    got = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    expected = np.eye(4)
    expected[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    expected[:3, 3] = image.GetOrigin()
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected  # LPS -> RAS
    worst = float(np.abs(got - expected).max())
    return None if worst <= GRID_TOLERANCE_MM else f"voxel-to-world matrices differ by up to {worst:.3g} mm"


class CaseWorkflow:
    """The case of one browser session on ``scene`` (Slicer's application scene with its module logics);
    ``volumesLogic`` loads volumes as Slicer's "Add data" does. ``modelPath``: the bundle (empty: the demo)."""

    def __init__(self, scene, volumesLogic, modelPath: str = "", device: str = "Auto", workRoot=None):
        if str(slicer_lib_path()) not in sys.path:
            sys.path.insert(0, str(slicer_lib_path()))
        from PedTumorSegLib.logic import ModuleLogic

        self.scene = scene
        self.volumesLogic = volumesLogic
        self.workRoot = Path(workRoot or tempfile.mkdtemp(prefix="pedtumorseg-web-"))
        self._counter = 0
        self.logic = ModuleLogic(scene, self._tempDirectory, lambda: sys.executable)
        self.params = WebParameters(modelPath=str(modelPath or ""), device=device)
        self.case: CaseFiles | None = None
        self.volumes: dict[str, object] = {}  # node name -> volume node of the open case
        self.sources: dict[str, Path] = {}  # channel -> the image file its volume was loaded from
        self._caseFolder = None  # the open DICOM study's series as NRRD files (removed with the case)
        self.notWritten: dict[str, str] = {}  # kind -> why the last export did not write it
        self.run = None
        self.progress = (0.0, "")
        self.resultModel = ""  # the bundle the result came from (the chosen one may have changed since)
        bundle = self.logic.loadBundle(self.params.modelPath)
        self.logic.resetPostprocessingControls(self.params, bundle)

    def setModel(self, modelPath: str):
        """The user's choice of model, as the module's model selector: the controls take the new model's defaults
        (unless they already hold them) and a shown result follows them; returns the bundle."""
        if self.running:
            raise RuntimeError("the model cannot change while a prediction runs")
        bundle = self.logic.loadBundle(modelPath)
        self.params.modelPath = str(modelPath or "")
        if self.logic.needsDefaultsReset(self.params, bundle):
            self.logic.resetPostprocessingControls(self.params, bundle)
            if self.hasResult:
                self.logic.applyControls(self.params)
        return bundle

    def _tempDirectory(self) -> str:
        self._counter += 1
        folder = self.workRoot / f"run{self._counter}"
        folder.mkdir(parents=True)
        return str(folder)

    # -- case --------------------------------------------------------------------------------------------------
    def openCase(self, folder) -> dict:
        """Load the case in ``folder`` (BraTS-named files, or a DICOM study as ``predict`` finds it; raw scans are
        registered and brain-extracted by the run) into the scene and auto-assign its volumes; returns
        :meth:`assignment`."""
        case = find_any_case(folder)
        self.closeCase()
        try:
            if any(Path(p).is_dir() for p in case.images.values()):
                self._loadStudy(case)
            else:
                self._loadFiles(case)
        except Exception:
            self.closeCase()  # nothing half-opened stays in the scene
            raise
        self.case = case
        return self.assignment()

    def _loadFiles(self, case: CaseFiles) -> None:
        for channel in CHANNELS:
            path = Path(case.images[channel])
            name = path.name.split(".")[0]
            node = self.volumesLogic.AddArchetypeVolume(str(path), name)
            if node is None:
                raise ValueError(f"{path.name}: Slicer could not read this volume")
            self.volumes[name] = node
            self.sources[channel] = path
        self.logic.autoAssignInputs(self.params, onlyEmpty=False)

    def _loadStudy(self, case: CaseFiles) -> None:
        """Each of the four series (``find_study``'s choice) read by SimpleITK/GDCM, handed to the scene as an NRRD
        file of the work folder (slicer-core has no DICOM module) and assigned to its channel. Names say the
        channel and the series description, never the patient."""
        import SimpleITK as sitk

        from pedtumorseg.conventions import CHANNEL_LONG_NAMES
        from pedtumorseg.inputs.dicom import read_series, series_info

        self._counter += 1
        self._caseFolder = self.workRoot / f"case{self._counter}"
        self._caseFolder.mkdir(parents=True)
        for channel in CHANNELS:
            series = Path(case.images[channel])
            image = read_series(series)
            path = self._caseFolder / f"{channel}.nrrd"
            sitk.WriteImage(image, str(path))
            description = series_info(series).description[:60] or "no description"
            name = f"{CHANNEL_LONG_NAMES[channel]}: {description}"
            node = self.volumesLogic.AddArchetypeVolume(str(path), name)
            if node is None:
                raise ValueError(f"{series.name}: Slicer could not read this series")
            problem = grid_problem(node, image)
            if problem:
                raise ValueError(f"{series.name}: the volume in the scene is not on the series' grid ({problem})")
            self.volumes[node.GetName()] = node
            self.sources[channel] = path
            setattr(self.params, channel + "Volume", node)

    def closeCase(self) -> None:
        if self.run is not None:
            self.run.cleanup()
            self.run = None
        if self.params.outputSegmentation is not None:
            self.scene.RemoveNode(self.params.outputSegmentation)
        for node in self.volumes.values():
            self.scene.RemoveNode(node)
        self.volumes = {}
        self.sources = {}
        self.case = None
        self.logic.forgetResult()
        for channel in CHANNELS:
            setattr(self.params, channel + "Volume", None)
        self.params.outputSegmentation = None
        if self._caseFolder is not None:
            shutil.rmtree(self._caseFolder, ignore_errors=True)
            self._caseFolder = None

    def assignment(self) -> dict:
        """``{channel: volume name or None}`` as assigned (shown for confirmation)."""
        return {c: (n.GetName() if n is not None else None) for c, n in self.logic.selectedInputs(self.params).items()}

    def assign(self, channel: str, name: str) -> None:
        """The user's choice of the volume for ``channel``."""
        if channel not in CHANNELS or name not in self.volumes:
            raise ValueError(f"unknown channel or volume: {channel} {name}")
        setattr(self.params, channel + "Volume", self.volumes[name])

    def inputProblems(self) -> list:
        return self.logic.inputProblems(self.params)

    # -- prediction ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            raise RuntimeError("a prediction is already running")
        self.run = self.logic.startFromPanel(self.params)
        self.progress = (0.0, "Starting")

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    def poll(self):
        """Read the run's events; ``(outcome, message)`` once it ended (``done``, ``failed``, ``cancelled``),
        else None. Progress goes to :attr:`progress`."""
        from pedtumorseg import progress

        if self.run is None:
            return None
        for event in self.run.poll():
            if isinstance(event, progress.Progress):
                self.progress = (event.fraction, event.message)
            elif isinstance(event, progress.Exited):
                run, self.run = self.run, None
                try:
                    outcome = self.logic.finishRun(run, self.params)
                    if outcome[0] == "done":
                        self.resultModel = run.modelPath
                    return outcome
                finally:
                    run.cleanup()
        return None

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    # -- result --------------------------------------------------------------------------------------------------
    @property
    def hasResult(self) -> bool:
        return self.logic.sync is not None

    def setControl(self, name: str, value) -> set:
        """A slider move: the value into the parameters, then the module's one way (clamp, session, segments)."""
        if name not in _CONTROL_NAMES:
            raise ValueError(f"unknown control {name}")
        setattr(self.params, name, value)
        return self.logic.applyControls(self.params) if self.hasResult else set()

    def rows(self) -> list:
        return [row.display() for row in self.logic.resultsRows()] if self.hasResult else []

    def export(self, folder) -> dict:
        """Label map NIfTI (T1CE grid), ``.seg.nrrd``, volumes CSV, stats JSON and PNG of the segments as shown
        (hand edits included) into ``folder``, and for a DICOM study a DICOM SEG referencing the T1CE series
        (``<case>-seg.dcm``; when the series lacks what a SEG needs, the rest is written and :attr:`notWritten`
        says why); returns ``{kind: path}``."""
        import SimpleITK as sitk

        from pedtumorseg.geometry import Geometry
        from pedtumorseg.inputs.images import read_labels
        from pedtumorseg.outputs.overlay import write_overlay_png
        from pedtumorseg.outputs.stats import stats_dict

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        caseId = self.case.case_id if self.case else "case"
        out = {"labelmap": folder / f"{caseId}-seg.nii.gz", "segmentation": folder / f"{caseId}.seg.nrrd",
               "csv": folder / f"{caseId}-volumes.csv", "stats": folder / f"{caseId}-stats.json",
               "png": folder / f"{caseId}-overlay.png"}
        self.logic.exportLabelmap(out["labelmap"])
        self.logic.exportSegmentation(out["segmentation"])
        self.logic.exportCsv(out["csv"])
        t1ce = self.sources["t1ce"]  # a DICOM study: the T1CE series as loaded, on the series' own grid
        geometry = Geometry.from_image(sitk.ReadImage(str(t1ce)))
        labels = read_labels(out["labelmap"], geometry)  # refused unless on the T1CE grid
        bundle = self.logic.loadBundle(self.resultModel)
        model = {"name": bundle.name, "version": bundle.version}
        self.notWritten = {}
        series = Path(self.case.images["t1ce"]) if self.case else None
        if series is not None and series.is_dir():
            out.update(self._exportDicomSeg(labels, series, folder / f"{caseId}-seg.dcm", model))
        stats = stats_dict(caseId, labels, geometry, model=model,
                           postprocessing=self.logic.session.params.to_dict(),
                           warnings=(["segments edited by hand"] if self.logic.sync.protected else [])
                           + list(self.notWritten.values()))
        write_json(stats, out["stats"])
        grey = sitk.GetArrayFromImage(sitk.ReadImage(str(t1ce), sitk.sitkFloat32))
        images = np.stack([grey] * len(CHANNELS))  # only the T1CE is drawn
        write_overlay_png(images, labels, geometry, out["png"], channel="t1ce")
        return {k: str(v) for k, v in out.items()}

    def _exportDicomSeg(self, labels: np.ndarray, series: Path, path: Path, model: dict) -> dict:
        """``{"dicom_seg": path}`` once written (the labels on the T1CE series' grid, its slices in GDCM's order as
        read), else ``{}`` with the reason in :attr:`notWritten`."""
        from pedtumorseg.outputs.dicom_seg import dicom_seg_problem, write_dicom_seg

        problem = dicom_seg_problem(series)
        if problem:
            self.notWritten["dicom_seg"] = f"DICOM SEG not written: {problem}"
            return {}
        return {"dicom_seg": write_dicom_seg(labels, series, path, model=model)}
