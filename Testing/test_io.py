"""Case I/O: finding, validation refusals, resampling onto the T1CE grid, atomic label writing, real case."""

from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_tiny_case
from pedtumorseg import files
from pedtumorseg.outputs import images as output_images
from pedtumorseg.errors import InputError
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.cases import case_from_files, find_case, find_cases
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.outputs.images import write_labels


def test_find_and_load_brats_names(tmp_path):
    folder = write_tiny_case(tmp_path / "c1", case_id="BraTS-PED-00001-000")
    files = find_case(folder)
    assert files.case_id == "BraTS-PED-00001-000"
    assert [p.name.split("-")[-1] for p in files.images.values()] == ["t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz",
                                                                       "t2f.nii.gz"]
    case = load_case(files)
    assert case.images.shape == (4, 8, 10, 12) and case.images.dtype == np.float32
    assert case.geometry.shape_zyx == (8, 10, 12) and case.warnings == []
    # channel order: the writer adds 100*(index+1)
    assert [int(case.images[i, 0, 0, 0]) for i in range(4)] == [100, 200, 300, 400]


def test_legacy_names_and_t1_vs_t1ce(tmp_path):
    folder = write_tiny_case(tmp_path / "c", case_id="Brats18_X_1", sep="_", suffixes=("t1", "t1ce", "t2", "flair"),
                             ext=".nii")
    files = find_case(folder)
    assert files.case_id == "Brats18_X_1"
    assert files.images["t1"].name == "Brats18_X_1_t1.nii"
    assert files.images["t1ce"].name == "Brats18_X_1_t1ce.nii"
    assert files.images["t2"].name == "Brats18_X_1_t2.nii"
    case = load_case(files)
    assert [int(case.images[i, 0, 0, 0]) for i in range(4)] == [100, 200, 300, 400]


def test_t2_does_not_match_t2f(tmp_path):
    folder = write_tiny_case(tmp_path / "c", suffixes=("t1n", "t1c", "t2f"))
    with pytest.raises(InputError, match="missing T2 image"):
        find_case(folder)


def test_missing_flair_named(tmp_path):
    folder = write_tiny_case(tmp_path / "c", suffixes=("t1n", "t1c", "t2w"))
    with pytest.raises(InputError) as err:
        find_case(folder)
    msg = str(err.value)
    assert "\n" not in msg and str(folder) in msg and "T2-FLAIR" in msg and "t2f" in msg


def test_find_cases_sorted_subfolders(tmp_path):
    write_tiny_case(tmp_path / "b", case_id="B")
    write_tiny_case(tmp_path / "a", case_id="A")
    (tmp_path / "empty").mkdir()
    assert [c.case_id for c in find_cases(tmp_path)] == ["A", "B"]
    assert [c.case_id for c in find_cases(tmp_path / "a")] == ["A"]


def test_case_from_files_derives_id(tmp_path):
    folder = write_tiny_case(tmp_path, case_id="P7")
    f = [folder / f"P7-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")]
    assert case_from_files(*f).case_id == "P7"
    assert case_from_files(*f, case_id="X").case_id == "X"


def _load(folder):
    return load_case(find_case(folder))


def test_unreadable_file(tmp_path):
    folder = write_tiny_case(tmp_path)
    bad = folder / "CASE-1-t2w.nii.gz"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError) as err:
        _load(folder)
    assert str(err.value).startswith(str(bad)) and "unreadable" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("array, problem", [
    (np.arange(80, dtype=np.float32).reshape(8, 10), "2D"),
    (np.arange(2 * 8 * 10 * 12, dtype=np.float32).reshape(2, 8, 10, 12), "4D"),
])
def test_not_3d(tmp_path, array, problem):
    folder = write_tiny_case(tmp_path, arrays={"t2f": array})
    with pytest.raises(InputError, match=problem) as err:
        _load(folder)
    assert "CASE-1-t2f" in str(err.value)


def test_vector_image(tmp_path):
    folder = write_tiny_case(tmp_path)
    vec = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 10, 12, 3)).astype(np.float32), isVector=True)
    sitk.WriteImage(vec, str(folder / "CASE-1-t1n.nii.gz"))
    with pytest.raises(InputError, match="components"):
        _load(folder)


