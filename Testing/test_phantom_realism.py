"""Realistic phantoms: determinism, label structure, anatomy constraints of growth, intensity relations, the
measurement's formulas, and (with the real labeled cases present) that they are closer to real scans than the
clean phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pedtumorseg.conventions import CC, CHANNELS, ED, ET, NET
from pedtumorseg.geometry import Geometry
from pedtumorseg.phantoms import realism as R
from pedtumorseg.phantoms.clean import geometry_for, make_phantom
from pedtumorseg.phantoms.realistic import make_realistic_phantom, make_styled_phantom
from pedtumorseg.phantoms.tumor_growth import (SPEED, allowed_region, arrival_times, build_anatomy, first_reached,
                                               push, speed_map, warp)

REAL_LABELED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-labeled"
SEEDS = range(10)
BALL = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def phantoms():
    return [make_realistic_phantom(s, "small") for s in SEEDS]


def test_deterministic_by_seed():
    a, b, c = make_realistic_phantom(3, "small"), make_realistic_phantom(3, "small"), make_realistic_phantom(4, "small")
    assert np.array_equal(a.seg, b.seg) and all(np.array_equal(a.images[ch], b.images[ch]) for ch in CHANNELS)
    assert a.case_id == "BraTS-PED-R00003-000" and a.kinds == b.kinds
    assert not np.array_equal(a.images["t1"], c.images["t1"])


def test_clean_style_is_the_clean_phantom():
    a, b = make_styled_phantom(5, "small", "clean"), make_phantom(5, "small")
    assert np.array_equal(a.seg, b.seg) and all(np.array_equal(a.images[ch], b.images[ch]) for ch in CHANNELS)
    with pytest.raises(ValueError):
        make_styled_phantom(5, "small", "fancy")


def test_labels_lie_in_the_brain_and_edema_surrounds_a_core(phantoms):
    kinds = set()
    for p in phantoms:
        kinds.update(p.kinds)
        assert p.seg.dtype == np.uint8 and set(np.unique(p.seg)) <= {0, ET, NET, CC, ED}
        assert not ((p.seg > 0) & ~p.brain_mask).any(), p.case_id
        support = np.all(np.stack([p.images[ch] > 0 for ch in CHANNELS]), 0)
        assert not ((p.seg > 0) & ~support).any(), p.case_id
        assert all(p.images[ch].dtype == np.int16 for ch in CHANNELS)
        tc = np.isin(p.seg, (ET, NET, CC))
        if p.kinds:
            assert tc.any(), p.case_id
        lab, n = ndimage.label(p.seg == ED, BALL)
        sizes = np.bincount(lab.ravel())
        touching = set(np.unique(lab[ndimage.binary_dilation(tc, BALL, iterations=2)])) - {0}
        # every edema component of some size touches a core (a few voxels may break off in the mass effect)
        assert {k for k in range(1, n + 1) if sizes[k] >= 8} <= touching, p.case_id
    assert len(kinds) >= 3, kinds


def test_one_hemisphere_lesions_stay_on_their_side_of_the_falx(phantoms):
    checked = 0
    for p in phantoms:
        if p.kinds != ["hgg"]:
            continue
        side = np.sign(p.midline_x[p.seg > 0])
        assert np.all(side == side[0]), p.case_id
        checked += 1
    assert checked >= 2


@pytest.fixture(scope="module")
def anatomy():
    return build_anatomy(geometry_for("small"), np.random.default_rng(1))


def test_growth_follows_white_matter_and_respects_ventricles_and_falx(anatomy):
    rng = np.random.default_rng(0)
    x = anatomy.mni[0]
    candidates = np.argwhere((anatomy.wm > 0.8) & (x > 25) & (anatomy.depth_mm > 20))
    seed = candidates[len(candidates) // 2]
    allowed = allowed_region(anatomy, anatomy.mni[(slice(None),) + tuple(seed)], True, "supra")
    times = arrival_times(speed_map(anatomy, allowed, SPEED, rng, 0.0), seed[None], anatomy.spacing_zyx)
    region = first_reached(times, 2000)
    assert region.sum() == 2000
    assert not (region & anatomy.ventricles).any() and not (region & (anatomy.csf > 0.5)).any()
    assert np.all(x[region] > 0)
    # the front prefers white matter: the region holds more of it than a ball of the same volume around the seed
    ball = np.zeros(region.shape, bool)
    ball[tuple(seed)] = True
    dist = ndimage.distance_transform_edt(~ball, sampling=anatomy.spacing_zyx)
    same_volume = dist <= np.sort(dist[anatomy.mask].ravel())[1999]
    assert anatomy.wm[region].mean() > anatomy.wm[same_volume].mean() + 0.05


def test_fast_marching_times_are_distances_at_unit_speed():
    speed = np.ones((21, 21, 21), np.float32)
    times = arrival_times(speed, np.array([[10, 10, 10]]), (2.0, 1.0, 1.0))
    # 5 voxels along x at 1 mm: 5 mm; 5 voxels along z at 2 mm: 10 mm (first-order fast marching: within 5 %)
    assert times[10, 10, 15] == pytest.approx(5.0, rel=0.05)
    assert times[15, 10, 10] == pytest.approx(10.0, rel=0.05)
    speed[:, :, 12] = 0.0  # a wall the front cannot cross
    blocked = arrival_times(speed, np.array([[10, 10, 10]]), (1.0, 1.0, 1.0))
    assert np.isinf(blocked[10, 10, 15]) and np.isinf(blocked[10, 10, 12])


def test_first_reached_takes_the_earliest():
    times = np.array([[[3.0, 1.0, np.inf, 2.0]]])
    assert first_reached(times, 2).tolist() == [[[False, True, False, True]]]
    assert first_reached(times, 10).sum() == 3


def test_push_and_warp_by_hand(anatomy):
    # a constant field of one voxel along x moves the content one voxel towards +x
    volume = np.zeros((5, 5, 5), np.float32)
    volume[2, 2, 1] = 1.0
    field = np.zeros((3, 5, 5, 5), np.float32)
    field[2] = 1.0
    assert warp(volume, field)[2, 2, 2] == pytest.approx(1.0)
    # push: a ball core of radius R deep in the brain moves tissue at its surface by ~strength, radially
    core = np.zeros(anatomy.mask.shape, bool)
    centre = np.array(np.unravel_index(np.argmax(anatomy.depth_mm), core.shape))
    idx = np.indices(core.shape)
    r_mm = np.sqrt(sum(((idx[k] - centre[k]) * anatomy.spacing_zyx[k]) ** 2 for k in range(3)))
    core[r_mm <= 10.0] = True
    u = push(core, anatomy, 4.0)
    probe = tuple(centre + np.array([0, 0, 6]))  # 15 mm along +x: (R/r)^2 * 4 mm = 1.78 mm = 0.71 voxel
    assert u[2][probe] == pytest.approx(4.0 * (10.0 / 15.0) ** 2 / 2.5, rel=0.2)
    assert abs(u[0][probe]) < 0.05 and abs(u[1][probe]) < 0.05


def _pooled_medians(phantoms, label_of):
    out = {}
    for name, select in label_of.items():
        for ch in CHANNELS:
            values = []
            for p in phantoms:
                c = R.measure_case(p.images, p.seg, p.geometry.spacing_zyx)
                mask = select(p)
                if mask.sum() > 20:
                    nawm = c.nawm[ch]
                    values.append(np.median(p.images[ch][mask]) / nawm)
            out[name, ch] = np.median(values) if values else None
    return out


def test_intensity_relations_per_label(phantoms):
    m = _pooled_medians(phantoms, {"ET": lambda p: p.seg == ET, "NET": lambda p: p.seg == NET,
                                   "CC": lambda p: p.seg == CC, "ED": lambda p: p.seg == ED})
    assert m["ET", "t1ce"] > m["NET", "t1ce"] and m["ET", "t1ce"] > 1.1  # enhancement
    assert m["CC", "flair"] < m["NET", "flair"]  # a cyst is fluid: FLAIR darker than solid tumor
    assert m["CC", "t2"] > 2.0 and m["CC", "t1"] < 0.6  # T2 bright, T1 dark
    assert m["ED", "flair"] > 1.3 and m["ED", "t2"] > 1.3  # infiltration: FLAIR/T2 bright


def test_measurement_formulas_by_hand():
    seg = np.array([0, 4, 1, 2, 3], np.uint8)
    assert R.map_brats2018(seg).tolist() == [0, ET, NET, ED, 0]
    t1 = np.array([[[10.0, 11.0, 50.0, 52.0, 100.0, 98.0]]])
    classes = R.tissue_classes(t1, np.ones(t1.shape, bool))
    assert classes.tolist() == [[[1, 1, 2, 2, 3, 3]]]
    a = R.CaseIntensities({r: {ch: np.array([1.0, 1.0]) for ch in CHANNELS} for r in R.REGIONS}, {}, {})
    b = R.CaseIntensities({r: {ch: np.array([1.5, 1.5]) for ch in CHANNELS} for r in R.REGIONS}, {}, {})
    table = R.distance_table([a], [b])
    assert table["ET"]["t1"] == pytest.approx(0.5) and R.mean_distance(table) == pytest.approx(0.5)
    # z-score space: (1 - 2) / 0.5 = -2 against (1.5 - 1) / 0.25 = 2: a distance of 4
    a.zscore = {ch: (2.0, 0.5) for ch in CHANNELS}
    b.zscore = {ch: (1.0, 0.25) for ch in CHANNELS}
    assert R.pooled([a], "ET", "t1", "zscore").tolist() == [-2.0, -2.0]
    assert R.distance_table([a], [b], "zscore")["NCR"]["flair"] == pytest.approx(4.0)


def test_nawm_normalization_of_a_phantom(phantoms):
    p = phantoms[0]
    c = R.measure_case(p.images, p.seg, p.geometry.spacing_zyx)
    for ch in CHANNELS:
        assert np.median(c.samples["wm"][ch]) == pytest.approx(1.0, abs=0.08)
        assert np.median(c.samples["gm"][ch]) != pytest.approx(1.0, abs=0.02)


@pytest.mark.skipif(not REAL_LABELED.is_dir(), reason="real labeled cases not present")
def test_closer_to_real_scans_than_clean_phantoms(phantoms):
    grid = geometry_for("small")
    real = []
    for folder in sorted(p for p in REAL_LABELED.iterdir() if p.is_dir()):
        images, seg, spacing = R.read_labeled_case(folder, grid)
        real.append(R.measure_case(images, seg, spacing))
    realistic = [R.measure_case(p.images, p.seg, p.geometry.spacing_zyx) for p in phantoms[:6]]
    clean = [R.measure_case(p.images, p.seg, p.geometry.spacing_zyx)
             for p in (make_phantom(s, "small") for s in range(6))]
    d_real, d_clean = R.distance_table(real, realistic), R.distance_table(real, clean)
    tumor = ("ET", "NCR", "ED")
    assert R.mean_distance(d_real, tumor) < 0.7 * R.mean_distance(d_clean, tumor)
    assert R.mean_distance(d_real, ("brain",)) < R.mean_distance(d_clean, ("brain",))
    for region in tumor:  # closer in each tumor region
        assert R.mean_distance(d_real, (region,)) < R.mean_distance(d_clean, (region,)), region


def test_cli_writes_realistic_cases(tmp_path):
    from pedtumorseg.cli import main
    from pedtumorseg.inputs.cases import find_case
    from pedtumorseg.inputs.images import load_case

    assert main(["phantoms", "--out", str(tmp_path), "--n", "1", "--size", "small", "--seed", "2",
                 "--style", "realistic"]) == 0
    case = load_case(find_case(tmp_path / "BraTS-PED-R00002-000"))
    assert case.images.shape[0] == 4 and Geometry.same_grid(case.geometry, geometry_for("small"))
