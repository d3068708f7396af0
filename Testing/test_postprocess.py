"""Post-processing (paper §2.6): parameters, ratio relabel, small-component removal, interactive Session."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from pedtumorseg.postprocess import PARAMETERS, PostprocessParams, Session, brain_mask, postprocess, ratio_map, relabel_by_ratio, remove_small_components

OFF = dict(ratio_enabled=False, components_enabled=False)


def _block(shape, z, y, x, value=1):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = value
    return labels


# --- parameters ----------------------------------------------------------------------------------------------

def test_defaults_and_flat_dict_round_trip_through_json():
    p = PostprocessParams()
    assert p.min_volume_mm3 == {1: 160.0, 2: 0.0, 3: 50.0, 4: 0.0}
    assert (p.ratio_high, p.ratio_low, p.ratio_min, p.ratio_max) == (1.388, 0.766, 0.2, 5.0)
    d = p.to_dict()
    assert {"min_volume_et", "min_volume_net", "min_volume_cc", "min_volume_ed"} <= set(d)
    changed = PostprocessParams.from_dict(json.loads(json.dumps(dict(d, min_volume_cc=75, normalization="zscore"))))
    assert changed.min_volume_cc == 75.0 and changed.normalization == "zscore"
    assert PostprocessParams.from_dict({}) == p


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown post-processing parameter.*min_volume_xx"):
        PostprocessParams.from_dict({"min_volume_xx": 3})


@pytest.mark.parametrize("bad, match", [
    (dict(ratio_low=1.5, ratio_high=1.4), "ratio_low"),
    (dict(min_volume_et=-1.0), "min_volume_et"),
    (dict(normalization="median"), "normalization"),
    (dict(ratio_min=6.0), "ratio_min"),
    (dict(ratio_enabled="yes"), "ratio_enabled"),
    (dict(ratio_high=float("nan")), "ratio_high"),
])
def test_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        PostprocessParams(**bad)


def test_with_overrides_parses_types():
    p = PostprocessParams().with_overrides(["ratio_high=1.4", "components_enabled=false", "min_volume_et=150",
                                            "normalization=zscore", "ratio_enabled=1"])
    assert p.ratio_high == 1.4 and p.components_enabled is False and p.min_volume_et == 150.0
    assert p.normalization == "zscore" and p.ratio_enabled is True


@pytest.mark.parametrize("item, match", [
    ("ratio_high", "ratio_high.*key=value"),
    ("ratio_hi=1.4", "unknown parameter 'ratio_hi'"),
    ("ratio_high=abc", "ratio_high='abc': expected a number"),
    ("components_enabled=maybe", "components_enabled='maybe': expected true or false"),
    ("normalization=median", "normalization='median'"),
    ("min_volume_et=-5", "min_volume_et"),
    ("ratio_low=2", "ratio_low=2.0 must be below ratio_high"),
])
def test_with_overrides_errors_name_key_and_value(item, match):
    with pytest.raises(ValueError, match=match):
        PostprocessParams().with_overrides([item])


def test_parameter_table_matches_dataclass():
    defaults = PostprocessParams().to_dict()
    assert [p.name for p in PARAMETERS] == list(defaults)
    for p in PARAMETERS:
        assert p.default == defaults[p.name]
        if p.type == "float":
            assert p.min <= p.default <= p.max and p.step > 0
    assert next(p for p in PARAMETERS if p.name == "min_volume_et").unit == "mm^3"
    # any threshold inside the default ratio window (where a relabel can happen) is reachable by the sliders,
    # e.g. fitted thresholds with ratio_low > 1 (the Slicer parameter node refuses values outside the range)
    for name in ("ratio_high", "ratio_low"):
        p = next(p for p in PARAMETERS if p.name == name)
        assert (p.min, p.max) == (defaults["ratio_min"], defaults["ratio_max"])


# --- brain mask and ratio --------------------------------------------------------------------------------------

def test_brain_mask_is_union_of_channels_with_holes_filled():
    a = np.zeros((5, 5, 5))
    b = np.zeros((5, 5, 5))
    a[1:4, 1:4, 1:4] = 1
    a[2, 2, 2] = 0  # a hole in a, and b is empty there too -> filled
    b[0, 0, 0] = 7
    mask = brain_mask(np.stack([a, b]))
    assert mask[2, 2, 2] and mask[0, 0, 0] and mask.sum() == 27 + 1


def test_ratio_map_mean_normalization_by_hand():
    t1 = np.array([1, 2, 3, 2, 5], float).reshape(1, 1, 5)
    t1ce = np.array([2, 2, 4, 0, 9], float).reshape(1, 1, 5)
    mask = np.array([1, 1, 1, 1, 0], bool).reshape(1, 1, 5)
    # means inside the mask: T1 2, T1CE 2 -> ratio = (t1ce/2) / (t1/2) = t1ce / t1; last voxel outside -> NaN
    r = ratio_map(t1, t1ce, mask, "mean").ravel()
    assert r.dtype == np.float32
    np.testing.assert_allclose(r[:4], [2.0, 1.0, 4 / 3, 0.0], rtol=1e-6)
    assert math.isnan(r[4])
    t1_zero = t1.copy()
    t1_zero[0, 0, 1] = 0  # zero denominator -> NaN; means change (T1 6/4 = 1.5): ratio0 = (2/2)/(1/1.5)
    r = ratio_map(t1_zero, t1ce, mask, "mean").ravel()
    assert math.isnan(r[1]) and r[0] == pytest.approx(1.5, rel=1e-6)


def test_ratio_map_zscore_by_hand():
    t1 = np.array([1, 3, 1, 3], float).reshape(1, 1, 4)  # mean 2, std 1 -> z [-1, 1, -1, 1]
    t1ce = np.array([0, 4, 2, 2], float).reshape(1, 1, 4)  # mean 2, std sqrt(2) -> z [-1.41, 1.41, 0, 0]
    r = ratio_map(t1, t1ce, np.ones_like(t1, bool), "zscore").ravel()
    np.testing.assert_allclose(r, [math.sqrt(2), math.sqrt(2), 0.0, 0.0], atol=1e-6)


def test_relabel_thresholds_and_window():
    p = PostprocessParams()
    labels = np.array([2, 2, 1, 1, 2, 1, 2, 1, 2, 1, 3, 4], np.uint8)
    ratio = np.array([1.39, 1.38, 0.76, 0.77, 5.01, 0.19, np.nan, np.nan, 5.0, 0.2, 3.0, 0.1])
    expect = np.array([1, 2, 2, 1, 2, 1, 2, 1, 1, 2, 3, 4], np.uint8)
    np.testing.assert_array_equal(relabel_by_ratio(labels, ratio, p), expect)
    np.testing.assert_array_equal(relabel_by_ratio(labels, ratio, p.replace(ratio_enabled=False)), labels)
    # a wider window relabels the two voxels outside [0.2, 5]
    wide = relabel_by_ratio(labels, ratio, p.replace(ratio_min=0.1, ratio_max=6.0))
    assert wide[4] == 1 and wide[5] == 2


def test_postprocess_relabel_with_both_normalizations():
    t1 = np.array([1, 3, 1, 3], float).reshape(1, 1, 4)
    t1ce = np.array([0, 4, 2, 2], float).reshape(1, 1, 4)
    raw = np.array([2, 1, 1, 2], np.uint8).reshape(1, 1, 4)
    p = PostprocessParams(components_enabled=False)
    # zscore ratios [1.414, 1.414, 0, 0]: the first NET voxel becomes ET, the rest stays (0 is outside [0.2, 5])
    z = postprocess(raw, t1, t1ce, (1, 1, 1), p.replace(normalization="zscore"))
    np.testing.assert_array_equal(z.ravel(), [1, 1, 1, 2])
    # the default is the paper's z-score
    assert PostprocessParams().normalization == "zscore"
    np.testing.assert_array_equal(postprocess(raw, t1, t1ce, (1, 1, 1), p).ravel(), z.ravel())
    # mean ratios [0, 1.333, 2, 0.667]: nothing crosses a threshold inside the window
    m = postprocess(raw, t1, t1ce, (1, 1, 1), p.replace(normalization="mean"))
    np.testing.assert_array_equal(m.ravel(), [2, 1, 1, 2])


# --- small components ----------------------------------------------------------------------------------------

def test_159_mm3_et_removed_at_160_kept_at_150_and_160_kept():
    shape = (12, 12, 60)
    et159 = _block(shape, (2, 3), (2, 5), (2, 55))  # 1 x 3 x 53 = 159 voxels of 1 mm^3
    assert et159.sum() == 159
    assert remove_small_components(et159, (1, 1, 1), {1: 160.0}).sum() == 0
    np.testing.assert_array_equal(remove_small_components(et159, (1, 1, 1), {1: 150.0}), et159)
    et160 = et159.copy()
    et160[2, 2, 55] = 1
    np.testing.assert_array_equal(remove_small_components(et160, (1, 1, 1), {1: 160.0}), et160)  # strict <


def test_volume_is_counted_on_the_original_voxels_and_removed_et_inside_net_becomes_background():
    # the chosen readings (see the postprocess docstring): a 2 x 2 x 2 ET island (8 voxels = 8 mm^3; its
    # 3x3x3-dilated component has 4^3 = 64 voxels) inside a NET block, cut-off 50 mm^3
    labels = _block((12, 12, 12), (1, 11), (1, 11), (1, 11), 2)
    labels[5:7, 5:7, 5:7] = 1
    out = remove_small_components(labels, (1, 1, 1), {1: 50.0})
    assert (out == 1).sum() == 0  # 8 < 50 (the dilated count, 64, would have kept it)
    assert (out[5:7, 5:7, 5:7] == 0).all()  # removed -> background, a hole in the core, not NET
    assert (out == 2).sum() == (labels == 2).sum()


def test_components_one_voxel_apart_are_merged_by_the_dilation():
    shape = (10, 10, 20)
    a = _block(shape, (2, 6), (2, 6), (2, 7))  # 4*4*5 = 80 voxels
    gap1 = a | _block(shape, (2, 6), (2, 6), (8, 13))  # x 2..6 and 8..12: one empty voxel column between
    gap3 = a | _block(shape, (2, 6), (2, 6), (10, 15))  # three empty voxels: dilations do not touch
    assert ndimage.label(gap1)[1] == 2  # two components before the dilation
    # judged together: 160 mm^3 is not below 160 -> both kept
    np.testing.assert_array_equal(remove_small_components(gap1, (1, 1, 1), {1: 160.0}), gap1)
    # judged separately: 80 < 160 each -> both removed
    assert remove_small_components(gap3, (1, 1, 1), {1: 160.0}).sum() == 0


def test_volume_uses_anisotropic_spacing():
    shape = (8, 8, 20)
    blob = _block(shape, (2, 4), (2, 6), (2, 12))  # 2*4*10 = 80 voxels
    assert blob.sum() == 80
    # 1 x 1 x 2 mm voxels (z thickness 2): 160 mm^3 -> kept at 160; at 1 mm iso 80 mm^3 -> removed
    np.testing.assert_array_equal(remove_small_components(blob, (2.0, 1.0, 1.0), {1: 160.0}), blob)
    assert remove_small_components(blob, (1.0, 1.0, 1.0), {1: 160.0}).sum() == 0
    blob79 = blob.copy()
    blob79[2, 2, 2] = 0  # 79 voxels * 2 mm^3 = 158 < 160
    assert remove_small_components(blob79, (2.0, 1.0, 1.0), {1: 160.0}).sum() == 0
    # 0.5 x 2 x 2 mm = 2 mm^3 per voxel, same answer
    np.testing.assert_array_equal(remove_small_components(blob, (0.5, 2.0, 2.0), {1: 160.0}), blob)


def test_removal_is_per_label_and_sets_background():
    shape = (10, 10, 10)
    labels = _block(shape, (1, 9), (1, 9), (1, 9), 4)  # edema 512 voxels
    labels[4:6, 4:6, 4:6] = 3  # 8 voxels of CC inside edema
    labels[1, 1, 1] = 1  # 1 voxel of ET
    out = remove_small_components(labels, (1, 1, 1), {1: 160.0, 2: 0.0, 3: 50.0, 4: 0.0})
    assert out[1, 1, 1] == 0 and (out[4:6, 4:6, 4:6] == 0).all()  # removed -> background, not edema
    assert (out == 4).sum() == (labels == 4).sum()  # edema (cut-off 0 = off) untouched


def test_disabled_steps_are_identity():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 5, size=(8, 9, 10)).astype(np.uint8)
    t1 = rng.uniform(1, 2, size=raw.shape)
    t1ce = rng.uniform(0.5, 4, size=raw.shape)
    np.testing.assert_array_equal(postprocess(raw, t1, t1ce, (1, 1, 1), PostprocessParams(**OFF)), raw)
    only_ratio = postprocess(raw, t1, t1ce, (1, 1, 1), PostprocessParams(components_enabled=False))
    ratio = ratio_map(t1, t1ce, np.ones(raw.shape, bool), "zscore")
    np.testing.assert_array_equal(only_ratio, relabel_by_ratio(raw, ratio, PostprocessParams()))
    assert (only_ratio != raw).any()
    only_cc = postprocess(raw, t1, t1ce, (1, 1, 1), PostprocessParams(ratio_enabled=False))
    np.testing.assert_array_equal(only_cc, remove_small_components(raw, (1, 1, 1), PostprocessParams().min_volume_mm3))


# --- session ----------------------------------------------------------------------------------------------------

def _synthetic_case(seed=0, shape=(40, 56, 56)):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    c = np.array(shape) / 2
    brain = ((zz - c[0]) / (c[0] - 2)) ** 2 + ((yy - c[1]) / (c[1] - 2)) ** 2 + ((xx - c[2]) / (c[2] - 2)) ** 2 < 1
    r2 = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    noise /= noise.std()
    raw = np.zeros(shape, np.uint8)
    raw[(r2 < 14 ** 2) & brain] = 4
    raw[r2 < 10 ** 2] = 2
    raw[(r2 < 10 ** 2) & (noise > 0.3)] = 1
    raw[(r2 < 5 ** 2) & (noise < -0.8)] = 3
    speckle = (rng.random(shape) < 0.002) & brain & (r2 > 16 ** 2)  # small stray ET/CC islands
    raw[speckle] = rng.choice(np.array([1, 3], np.uint8), size=int(speckle.sum()))
    t1 = np.where(brain, 800 + 100 * rng.normal(size=shape), 0)
    t1ce = np.where(brain, t1 * np.exp(0.35 * noise + 0.1 * rng.normal(size=shape)), 0)
    return raw, t1, t1ce


def _random_change(rng):
    name = rng.choice(["ratio_high", "ratio_low", "ratio_min", "ratio_max", "normalization", "ratio_enabled",
                       "components_enabled", "min_volume_et", "min_volume_net", "min_volume_cc", "min_volume_ed"])
    if name == "ratio_high":
        return {name: float(rng.uniform(1.0, 1.8))}
    if name == "ratio_low":
        return {name: float(rng.uniform(0.4, 0.99))}
    if name == "ratio_min":
        return {name: float(rng.uniform(0.0, 0.5))}
    if name == "ratio_max":
        return {name: float(rng.uniform(2.0, 8.0))}
    if name == "normalization":
        return {name: str(rng.choice(["mean", "zscore"]))}
    if name in ("ratio_enabled", "components_enabled"):
        return {name: bool(rng.random() < 0.6)}
    return {name: float(rng.choice([0.0, 5.0, 20.0, 50.0, 160.0, 400.0, 2000.0]))}


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.9, 0.9)])
def test_session_equals_postprocess_over_random_parameter_sequences(spacing):
    raw, t1, t1ce = _synthetic_case(1)
    rng = np.random.default_rng(7)
    params = PostprocessParams()
    session = Session(raw, t1, t1ce, spacing, params)
    previous = postprocess(raw, t1, t1ce, spacing, params)
    np.testing.assert_array_equal(session.labels, previous)
    seen_changes = set()
    for _ in range(30):
        change = _random_change(rng)
        try:
            params.replace(**change)
        except ValueError:
            continue
        changed = session.update(**change)
        params = params.replace(**change)
        assert session.params == params
        expected = postprocess(raw, t1, t1ce, spacing, params)
        np.testing.assert_array_equal(session.labels, expected)
        diff = previous != expected
        truth = {int(v) for v in np.union1d(previous[diff], expected[diff]) if v != 0}
        assert changed == truth
        seen_changes |= changed
        previous = expected
    assert seen_changes >= {1, 2, 3}  # the sequence really exercised relabel and filters


def test_session_change_sets_by_hand_and_reset():
    shape = (10, 10, 30)
    raw = _block(shape, (2, 6), (2, 6), (2, 7), 1)  # 80 voxels ET
    raw[2:6, 2:6, 10:15] = 3  # 80 voxels CC
    t1 = np.full(shape, 100.0)
    t1ce = np.full(shape, 100.0)
    MEAN = PostprocessParams(normalization="mean")  # constant images: z-scores are undefined, mean ratios are 1
    session = Session(raw, t1, t1ce, (1, 1, 1), MEAN)
    assert (session.labels == 1).sum() == 0 and (session.labels == 3).sum() == 80  # ET 80 < 160; CC 80 >= 50
    assert session.update(min_volume_et=50.0) == {1}
    assert session.update(min_volume_cc=100.0) == {3}
    assert session.update(ratio_high=1.2) == set()  # ratio 1 everywhere: nothing relabels
    assert session.update(ratio_low=1.1) == {1, 2}  # ET (ratio 1 < 1.1) -> NET
    assert (session.labels == 2).sum() == 80
    assert session.update() == set()
    with pytest.raises(ValueError, match="ratio_low"):
        session.update(ratio_low=1.3)  # above ratio_high=1.2
    assert session.params.ratio_low == 1.1  # refused change left the session as it was
    assert session.reset(MEAN) == {2, 3}  # defaults: NET gone (ET removed again), CC back
    np.testing.assert_array_equal(session.labels, postprocess(raw, t1, t1ce, (1, 1, 1), MEAN))
    with pytest.raises(ValueError):
        session.labels[0, 0, 0] = 1  # read-only view
    vol = session.volumes_ml()
    assert vol["volumes_ml"]["CC"] == pytest.approx(0.080)


def test_session_with_empty_prediction():
    shape = (6, 6, 6)
    session = Session(np.zeros(shape, np.uint8), np.ones(shape), np.ones(shape), (1, 1, 1))
    assert session.update(ratio_high=1.5) == set() and not session.labels.any()


def test_dilate_cube_by_hand_and_equal_to_scipy():
    from scipy import ndimage

    from pedtumorseg.postprocess import dilate_cube

    mask = np.zeros((4, 5, 6), bool)
    mask[0, 0, 0] = True  # a corner voxel grows into its 2x2x2 corner (outside the array counts as 0)
    mask[2, 2, 3] = True  # an inner voxel grows into its 3x3x3 cube
    grown = dilate_cube(mask)
    expected = np.zeros_like(mask)
    expected[0:2, 0:2, 0:2] = True
    expected[1:4, 1:4, 2:5] = True
    np.testing.assert_array_equal(grown, expected)
    assert int(grown.sum()) == 8 + 27  # the blocks do not overlap (x 0-1 and 2-4)
    rng = np.random.default_rng(0)
    for shape in ((9, 7, 8), (1, 5, 5), (30, 20, 10)):
        random = rng.random(shape) < 0.05
        np.testing.assert_array_equal(dilate_cube(random), ndimage.binary_dilation(random, np.ones((3, 3, 3), bool)))
