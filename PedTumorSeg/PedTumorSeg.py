"""PedTumorSeg: pediatric brain tumor segmentation (ET, NET, CC, ED) in 3D Slicer; Slicer >= 5.10 (Python 3.12).

Qt wiring only: the MRML logic is ``PedTumorSegLib``, the algorithm the Slicer-free ``pedtumorseg``. A slider
move goes one way: widget -> parameter node (connectGui) -> ``ModuleLogic.applyControls`` (one clamp) -> segments."""

import logging
import os
import sys
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _, translate
from slicer.parameterNodeWrapper import Choice, Decimals, SingleStep, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:  # the core package and the logic ship inside the module folder
    sys.path.insert(0, MODULE_DIR)

from pedtumorseg import progress  # noqa: E402  (needs MODULE_DIR on sys.path)
from pedtumorseg.conventions import LABEL_LONG_NAMES  # noqa: E402
from pedtumorseg.ui import controls  # noqa: E402
from PedTumorSegLib.logic import EXPORTS, ModuleLogic  # noqa: E402
from PedTumorSegLib.requirements import ensure_requirements  # noqa: E402
from PedTumorSegWidgets import showModelControls  # noqa: E402
from PedTumorSegWidgets.response import ResponseSection  # noqa: E402

_SPECS = {s.name: s for s in controls.slider_specs()}
RELOADED_PACKAGES = ("pedtumorseg", "PedTumorSegLib", "PedTumorSegWidgets")  # "Reload" reloads these too


def _slider(name: str):
    s = _SPECS[name]
    return Annotated[float, WithinRange(s.minimum, s.maximum), Decimals(s.decimals), SingleStep(s.step)]


class PedTumorSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PedTumorSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Terminologies"]
        self.parent.contributors = ["PedTumorSeg developers"]
        self.parent.helpText = _(
            "Segments pediatric brain tumors (enhancing, non-enhancing, cystic, edema) from T1, T1CE, T2 and "
            "T2-FLAIR with an enhanced nnU-Net, in the background; sliders update the segmentation live.")
        self.parent.acknowledgementText = _(
            "Method: X. Li et al., 'Towards Reliable Pediatric Brain Tumor Segmentation: Task-Specific nnU-Net "
            "Enhancements' (first on the BraTS 2025 Task-6 PED validation leaderboard, among the top on test).")


@parameterNodeWrapper
class PedTumorSegParameterNode:
    t1Volume: vtkMRMLScalarVolumeNode
    t1ceVolume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    flairVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""  # empty: the shipped demo bundle
    postprocessDefaultsOf: str = ""  # "<name> <version>" of the bundle whose defaults the controls were reset to
    device: Annotated[str, Choice(list(controls.DEVICE_CHOICES))] = controls.DEVICE_CHOICES[0]
    quality: Annotated[str, Choice(list(controls.QUALITY_CHOICES))] = controls.QUALITY_CHOICES[0]
    skullStrip: Annotated[str, Choice(list(controls.RAW_SCAN_CHOICES))] = controls.RAW_SCAN_CHOICES[0]
    register: Annotated[str, Choice(list(controls.RAW_SCAN_CHOICES))] = controls.RAW_SCAN_CHOICES[0]
    # post-processing controls: names are PostprocessParams fields (and the widgets' SlicerParameterName)
    ratio_enabled: bool = _SPECS["ratio_enabled"].default
    ratio_high: _slider("ratio_high") = _SPECS["ratio_high"].default
    ratio_low: _slider("ratio_low") = _SPECS["ratio_low"].default
    components_enabled: bool = _SPECS["components_enabled"].default
    min_volume_et: _slider("min_volume_et") = _SPECS["min_volume_et"].default
    min_volume_net: _slider("min_volume_net") = _SPECS["min_volume_net"].default
    min_volume_cc: _slider("min_volume_cc") = _SPECS["min_volume_cc"].default
    min_volume_ed: _slider("min_volume_ed") = _SPECS["min_volume_ed"].default


class PedTumorSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = self._run = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PedTumorSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PedTumorSegLogic()
        self._pollTimer, self._debounceTimer = qt.QTimer(), qt.QTimer()
        for timer, interval, slot in ((self._pollTimer, 200, self._onPoll),
                                      (self._debounceTimer, 30, self._applyPostprocessing)):  # slider moves coalesce
            timer.setInterval(interval)
            timer.connect("timeout()", slot)
        self._debounceTimer.setSingleShot(True)
        for event, handler in ((slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose),
                               (slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose),
                               (slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)):
            self.addObserver(slicer.mrmlScene, event, handler)
        clicks = {"applyButton": self.onApplyButton, "resetButton": self.onResetButton,
                  "autoAssignButton": lambda: self.logic.autoAssignInputs(self._parameterNode, onlyEmpty=False),
                  "show3DButton": lambda: self._try(_("Failed to show the segmentation in 3D."),
                                                    self.logic.showSegmentation3D),
                  **{name + "Button": (lambda n=name: self.onExport(n)) for name in EXPORTS}}
        for name, slot in clicks.items():
            getattr(self.ui, name).connect("clicked(bool)", lambda _=False, s=slot: s())
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.initializeParameterNode()
        self._updateResultsTable()
        self.response = ResponseSection(self.layout)

    def cleanup(self) -> None:
        self.removeObservers()
        for timer in (self._pollTimer, self._debounceTimer):
            timer.stop()
        if self._run is not None:
            self._run.cleanup()  # cancels a running prediction and removes its temporary files
        self._run = None

    def onReload(self) -> None:  # reloads the core package and the logic too, not only this file
        for name in [n for n in sys.modules if n.split(".")[0] in RELOADED_PACKAGES]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:  # its inputs and output node are going away
            self._run.cancel()
        self.setParameterNode(None)
        self.logic.forgetResult()
        self._updateResultsTable()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node) -> None:
        if isinstance(node, vtkMRMLScalarVolumeNode) and self._parameterNode is not None:  # named when it fires
            qt.QTimer.singleShot(0, lambda: self.logic.autoAssignInputs(self._parameterNode, onlyEmpty=True))

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.logic.autoAssignInputs(self._parameterNode, onlyEmpty=True)
        self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath  # the same path: not a change
        self._updateModelInfo()

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._updateButtons()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateButtons()
        if self.logic.session is not None:  # a control may have moved: post-process once the moves pause
            self._debounceTimer.start()

    def onModelPathChanged(self, path) -> None:
        if self._parameterNode is not None and (path or "") != self._parameterNode.modelPath:
            self._parameterNode.modelPath = path or ""
            self._updateModelInfo()

    def _updateModelInfo(self) -> None:
        try:
            bundle = self.logic.loadBundle(self._parameterNode.modelPath if self._parameterNode else "")
        except Exception as exc:  # shown to the user, not raised: a wrong path is typed, not a bug
            self.ui.modelInfoLabel.text = _("Model not usable: {error}").format(error=exc)
            return
        self.ui.modelInfoLabel.text = self.logic.modelDescription(bundle)
        showModelControls(self.ui, bundle.io.labels)  # only the sliders of the subregions this model has
        if self.logic.needsDefaultsReset(self._parameterNode, bundle):
            with slicer.util.NodeModify(self._parameterNode):  # one Modified event: the segments follow once
                self.logic.resetPostprocessingControls(self._parameterNode, bundle)

    def _updateButtons(self) -> None:
        running, problems = self._run is not None, self.logic.inputProblems(self._parameterNode)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = running or not problems
        self.ui.applyButton.toolTip = (_("Stop the running prediction") if running else
                                       "\n".join(problems) or _("Segment the tumor in the background"))
        for name in ("show3DButton", "resetButton", *(n + "Button" for n in EXPORTS)):
            getattr(self.ui, name).enabled = self.logic.session is not None

    def _try(self, message, function, *args):
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            return function(*args)

    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        if self.logic.ensureRequirements(askConfirmation=True):
            self._run = self._try(_("Failed to start the segmentation."), self.logic.startFromPanel,
                                  self._parameterNode)
        if self._run is not None:
            self.ui.progressBar.visible, self.ui.progressBar.value, self.ui.statusLabel.text = True, 0, _("Starting...")
            self._updateButtons()
            self._pollTimer.start()

    def _onPoll(self) -> None:
        for event in self._run.poll() if self._run is not None else [progress.Exited(None)]:
            if isinstance(event, progress.Progress):
                self.ui.progressBar.value = int(round(100 * event.fraction))
                self.ui.statusLabel.text = event.message
            elif isinstance(event, progress.Log):
                logging.info("PedTumorSeg: " + event.message)
            elif isinstance(event, progress.Exited):
                self._pollTimer.stop()
                if self._run is not None:
                    self._finishRun(self._run)
                return

    def _finishRun(self, run) -> None:
        try:
            outcome, message = self._try(_("Failed to load the segmentation."), self.logic.finishRun, run,
                                         self._parameterNode) or ("failed", _("see the error shown"))
            self.ui.statusLabel.text = {"cancelled": _("Cancelled."), "done": message}.get(
                outcome, _("Failed: {message}").format(message=message))
            if outcome == "failed":
                slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message))
        finally:
            run.cleanup()
            self._run, self.ui.progressBar.visible = None, False
            self._updateResultsTable()

    def _applyPostprocessing(self) -> None:
        if self.logic.session is not None and self._try(_("Post-processing failed."), self.logic.applyControls,
                                                        self._parameterNode, self._confirmOverwrite):
            self._updateResultsTable()

    @staticmethod
    def _confirmOverwrite(labels) -> bool:
        return slicer.util.confirmYesNoDisplay(_(
            "The segment(s) {names} were edited since the last update. Overwrite the edits with the new "
            "post-processing result?").format(names=", ".join(LABEL_LONG_NAMES[label] for label in sorted(labels))))

    def onResetButton(self) -> None:
        self._parameterNode.postprocessDefaultsOf = ""  # forget whose defaults the controls hold: the model's again
        self._updateModelInfo()

    def _updateResultsTable(self) -> None:
        rows = self.logic.resultsRows()
        self.ui.resultsTable.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row.display()):
                item = qt.QTableWidgetItem(text)
                item.setTextAlignment((qt.Qt.AlignRight if c >= 2 else qt.Qt.AlignLeft) | qt.Qt.AlignVCenter)
                self.ui.resultsTable.setItem(r, c, item)
        self._updateButtons()

    def onExport(self, name) -> None:
        (suffix, fileFilter), volume = EXPORTS[name], self._parameterNode.t1ceVolume
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export"),
                                              (volume.GetName() if volume else "case") + suffix, fileFilter)
        if path:
            self._try(_("Export failed."), getattr(self.logic, name), path)


