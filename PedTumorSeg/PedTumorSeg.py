"""PedTumorSeg: pediatric brain tumor segmentation (ET, NET, CC, ED) in 3D Slicer.

Thin MRML/Qt glue. The algorithm, the prediction process runner and every decision the panel makes live in the
Slicer-free package ``pedtumorseg`` next to this file (``pedtumorseg.panel``, ``pedtumorseg.background``,
``pedtumorseg.postprocess``); prediction runs in a background ``PythonSlicer`` process so the GUI stays
responsive. Requires Slicer >= 5.10 (Python 3.12, ``vtkSegment.SetTerminology`` era parameter node wrapper).
"""

import logging
import os
import sys
from pathlib import Path
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
if MODULE_DIR not in sys.path:  # the core package ships inside the module folder
    sys.path.insert(0, MODULE_DIR)

from pedtumorseg import panel  # noqa: E402  (needs MODULE_DIR on sys.path)
from pedtumorseg.conventions import CHANNELS, FOREGROUND_LABELS, LABEL_COLORS, LABEL_LONG_NAMES  # noqa: E402

#: case id of the temporary files handed to the prediction process
CASE_ID = "PedTumorSegInput"
#: widget objectName -> channel
INPUT_SELECTORS = {"t1": "t1Selector", "t1ce": "t1ceSelector", "t2": "t2Selector", "flair": "flairSelector"}
_SPECS = {s.name: s for s in panel.slider_specs()}


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
            "Segments pediatric brain tumors into enhancing tumor, non-enhancing tumor, cystic component and edema "
            "from T1, T1CE, T2 and T2-FLAIR volumes (enhanced nnU-Net, BraTS 2025 PED). Prediction runs in the "
            "background; post-processing sliders update the segmentation live.")
        self.parent.acknowledgementText = _(
            "Method: X. Li, Z.-Q. J. Xu, Y. Ren, T. Qiu, X. Wang, 'Towards Reliable Pediatric Brain Tumor "
            "Segmentation: Task-Specific nnU-Net Enhancements' (first place on the BraTS 2025 Task-6 PED "
            "validation leaderboard, among the top on the test set).")


# --- parameter node ----------------------------------------------------------------------------------------

@parameterNodeWrapper
class PedTumorSegParameterNode:
    t1Volume: vtkMRMLScalarVolumeNode
    t1ceVolume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    flairVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: str = ""  # empty: the shipped demo bundle
    # "<name> <version>" of the bundle whose post-processing defaults the controls were last reset to; a
    # different bundle resets them to its own defaults, the same bundle keeps the user's values
    postprocessDefaultsOf: str = ""
    device: Annotated[str, Choice(list(panel.DEVICE_CHOICES))] = panel.DEVICE_CHOICES[0]
    quality: Annotated[str, Choice(list(panel.QUALITY_CHOICES))] = panel.QUALITY_CHOICES[0]
    # post-processing controls: names are PostprocessParams fields (and the widgets' SlicerParameterName)
    ratio_enabled: bool = _SPECS["ratio_enabled"].default
    ratio_high: _slider("ratio_high") = _SPECS["ratio_high"].default
    ratio_low: _slider("ratio_low") = _SPECS["ratio_low"].default
    components_enabled: bool = _SPECS["components_enabled"].default
    min_volume_et: _slider("min_volume_et") = _SPECS["min_volume_et"].default
    min_volume_net: _slider("min_volume_net") = _SPECS["min_volume_net"].default
    min_volume_cc: _slider("min_volume_cc") = _SPECS["min_volume_cc"].default
    min_volume_ed: _slider("min_volume_ed") = _SPECS["min_volume_ed"].default


# --- widget --------------------------------------------------------------------------------------------------

class PedTumorSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._updatingGui = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PedTumorSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PedTumorSegLogic()

        for spec in _SPECS.values():
            label = getattr(self.ui, spec.name + "Label", None)
            widget = getattr(self.ui, spec.widget_name)
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
        self._debounceTimer = qt.QTimer()
        self._debounceTimer.setSingleShot(True)
        self._debounceTimer.setInterval(100)
        self._debounceTimer.connect("timeout()", self._applyPostprocessing)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.autoAssignButton.connect("clicked(bool)", lambda: self.autoAssignInputs(onlyEmpty=False))
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.resetButton.connect("clicked(bool)", self.onResetButton)
        self.ui.show3DButton.connect("clicked(bool)", self.onShow3D)
        self.ui.exportLabelmapButton.connect("clicked(bool)", self.onExportLabelmap)
        self.ui.exportSegmentationButton.connect("clicked(bool)", self.onExportSegmentation)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)

        self.initializeParameterNode()
        self._updateResultsTable()

    def cleanup(self) -> None:
        self.removeObservers()
        self._pollTimer.stop()
        self._debounceTimer.stop()
        if self._run is not None:
            self._run.cleanup()  # cancels a running prediction and removes its temporary files
            self._run = None

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

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
            qt.QTimer.singleShot(0, lambda: self.autoAssignInputs(onlyEmpty=True))

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.autoAssignInputs(onlyEmpty=True)
        self._updatingGui = True
        try:
            self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
        finally:
            self._updatingGui = False
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

    # -- inputs ---------------------------------------------------------------------------------------------
    def autoAssignInputs(self, onlyEmpty: bool) -> None:
        node = self._parameterNode
        if node is None:
            return
        volumes = [v for v in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not v.IsA("vtkMRMLLabelMapVolumeNode")]
        byName = {}
        for v in volumes:
            byName.setdefault(v.GetName(), v)
        taken = {getattr(node, c + "Volume") for c in CHANNELS if onlyEmpty and getattr(node, c + "Volume")}
        names = [n for n, v in byName.items() if v not in taken]
        for channel, name in panel.assign_inputs(names).items():
            if not onlyEmpty or getattr(node, channel + "Volume") is None:
                setattr(node, channel + "Volume", byName[name])

    def selectedInputs(self) -> dict:
        return {c: getattr(self._parameterNode, c + "Volume") for c in CHANNELS}

    def onModelPathChanged(self, path) -> None:
        if self._updatingGui or self._parameterNode is None:
            return
        self._parameterNode.modelPath = path or ""
        self._updateModelInfo()

    def _updateModelInfo(self) -> None:
        path = self._parameterNode.modelPath if self._parameterNode else ""
        try:
            bundle = self.logic.loadBundle(path)
        except Exception as exc:  # shown to the user, not raised: a wrong path is typed, not a bug
            self.ui.modelInfoLabel.text = _("Model not usable: {error}").format(error=exc)
            return
        self.ui.modelInfoLabel.text = _("{name} {version} ({folds} fold(s))").format(
            name=bundle.name, version=bundle.version, folds=len(bundle.folds))
        if self._parameterNode is not None and self._parameterNode.postprocessDefaultsOf != _bundleKey(bundle):
            self._resetPostprocessingControls(bundle)

    def _updateButtons(self, caller=None, event=None) -> None:
        if self._run is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the running prediction")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        problems = panel.validate_inputs(
            {c: (n.GetID() if n else None) for c, n in self.selectedInputs().items()}) if self._parameterNode else ["-"]
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = "\n".join(problems) if problems else _("Segment the tumor in the background")
        hasResult = self.logic.session is not None
        for name in ("show3DButton", "exportLabelmapButton", "exportSegmentationButton", "exportCsvButton",
                     "resetButton"):
            getattr(self.ui, name).enabled = hasResult

    # -- apply / cancel -----------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        inputs = self.selectedInputs()
        problems = panel.validate_inputs({c: (n.GetID() if n else None) for c, n in inputs.items()})
        if problems:
            slicer.util.errorDisplay("\n".join(problems))
            return
        if not self.logic.ensureRequirements(askConfirmation=True):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self._run = self.logic.startPrediction(inputs, self._parameterNode.modelPath, self._parameterNode.quality,
                                                   self._parameterNode.device)
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
                with slicer.util.tryWithErrorDisplay(_("Failed to load the segmentation."), waitCursor=True):
                    segmentationNode = self.logic.finishPrediction(run, self._parameterNode.outputSegmentation,
                                                                   self._currentParams(run.modelPath))
                    self._parameterNode.outputSegmentation = segmentationNode
                    self.ui.statusLabel.text = _("Done.")
            else:
                message = run.failure_message()
                self.ui.statusLabel.text = _("Failed: {message}").format(message=message)
                slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message))
        finally:
            run.cleanup()
            self._run = None
            self.ui.progressBar.visible = False
            self._updateButtons()
            self._updateResultsTable()

    # -- post-processing ---------------------------------------------------------------------------------------
    def _currentParams(self, modelPath=None):
        """The post-processing parameters of the bundle at ``modelPath`` (default: the selected one) with the
        panel's control values. A finished run passes its own bundle: the model may have been changed meanwhile,
        and the settings the panel does not show (normalization, ratio window) belong to the model that ran."""
        path = self._parameterNode.modelPath if modelPath is None else modelPath
        base = self.logic.loadBundle(path).postprocessing
        return base.replace(**{name: getattr(self._parameterNode, name) for name in _SPECS})

    def _schedulePostprocessing(self, *args) -> None:
        if self.logic.session is not None:
            self._debounceTimer.start()

    def _applyPostprocessing(self) -> None:
        if self.logic.session is None:
            return
        values = {spec.name: (getattr(self.ui, spec.widget_name).value if spec.kind == "slider"
                              else getattr(self.ui, spec.widget_name).checked) for spec in _SPECS.values()}
        changes = panel.parameter_changes(self.logic.session.params, values)
        if not changes:
            return
        with slicer.util.tryWithErrorDisplay(_("Post-processing failed."), waitCursor=True):
            self.logic.updatePostprocessing(changes, confirmOverwrite=self._confirmOverwrite)
        self._updateResultsTable()

    @staticmethod
    def _confirmOverwrite(labels) -> bool:
        names = ", ".join(LABEL_LONG_NAMES[label] for label in sorted(labels))
        return slicer.util.confirmYesNoDisplay(
            _("The segment(s) {names} were edited since the last update. Overwrite the edits with the new "
              "post-processing result?").format(names=names))

    def onResetButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not read the model's defaults."), waitCursor=True):
            self._resetPostprocessingControls(self.logic.loadBundle(self._parameterNode.modelPath))

    def _resetPostprocessingControls(self, bundle) -> None:
        """Set the post-processing controls to the bundle's defaults (the sliders then update the overlay)."""
        defaults = bundle.postprocessing
        with slicer.util.NodeModify(self._parameterNode):
            for name in _SPECS:
                setattr(self._parameterNode, name, getattr(defaults, name))
            self._parameterNode.postprocessDefaultsOf = _bundleKey(bundle)

    # -- results ----------------------------------------------------------------------------------------------
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

    def onShow3D(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to show the segmentation in 3D."), waitCursor=True):
            self.logic.showSegmentation3D()

    def _saveFileName(self, caption, suffix, fileFilter):
        name = (self._parameterNode.t1ceVolume.GetName() if self._parameterNode.t1ceVolume else "case") + suffix
        return qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), caption, name, fileFilter)

    def onExportLabelmap(self) -> None:
        path = self._saveFileName(_("Export BraTS label map"), "-seg.nii.gz", "NIfTI (*.nii.gz *.nii)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                self.logic.exportLabelmap(path)

    def onExportSegmentation(self) -> None:
        path = self._saveFileName(_("Export segmentation"), ".seg.nrrd", "Segmentation (*.seg.nrrd)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                self.logic.exportSegmentation(path)

    def onExportCsv(self) -> None:
        path = self._saveFileName(_("Export volumes"), "-volumes.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
                self.logic.exportCsv(path)


def _bundleKey(bundle) -> str:
    return f"{bundle.name} {bundle.version}"


# --- logic ---------------------------------------------------------------------------------------------------

class PedTumorSegLogic(ScriptedLoadableModuleLogic):
    """Runs predictions and keeps the post-processing session of the current result. Usable without the widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._bundles = {}
        self.forgetResult()

    def getParameterNode(self):
        return PedTumorSegParameterNode(super().getParameterNode())

    def forgetResult(self) -> None:
        self.session = None
        self.segmentationNode = None
        self.referenceNode = None
        self.segmentIds = {}  # label -> segment ID
        self.written = {}  # label -> digest of the mask last written by the module
        self.protected = set()  # labels the user chose to keep (hand edits not overwritten)
        self.cliFinalLabels = None  # the prediction process's final labels (for the self-test)
        self.sessionImages = None  # (t1, t1ce) arrays on the T1CE grid that the session uses

    # -- requirements -------------------------------------------------------------------------------------------
    @staticmethod
    def installedVersions() -> dict:
        """Distribution name -> version (None if missing). Packages Slicer builds itself (e.g. SimpleITK) may
        have no pip metadata, so an importable package without metadata counts as installed ("unknown")."""
        import importlib.metadata
        import importlib.util

        names = list(panel.SLICER_SHIPPED) + ["torch"] + list(panel.PIP_REQUIREMENTS)
        versions = {}
        for name in names:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = "unknown" if importlib.util.find_spec(name) is not None else None
        return versions

    def ensureRequirements(self, askConfirmation: bool = True) -> bool:
        """Install what is missing (torch through the PyTorch extension, the rest with pip); False if not done."""
        missing = panel.missing_requirements(self.installedVersions())
        if missing.problems:
            slicer.util.errorDisplay("\n".join(missing.problems))
            return False
        if missing.install_torch:
            try:
                import PyTorchUtils  # module of the PyTorch extension (EXTENSION_DEPENDS)
            except ModuleNotFoundError:
                slicer.util.errorDisplay(_("PyTorch is required. Install the 'PyTorch' extension from the "
                                           "Extensions Manager, restart Slicer and try again."))
                return False
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation) is None:
                return False
        if missing.pip:
            if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                    _("PedTumorSeg needs these Python packages: {packages}. Install them now?").format(
                        packages=", ".join(missing.pip))):
                return False
            with slicer.util.WaitCursor():
                slicer.util.pip_install(list(missing.pip))
        return True

    # -- model -----------------------------------------------------------------------------------------------------
    def loadBundle(self, path: str = ""):
        """The model bundle at ``path`` (empty: the shipped demo bundle), loaded once per path."""
        from pedtumorseg.bundle import default_bundle_path, load_bundle

        resolved = str(path) if path else str(default_bundle_path())
        if resolved not in self._bundles:
            self._bundles[resolved] = load_bundle(resolved)
        return self._bundles[resolved]

    # -- prediction ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _writeVolume(volumeNode, fileName: str) -> None:
        # a separate storage node: the input volume keeps its own storage node and modified state
        storageNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storageNode.SetFileName(fileName)
            if not storageNode.WriteData(volumeNode):
                raise RuntimeError(f"could not write {volumeNode.GetName()} to {fileName}")
        finally:
            slicer.mrmlScene.RemoveNode(storageNode)

    def startPrediction(self, inputs: dict, modelPath: str = "", quality: str = "Fast", device: str = "Auto"):
        """Write the four volumes to a temporary folder and start the prediction process (not waiting)."""
        from pedtumorseg.background import (BackgroundPrediction, build_predict_command, child_environment,
                                            find_python_slicer)
        from pedtumorseg.conventions import BRATS_SUFFIXES

        problems = panel.validate_inputs({c: (n.GetID() if n else None) for c, n in inputs.items()})
        if problems:
            raise ValueError("; ".join(problems))
        bundle = self.loadBundle(modelPath)
        settings = panel.prediction_settings(quality, device, bundle.folds)
        workdir = Path(slicer.util.tempDirectory(key="PedTumorSeg"))
        files = {}
        try:
            for channel in CHANNELS:
                files[channel] = str(workdir / f"{CASE_ID}-{BRATS_SUFFIXES[channel]}.nii.gz")
                self._writeVolume(inputs[channel], files[channel])
        except Exception:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
            raise
        python = find_python_slicer()
        if python is None:  # python-real alone lacks Slicer's library paths; only the launcher works
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
            raise RuntimeError("the PythonSlicer executable was not found next to Slicer's Python")
        command = build_predict_command(python, files, workdir / "out", model=str(bundle.path), case_id=CASE_ID,
                                        raw=True, **settings)
        run = BackgroundPrediction(command, workdir, env=child_environment([MODULE_DIR]))
        run.inputFiles = files
        run.inputNodes = dict(inputs)  # the selectors may change while it runs
        run.outputDir = workdir / "out"
        run.modelPath = modelPath
        logging.info("PedTumorSeg: " + " ".join(command))
        try:
            run.start()
        except Exception:
            run.cleanup()
            raise
        return run

    def predictSync(self, inputs: dict, modelPath: str = "", quality: str = "Fast", device: str = "Auto",
                    segmentationNode=None, params=None, timeout: float = 3600):
        """Start, wait for and load a prediction (self-test and scripting); raises on failure."""
        run = self.startPrediction(inputs, modelPath, quality, device)
        try:
            run.wait(timeout=timeout)
            if run.returncode != 0 or run.result is None:
                raise RuntimeError(run.failure_message())
            return self.finishPrediction(run, segmentationNode, params)
        finally:
            run.cleanup()

    def finishPrediction(self, run, segmentationNode=None, params=None):
        """Load the raw labels of a finished run, start the post-processing session and fill the segmentation."""
        from pedtumorseg.io import case_from_files, load_case, read_labels
        from pedtumorseg.postprocess import Session

        # the "done" event names the files (importing pedtumorseg.pipeline here would load torch into Slicer)
        outputs = (run.result or {}).get("outputs", {})
        if "raw" not in outputs or "seg" not in outputs:
            raise RuntimeError(f"the prediction process did not report its label files (got {sorted(outputs)})")
        case = load_case(case_from_files(*[run.inputFiles[c] for c in CHANNELS], case_id=CASE_ID))
        raw = read_labels(outputs["raw"], case.geometry)
        if params is None:
            params = self.loadBundle(run.modelPath).postprocessing
        session = Session(raw, case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")],
                          case.geometry.spacing_zyx, params)
        cliFinal = read_labels(outputs["seg"], case.geometry)
        self.forgetResult()
        self.cliFinalLabels = cliFinal
        self.sessionImages = (case.images[CHANNELS.index("t1")], case.images[CHANNELS.index("t1ce")])
        return self.setResult(session, run.inputNodes["t1ce"], segmentationNode)

    def setResult(self, session, referenceNode, segmentationNode=None):
        """Show ``session``'s labels as four segments on ``referenceNode``'s grid (a new node if None)."""
        self.session = session
        self.referenceNode = referenceNode
        self.segmentIds = {}
        self.written = {}
        self.protected = set()
        self.segmentationNode = self._prepareSegmentation(segmentationNode, referenceNode)
        for label in FOREGROUND_LABELS:
            self._writeSegment(label)
        self.segmentationNode.GetDisplayNode().SetVisibility(True)
        return self.segmentationNode

    def _prepareSegmentation(self, segmentationNode, referenceNode):
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", referenceNode.GetName() + " tumor segmentation")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceNode)
        segmentationNode.SetSourceRepresentationToBinaryLabelmap()
        segmentation = segmentationNode.GetSegmentation()
        segmentation.RemoveAllSegments()
        for label in FOREGROUND_LABELS:
            self.segmentIds[label] = self._addSegment(segmentation, label)
        # beside the inputs in the subject hierarchy: same parent as the T1CE volume
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        referenceItem = shNode.GetItemByDataNode(referenceNode)
        segmentationItem = shNode.GetItemByDataNode(segmentationNode)
        if referenceItem and segmentationItem:
            shNode.SetItemParent(segmentationItem, shNode.GetItemParent(referenceItem))
        return segmentationNode

    @staticmethod
    def _addSegment(segmentation, label: int) -> str:
        """An empty segment for ``label`` with its name, color and terminology; returns its ID."""
        segmentId = segmentation.AddEmptySegment(f"label_{label}", LABEL_LONG_NAMES[label], list(LABEL_COLORS[label]))
        segment = segmentation.GetSegment(segmentId)
        segment.SetTerminology(panel.terminology_entry(label))
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
        return segmentId

    def _writeSegment(self, label: int) -> None:
        import numpy as np

        segmentation = self.segmentationNode.GetSegmentation()
        if segmentation.GetSegment(self.segmentIds[label]) is None:
            # deleted by the user, who then agreed to overwrite: recreate it as the module made it (writing to a
            # missing ID would make Slicer add a bare segment named after the ID, without color or terminology)
            self.segmentIds[label] = self._addSegment(segmentation, label)
        mask = (np.asarray(self.session.labels) == label).astype(np.uint8)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, self.segmentationNode, self.segmentIds[label],
                                                         self.referenceNode)
        self.written[label] = panel.segment_digest(mask)

    def segmentArray(self, label: int):
        """The current content of a segment on the reference grid (uint8 0/1)."""
        import numpy as np

        segmentId = self.segmentIds[label]
        if self.segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            return None
        array = slicer.util.arrayFromSegmentBinaryLabelmap(self.segmentationNode, segmentId, self.referenceNode)
        shape = slicer.util.arrayFromVolume(self.referenceNode).shape
        if array.shape != shape and not array.any():
            array = np.zeros(shape, np.uint8)
        return array

    def editedLabels(self, labels) -> set:
        current = {}
        for label in labels:
            array = self.segmentArray(label)
            if array is not None:
                current[label] = panel.segment_digest(array)
        return panel.edited_segments({label: self.written[label] for label in labels if label in self.written},
                                     current)

    def updatePostprocessing(self, changes: dict, confirmOverwrite=None) -> set:
        """Apply parameter changes; rewrite only changed segments, asking before overwriting hand edits.

        ``confirmOverwrite(labels) -> bool``; without it, edited segments are kept. Returns the labels rewritten.
        """
        if self.session is None:
            raise RuntimeError("no segmentation result to post-process")
        changed = self.session.update(**changes) - self.protected
        if not changed:
            return set()
        edited = self.editedLabels(changed)
        if edited:
            if confirmOverwrite is not None and confirmOverwrite(edited):
                pass
            else:
                self.protected |= edited
                changed -= edited
        for label in sorted(changed):
            self._writeSegment(label)
        return changed

    def resultsRows(self):
        """Volumes of the segmentation as shown (session labels; with kept hand edits, the segments themselves)."""
        import numpy as np

        if self.protected:
            labels = np.zeros(self.session.labels.shape, np.uint8)
            for label in FOREGROUND_LABELS:
                array = self.segmentArray(label)
                if array is not None:
                    labels[array > 0] = label
        else:
            labels = self.session.labels
        return panel.results_table(labels, self.session.spacing_zyx)

    def showSegmentation3D(self) -> None:
        self.segmentationNode.CreateClosedSurfaceRepresentation()
        self.segmentationNode.GetDisplayNode().SetVisibility3D(True)

    # -- export ---------------------------------------------------------------------------------------------------------
    def exportLabelmap(self, path: str):
        """BraTS label map: uint8, values 1 ET, 2 NET, 3 CC, 4 ED, on the T1CE grid."""
        import numpy as np

        labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__PedTumorSegExport__")
        try:
            segmentIds = vtk.vtkStringArray()
            for label in FOREGROUND_LABELS:  # export order = label value (1-based position)
                segmentIds.InsertNextValue(self.segmentIds[label])
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    self.segmentationNode, segmentIds, labelmapNode, self.referenceNode,
                    slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise RuntimeError("exporting the segments to a label map failed")
            array = slicer.util.arrayFromVolume(labelmapNode)
            if array.min() < 0 or array.max() > 4:
                raise RuntimeError(f"unexpected label values {np.unique(array).tolist()} in the export")
            slicer.util.updateVolumeFromArray(labelmapNode, array.astype(np.uint8))
            if not slicer.util.saveNode(labelmapNode, str(path)):
                raise RuntimeError(f"could not write {path}")
        finally:
            if labelmapNode.GetDisplayNode() and labelmapNode.GetDisplayNode().GetColorNode():
                colorNode = labelmapNode.GetDisplayNode().GetColorNode()
                if colorNode.GetName().startswith("__PedTumorSegExport__"):
                    slicer.mrmlScene.RemoveNode(colorNode)
            slicer.mrmlScene.RemoveNode(labelmapNode)
        return path

    def exportSegmentation(self, path: str):
        if not slicer.util.saveNode(self.segmentationNode, str(path)):
            raise RuntimeError(f"could not write {path}")
        return path

    def exportCsv(self, path: str):
        from pedtumorseg.io import atomic_output

        text = panel.results_csv(self.resultsRows())
        with atomic_output(path) as tmp:  # no partial or leftover temporary file on failure
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write(text)
        return path


# --- self-test -------------------------------------------------------------------------------------------------

class PedTumorSegTest(ScriptedLoadableModuleTest):
    """End-to-end in Slicer: phantom -> background prediction (demo bundle, CPU, fast) -> segments -> slider -> export."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PedTumorSeg_phantom()

    def test_PedTumorSeg_phantom(self):
        import tempfile

        import numpy as np

        from pedtumorseg.conventions import BRATS_SUFFIXES, ET
        from pedtumorseg.io import read_labels
        from pedtumorseg.phantom import make_phantom, write_phantom

        logic = PedTumorSegLogic()
        self.assertTrue(logic.ensureRequirements(askConfirmation=False))
        try:
            import nilearn  # noqa: F401  (the phantom's MNI152 anatomy; needed by this test only)
        except ModuleNotFoundError:
            slicer.util.pip_install("nilearn")
        with tempfile.TemporaryDirectory() as tmp:
            self.delayDisplay("Writing a phantom case")
            phantom = make_phantom(3, "small")
            caseDir = Path(write_phantom(phantom, tmp))
            volumes = {}
            for channel in CHANNELS:
                path = caseDir / f"{phantom.case_id}-{BRATS_SUFFIXES[channel]}.nii.gz"
                volumes[channel] = slicer.util.loadVolume(str(path))
            self.assertEqual(panel.assign_inputs([v.GetName() for v in volumes.values()]),
                             {c: volumes[c].GetName() for c in CHANNELS})

            self.delayDisplay("Predicting (demo bundle, CPU, fast)")
            segmentationNode = logic.predictSync(volumes, "", quality="Fast", device="CPU")
            segmentation = segmentationNode.GetSegmentation()
            self.assertEqual(segmentation.GetNumberOfSegments(), 4)
            self.assertTrue(np.array_equal(logic.session.labels, logic.cliFinalLabels),
                            "the session's labels differ from the prediction process's final labels")
            for label in FOREGROUND_LABELS:
                segment = segmentation.GetSegment(logic.segmentIds[label])
                self.assertEqual(segment.GetName(), LABEL_LONG_NAMES[label])
                np.testing.assert_allclose(segment.GetColor(), LABEL_COLORS[label], atol=1e-6)
                self.assertEqual(segment.GetTerminology(), panel.terminology_entry(label))
                entry = slicer.vtkSlicerTerminologyEntry()
                self.assertTrue(slicer.modules.terminologies.logic().DeserializeTerminologyEntry(
                    panel.terminology_entry(label), entry))
                array = logic.segmentArray(label)
                self.assertEqual(int(array.sum()), int(np.count_nonzero(logic.session.labels == label)))
            self.assertGreater(int(np.count_nonzero(logic.session.labels == ET)), 0, "the ET segment is empty")
            for label in FOREGROUND_LABELS:
                self.assertGreater(int(logic.segmentArray(label).sum()), 0,
                                   f"segment {LABEL_LONG_NAMES[label]} is empty")

            self.delayDisplay("Moving the ET minimum-volume slider")
            from pedtumorseg.postprocess import Session

            shadow = Session(logic.session.raw_labels, *logic.sessionImages, logic.session.spacing_zyx,
                             logic.session.params)
            before = int(logic.segmentArray(ET).sum())
            etComponentsVolume = before * float(np.prod(logic.session.spacing_zyx))
            newMin = float(np.ceil(etComponentsVolume + 1.0))
            changes = {"components_enabled": True, "min_volume_et": newMin}  # on, whatever the bundle's default
            expectedChanged = shadow.update(**changes)
            changed = logic.updatePostprocessing(changes)
            self.assertEqual(changed, expectedChanged)
            self.assertIn(ET, changed)
            after = int(logic.segmentArray(ET).sum())
            self.assertEqual(after, int(np.count_nonzero(shadow.labels == ET)))
            self.assertNotEqual(after, before)

            self.delayDisplay("Exporting the label map")
            out = os.path.join(tmp, "export-seg.nii.gz")
            logic.exportLabelmap(out)
            exported = read_labels(out)
            self.assertEqual(exported.dtype, np.uint8)
            np.testing.assert_array_equal(exported, logic.session.labels)
            logic.exportSegmentation(os.path.join(tmp, "export.seg.nrrd"))
            self.assertTrue(os.path.exists(os.path.join(tmp, "export.seg.nrrd")))
            csvPath = os.path.join(tmp, "volumes.csv")
            logic.exportCsv(csvPath)
            with open(csvPath, encoding="utf-8") as f:
                self.assertEqual(f.read(), panel.results_csv(panel.results_table(logic.session.labels,
                                                                                 logic.session.spacing_zyx)))
        self.delayDisplay("Test passed")

