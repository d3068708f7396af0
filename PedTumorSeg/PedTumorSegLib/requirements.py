"""Install the prediction's missing Python packages (no Qt here: the dialogs and installers are passed in)."""

from __future__ import annotations

from pedtumorseg.ui import requirements


def pytorch_extension_installer():
    """The PyTorch extension's ``PyTorchUtilsLogic`` (it installs the torch build that fits the GPU), or None when
    that extension is not installed."""
    try:
        import PyTorchUtils  # module of the PyTorch extension (EXTENSION_DEPENDS)
    except ModuleNotFoundError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def ensure_requirements(errorDisplay, confirm, pipInstall, torchInstaller=pytorch_extension_installer,
                        askConfirmation: bool = True) -> bool:
    """Install what ``requirements.missing_requirements`` finds missing; False when it cannot or the user declined.

    ``errorDisplay(text)``, ``confirm(text) -> bool``, ``pipInstall(requirements)``; ``torchInstaller()`` returns
    the PyTorch extension's ``PyTorchUtilsLogic`` or None. torch goes through it (it picks the CUDA build),
    safetensors and tqdm through pip; numpy, scipy, SimpleITK are never installed.
    """
    missing = requirements.missing_requirements(requirements.installed_versions())
    if missing.problems:
        errorDisplay("\n".join(missing.problems))
        return False
    if missing.install_torch:
        installer = torchInstaller()
        if installer is None:
            errorDisplay("PyTorch is required. Install the 'PyTorch' extension from the Extensions Manager, restart "
                         "Slicer and try again.")
            return False
        if installer.installTorch(askConfirmation=askConfirmation) is None:
            return False
    if missing.pip:
        if askConfirmation and not confirm(f"PedTumorSeg needs these Python packages: {', '.join(missing.pip)}. "
                                           "Install them now?"):
            return False
        pipInstall(list(missing.pip))
    return True
