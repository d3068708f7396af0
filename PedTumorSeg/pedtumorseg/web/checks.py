"""What ``pedtumorseg serve`` needs before it starts, each said in one line: the ``web`` extra (trame-slicer,
slicer-core), the module's MRML logic ``PedTumorSegLib``, offscreen rendering (EGL or OSMesa on Mesa), and a safe
host / token combination."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

#: pip command that installs what the web app needs
INSTALL_HINT = 'pip install "pedtumorseg[web]"'
#: Debian packages a server without GPU or display needs for VTK's offscreen rendering
SYSTEM_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libosmesa6")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

#: renders one offscreen frame and prints the render window's class (vtkEGLRenderWindow, vtkOSOpenGLRenderWindow)
_RENDER_PROBE = (
    "import vtk\n"
    "w = vtk.vtkRenderWindow(); w.SetOffScreenRendering(1); w.SetSize(8, 8)\n"
    "r = vtk.vtkRenderer(); w.AddRenderer(r); w.Render()\n"
    "print(type(w).__name__)\n"
)


def slicer_lib_path() -> Path:
    """The folder holding ``PedTumorSegLib`` (the Slicer module's MRML logic), next to the core package in a
    checkout or an editable install, as ``Testing/slicer_harness.py`` finds it; the web app puts it on
    ``sys.path`` so that it runs the module's own logic."""
    return Path(__file__).resolve().parents[2]


def missing_packages() -> list[str]:
    """One line per missing piece of the ``web`` extra or of the module's logic (empty: all there)."""
    absent = [name for name in ("trame", "trame_slicer", "slicer") if importlib.util.find_spec(name) is None]
    missing = [f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed ({INSTALL_HINT})"] \
        if absent else []
    if not (slicer_lib_path() / "PedTumorSegLib" / "logic.py").is_file():
        missing.append(f"PedTumorSegLib (the Slicer module's logic) was not found in {slicer_lib_path().name}/: "
                       "run from a source checkout or an editable install (pip install -e \".[web]\")")
    return missing


def rendering_problem(timeout: float = 60.0) -> str | None:
    """None when VTK renders offscreen here; else one line saying what is missing. Tried in a separate process:
    a missing EGL/OSMesa library can abort the process that tries."""
    try:
        done = subprocess.run([sys.executable, "-c", _RENDER_PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"offscreen rendering did not answer within {timeout:.0f} s"
    window = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
    if window and window[0] in ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow", "vtkXOpenGLRenderWindow"):
        return None
    return ("VTK cannot render offscreen (no EGL/OSMesa): install the system packages "
            f"{' '.join(SYSTEM_PACKAGES)} (Debian/Ubuntu: apt-get install -y {' '.join(SYSTEM_PACKAGES)})")


def host_problem(host: str, token: str | None) -> str | None:
    """Any address but the local one is reachable by others: it needs an access token."""
    if host in LOCAL_HOSTS:
        return None
    if not token:
        return f"--host {host} is reachable from other machines: give an access token (--token or PEDTUMORSEG_TOKEN)"
    if len(token) < 16:
        return "the access token must have at least 16 characters"
    return None
