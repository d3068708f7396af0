"""Which Python packages the Slicer module must install before it can run (torch through the PyTorch extension,
the rest with pip, nothing Slicer ships)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


#: packages Slicer ships; never installed or replaced by the module
SLICER_SHIPPED: tuple[str, ...] = ("numpy", "scipy", "SimpleITK")
#: packages installed with pip when missing (requirement strings as in pyproject.toml)
PIP_REQUIREMENTS: dict[str, str] = {"safetensors": "safetensors>=0.4", "tqdm": "tqdm>=4.60"}


@dataclass(frozen=True)
class MissingRequirements:
    install_torch: bool  # through the PyTorch extension (PyTorchUtils)
    pip: tuple[str, ...]  # requirement strings for slicer.util.pip_install
    problems: tuple[str, ...]  # missing packages that must not be installed by the module

    @property
    def ok(self) -> bool:
        return not self.install_torch and not self.pip and not self.problems


def installed_versions() -> dict[str, str | None]:
    """Distribution name -> version (None if missing) of :data:`SLICER_SHIPPED`, torch and :data:`PIP_REQUIREMENTS`.
    Packages Slicer builds itself (e.g. SimpleITK) may have no pip metadata, so an importable package without
    metadata counts as installed ("unknown")."""
    import importlib.metadata
    import importlib.util

    versions: dict[str, str | None] = {}
    for name in list(SLICER_SHIPPED) + ["torch"] + list(PIP_REQUIREMENTS):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown" if importlib.util.find_spec(name) is not None else None
    return versions


def missing_requirements(installed: Mapping[str, str | None]) -> MissingRequirements:
    """Decide what to install from ``installed`` (distribution name -> version, None or absent = missing).

    torch goes through the PyTorch extension (it picks the CUDA build); safetensors and tqdm through pip;
    a missing numpy, scipy or SimpleITK is reported as a broken Slicer installation, never installed.
    """
    lower = {str(k).lower(): v for k, v in installed.items()}

    def missing(name: str) -> bool:
        return not lower.get(name.lower())

    problems = tuple(f"{name} is missing from Slicer's Python: reinstall Slicer (the module does not replace "
                     f"packages Slicer ships)" for name in SLICER_SHIPPED if missing(name))
    pip = tuple(req for name, req in PIP_REQUIREMENTS.items() if missing(name))
    return MissingRequirements(install_torch=missing("torch"), pip=pip, problems=problems)
