"""Raw clinical input: orientation, DICOM series selection, skull detection, the network grid and the mapping back,
and the preprocessed path staying bit for bit what it was."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pedtumorseg.errors import InputError
from pedtumorseg.io import Geometry
from pedtumorseg.orientation import (is_valid_code, orientation_code, predict_in_orientation, reorient_array,
                                     reoriented_geometry)
from pedtumorseg.raw_input import RawOptions, grid_at_spacing, probabilities_to_grid

SAGITTAL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # columns: x->P, y->I, z->R (rows of the 3x3 here)
RAS_STORED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


# --- orientation --------------------------------------------------------------------------------------------------

def test_orientation_codes_by_hand():
    identity = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert orientation_code(identity) == "LPS"
    assert orientation_code(Geometry((4, 5, 6), (1.0,) * 3, (0.0,) * 3, RAS_STORED)) == "RAS"
    # x column (0,1,0) points Posterior, y column (0,0,-1) Inferior, z column (-1,0,0) Right
    assert orientation_code(Geometry((4, 5, 6), (1.0,) * 3, (0.0,) * 3, SAGITTAL)) == "PIR"
    assert is_valid_code("LPS") and is_valid_code("pir") and not is_valid_code("LLS") and not is_valid_code("LP")


def test_reorient_is_exact_and_keeps_physical_positions():
    rng = np.random.default_rng(0)
    g = Geometry((4, 5, 6), (1.0, 2.0, 3.0), (10.0, -5.0, 7.0), SAGITTAL)
    array = rng.standard_normal(g.shape_zyx).astype(np.float32)
    lps, g_lps = reorient_array(array, g, "LPS")
    assert orientation_code(g_lps) == "LPS" and g_lps == reoriented_geometry(g, "LPS")
    # spacing follows the axes: LPS x is the sagittal grid's z (3 mm), LPS y its x (1 mm), LPS z its y (2 mm)
    assert g_lps.spacing == (3.0, 1.0, 2.0)
    # the same voxel is at the same physical point on both grids
    img, img_lps = g.to_image(array), g_lps.to_image(lps)
    for idx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        point = img.TransformIndexToPhysicalPoint(idx)
        back = img_lps.TransformPhysicalPointToIndex(point)
        assert img[idx] == img_lps[back]
    restored, g_back = reorient_array(lps, g_lps, orientation_code(g))
    assert g_back == g and np.array_equal(restored, array)


class _RecordingEngine:
    """Labels = T1CE > 0.5, pointwise: any orientation mix-up in the mapping back changes the result."""

    def __init__(self):
        self.seen = []

    def predict(self, images, spacing_zyx, progress=None, cancel=None):
        from pedtumorseg.engine import Prediction

        self.seen.append((images, tuple(spacing_zyx)))
        labels = (images[1] > 0.5).astype(np.uint8)
        probs = np.stack([1.0 - labels, labels.astype(float), 0 * labels, 0 * labels, 0 * labels]).astype(np.float32)
        return Prediction(probs, labels)


def test_predict_in_orientation_maps_back_and_is_a_plain_call_when_oriented():
    rng = np.random.default_rng(1)
    g = Geometry((6, 5, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), RAS_STORED)
    images = rng.random((4,) + g.shape_zyx).astype(np.float32)
    engine = _RecordingEngine()
    prediction = predict_in_orientation(engine, images, g, "LPS")
    seen, spacing = engine.seen[0]
    # RAS -> LPS flips x and y: the network saw the flipped array
    assert np.array_equal(seen, images[:, :, ::-1, ::-1])
    assert spacing == (2.0, 1.0, 1.0)
    assert np.array_equal(prediction.labels, (images[1] > 0.5).astype(np.uint8))
    assert prediction.probabilities.shape == (5,) + g.shape_zyx
    lps = Geometry((6, 5, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    engine = _RecordingEngine()
    predict_in_orientation(engine, images, lps, "LPS")
    assert engine.seen[0][0] is images  # already oriented: the very same array, untouched


def test_bundle_orientation_default_and_validation(tmp_path):
    from conftest import write_tiny_bundle

    from pedtumorseg.bundle import load_bundle, validate_manifest
    from pedtumorseg.errors import BundleError

    bundle = load_bundle(write_tiny_bundle(tmp_path / "b.zip"))
    assert "orientation" not in bundle.manifest and bundle.orientation == "LPS"
    manifest = dict(bundle.manifest, orientation="RAS")
    validate_manifest(manifest, check_files=False)
    with pytest.raises(BundleError, match="orientation"):
        validate_manifest(dict(bundle.manifest, orientation="LLS"), check_files=False)


# --- the network grid and the way back ------------------------------------------------------------------------------

def test_grid_at_spacing_by_hand():
    g = Geometry((10, 10, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    h = grid_at_spacing(g, (2.0, 2.0, 2.0))
    # extent 10 x 10 x 20 mm from corner (-0.5, -0.5, -2.5); first 2 mm voxel centre 1 mm inside the corner
    assert h.size == (5, 5, 10) and h.spacing == (2.0, 2.0, 2.0)
    assert np.allclose(h.origin, (0.5, 0.5, -1.5))
    # a flipped axis moves the origin the other way
    flipped = Geometry((10, 10, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert np.allclose(grid_at_spacing(flipped, (2.0, 2.0, 2.0)).origin, (-0.5, 0.5, -1.5))


def test_probabilities_to_grid_linear_and_background_outside():
    src = Geometry((4, 1, 1), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    dst = Geometry((3, 1, 1), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    p1 = np.array([0.0, 1.0, 0.5, 0.0], np.float32).reshape(1, 1, 4)
    probs = np.stack([1 - p1, p1, 0 * p1, 0 * p1, 0 * p1])
    out = probabilities_to_grid(probs, src, dst)
    # dst x = 1, 2, 3 mm lie at src index 0.5, 1, 1.5 -> p1 = 0.5, 1.0, 0.75
    assert np.allclose(out[1, 0, 0], [0.5, 1.0, 0.75]) and np.allclose(out.sum(0), 1.0)
    far = Geometry((2, 1, 1), (1.0, 1.0, 1.0), (100.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    outside = probabilities_to_grid(probs, src, far)
    assert np.all(outside[0] == 1.0) and np.all(outside[1:] == 0.0)


def test_raw_options_validate():
    assert RawOptions().register == "auto"
    with pytest.raises(ValueError, match="--skull-strip"):
        RawOptions(skull_strip="maybe")


# --- skull detection ------------------------------------------------------------------------------------------------

def test_detect_skull_on_stripped_and_raw_images(small_phantom_dir):
    from pedtumorseg.brain_extraction import detect_skull
    from pedtumorseg.phantom_raw import make_raw_phantom

    clean = sitk.ReadImage(str(next(small_phantom_dir.glob("*-t1c.nii.gz"))))
    decision = detect_skull(clean)
    assert not decision.skull and decision.background_constant_fraction > 0.99
    raw = make_raw_phantom(3, "small")
    decision = detect_skull(raw.images["t1ce"])
    assert decision.skull and "background not constant" in decision.reason


def test_detect_skull_on_the_real_brats_case(real_case_dir):
    from pedtumorseg.brain_extraction import detect_skull

    for path in sorted(real_case_dir.glob("*.nii.gz")):
        assert not detect_skull(sitk.ReadImage(str(path))).skull, path.name


# --- DICOM input ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def raw_phantom():
    from pedtumorseg.phantom_raw import make_raw_phantom

    return make_raw_phantom(3, "small")


@pytest.fixture(scope="module")
def dicom_study(raw_phantom, tmp_path_factory):
    pytest.importorskip("pydicom")
    from pedtumorseg.phantom_raw import write_raw_phantom

    return write_raw_phantom(raw_phantom, tmp_path_factory.mktemp("dicom"), fmt="dicom")


def test_study_selection_picks_the_four_and_skips_the_localizer(dicom_study):
    from pedtumorseg.dicom_input import find_study

    chosen = find_study(dicom_study)
    assert {ch: p.name for ch, p in chosen.items()} == {
        "t1": "02_T1_MPRAGE_SAG", "t1ce": "03_T1_MPRAGE_AX_POST_GAD", "t2": "04_T2_TSE_AX",
        "flair": "05_T2_FLAIR_COR"}


def test_dicom_series_reads_back_the_written_volume(dicom_study, raw_phantom):
    from pedtumorseg.dicom_input import find_study, read_series

    for ch in ("t1", "t2"):
        image = read_series(find_study(dicom_study)[ch])
        truth = raw_phantom.images[ch]
        assert image.GetSize() == truth.GetSize()
        assert np.allclose(image.GetSpacing(), truth.GetSpacing(), atol=1e-4)
        assert np.allclose(image.GetOrigin(), truth.GetOrigin(), atol=1e-3)
        assert np.allclose(image.GetDirection(), truth.GetDirection(), atol=1e-5)
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(truth))


def test_study_refusals_name_the_problem_and_the_way_out(dicom_study, tmp_path):
    from pedtumorseg.dicom_input import find_study

    study = tmp_path / "study"
    shutil.copytree(dicom_study, study)
    shutil.rmtree(study / "05_T2_FLAIR_COR")
    with pytest.raises(InputError, match=r"no T2-FLAIR series recognised among: .*01_LOCALIZER.*--flair DIR"):
        find_study(study)
    # an explicit choice fills the gap
    chosen = find_study(study, {"flair": dicom_study / "05_T2_FLAIR_COR"})
    assert chosen["flair"] == dicom_study / "05_T2_FLAIR_COR"
    shutil.copytree(study / "03_T1_MPRAGE_AX_POST_GAD", study / "06_T1_POST_REPEAT")
    with pytest.raises(InputError, match=r"2 series could be the T1CE: 03_T1_MPRAGE.*06_T1_POST_REPEAT.*--t1ce DIR"):
        find_study(study, {"flair": dicom_study / "05_T2_FLAIR_COR"})


def test_classify_by_hand():
    from pedtumorseg.dicom_input import SeriesInfo, classify

    def info(desc, te=None, tr=None, ti=None, contrast=False, modality="MR"):
        return SeriesInfo(Path("x"), desc, modality, te, tr, ti, contrast)

    assert classify(info("AX FLAIR")) == "flair"
    assert classify(info("", te=120, tr=9000, ti=2500)) == "flair"
    assert classify(info("T2 TSE")) == "t2"
    assert classify(info("", te=90, tr=3000)) == "t2"
    assert classify(info("T1 MPRAGE")) == "t1"
    assert classify(info("T1 MPRAGE", contrast=True)) == "t1ce"
    assert classify(info("T1 SE AX +C")) == "t1ce"
    assert classify(info("", te=10, tr=500)) == "t1"
    assert classify(info("T2* GRE")) is None and classify(info("AX DWI")) is None
    assert classify(info("LOCALIZER")) is None and classify(info("T1", modality="CT")) is None


def test_dicom_without_the_raw_extra_is_refused_in_one_line(dicom_study, monkeypatch):
    from pedtumorseg.raw_input import read_any

    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(InputError) as err:
        read_any(dicom_study / "03_T1_MPRAGE_AX_POST_GAD", "t1ce")
    assert "pip install 'pedtumorseg[raw]'" in str(err.value) and "\n" not in str(err.value)


def test_a_folder_with_two_series_is_refused(dicom_study, tmp_path):
    from pedtumorseg.dicom_input import read_series

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("02_T1_MPRAGE_SAG", "04_T2_TSE_AX"):
        for f in (dicom_study / sub).iterdir():
            shutil.copy(f, mixed / f"{sub}_{f.name}")
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        read_series(mixed)
