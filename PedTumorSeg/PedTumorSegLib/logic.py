"""The module's logic without Qt: every MRML decision of the panel, a prediction run and the synchronized result.

MRML only (Slicer's MRML classes, vtk, numpy and the core package). The scene, the temporary folder, the Python
that runs the prediction and the process runner are injected; ``PedTumorSeg.PedTumorSegLogic`` passes Slicer's,
the tests pass a ``slicer-core`` scene. The parameter node is anything with the attributes of
``PedTumorSegParameterNode`` (``t1Volume`` ... ``outputSegmentation``, ``modelPath``, the post-processing
controls, ``postprocessDefaultsOf``).
"""

from __future__ import annotations

from pedtumorseg.ui import controls
from pedtumorseg import progress
from pedtumorseg.ui import assignment
from pedtumorseg.conventions import CHANNELS, FOREGROUND_LABELS

from .prediction_logic import PredictionLogic
from .segmentation_sync import SegmentationSync

#: post-processing controls of the panel (PostprocessParams fields; parameter node attributes)
CONTROL_NAMES = tuple(spec.name for spec in controls.slider_specs())
#: the panel's exports: ModuleLogic method (and ``<method>Button`` in the .ui) -> (file name suffix, file filter)
EXPORTS = {
    "exportLabelmap": ("-seg.nii.gz", "NIfTI (*.nii.gz *.nii)"),
    "exportSegmentation": (".seg.nrrd", "Segmentation (*.seg.nrrd)"),
    "exportCsv": ("-volumes.csv", "CSV (*.csv)"),
}


def bundleKey(bundle) -> str:
    return f"{bundle.name} {bundle.version}"