def test_nan_and_constant(tmp_path):
    a = np.ones((8, 10, 12), np.float32)
    a[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN") as err:
        _load(write_tiny_case(tmp_path / "m", arrays={"t1n": a}, ext=".mha"))
    assert "CASE-1-t1n" in str(err.value)
    # ITK's NIfTI reader replaces NaN silently; the file bytes are checked too
    with pytest.raises(InputError, match="NaN") as err:
        _load(write_tiny_case(tmp_path / "n", arrays={"t1n": a}))
    assert "CASE-1-t1n" in str(err.value)
    with pytest.raises(InputError, match="constant") as err:
        _load(write_tiny_case(tmp_path / "c", arrays={"t2w": np.full((8, 10, 12), 5, np.int16)}))
    assert "CASE-1-t2w" in str(err.value)


def test_non_overlapping_grids(tmp_path):
    folder = write_tiny_case(tmp_path, geometries={"t2w": ((12, 10, 8), (1.0, 1.0, 1.0), (500.0, 0.0, 0.0))})
    with pytest.raises(InputError, match="does not overlap") as err:
        _load(folder)
    assert "CASE-1-t2w" in str(err.value)


def test_overlapping_grid_resampled_onto_t1ce(tmp_path):
    # FLAIR at 2 mm spacing covering the same field of view as the 1 mm T1CE grid
    folder = write_tiny_case(tmp_path, size=(20, 10, 8), geometries={
        "t2f": ((10, 5, 4), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case = _load(folder)
    assert case.geometry == Geometry.from_image(sitk.ReadImage(str(folder / "CASE-1-t1c.nii.gz")))
    assert len(case.warnings) == 1 and "CASE-1-t2f" in case.warnings[0]
    assert any("CASE-1-t2f" in str(w.message) for w in caught)
    flair = case.images[3]
    # the 2 mm FLAIR ramp along x was 10 per voxel = 5 per mm: inside, the resampled ramp has slope 5 per voxel
    row = flair[3, 4, 2:18]
    assert np.allclose(np.diff(row), 5.0, atol=1e-3)
    # value at physical x: 2 mm voxel i sits at x = 0.5 + 2 i with value 10 i + 400 + y + z terms
    assert np.isclose(row[0], 10 * (2 - 0.5) / 2 + 400 + (4 - 0.5) / 2 + (3 - 0.5) / 2, atol=1e-3)


def test_same_grid_tolerance():
    g = Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert g.same_grid(Geometry((4, 4, 4), (1.00001, 1.0, 1.0), (0.0005, 0.0, 0.0), g.direction))
    assert not g.same_grid(Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.01, 0.0, 0.0), g.direction))
    assert not g.same_grid(Geometry((4, 4, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), g.direction))
    assert g.voxel_volume_mm3 == 1.0 and g.spacing_zyx == (1.0, 1.0, 1.0)


def test_write_labels_round_trip_exact_geometry(tmp_path):
    g = Geometry((7, 6, 5), (0.9, 1.1, 2.3), (-12.25, 33.5, 7.125), (0, 1, 0, -1, 0, 0, 0, 0, 1))
    labels = np.random.default_rng(0).integers(0, 5, g.shape_zyx).astype(np.uint8)
    path = write_labels(labels, g, tmp_path / "out" / "x-seg.nii.gz")
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert Geometry.from_image(image).same_grid(g)
    assert np.array_equal(read_labels(path, g), labels)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x-seg.nii.gz"]
    with pytest.raises(InputError, match="shape"):
        write_labels(labels[:-1], g, tmp_path / "bad.nii.gz")
    other = Geometry(g.size, g.spacing, (0.0, 0.0, 0.0), g.direction)
    with pytest.raises(InputError, match="grid"):
        read_labels(path, other)


def test_read_labels_refuses_bad_values(tmp_path):
    g = Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a = np.zeros(g.shape_zyx, np.int16)
    a[0, 0, 0] = 7
    path = tmp_path / "s.nii.gz"
    sitk.WriteImage(g.to_image(a), str(path))
    with pytest.raises(InputError, match=r"\[7\]"):
        read_labels(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    g = Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))

    def failing_write(image, path, *args):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(output_images.sitk, "WriteImage", failing_write)
    with pytest.raises(OSError, match="disk full"):  # ITK's RuntimeError, reported as the write failure it is
        write_labels(np.zeros(g.shape_zyx, np.uint8), g, tmp_path / "x-seg.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_extension(tmp_path):
    with files.atomic_output(tmp_path / "a.seg.nrrd") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nrrd")
        tmp.write_text("x")
    assert (tmp_path / "a.seg.nrrd").read_text() == "x" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_output_gets_umask_permissions_not_mkstemp_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        with files.atomic_output(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_real_case_exact_geometry(real_case_dir):
    files = find_case(real_case_dir)
    assert files.case_id == "BraTS-GLI-00001-000" and files.seg is None
    case = load_case(files)
    g = case.geometry
    assert g.size == (240, 240, 155) and g.spacing == (1.0, 1.0, 1.0)
    # independent reading of the header with nibabel: RAS affine -> LPS origin/direction
    img = nib.load(str(files.images["t1ce"]))
    aff = img.affine
    flip = np.diag([-1.0, -1.0, 1.0])
    assert np.allclose(g.origin, flip @ aff[:3, 3], atol=1e-4)
    rot = flip @ aff[:3, :3]
    assert np.allclose(np.asarray(g.direction).reshape(3, 3), rot / np.linalg.norm(rot, axis=0), atol=1e-6)
    assert case.images.shape == (4, 155, 240, 240) and case.warnings == []
    assert np.array_equal(case.images[1], np.asarray(img.dataobj).transpose(2, 1, 0).astype(np.float32))