class PedTumorSegLogic(ScriptedLoadableModuleLogic, ModuleLogic):
    """``PedTumorSegLib.logic.ModuleLogic`` on Slicer's scene, temporary folder and ``PythonSlicer``."""

    def __init__(self) -> None:
        from pedtumorseg.ui.background import find_python_slicer
        ScriptedLoadableModuleLogic.__init__(self)
        ModuleLogic.__init__(self, slicer.mrmlScene, lambda: slicer.util.tempDirectory(key="PedTumorSeg"),
                             find_python_slicer)

    def getParameterNode(self):
        return PedTumorSegParameterNode(super().getParameterNode())

    def ensureRequirements(self, askConfirmation: bool = True) -> bool:
        """Install missing packages (torch through the PyTorch extension, the rest with pip); False if not done."""
        return ensure_requirements(slicer.util.errorDisplay, slicer.util.confirmOkCancelDisplay,
                                   slicer.util.pip_install, askConfirmation=askConfirmation)


class PedTumorSegTest(ScriptedLoadableModuleTest):
    """End to end in Slicer (``PedTumorSegLib.self_test``): phantom -> Apply == CLI -> segments -> slider -> exports."""

    def runTest(self):
        from PedTumorSegLib.self_test import run_self_test
        slicer.mrmlScene.Clear()
        self.delayDisplay("Test passed ({})".format(run_self_test(
            PedTumorSegLogic(), slicer.mrmlScene, lambda path: slicer.util.loadVolume(str(path)),
            slicer.util.pip_install, slicer.modules.terminologies.logic(), log=self.delayDisplay)))
