"""Shared fixtures: the real example case, one small phantom case, and a writer of tiny synthetic cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_CASE_DIR = REPO_ROOT.parent / "shared" / "data" / "real" / "BraTS-GLI-00001-000"


@pytest.fixture(scope="session")
def real_case_dir() -> Path:
    if not REAL_CASE_DIR.is_dir():
        pytest.skip(f"real example case not found at {REAL_CASE_DIR}")
    return REAL_CASE_DIR


@pytest.fixture(scope="session")
def small_phantom_dir(tmp_path_factory) -> Path:
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom

    return write_phantom(make_phantom(3, "small"), tmp_path_factory.mktemp("phantom"))


def write_tiny_case(folder, case_id="CASE-1", size=(12, 10, 8), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), suffixes=("t1n", "t1c", "t2w", "t2f"), sep="-",
                    ext=".nii.gz", arrays=None, geometries=None, seg=None) -> Path:
    """Write a 4-modality case with ramp images; ``geometries`` maps a suffix to (size, spacing, origin)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, suffix in enumerate(suffixes):
        sz, sp, org = (geometries or {}).get(suffix, (size, spacing, origin))
        if arrays and suffix in arrays:
            array = arrays[suffix]
        else:
            z, y, x = np.meshgrid(*(np.arange(n) for n in reversed(sz)), indexing="ij")
            array = (10.0 * x + y + z + 100.0 * (i + 1)).astype(np.float32)
        image = sitk.GetImageFromArray(array)
        if image.GetDimension() == 3:
            image.SetSpacing(sp)
            image.SetOrigin(org)
            image.SetDirection(tuple(float(d) for d in direction))
        sitk.WriteImage(image, str(folder / f"{case_id}{sep}{suffix}{ext}"))
    if seg is not None:
        image = sitk.GetImageFromArray(seg)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(folder / f"{case_id}{sep}seg{ext}"))
    return folder


def write_tiny_bundle(path, *, name="tiny-test", seed=0, folds=(0,), postprocessing=None, extra=None) -> Path:
    """A valid bundle (zip) of a 3-stage demo-preset network with random weights (seeded), same weights per fold,
    for 2.5 mm phantoms with 32^3 patches; ``postprocessing`` a ``PostprocessParams`` (default: its defaults);
    ``extra``: further manifest keys."""
    import torch

    from pedtumorseg.inference.bundle import write_bundle
    from pedtumorseg.conventions import CHANNELS, LABEL_COLORS, LABEL_NAMES
    from pedtumorseg.model.presets import NETWORK_CLASS, build_network, network_kwargs
    from pedtumorseg.postprocess import PostprocessParams

    kwargs = network_kwargs("demo", strides=[1, 2, 2], kernel_sizes=[3, 3, 3])
    kwargs["decoder_widths"] = [4, 8, 8]
    kwargs["blocks_per_stage"] = [1, 1, 1]
    torch.manual_seed(seed)
    net = build_network(NETWORK_CLASS, kwargs, 4, 5)
    manifest = {
        "format": "pedtumorseg-bundle", "format_version": 1, "name": name, "version": "0.0.1",
        "description": "random weights for tests", "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "colors": {str(k): list(v) for k, v in LABEL_COLORS.items()}, "channels": list(CHANNELS),
        "spacing_zyx": [2.5, 2.5, 2.5], "patch_size": [32, 32, 32],
        "normalization": {"scheme": "zscore", "use_mask_for_norm": [True] * 4},
        "network": {"class": NETWORK_CLASS, "kwargs": kwargs}, "mirror_axes": [0, 1, 2],
        "postprocessing": (postprocessing or PostprocessParams()).to_dict(), **(extra or {}),
    }
    return write_bundle(path, manifest, {f: net.state_dict() for f in folds}, zip=True)


@pytest.fixture
def tiny_case():
    return write_tiny_case


def write_dicom_study(folder, images: dict, patient: str = "DOE^JANE", flat: bool = False, seed: int = 0) -> Path:
    """A DICOM MR study of ``images`` (channel -> int16 ``sitk.Image``): one series each, described and timed as
    ``phantoms.raw.SERIES`` (as a scanner names them), with the patient, study and frame of reference a DICOM SEG
    needs; one folder per series, or all slices in ``folder`` itself (``flat``, as some exports do)."""
    import shutil

    from pedtumorseg.phantoms.raw import SERIES, write_dicom_series

    folder = Path(folder)
    rng = np.random.default_rng(seed)

    def uid():
        return "2.25." + str(int.from_bytes(rng.bytes(16), "big"))

    study = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0020|000d": uid(), "0020|0052": uid(),
             "0010|0010": patient, "0010|0020": "PID-1", "0010|0030": "", "0010|0040": "O",
             "0008|0020": "20260101", "0008|0030": "120000", "0008|0050": "", "0020|0010": "1"}
    for number, channel in enumerate(images, start=2):
        description, te, tr, ti, agent = SERIES[channel]
        tags = dict(study, **{"0020|000e": uid(), "0020|0011": str(number), "0008|103e": description,
                              "0018|0081": str(te), "0018|0080": str(tr)})
        if ti is not None:
            tags["0018|0082"] = str(ti)
        if agent:
            tags["0018|0010"] = agent
        series = write_dicom_series(images[channel], folder / f"{number:02d}_{description.replace(' ', '_')}", tags,
                                    rng)
        if flat:
            for f in sorted(series.iterdir()):
                f.rename(folder / f"S{number}{f.name}")
            shutil.rmtree(series)
    return folder


def run_cases_in_own_process(cases_file: Path, tmp_path: Path, timeout: int) -> str:
    """Run the pytest file ``cases_file`` (MRML cases on slicer-core) in a process of its own, with the module
    folder and ``Testing`` on the path (the ``slicer`` module is process-wide); assert it passed and return its
    summary line."""
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(here.parent / "PedTumorSeg"), str(here)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", str(cases_file),
                           "--basetemp", str(tmp_path / "base")],
                          cwd=str(here.parent), env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0, "\n".join(lines[-60:]) + "\n" + proc.stderr[-3000:]
    assert " passed" in lines[-1], lines[-1]
    return lines[-1]
