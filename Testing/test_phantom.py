"""Synthetic phantoms: label structure, determinism, subregion frequencies, contrasts, geometry, files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pedtumorseg.conventions import CC, ED, ET, NET
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.cases import find_case, find_cases
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.evaluation.metrics import evaluate_case
from pedtumorseg.phantoms.clean import geometry_for, make_labels, make_phantom, write_phantoms

SEEDS = range(8)


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(s, "small") for s in SEEDS]


def test_labels_and_nesting(phantoms):
    ball = np.ones((3, 3, 3), bool)
    for p in phantoms:
        seg = p.seg
        assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 3, 4}
        tc = np.isin(seg, (ET, NET, CC))
        assert tc.any(), p.case_id
        wt = seg > 0
        brain = p.images["t1"] > 0
        assert not (wt & ~ndimage.binary_dilation(brain, ball, iterations=1)).any()
        # ED only around a tumor core: every ED component touches the core
        lab, n = ndimage.label(seg == ED, ball)
        touching = set(np.unique(lab[ndimage.binary_dilation(tc, ball)])) - {0}
        assert touching == set(range(1, n + 1)), p.case_id
        # cysts lie inside the whole tumor: they never touch background
        assert not (ndimage.binary_dilation(seg == CC, ball) & (seg == 0)).any(), p.case_id
        # enhancing tissue belongs to a core: every ET component touches NET or CC
        lab, n = ndimage.label(seg == ET, ball)
        if n:
            near_core = ndimage.binary_dilation(np.isin(seg, (NET, CC)), ball)
            assert set(np.unique(lab[near_core])) - {0} == set(range(1, n + 1)), p.case_id


def test_images_int16_zero_outside_brain(phantoms):
    for p in phantoms:
        masks = [p.images[ch] > 0 for ch in ("t1", "t1ce", "t2", "flair")]
        assert all(p.images[ch].dtype == np.int16 for ch in p.images)
        assert all(p.images[ch].shape == p.geometry.shape_zyx for ch in p.images)
        brain = ndimage.binary_fill_holes(masks[0] | masks[2])
        assert 0.9e6 < brain.sum() * p.geometry.voxel_volume_mm3 < 2.2e6  # a brain: ~1-2 litres
        for ch, img in p.images.items():
            assert (img[~brain] == 0).all(), ch
            assert 100 < np.median(img[brain]) < 5000, ch


def test_determinism():
    a, b, c = make_phantom(5, "small"), make_phantom(5, "small"), make_phantom(6, "small")
    assert np.array_equal(a.seg, b.seg)
    assert all(np.array_equal(a.images[ch], b.images[ch]) for ch in a.images)
    assert not np.array_equal(a.seg, c.seg)
    assert not np.array_equal(a.images["t1"], c.images["t1"])
    assert a.case_id == "BraTS-PED-S00005-000" and c.case_id == "BraTS-PED-S00006-000"
    # the fast layout uses the same tumor draws: same subregions present as in the phantom
    assert set(np.unique(make_labels(5, "small"))) == set(np.unique(a.seg))
    assert np.array_equal(make_labels(5, "small"), make_labels(5, "small"))


def test_subregion_frequencies():
    n = 200
    absent = np.zeros(3)
    two_lesions = 0
    for seed in range(n):
        seg = make_labels(seed, "small")
        present = set(np.unique(seg).tolist())
        absent += [ET not in present, CC not in present, ED not in present]
        two_lesions += ndimage.label(np.isin(seg, (ET, NET, CC)), np.ones((3, 3, 3)))[1] > 1
    freq = absent / n
    assert abs(freq[0] - 0.16) < 0.08 and abs(freq[1] - 0.28) < 0.08 and abs(freq[2] - 0.50) < 0.08, freq
    assert 0.03 < two_lesions / n < 0.35


@pytest.mark.parametrize("size, seeds", [("small", [*range(40), *range(20000, 20010)]), ("brats", range(2))])
def test_perfect_prediction_scores_one(size, seeds):
    """Every ground-truth lesion can be scored: the BraTS scorer deletes predicted lesions of <= 10 voxels
    (156 mm^3 at 2.5 mm), so a ground truth with smaller ET/NET/CC lesions would cap even a perfect model (seeds
    20000-20009, the demo model's held-out cases, scored CC 0.6 with prediction = ground truth before such lesions were relabelled)."""
    spacing = geometry_for(size).spacing_zyx
    for seed in seeds:
        seg = make_labels(seed, size)
        for row in evaluate_case(seg, seg, spacing):
            assert row["lesion_dice"] == 1.0, (seed, row["region"], row["lesion_dice"])


def test_contrasts(phantoms):
    ratio_et, ratio_net = [], []
    for p in phantoms:
        im = {ch: p.images[ch].astype(np.float64) for ch in p.images}
        seg = p.seg
        if (seg == ET).sum() > 5 and (seg == NET).sum() > 5:
            ratio_et.append(np.mean(im["t1ce"][seg == ET] / np.maximum(im["t1"][seg == ET], 1)))
            ratio_net.append(np.mean(im["t1ce"][seg == NET] / np.maximum(im["t1"][seg == NET], 1)))
        if (seg == CC).sum() > 5:
            assert im["t2"][seg == CC].mean() > im["t2"][seg == NET].mean()
            assert im["t1"][seg == CC].mean() < im["t1"][seg == NET].mean()
        wm_like = (seg == 0) & (im["t1"] > np.percentile(im["t1"][im["t1"] > 0], 80))
        csf_like = (seg == 0) & (im["t2"] > np.percentile(im["t2"][im["t2"] > 0], 97))
        if (seg == ED).sum() > 5:
            assert im["flair"][seg == ED].mean() > im["flair"][wm_like].mean()
        assert im["flair"][csf_like].mean() < im["flair"][wm_like].mean()
        assert im["t1"][csf_like].mean() < im["t1"][wm_like].mean()
    assert len(ratio_et) >= 3
    assert np.mean(ratio_et) > 1.3 * np.mean(ratio_net)


def test_brats_geometry_matches_real_case(real_case_dir):
    real = sitk.ReadImage(str(next(real_case_dir.glob("*-t1c.nii.gz"))))
    g = geometry_for("brats")
    assert g == Geometry.from_image(real)
    small = geometry_for("small")
    assert small.size == (96, 96, 62) and small.spacing == (2.5, 2.5, 2.5) and small.direction == g.direction
    lo, hi = small.bounding_box()
    lo1, hi1 = g.bounding_box()
    assert np.allclose(lo, lo1) and np.all(np.abs(hi - hi1) <= 2.5)
    p = make_phantom(2, "brats")
    assert p.geometry == g and p.seg.shape == (155, 240, 240)
    real_mask = sitk.GetArrayFromImage(real) > 0
    mask = p.images["t1"] > 0
    dice = 2 * (mask & real_mask).sum() / (mask.sum() + real_mask.sum())
    assert dice > 0.7, dice
    # flipped anatomy would score much worse: the mapping fixes orientation, not only position
    assert dice > 2 * (mask[:, ::-1] & real_mask).sum() / (mask.sum() + real_mask.sum()) + 0.05


def test_write_phantoms_files(tmp_path, small_phantom_dir):
    folders = write_phantoms(tmp_path, 2, size="small", seed=40)
    assert [f.name for f in folders] == ["BraTS-PED-S00040-000", "BraTS-PED-S00041-000"]
    assert [c.case_id for c in find_cases(tmp_path)] == [f.name for f in folders]
    files = find_case(small_phantom_dir)
    assert files.seg is not None and files.seg.name.endswith("-seg.nii.gz")
    case = load_case(files)
    assert case.images.shape == (4, 62, 96, 96) and case.warnings == []
    seg = read_labels(files.seg, case.geometry)
    expected = make_phantom(3, "small")
    assert np.array_equal(seg, expected.seg)
    assert np.array_equal(case.images[0], expected.images["t1"].astype(np.float32))
    assert sitk.ReadImage(str(files.images["t1ce"])).GetPixelID() == sitk.sitkInt16
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
