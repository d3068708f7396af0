"""Run a prediction for the module: the four input volumes written through storage nodes into a temporary folder,
the ``pedtumorseg predict --raw-only`` background process, and its raw labels read back into a post-processing
:class:`pedtumorseg.postprocess.Session` (the only post-processor of a module result).

MRML only (Slicer's MRML classes, vtk, numpy and the core package); the temporary folder, the Python that runs
the process and the process runner are injected, so that it runs on ``slicer-core`` from PyPI as in Slicer.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import slicer
from pedtumorseg.ui import controls
from pedtumorseg.ui import assignment
from pedtumorseg.ui.background import BackgroundPrediction, build_predict_command, child_environment
from pedtumorseg.conventions import BRATS_SUFFIXES, CHANNELS

#: case id of the temporary files handed to the prediction process
CASE_ID = "PedTumorSegInput"
#: the folder holding the core package ``pedtumorseg`` (put on the prediction process's PYTHONPATH)
MODULE_DIR = str(Path(__file__).resolve().parents[1])


class PredictionLogic:
    """Starts prediction processes and turns a finished one into a ``Session``.

    ``tempDirectory()`` returns a new empty folder (removed with the run); ``pythonExecutable()`` the interpreter
    that runs ``-m pedtumorseg`` (Slicer's ``PythonSlicer``; None when not found); ``runFactory(command, workdir,
    env)`` makes the process runner (default :class:`pedtumorseg.ui.background.BackgroundPrediction`).
    """

    def __init__(self, tempDirectory, pythonExecutable, runFactory=None):
        self.tempDirectory = tempDirectory
        self.pythonExecutable = pythonExecutable
        self.runFactory = runFactory or BackgroundPrediction
        self._bundles = {}
        self.lastImages = None  # (t1, t1ce) arrays the last session was built from

    # -- model ---------------------------------------------------------------------------------------------------
    def loadBundle(self, path: str = ""):
        """The model bundle at ``path`` (empty: the shipped demo bundle), loaded once per path."""
        from pedtumorseg.inference.bundle import default_bundle_path, load_bundle

        resolved = str(path) if path else str(default_bundle_path())
        if resolved not in self._bundles:
            self._bundles[resolved] = load_bundle(resolved)
        return self._bundles[resolved]

    # -- inputs --------------------------------------------------------------------------------------------------
    @staticmethod
    def writeVolume(volumeNode, fileName: str) -> None:
        """Write a volume through a storage node outside the scene (the node keeps its own storage node)."""
        storageNode = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storageNode.SetFileName(str(fileName))
        storageNode.SetUseCompression(True)
        if not storageNode.WriteData(volumeNode):
            raise RuntimeError(f"could not write {volumeNode.GetName()} to {fileName}")

    # -- running ------------------------------------------------------------------------------------------------
    def start(self, inputs: dict, modelPath: str = "", quality: str = "Fast", device: str = "Auto",
              extraArgs=()):
        """Write the four volumes to a temporary folder and start the prediction process (not waiting).

        The run carries ``inputFiles``, ``inputNodes``, ``modelPath`` for :meth:`finish`.
        """
        problems = assignment.validate_inputs({c: (n.GetID() if n else None) for c, n in inputs.items()})
        if problems:
            raise ValueError("; ".join(problems))
        bundle = self.loadBundle(modelPath)
        settings = controls.prediction_settings(quality, device, bundle.folds)
        python = self.pythonExecutable()
        if python is None:  # python-real alone lacks Slicer's library paths; only the launcher works
            raise RuntimeError("the PythonSlicer executable was not found next to Slicer's Python")
        workdir = Path(self.tempDirectory())
        files = {}
        try:
            for channel in CHANNELS:
                files[channel] = str(workdir / f"{CASE_ID}-{BRATS_SUFFIXES[channel]}.nii.gz")
                self.writeVolume(inputs[channel], files[channel])
        except Exception:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        command = build_predict_command(python, files, workdir / "out", model=str(bundle.path), case_id=CASE_ID,
                                        raw=False, raw_only=True, extra=list(extraArgs), **settings)
        run = self.runFactory(command, workdir, env=child_environment([MODULE_DIR]))
        run.inputFiles = files
        run.inputNodes = dict(inputs)  # the selectors may change while it runs
        run.modelPath = modelPath
        logging.info("PedTumorSeg: " + " ".join(command))
        try:
            run.start()
        except Exception:
            run.cleanup()
            raise
        return run

    def finish(self, run, params=None):
        """``(session, referenceNode, done)`` of a finished run: the raw labels in a ``Session`` with ``params``
        (default: the bundle's defaults) on the T1CE's grid, and the run's ``progress.Done`` event."""
        from pedtumorseg.ui.session import session_from_raw_only

        outputs = run.result.outputs if run.result is not None else {}
        if params is None:
            params = self.loadBundle(run.modelPath).postprocessing
        session, images = session_from_raw_only(outputs, [run.inputFiles[c] for c in CHANNELS], params, CASE_ID)
        self.lastImages = images
        return session, run.inputNodes["t1ce"], run.result

