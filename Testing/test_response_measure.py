"""The 2D bidimensional measurement against hand-computed values on simple shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pedtumorseg.response.measure import measure_lesion, measure_slice


def _rect(h, w, shape=(40, 40), at=(5, 5)):
    m = np.zeros(shape, bool)
    m[at[0]:at[0] + h, at[1]:at[1] + w] = True
    return m


def test_rectangle_longest_is_the_diagonal_and_the_perpendicular_meets_the_long_sides():
    d = measure_slice(_rect(10, 20), (1.0, 1.0))  # 10 mm x 20 mm
    assert d.longest_mm == pytest.approx(math.hypot(10, 20), abs=1e-9)
    # the perpendicular to the diagonal of an a x b rectangle (a >= b) is b * sqrt(a^2 + b^2) / a
    assert d.perpendicular_mm == pytest.approx(10 * math.hypot(20, 10) / 20, abs=1e-6)
    assert d.product_mm2 == pytest.approx(math.hypot(10, 20) * 10 * math.hypot(20, 10) / 20, abs=1e-5)


def test_square_gives_both_diagonals():
    d = measure_slice(_rect(10, 10), (1.0, 1.0))
    assert d.longest_mm == pytest.approx(10 * math.sqrt(2), abs=1e-9)
    assert d.perpendicular_mm == pytest.approx(10 * math.sqrt(2), abs=1e-6)


def test_anisotropic_pixels_are_measured_in_mm():
    # 10 rows at 2 mm x 20 columns at 0.5 mm: 20 mm (y) x 10 mm (x)
    d = measure_slice(_rect(10, 20), (2.0, 0.5))
    assert d.longest_mm == pytest.approx(math.hypot(20, 10), abs=1e-9)
    assert d.perpendicular_mm == pytest.approx(10 * math.hypot(20, 10) / 20, abs=1e-6)
    (y0, x0), (y1, x1) = d.longest_ends
    assert {round(abs(y1 - y0), 6), round(abs(x1 - x0), 6)} == {20.0, 10.0}


def test_perpendicular_is_perpendicular_and_inside():
    yy, xx = np.mgrid[:60, :60]
    blob = ((yy - 30) / 20.0) ** 2 + ((xx - 28) / 11.0) ** 2 <= 1
    d = measure_slice(blob, (1.0, 1.0))
    a, b = np.array(d.longest_ends)
    c, e = np.array(d.perpendicular_ends)
    assert abs(np.dot(b - a, e - c)) < 1e-6 * d.longest_mm * d.perpendicular_mm


def test_disc_diameter_both_ways_within_one_voxel():
    r_vox, s = 20, 0.5
    yy, xx = np.mgrid[:80, :80]
    disc = (yy - 39.5) ** 2 + (xx - 39.5) ** 2 <= r_vox ** 2
    d = measure_slice(disc, (s, s))
    assert abs(d.longest_mm - 2 * r_vox * s) <= s * math.sqrt(2)
    assert abs(d.perpendicular_mm - 2 * r_vox * s) <= s * math.sqrt(2)


def test_ellipsoid_axes_on_the_middle_slice():
    z, y, x = np.mgrid[:31, :70, :110]
    e = ((x - 55) / 50.0) ** 2 + ((y - 35) / 25.0) ** 2 + ((z - 15) / 12.0) ** 2 <= 1
    m = measure_lesion(e, (2.0, 1.0, 1.0))
    assert m.chosen.slice_index == 15
    assert abs(m.chosen.longest_mm - 100.0) <= 1.5  # the axes 2 x 50 and 2 x 25 mm, edge to edge, within a voxel
    assert abs(m.chosen.perpendicular_mm - 50.0) <= 1.5
    assert m.slices_with_lesion == 25  # |z - 15| <= 12


def test_slice_rules_pick_the_largest_diameter_or_the_largest_product():
    mask = np.zeros((2, 60, 60), bool)
    mask[0, 10:14, 5:45] = True  # LD ~ 40.2 mm, thin: small product
    mask[1, 10:35, 10:35] = True  # 25 x 25: LD 35.4, product 1250
    by_ld = measure_lesion(mask, (3.0, 1.0, 1.0), "largest_diameter")
    by_product = measure_lesion(mask, (3.0, 1.0, 1.0), "largest_product")
    assert by_ld.chosen.slice_index == 0 and by_product.chosen.slice_index == 1
    assert by_product.product_mm2 == pytest.approx(2 * 25 ** 2, abs=1e-4)
    assert by_ld.largest_product.slice_index == 1  # both rules are reported
    with pytest.raises(ValueError):
        measure_lesion(mask, (1, 1, 1), "largest_area")


def test_empty_lesion():
    m = measure_lesion(np.zeros((3, 5, 5), bool), (1, 1, 1))
    assert m.chosen is None and m.product_mm2 == 0.0


def test_longest_diameter_matches_pyradiomics_maximum_2d_diameter_slice():
    radiomics = pytest.importorskip("radiomics")
    import SimpleITK as sitk
    from radiomics import shape

    z, y, x = np.mgrid[:9, :50, :70]
    e = (((x - 35) / 28.0) ** 2 + ((y - 25) / 14.0) ** 2 + ((z - 4) / 4.0) ** 2 <= 1)
    spacing_zyx = (3.0, 0.9, 0.9)
    image = sitk.GetImageFromArray(e.astype(np.float32) * 100 + 10)
    image.SetSpacing(spacing_zyx[::-1])
    mask = sitk.GetImageFromArray(e.astype(np.uint8))
    mask.CopyInformation(image)
    features = shape.RadiomicsShape(image, mask)
    theirs = float(features.getMaximum2DDiameterSliceFeatureValue())
    ours = measure_lesion(e, spacing_zyx).chosen.longest_mm
    # pyradiomics measures between voxel-edge points of the mesh; ours between voxel corners: within one voxel
    assert abs(ours - theirs) <= math.hypot(0.9, 0.9)
    del radiomics


def test_a_ring_is_measured_by_its_outer_margin():
    yy, xx = np.mgrid[:60, :60]
    r2 = (yy - 29.5) ** 2 + (xx - 29.5) ** 2
    disc, ring = r2 <= 20 ** 2, (r2 <= 20 ** 2) & (r2 > 14 ** 2)
    a, b = measure_lesion(disc[None], (1, 1, 1)).chosen, measure_lesion(ring[None], (1, 1, 1)).chosen
    assert (a.longest_mm, a.perpendicular_mm) == pytest.approx((b.longest_mm, b.perpendicular_mm))


def test_longest_diameter_matches_pyradiomics_on_the_synthetic_patient():
    pytest.importorskip("radiomics")
    import logging

    import SimpleITK as sitk
    from radiomics import shape

    from pedtumorseg.phantoms.series import make_series

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    for scan in make_series(new_lesion_at=None):
        spacing_zyx = scan.t1ce.GetSpacing()[::-1]
        for labels in ((1,), (1, 2, 3, 4)):
            m = np.isin(scan.labels, labels)
            image = sitk.GetImageFromArray(m.astype(np.float32) * 100 + 10)
            image.CopyInformation(scan.t1ce)
            mask = sitk.GetImageFromArray(m.astype(np.uint8))
            mask.CopyInformation(scan.t1ce)
            theirs = float(shape.RadiomicsShape(image, mask).getMaximum2DDiameterSliceFeatureValue())
            ours = measure_lesion(m, spacing_zyx).chosen.longest_mm
            assert abs(ours - theirs) <= math.hypot(*spacing_zyx[1:]), (scan.name, labels, ours, theirs)


def test_results_are_in_the_coordinates_of_the_whole_grid():
    small = np.zeros((3, 30, 30), bool)
    small[1, 5:15, 5:25] = True
    big = np.zeros((9, 80, 90), bool)
    big[5, 45:55, 60:80] = True  # the same rectangle, moved by (4, 40, 55) voxels
    a, b = measure_lesion(small, (2.0, 0.5, 1.5)).chosen, measure_lesion(big, (2.0, 0.5, 1.5)).chosen
    assert (b.slice_index, b.longest_mm, b.perpendicular_mm) == (5, pytest.approx(a.longest_mm),
                                                                 pytest.approx(a.perpendicular_mm))
    shift = np.array([40 * 0.5, 55 * 1.5])
    assert np.allclose(np.array(b.longest_ends), np.array(a.longest_ends) + shift)
    assert np.allclose(np.array(b.perpendicular_ends), np.array(a.perpendicular_ends) + shift)
