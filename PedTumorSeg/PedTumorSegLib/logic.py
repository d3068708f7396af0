"""The module's logic without Qt: every MRML decision of the panel, a prediction run and the synchronized result.

MRML only (Slicer's MRML classes, vtk, numpy and the core package). The scene, the temporary folder, the Python
that runs the prediction and the process runner are injected; ``PedTumorSeg.PedTumorSegLogic`` passes Slicer's,
the tests pass a ``slicer-core`` scene. The parameter node is anything with the attributes of
``PedTumorSegParameterNode`` (``t1Volume`` ... ``outputSegmentation``, ``modelPath``, the post-processing
controls, ``postprocessDefaultsOf``).
"""

from __future__ import annotations

from pedtumorseg import panel
from pedtumorseg.conventions import CHANNELS

from .prediction_logic import PredictionLogic
from .segmentation_sync import SegmentationSync

#: post-processing controls of the panel (PostprocessParams fields; parameter node attributes)
CONTROL_NAMES = tuple(spec.name for spec in panel.slider_specs())


def bundleKey(bundle) -> str:
    return f"{bundle.name} {bundle.version}"


class ModuleLogic:
    """Runs predictions (:class:`PredictionLogic`) and keeps the current result in sync (:class:`SegmentationSync`)."""

    def __init__(self, scene, tempDirectory, pythonExecutable, runFactory=None):
        self.scene = scene
        self.prediction = PredictionLogic(tempDirectory, pythonExecutable, runFactory)
        self.sync = None
        self.runInfo = {}

    # -- result state ------------------------------------------------------------------------------------------
    @property
    def session(self):
        return None if self.sync is None else self.sync.session

    @property
    def segmentationNode(self):
        return None if self.sync is None else self.sync.segmentationNode

    def forgetResult(self) -> None:
        self.sync = None
        self.runInfo = {}

    def loadBundle(self, path: str = ""):
        return self.prediction.loadBundle(path)

    # -- parameter node decisions ------------------------------------------------------------------------------
    def autoAssignInputs(self, parameterNode, onlyEmpty: bool) -> None:
        """Assign scalar volumes (not label maps) to the channels by name (``panel.assign_inputs``); with
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
        for channel, name in panel.assign_inputs(names).items():
            if not onlyEmpty or selected[channel] is None:
                setattr(parameterNode, channel + "Volume", byName[name])

    @staticmethod
    def selectedInputs(parameterNode) -> dict:
        return {c: getattr(parameterNode, c + "Volume") for c in CHANNELS}

    @staticmethod
    def inputProblems(parameterNode) -> list:
        """``panel.validate_inputs`` of the selection (empty list: Apply can run)."""
        if parameterNode is None:
            return ["-"]
        return panel.validate_inputs({c: (n.GetID() if n else None)
                                      for c, n in ModuleLogic.selectedInputs(parameterNode).items()})

    def currentParams(self, parameterNode, modelPath=None):
        """The post-processing parameters of the bundle at ``modelPath`` (default: the selected one) with the
        panel's control values. A finished run passes its own bundle: the model may have been changed meanwhile,
        and the settings the panel does not show (normalization, ratio window) belong to the model that ran."""
        path = parameterNode.modelPath if modelPath is None else modelPath
        base = self.loadBundle(path).postprocessing
        values = {name: getattr(parameterNode, name) for name in CONTROL_NAMES}
        return base.replace(**panel.clamp_ratio_window(base, values))

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

    def controlValuesAfterClamp(self) -> dict:
        """Control values of the current session (what the panel should show after a clamped move)."""
        if self.session is None:
            return {}
        return {name: getattr(self.session.params, name) for name in CONTROL_NAMES}

    # -- prediction ----------------------------------------------------------------------------------------------
    def startPrediction(self, inputs: dict, modelPath: str = "", quality: str = "Fast", device: str = "Auto",
                        extraArgs=()):
        return self.prediction.start(inputs, modelPath, quality, device, extraArgs)

    def finishPrediction(self, run, segmentationNode=None, params=None):
        """Load the raw labels of a finished run into a new session and fill the segmentation; returns the node."""
        session, referenceNode, info = self.prediction.finish(run, params)
        node = self.setResult(session, referenceNode, segmentationNode)
        self.runInfo = info
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

    def setResult(self, session, referenceNode, segmentationNode=None):
        """Show ``session``'s labels as four segments on ``referenceNode``'s grid (a new node if None)."""
        self.forgetResult()
        self.sync = SegmentationSync(self.scene, session, referenceNode, segmentationNode)
        return self.sync.segmentationNode

    # -- result -------------------------------------------------------------------------------------------------
    def _requireResult(self):
        if self.sync is None:
            raise RuntimeError("no segmentation result")
        return self.sync

    def updatePostprocessing(self, changes: dict, confirmOverwrite=None) -> set:
        return self._requireResult().update(changes, confirmOverwrite)

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
