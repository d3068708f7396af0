"""Lesions, matching and registration on the synthetic patient of ``phantoms.series`` (known growth and shrinkage,
known motion between scans, a lesion that appears)."""

from __future__ import annotations

import numpy as np
import pytest

from pedtumorseg.errors import InputError
from pedtumorseg.inputs.registration import mean_displacement
from pedtumorseg.phantoms.series import make_series, truth_volumes_ml
from pedtumorseg.response.assess import assess
from pedtumorseg.response.criteria import CRITERIA
from pedtumorseg.response.lesions import components, match_lesions
from pedtumorseg.response.register import align
from pedtumorseg.response.timepoints import Timepoint


@pytest.fixture(scope="module")
def series():
    return make_series()  # scales 1.0, 0.6, 1.3; a new ET lesion from tp2; tp1 and tp2 moved and on other grids


def _timepoints(series):
    return [Timepoint(s.name, s.labels, s.t1ce, f"{s.name}-seg", f"{s.name}-t1c") for s in series]


def test_components_are_numbered_by_size():
    m = np.zeros((5, 20, 20), bool)
    m[1, 1:3, 1:3] = True  # 4 voxels, first in scan order
    m[3, 10:15, 10:15] = True  # 25 voxels
    cc = components(m)
    assert int(cc.max()) == 2 and np.count_nonzero(cc == 1) == 25 and np.count_nonzero(cc == 2) == 4


def test_matching_flags_new_and_disappeared_lesions():
    a = np.zeros((4, 30, 30), np.int32)
    a[1:3, 2:8, 2:8] = 1
    a[1:3, 20:26, 20:26] = 2
    b = np.zeros_like(a)
    b[1:3, 4:10, 3:9] = 1  # overlaps a's lesion 1
    b[1:3, 12:16, 2:6] = 2  # overlaps nothing: new
    tracks = match_lesions([a, b], [2, 2])
    by_first = {(t.first_seen, t.component[t.first_seen]): t for t in tracks}
    assert by_first[(0, 1)].component == [1, 1] and by_first[(0, 1)].status(1) == "present"
    assert by_first[(0, 2)].component == [2, 0] and by_first[(0, 2)].status(1) == "disappeared"
    assert by_first[(1, 2)].status(1) == "new" and by_first[(1, 2)].status(0) == "absent"
    assert len(tracks) == 3


@pytest.mark.parametrize("index", [1, 2])
def test_registration_recovers_the_motion(series, index):
    a = align(series[0].t1ce, series[index].t1ce, f"tp{index}-t1c")
    corners = np.array([[x, y, z] for x in (-40, 40) for y in (-40, 40) for z in (-30, 30)], float)
    assert mean_displacement(a.transform, series[index].motion, corners) < 2.0  # mm, against the known motion
    assert a.nmi > 1.2


def test_assessment_of_the_series(series):
    result = assess(_timepoints(series), CRITERIA["rapno-lgg"])
    tps = result["timepoints"]
    assert [tp["category_2d"]["category"] if tp["category_2d"] else None for tp in tps] == [None, "PR", "PD"]
    assert [tp["category_volume"]["category"] if tp["category_volume"] else None for tp in tps] == [None, "PR", "PD"]
    # every subregion at every timepoint, measured on the scan's own grid (each follow-up moved and on another
    # grid): the continuous anatomy's volume within 2 %, and so are the matched lesions' volumes
    for tp, s in zip(tps, series):
        truth = truth_volumes_ml(s.scale, s.name == "tp2")
        for region, want in truth.items():
            assert tp["volumes_ml"][region] == pytest.approx(want, rel=0.02, abs=1e-9), (s.name, region)
        tumour = {les["kind"]: les["volume_ml"] for les in result["lesions"] if les["timepoint"] == s.name
                  and les["track"] == 1}
        new_ml = truth_volumes_ml(0.0, True)["ET"] if s.name == "tp2" else 0.0
        assert tumour["T2FLAIR"] == pytest.approx(truth["WT"] - new_ml, rel=0.02), s.name
        assert tumour["ET"] == pytest.approx(truth["ET"] - new_ml, rel=0.02), s.name
    new_lesion = [les for les in result["lesions"] if les["status"] == "new"]
    assert [les["volume_ml"] for les in new_lesion] == pytest.approx([truth_volumes_ml(0.0, True)["ET"]] * 2, rel=0.02)
    # the T2/FLAIR lesion (ED shell, radii 1.5 x (16, 12, 10) mm) at baseline: LD about 2 x 24 mm
    base_wt = [les for les in result["lesions"] if les["kind"] == "T2FLAIR" and les["timepoint"] == "tp0"
               and les["status"] == "present"]
    assert len(base_wt) == 1 and abs(base_wt[0]["longest_mm"] - 48.0) <= 2 * 2.0 and base_wt[0]["target"]
    new = [les for les in result["lesions"] if les["status"] == "new"]
    assert {les["timepoint"] for les in new} == {"tp2"} and {les["kind"] for les in new} == {"ET", "T2FLAIR"}
    tracks_t2 = {les["track"] for les in result["lesions"] if les["kind"] == "T2FLAIR"}
    assert len(tracks_t2) == 2  # the tumour, matched over all three scans, and the new lesion
    assert "suggestion" in result["note"]


