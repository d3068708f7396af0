"""Do the four images belong together, in their slots? (``inputs.consistency``: alignment and slot checks.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_tiny_bundle
from pedtumorseg import cli
from pedtumorseg.errors import InputError
from pedtumorseg.inputs.cases import case_from_files, find_case
from pedtumorseg.inputs.consistency import NMI_WARN, check_case, normalized_mutual_information
from pedtumorseg.inputs.images import load_case
from pedtumorseg.inputs.prepare import RawOptions, prepare_case

REPO = Path(__file__).resolve().parents[1]
REAL_LABELED = REPO.parent / "shared" / "data" / "real-labeled"
BUNDLE_LIKE = type("B", (), {"orientation": "LPS", "spacing_zyx": (2.5, 2.5, 2.5)})()


def _paths(case_dir: Path) -> dict:
    files = find_case(case_dir)
    return {ch: files.images[ch] for ch in ("t1", "t1ce", "t2", "flair")}


def _cases(real_case_dir, small_phantom_dir) -> list[Path]:
    return [real_case_dir, small_phantom_dir] + sorted(p for p in REAL_LABELED.glob("*") if p.is_dir())


def test_normalized_mutual_information_by_hand():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 20000).astype(float)
    assert normalized_mutual_information(a, a, bins=4) == pytest.approx(2.0)  # identical: H(A)+H(A) over H(A)
    assert normalized_mutual_information(a, rng.permutation(a), bins=4) == pytest.approx(1.0, abs=2e-3)


def test_correct_cases_pass_and_their_numbers_are_kept(real_case_dir, small_phantom_dir):
    for case_dir in _cases(real_case_dir, small_phantom_dir):
        case = load_case(find_case(case_dir))
        result = check_case(case.images, _paths(case_dir))
        assert not result.refuse and not result.warn, (case_dir.name, result.to_dict())
        assert min(result.numbers["alignment_nmi"].values()) >= NMI_WARN
        assert set(result.numbers["slots"]) == {"t1ce_t1_enhancement_tail_ratio", "t2_flair_csf_lesion_relation",
                                                "t2_minus_t1_skewness"}


def test_swapped_slots_are_named(real_case_dir):
    """T1 <-> T1CE and T2 <-> FLAIR swapped (a newcomer's case segmented with exit 0 and 73 mL of WT against 11 mL
    of ground truth): each swap gets its own warning naming the slot's file."""
    case = load_case(find_case(real_case_dir))
    swapped = case.images[[1, 0, 3, 2]]
    paths = _paths(real_case_dir)
    paths = {"t1": paths["t1ce"], "t1ce": paths["t1"], "t2": paths["flair"], "flair": paths["t2"]}
    result = check_case(swapped, paths)
    assert not result.refuse and len(result.warn) == 2, result.warn
    assert "are T1 and T1CE swapped?" in result.warn[0] and result.warn[0].startswith(str(paths["t1ce"]))
    assert "are T2 and FLAIR swapped?" in result.warn[1] and result.warn[1].startswith(str(paths["flair"]))
    only_t2 = check_case(case.images[[0, 1, 3, 2]], _paths(real_case_dir))
    assert len(only_t2.warn) == 1 and "T2 and FLAIR" in only_t2.warn[0]


def test_a_dicom_series_that_names_another_sequence_is_reported(small_phantom_dir):
    case = load_case(find_case(small_phantom_dir))
    result = check_case(case.images, _paths(small_phantom_dir), {"t2": "flair", "t1": "t1"})
    assert len(result.warn) == 1 and "given as T2, but its DICOM description" in result.warn[0]


def test_another_patient_s_image_is_refused(real_case_dir, small_phantom_dir, tmp_path):
    """A synthetic head's T2 beside a real T1CE (same grid, so nothing is registered) shares no anatomy."""
    phantom = sitk.ReadImage(str(_paths(small_phantom_dir)["t2"]))
    real_t1ce = sitk.ReadImage(str(_paths(real_case_dir)["t1ce"]))
    foreign = sitk.Resample(phantom, real_t1ce, sitk.Transform(), sitk.sitkLinear, 0.0)
    sitk.WriteImage(foreign, str(tmp_path / "foreign-t2w.nii.gz"))
    paths = _paths(real_case_dir)
    files = case_from_files(paths["t1"], paths["t1ce"], tmp_path / "foreign-t2w.nii.gz", paths["flair"], case_id="X")
    with pytest.raises(InputError, match=r"foreign-t2w.nii.gz: T2 and the T1CE share little anatomy .* different "
                                         r"patient or examination"):
        prepare_case(files, RawOptions(), BUNDLE_LIKE)


@pytest.mark.slow
def test_the_command_line_warns_and_strict_refuses(real_case_dir, tmp_path, capsys):
    case = tmp_path / "swapped"
    case.mkdir()
    for ours, theirs in (("t1n", "t1c"), ("t1c", "t1n"), ("t2w", "t2f"), ("t2f", "t2w")):
        shutil.copy(next(real_case_dir.glob(f"*-{theirs}.nii.gz")), case / f"S-{ours}.nii.gz")
    bundle = write_tiny_bundle(tmp_path / "tiny.zip")
    common = ["--model", str(bundle), "--device", "cpu", "--no-tta", "--backend", "torch", "--progress", "none"]
    assert cli.main(["predict", "--case", str(case), "--out", str(tmp_path / "strict"), "--strict", *common]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pedtumorseg: error: ") and "swapped?" in err[-1] and "(--strict)" in err[-1]
    assert not (tmp_path / "strict").exists() or not list((tmp_path / "strict").iterdir())
    assert cli.main(["predict", "--case", str(case), "--out", str(tmp_path / "out"), *common]) == 0
    err = capsys.readouterr().err
    assert err.count("pedtumorseg: warning: ") == 2 and "T1 and T1CE swapped?" in err
    stats = json.loads((tmp_path / "out" / "S-stats.json").read_text())
    assert sum("swapped?" in w for w in stats["warnings"]) == 2
    assert stats["input"]["consistency"]["slots"]["t1ce_t1_enhancement_tail_ratio"] < 1
    assert stats["input"]["files"]["t1ce"].endswith("S-t1c.nii.gz")


def test_overlap_is_judged_against_the_t1ce_and_tiny_images_are_not_judged():
    """An image whose data covers a tenth of the T1CE's is refused; an image too small for the statistics (a few
    thousand voxels, as in unit tests) is passed with its alignment not measured (None), not refused."""
    rng = np.random.default_rng(0)
    big = rng.normal(100, 20, (4, 40, 40, 40)).astype(np.float32)
    paths = {c: f"{c}.nii.gz" for c in ("t1", "t1ce", "t2", "flair")}
    big[2, :, :, 4:] = 0  # the T2 holds data in a tenth of the head only
    result = check_case(big, paths)
    assert any(m.startswith("t2.nii.gz: T2 and the T1CE hardly overlap") for m in result.refuse)
    assert not any("hardly overlap" in m for m in result.refuse if m.startswith(("flair", "t1.")))
    tiny = rng.normal(100, 20, (4, 16, 18, 20)).astype(np.float32)
    small = check_case(tiny, paths)
    assert small.refuse == [] and small.numbers["alignment_nmi"] == {"t1": None, "t2": None, "flair": None}