class ModuleLogic:
    """Runs predictions (:class:`PredictionLogic`) and keeps the current result in sync (:class:`SegmentationSync`)."""

    def __init__(self, scene, tempDirectory, pythonExecutable, runFactory=None):
        self.scene = scene
        self.prediction = PredictionLogic(tempDirectory, pythonExecutable, runFactory)
        self.sync = None
        self.lastRun = None  # the progress.Done event of the run the result came from

    # -- result state ------------------------------------------------------------------------------------------
    @property
    def session(self):
        return None if self.sync is None else self.sync.session

    @property
    def segmentationNode(self):
        return None if self.sync is None else self.sync.segmentationNode

    def forgetResult(self) -> None:
        self.sync = None
        self.lastRun = None

    def loadBundle(self, path: str = ""):
        return self.prediction.loadBundle(path)

    @staticmethod
    def modelDescription(bundle) -> str:
        """The model line of the panel, e.g. ``pedtumorseg-demo 0.5.0 (1 fold(s))``; a demonstration model says so
        (``Bundle.demonstration_notice``) on a second line."""
        line = f"{bundle.name} {bundle.version} ({len(bundle.folds)} fold(s))"
        notice = bundle.demonstration_notice
        return f"{line}\nDEMONSTRATION ONLY: {notice}." if notice else line

    def statusText(self) -> str:
        """The status line of the finished run the result came from, e.g. ``Done (openvino on cpu, 12.3 s).``"""
        return progress.status_text(self.lastRun)

    # -- parameter node decisions ------------------------------------------------------------------------------
    def autoAssignInputs(self, parameterNode, onlyEmpty: bool) -> None:
        """Assign scalar volumes (not label maps) to the channels by name (``assignment.assign_inputs``); with
        ``onlyEmpty``, only empty channels are filled and volumes already used are not assigned again."""
        if parameterNode is None:
            return
        byName = {}
        nodes = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        for i in range(nodes.GetNumberOfItems()):
            volume = nodes.GetItemAsObject(i)
            if not volume.IsA("vtkMRMLLabelMapVolumeNode"):
                byName.setdefault(volume.GetName(), volume)
        selected = self.selectedInputs(parameterNode)
        taken = {n for n in selected.values() if n is not None} if onlyEmpty else set()
        names = [name for name, volume in byName.items() if volume not in taken]
        for channel, name in assignment.assign_inputs(names).items():
            if not onlyEmpty or selected[channel] is None:
                setattr(parameterNode, channel + "Volume", byName[name])

    @staticmethod
    def selectedInputs(parameterNode) -> dict:
        return {c: getattr(parameterNode, c + "Volume") for c in CHANNELS}

    @staticmethod
    def inputProblems(parameterNode) -> list:
        """``assignment.validate_inputs`` of the selection (empty list: Apply can run)."""
        if parameterNode is None:
            return ["-"]
        return assignment.validate_inputs({c: (n.GetID() if n else None)
                                      for c, n in ModuleLogic.selectedInputs(parameterNode).items()})

    def currentParams(self, parameterNode, modelPath=None):
        """The post-processing parameters of the bundle at ``modelPath`` (default: the selected one) with the
        panel's control values, clamped. A finished run passes its own bundle: the model may have been changed
        meanwhile, and the settings the panel does not show (normalization, ratio window) belong to the model that
        ran."""
        path = parameterNode.modelPath if modelPath is None else modelPath
        base = self.loadBundle(path).postprocessing
        return base.replace(**self._clampedChanges(base, parameterNode))

    @staticmethod
    def _clampedChanges(current, parameterNode) -> dict:
        """The parameter node's control values that differ from ``current``, with the ratio window kept valid:
        the one clamp of a slider move (``controls.clamp_ratio_window``); clamped values are written back to the
        node so that the sliders show them."""
        values = {name: getattr(parameterNode, name) for name in CONTROL_NAMES}
        changes = controls.clamp_ratio_window(current, controls.parameter_changes(current, values))
        for name, value in changes.items():
            if getattr(parameterNode, name) != value:
                setattr(parameterNode, name, value)
        return changes

    @staticmethod
    def resetPostprocessingControls(parameterNode, bundle) -> None:
        """Set the post-processing controls to ``bundle``'s defaults and remember whose defaults they are."""
        defaults = bundle.postprocessing
        for name in CONTROL_NAMES:
            setattr(parameterNode, name, getattr(defaults, name))
        parameterNode.postprocessDefaultsOf = bundleKey(bundle)

    def needsDefaultsReset(self, parameterNode, bundle) -> bool:
        """A different bundle resets the controls to its own defaults; the same bundle keeps the user's values."""
        return parameterNode is not None and parameterNode.postprocessDefaultsOf != bundleKey(bundle)

    # -- prediction ----------------------------------------------------------------------------------------------
    def startPrediction(self, inputs: dict, modelPath: str = "", quality: str = "Fast", device: str = "Auto",
                        extraArgs=()):
        return self.prediction.start(inputs, modelPath, quality, device, extraArgs)

    def startFromPanel(self, parameterNode):
        """Start a prediction with the panel's inputs, model, quality, device and raw-scan choices."""
        p = parameterNode
        return self.startPrediction(self.selectedInputs(p), p.modelPath, p.quality, p.device,
                                    controls.raw_scan_arguments(p.skullStrip, p.register))

    def finishRun(self, run, parameterNode) -> tuple[str, str]:
        """What a finished run means for the panel: ``(outcome, message)`` with outcome ``cancelled``, ``failed``
        (message: why) or ``done`` (message: the status line; the segmentation became the node's output)."""
        if run.cancelled:
            return "cancelled", ""
        if run.returncode != 0 or run.result is None:
            return "failed", run.failure_message()
        node = self.finishPrediction(run, parameterNode.outputSegmentation,
                                     self.currentParams(parameterNode, run.modelPath))
        parameterNode.outputSegmentation = node
        return "done", self.statusText()

    def finishPrediction(self, run, segmentationNode=None, params=None):
        """Load the raw labels of a finished run into a new session and fill the segmentation; returns the node."""
        session, referenceNode, done = self.prediction.finish(run, params)
        io = getattr(self.loadBundle(run.modelPath), "io", None)  # which labels the model has: one segment each
        node = self.setResult(session, referenceNode, segmentationNode, FOREGROUND_LABELS if io is None else io.labels)
        self.lastRun = done
        return node

    def predictSync(self, inputs: dict, modelPath: str = "", quality: str = "Fast", device: str = "Auto",
                    segmentationNode=None, params=None, timeout: float = 3600, extraArgs=()):
        """Start, wait for and load a prediction (self-test and scripting); raises on failure."""
        run = self.startPrediction(inputs, modelPath, quality, device, extraArgs)
        try:
            run.wait(timeout=timeout)
            if run.returncode != 0 or run.result is None:
                raise RuntimeError(run.failure_message())
            return self.finishPrediction(run, segmentationNode, params)
        finally:
            run.cleanup()

    def setResult(self, session, referenceNode, segmentationNode=None, labels=FOREGROUND_LABELS):
        """Show ``session``'s labels as one segment per label of the model (``labels``; the four by default) on
        ``referenceNode``'s grid (a new node if None)."""
        self.forgetResult()
        self.sync = SegmentationSync(self.scene, session, referenceNode, segmentationNode, labels)
        return self.sync.segmentationNode

    # -- result -------------------------------------------------------------------------------------------------
    def _requireResult(self):
        if self.sync is None:
            raise RuntimeError("no segmentation result")
        return self.sync

    def applyControls(self, parameterNode, confirmOverwrite=None) -> set:
        """A slider move, one way: the parameter node's values -> one clamp -> the session -> the changed segments.
        Returns the labels rewritten (empty when nothing changed, e.g. the node update the clamp itself made)."""
        sync = self._requireResult()
        changes = self._clampedChanges(sync.session.params, parameterNode)
        return sync.update(changes, confirmOverwrite) if changes else set()

    def updatePostprocessing(self, changes: dict, confirmOverwrite=None) -> set:
        """Apply ``changes`` (scripting, the self-test), clamped as a slider move is."""
        sync = self._requireResult()
        return sync.update(controls.clamp_ratio_window(sync.session.params, changes), confirmOverwrite)

    def resultsRows(self):
        return self._requireResult().resultsRows() if self.sync is not None else []

    def showSegmentation3D(self) -> None:
        node = self._requireResult().segmentationNode
        node.CreateClosedSurfaceRepresentation()
        node.GetDisplayNode().SetVisibility3D(True)

    def exportLabelmap(self, path) -> str:
        return self._requireResult().exportLabelmap(path)

    def exportSegmentation(self, path) -> str:
        return self._requireResult().exportSegmentation(path)

    def exportCsv(self, path) -> str:
        return self._requireResult().exportCsv(path)
