"""PedTumorSeg: pediatric brain tumor segmentation (ET, NET, CC, ED) in 3D Slicer.

Metadata, Qt wiring and the ScriptedLoadableModule classes only. The MRML logic lives in ``PedTumorSegLib``
(``prediction_logic``: run a prediction; ``segmentation_sync``: keep the segmentation in sync with a post-processing
Session; ``logic``: both with the panel's MRML decisions), the algorithm in the Slicer-free package ``pedtumorseg``;
prediction runs in a background ``PythonSlicer`` process. Requires Slicer >= 5.10 (Python 3.12).
"""

import logging
import os
import sys
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Decimals, SingleStep, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:  # the core package and the logic ship inside the module folder
    sys.path.insert(0, MODULE_DIR)

from pedtumorseg import panel  # noqa: E402  (needs MODULE_DIR on sys.path)
from pedtumorseg.conventions import LABEL_LONG_NAMES  # noqa: E402
from PedTumorSegLib.logic import ModuleLogic  # noqa: E402
from PedTumorSegLib.requirements import ensure_requirements  # noqa: E402

_SPECS = {s.name: s for s in panel.slider_specs()}
#: packages reloaded with the module by "Reload" (developer mode)
RELOADED_PACKAGES = ("pedtumorseg", "PedTumorSegLib")


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
    device: Annotated[str, Choice(list(panel.DEVICE_CHOICES))] = panel.DEVICE_CHOICES[0]
    quality: Annotated[str, Choice(list(panel.QUALITY_CHOICES))] = panel.QUALITY_CHOICES[0]
    skullStrip: Annotated[str, Choice(list(panel.RAW_SCAN_CHOICES))] = panel.RAW_SCAN_CHOICES[0]
    register: Annotated[str, Choice(list(panel.RAW_SCAN_CHOICES))] = panel.RAW_SCAN_CHOICES[0]
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
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PedTumorSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PedTumorSegLogic()
        for spec in _SPECS.values():
            label, widget = getattr(self.ui, spec.name + "Label", None), getattr(self.ui, spec.widget_name)
            if spec.kind == "slider":
                if label is not None:
                    label.text = spec.label + ":"
                widget.suffix = f" {spec.unit}" if spec.unit else ""
                widget.connect("valueChanged(double)", self._schedulePostprocessing)
            else:
                widget.text = spec.label
                widget.connect("toggled(bool)", self._schedulePostprocessing)
        self.ui.resultsTable.setColumnCount(len(panel.RESULT_COLUMNS))
        self.ui.resultsTable.setHorizontalHeaderLabels(list(panel.RESULT_COLUMNS))
        self.ui.resultsTable.horizontalHeader().setStretchLastSection(True)
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.connect("timeout()", self._onPoll)
        self._debounceTimer = qt.QTimer()  # slider moves coalesce; a move costs a few tens of ms (benchmarked)
        self._debounceTimer.setSingleShot(True)
        self._debounceTimer.setInterval(30)
        self._debounceTimer.connect("timeout()", self._applyPostprocessing)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.autoAssignButton.connect("clicked(bool)",
                                         lambda: self.logic.autoAssignInputs(self._parameterNode, onlyEmpty=False))
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.resetButton.connect("clicked(bool)", self.onResetButton)
        self.ui.show3DButton.connect("clicked(bool)", lambda: self._try(_("Failed to show the segmentation in 3D."),
                                                                        self.logic.showSegmentation3D))
        for export in (("exportLabelmap", _("Export BraTS label map"), "-seg.nii.gz", "NIfTI (*.nii.gz *.nii)"),
                       ("exportSegmentation", _("Export segmentation"), ".seg.nrrd", "Segmentation (*.seg.nrrd)"),
                       ("exportCsv", _("Export volumes"), "-volumes.csv", "CSV (*.csv)")):
            getattr(self.ui, export[0] + "Button").connect("clicked(bool)", lambda _=False, e=export: self.onExport(*e))
        self.initializeParameterNode()
        self._updateResultsTable()

    def cleanup(self) -> None:
        self.removeObservers()
        self._pollTimer.stop()
        self._debounceTimer.stop()
        if self._run is not None:
            self._run.cleanup()  # cancels a running prediction and removes its temporary files
            self._run = None

    def onReload(self) -> None:
        """Reload the core package and the logic too, not only this file."""
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
        if isinstance(node, vtkMRMLScalarVolumeNode) and self._parameterNode is not None:
            # the volume's name is set by the time the timer fires
            qt.QTimer.singleShot(0, lambda: self.logic.autoAssignInputs(self._parameterNode, onlyEmpty=True))

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.logic.autoAssignInputs(self._parameterNode, onlyEmpty=True)
        self.ui.modelPathLineEdit.blockSignals(True)  # showing the saved path is not a change of model
        self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
        self.ui.modelPathLineEdit.blockSignals(False)
        self._updateModelInfo()

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def onModelPathChanged(self, path) -> None:
        if self._parameterNode is not None:
            self._parameterNode.modelPath = path or ""
            self._updateModelInfo()

    def _updateModelInfo(self) -> None:
        try:
            bundle = self.logic.loadBundle(self._parameterNode.modelPath if self._parameterNode else "")
        except Exception as exc:  # shown to the user, not raised: a wrong path is typed, not a bug
            self.ui.modelInfoLabel.text = _("Model not usable: {error}").format(error=exc)
            return
        self.ui.modelInfoLabel.text = _("{name} {version} ({folds} fold(s))").format(
            name=bundle.name, version=bundle.version, folds=len(bundle.folds))
        if self.logic.needsDefaultsReset(self._parameterNode, bundle):
            self._resetControls(bundle)

    def _updateButtons(self, caller=None, event=None) -> None:
        running = self._run is not None
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        problems = [] if running else self.logic.inputProblems(self._parameterNode)
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = (_("Stop the running prediction") if running else
                                       "\n".join(problems) or _("Segment the tumor in the background"))
        for name in ("show3DButton", "exportLabelmapButton", "exportSegmentationButton", "exportCsvButton",
                     "resetButton"):
            getattr(self.ui, name).enabled = self.logic.session is not None

    def _try(self, message, function, *args):
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            return function(*args)

    # -- apply / cancel -------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        problems = self.logic.inputProblems(self._parameterNode)
        if problems:
            slicer.util.errorDisplay("\n".join(problems))
            return
        if not self.logic.ensureRequirements(askConfirmation=True):
            return
        p = self._parameterNode
        self._run = self._try(_("Failed to start the segmentation."), self.logic.startPrediction,
                              self.logic.selectedInputs(p), p.modelPath, p.quality, p.device,
                              panel.raw_scan_arguments(p.skullStrip, p.register))
        if self._run is None:
            return
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = _("Starting...")
        self._updateButtons()
        self._pollTimer.start()

    def _onPoll(self) -> None:
        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        for event in run.poll():
            kind = event.get("event")
            if kind == "progress":
                self.ui.progressBar.value = int(round(100 * float(event.get("fraction", 0.0))))
                self.ui.statusLabel.text = str(event.get("message", ""))
            elif kind == "log":
                logging.info("PedTumorSeg: " + str(event.get("message", "")))
            elif kind == "exit":
                self._pollTimer.stop()
                self._finishRun(run)
                return

    def _finishRun(self, run) -> None:
        try:
            if run.cancelled:
                self.ui.statusLabel.text = _("Cancelled.")
            elif run.returncode == 0 and run.result is not None:
                node = self._try(_("Failed to load the segmentation."), self.logic.finishPrediction, run,
                                 self._parameterNode.outputSegmentation,
                                 self.logic.currentParams(self._parameterNode, run.modelPath))
                if node is not None:
                    self._parameterNode.outputSegmentation = node
                    self.ui.statusLabel.text = panel.status_text(self.logic.runInfo)
            else:
                message = run.failure_message()
                self.ui.statusLabel.text = _("Failed: {message}").format(message=message)
                slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message))
        finally:
            run.cleanup()
            self._run = None
            self.ui.progressBar.visible = False
            self._updateResultsTable()

    # -- post-processing ------------------------------------------------------------------------------------
    def _schedulePostprocessing(self, *args) -> None:
        if self.logic.session is not None:
            self._debounceTimer.start()

    def _applyPostprocessing(self) -> None:
        if self.logic.session is None:
            return
        values = {spec.name: (getattr(self.ui, spec.widget_name).value if spec.kind == "slider"
                              else getattr(self.ui, spec.widget_name).checked) for spec in _SPECS.values()}
        changes = panel.parameter_changes(self.logic.session.params, values)
        if changes:
            self._try(_("Post-processing failed."), self.logic.updatePostprocessing, changes, self._confirmOverwrite)
            with slicer.util.NodeModify(self._parameterNode):  # show a clamped ratio window
                for name, value in self.logic.controlValuesAfterClamp().items():
                    if getattr(self._parameterNode, name) != value:
                        setattr(self._parameterNode, name, value)
            self._updateResultsTable()

    @staticmethod
    def _confirmOverwrite(labels) -> bool:
        names = ", ".join(LABEL_LONG_NAMES[label] for label in sorted(labels))
        return slicer.util.confirmYesNoDisplay(
            _("The segment(s) {names} were edited since the last update. Overwrite the edits with the new "
              "post-processing result?").format(names=names))

    def onResetButton(self) -> None:
        bundle = self._try(_("Could not read the model's defaults."), self.logic.loadBundle,
                           self._parameterNode.modelPath)
        if bundle is not None:
            self._resetControls(bundle)

    def _resetControls(self, bundle) -> None:
        with slicer.util.NodeModify(self._parameterNode):  # the sliders then update the overlay
            self.logic.resetPostprocessingControls(self._parameterNode, bundle)

    def _updateResultsTable(self) -> None:
        rows = self.logic.resultsRows() if self.logic.session is not None else []
        table = self.ui.resultsTable
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(panel.format_results_row(row)):
                item = qt.QTableWidgetItem(text)
                if c >= 2:
                    item.setTextAlignment(qt.Qt.AlignRight | qt.Qt.AlignVCenter)
                table.setItem(r, c, item)
        self._updateButtons()

    def onExport(self, method, caption, suffix, fileFilter) -> None:
        name = (self._parameterNode.t1ceVolume.GetName() if self._parameterNode.t1ceVolume else "case") + suffix
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), caption, name, fileFilter)
        if path:
            self._try(_("Export failed."), getattr(self.logic, method), path)