def test_a_different_head_is_refused(series):
    pytest.importorskip("nilearn")
    from pedtumorseg.phantoms.clean import make_phantom

    other = make_phantom(3, "small")
    image = other.geometry.to_image(other.images["t1ce"].astype(np.float32))
    image.SetOrigin(tuple(-0.5 * (n - 1) * s for n, s in zip(image.GetSize(), image.GetSpacing())))
    with pytest.raises(InputError, match="other-t1c.*different patient"):
        align(series[0].t1ce, image, "other-t1c.nii.gz")


def test_caliper_endpoints_in_physical_space():
    import SimpleITK as sitk

    from pedtumorseg.response.assess import axial_warning, physical_ends

    image = sitk.Image(10, 10, 4, sitk.sitkFloat32)
    image.SetSpacing((0.5, 2.0, 3.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    # (y, x) = (0, 0) mm is the corner of voxel (0, 0): half a voxel before its centre, the origin
    (p, q) = physical_ends(((0.0, 0.0), (4.0, 1.0)), 2, image)
    assert p == pytest.approx([10.0 - 0.25, 20.0 - 1.0, 36.0])
    assert q == pytest.approx([10.0 - 0.25 + 1.0, 20.0 - 1.0 + 4.0, 36.0])
    assert axial_warning(image) is None
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0))  # slices along y: coronal
    assert "not axial" in axial_warning(image)


def test_a_split_lesion_is_not_new_and_a_merged_one_has_not_disappeared():
    a = np.zeros((4, 40, 40), np.int32)
    a[1:3, 2:12, 2:12] = 1  # one lesion
    a[1:3, 25:30, 25:30] = 2  # another
    b = np.zeros_like(a)
    b[1:3, 2:6, 2:12] = 1  # the first split in two
    b[1:3, 8:12, 2:12] = 2
    c = np.zeros_like(a)
    c[1:3, 2:30, 2:30] = 1  # both merged into one
    tracks = match_lesions([a, b, c], [2, 2, 1])
    assert len(tracks) == 2
    first, second = tracks
    assert first.status(1) == "split" and sorted(first.components_at(1)) == [1, 2]
    assert second.status(1) == "disappeared"
    assert first.status(2) == "present" and second.status(2) == "merged" and second.merged_into[2] == 1


def test_a_lesion_smaller_than_a_baseline_voxel_is_still_matched():
    import SimpleITK as sitk

    from pedtumorseg.response.register import identity_alignment, labels_on_baseline

    base = sitk.Image(12, 12, 4, sitk.sitkFloat32)
    base.SetSpacing((2.0, 2.0, 3.0))  # voxel centres at x = 0, 2, 4, ...
    follow = sitk.Image(14, 14, 4, sitk.sitkFloat32)
    follow.SetSpacing((1.8, 1.8, 3.0))  # voxel 5 spans x 8.1 .. 9.9 mm: no baseline centre inside
    small = np.zeros((4, 14, 14), np.int32)
    small[1, 2, 5] = 1
    small[2, 4:8, 2:6] = 2
    drawn = labels_on_baseline(small, follow, base, identity_alignment())
    assert sorted(np.unique(drawn)) == [0, 1, 2] and np.count_nonzero(drawn == 1) == 1
    assert np.argwhere(drawn == 1).tolist() in ([[1, 2, 4]], [[1, 2, 5]])  # the voxel nearest x = 9.0 mm
    # without the centroid rule the lesion would vanish: nearest-neighbour drawing alone loses it
    image = sitk.GetImageFromArray(small)
    image.CopyInformation(follow)
    plain = sitk.GetArrayFromImage(sitk.Resample(image, base, sitk.Transform(), sitk.sitkNearestNeighbor))
    assert 1 not in np.unique(plain)
