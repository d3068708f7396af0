"""Rigid co-registration: known transforms of the real case's T1/T2/FLAIR, resliced to a clinical 0.9x0.9x5 mm grid,
are recovered to within 1 mm mean displacement over the brain."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pedtumorseg.inputs.registration import image_center, mean_displacement, register_rigid


def test_mean_displacement_by_hand():
    a = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))
    b = sitk.TranslationTransform(3, (0.0, 0.0, 0.0))
    assert mean_displacement(a, b, np.zeros((5, 3))) == pytest.approx(1.0)
    r = sitk.Euler3DTransform()
    r.SetRotation(0.0, 0.0, np.pi / 2)  # 90 degrees about z through the origin: (10, 0, 0) -> (0, 10, 0)
    assert mean_displacement(r, b, np.array([[10.0, 0, 0], [0, 0, 0]])) == pytest.approx(np.hypot(10, 10) / 2)


@pytest.mark.slow
def test_known_rigid_transforms_are_recovered_on_the_real_case(real_case_dir):
    fixed = sitk.ReadImage(str(next(real_case_dir.glob("*-t1c.nii.gz"))), sitk.sitkFloat32)
    center = image_center(fixed)
    brain = np.argwhere(sitk.GetArrayViewFromImage(fixed)[::4, ::4, ::4] > 0) * 4
    points = np.array([fixed.TransformIndexToPhysicalPoint(tuple(int(v) for v in idx[::-1])) for idx in brain])
    # a clinical slab: 0.9 x 0.9 mm in plane, 5 mm slices, a field of view 30 mm larger than the BraTS box
    sp = (0.9, 0.9, 5.0)
    size = [int(np.ceil(300 / 0.9)), int(np.ceil(300 / 0.9)), int(np.ceil(215 / 5))]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(sp)
    ref.SetOrigin(tuple(float(o) - 30.0 for o in fixed.GetOrigin()))
    cases = {"t1n": ((14.0, -9.0, 6.0), (15.0, -12.0, 8.0)), "t2w": ((-6.0, 12.0, -15.0), (-20.0, 10.0, -5.0)),
             "t2f": ((10.0, 4.0, -11.0), (7.0, -18.0, 20.0))}
    for suffix, (angles, shift) in cases.items():
        true = sitk.Euler3DTransform()
        true.SetCenter(center)
        true.SetRotation(*np.deg2rad(angles))
        true.SetTranslation(shift)
        original = sitk.ReadImage(str(next(real_case_dir.glob(f"*-{suffix}.nii.gz"))), sitk.sitkFloat32)
        moving = sitk.Resample(original, ref, true, sitk.sitkLinear, 0.0)  # moving(q) = original(true(q))
        result = register_rigid(fixed, moving)
        error = mean_displacement(result.transform, true.GetInverse(), points)
        assert error < 1.0, (suffix, error, result.to_dict())
        assert result.to_dict()["improved"]