class PedTumorSegLogic(ScriptedLoadableModuleLogic, ModuleLogic):
    """``PedTumorSegLib.logic.ModuleLogic`` on Slicer's scene, temporary folder and ``PythonSlicer``."""

    def __init__(self) -> None:
        from pedtumorseg.background import find_python_slicer

        ScriptedLoadableModuleLogic.__init__(self)
        ModuleLogic.__init__(self, slicer.mrmlScene, lambda: slicer.util.tempDirectory(key="PedTumorSeg"),
                             find_python_slicer)

    def getParameterNode(self):
        return PedTumorSegParameterNode(super().getParameterNode())

    def ensureRequirements(self, askConfirmation: bool = True) -> bool:
        """Install missing packages (torch through the PyTorch extension, the rest with pip); False if not done."""
        def torchInstaller():
            try:
                import PyTorchUtils  # module of the PyTorch extension (EXTENSION_DEPENDS)
            except ModuleNotFoundError:
                return None
            return PyTorchUtils.PyTorchUtilsLogic()

        def pipInstall(requirements):
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)

        return ensure_requirements(slicer.util.errorDisplay, slicer.util.confirmOkCancelDisplay, pipInstall,
                                   torchInstaller, askConfirmation)


class PedTumorSegTest(ScriptedLoadableModuleTest):
    """End to end in Slicer: phantom -> background prediction (demo bundle, CPU, Fast) compared with the command
    line on the same files -> segments -> slider -> exports (``PedTumorSegLib.self_test``)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PedTumorSeg_phantom()

    def test_PedTumorSeg_phantom(self):
        import tempfile
        from pathlib import Path

        from pedtumorseg.background import find_python_slicer
        from PedTumorSegLib.self_test import check_phantom_run, load_phantom

        logic = PedTumorSegLogic()
        self.assertTrue(logic.ensureRequirements(askConfirmation=False))
        try:
            import nilearn  # noqa: F401  (the phantom's MNI152 anatomy; needed by this test only)
        except ModuleNotFoundError:
            slicer.util.pip_install("nilearn")
        with tempfile.TemporaryDirectory() as tmp:
            self.delayDisplay("Writing and loading a phantom case")
            volumes = load_phantom(lambda path: slicer.util.loadVolume(str(path)), tmp)
            facts = check_phantom_run(logic, slicer.mrmlScene, volumes, Path(tmp) / "work", find_python_slicer(),
                                      log=self.delayDisplay, terminologies=slicer.modules.terminologies.logic())
        self.delayDisplay(f"Test passed ({facts})")
