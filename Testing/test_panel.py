"""Slicer-free panel logic: input assignment, options, controls, results, terminology, edits, requirements."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from pedtumorseg import arrays
from pedtumorseg.ui import assignment, controls, requirements, results
from pedtumorseg.outputs import terminology
from pedtumorseg.conventions import CHANNELS
from pedtumorseg.postprocess import PARAMETERS, PostprocessParams


@pytest.mark.parametrize("names, expected", [
    (["BraTS-PED-00001-000-t1n", "BraTS-PED-00001-000-t1c", "BraTS-PED-00001-000-t2w", "BraTS-PED-00001-000-t2f"],
     {"t1": "BraTS-PED-00001-000-t1n", "t1ce": "BraTS-PED-00001-000-t1c", "t2": "BraTS-PED-00001-000-t2w",
      "flair": "BraTS-PED-00001-000-t2f"}),
    (["case_flair.nii.gz", "case_t1ce.nii.gz", "case_t2.nii.gz", "case_t1.nii.gz"],
     {"t1": "case_t1.nii.gz", "t1ce": "case_t1ce.nii.gz", "t2": "case_t2.nii.gz", "flair": "case_flair.nii.gz"}),
    (["T2-FLAIR", "T1Gd", "T2W", "T1"], {"t1": "T1", "t1ce": "T1Gd", "t2": "T2W", "flair": "T2-FLAIR"}),
    (["t1 post", "FLAIR", "T2 weighted", "T1_pre"],
     {"t1": "T1_pre", "t1ce": "t1 post", "t2": "T2 weighted", "flair": "FLAIR"}),
    (["T1C", "T1", "t2_flair", "T2"], {"t1": "T1", "t1ce": "T1C", "t2": "T2", "flair": "t2_flair"}),
    (["MR T1+C", "MR T1W"], {"t1ce": "MR T1+C", "t1": "MR T1W"}),
])
def test_assign_inputs(names, expected):
    assert assignment.assign_inputs(names) == expected


def test_assign_inputs_never_twice_and_ignores_unknown():
    got = assignment.assign_inputs(["T1", "T1", "T1 copy", "Segmentation", "ct_head", "t10_scan", "DWI"])
    assert got == {"t1": "T1"}
    assert assignment.assign_inputs([]) == {}
    # "t2" inside a longer token is not a T2
    assert assignment.classify_name("patient_t2000") is None
    assert assignment.classify_name("T2-FLAIR") == "flair"
    assert assignment.classify_name("t1_gd") == "t1ce"
    assert assignment.classify_name("SAG T1 MPRAGE") == "t1"


def test_validate_inputs():
    ok = {c: f"vol{i}" for i, c in enumerate(CHANNELS)}
    assert assignment.validate_inputs(ok) == []
    dup = dict(ok, flair="vol0")
    problems = assignment.validate_inputs(dup)
    assert problems == ["the same volume is selected as T1 and as T2-FLAIR"]
    missing = dict(ok, t2=None)
    assert assignment.validate_inputs(missing) == ["select the T2 volume"]
    assert len(assignment.validate_inputs({})) == 4


def test_prediction_settings():
    assert controls.prediction_settings("Fast", "CPU", [0, 1, 2, 3, 4]) == {"device": "cpu", "folds": [0], "tta": False}
    assert controls.prediction_settings("full", "GPU", [0, 1, 2]) == {"device": "cuda", "folds": [0, 1, 2], "tta": True}
    assert controls.prediction_settings("Fast", "Auto", [3])["device"] == "auto"
    assert controls.prediction_settings("Fast", "GPU", [3, 4]) == {"device": "cuda", "folds": [3], "tta": False}
    assert controls.prediction_settings("Full", "CPU", [3, 4]) == {"device": "cpu", "folds": [3, 4], "tta": True}
    for bad in (("Medium", "CPU", [0]), ("Fast", "TPU", [0]), ("Fast", "CPU", [])):
        with pytest.raises(ValueError):
            controls.prediction_settings(*bad)
    from pedtumorseg.ui.background import build_predict_command
    from pedtumorseg.cli import build_parser

    argv = build_predict_command("python", {c: f"{c}.nii.gz" for c in CHANNELS}, "o",
                                 **controls.prediction_settings("Fast", "GPU", [2, 3]))
    args = build_parser().parse_args(argv[3:])
    assert args.folds == [2] and args.no_tta and args.device == "cuda"


def test_slider_specs_follow_parameters_table():
    specs = {s.name: s for s in controls.slider_specs()}
    assert list(specs) == list(controls.PANEL_PARAMETERS)
    table = {p.name: p for p in PARAMETERS}
    for name, spec in specs.items():
        p = table[name]
        assert spec.default == p.default and spec.label == p.label
        if p.type == "float":
            assert spec.kind == "slider" and spec.widget_name == name + "Slider"
            assert (spec.minimum, spec.maximum, spec.step) == (p.min, p.max, p.step)
            assert spec.minimum <= spec.default <= spec.maximum
        else:
            assert spec.kind == "checkbox" and spec.widget_name == name + "CheckBox"
    assert specs["ratio_high"].decimals == 2
    assert specs["min_volume_et"].decimals == 0 and specs["min_volume_et"].unit == "mm\u00b3"
    assert specs["min_volume_et"].default == 160.0 and specs["min_volume_cc"].default == 50.0


def test_panel_controls_follow_the_model_labels():
    every = controls.PANEL_PARAMETERS
    assert controls.panel_controls((1, 2, 3, 4)) == every
    assert controls.panel_controls((1, 2, 4)) == tuple(n for n in every if n != "min_volume_cc")
    # no NET: the ratio relabel (NET <-> ET) has nothing to act on; its three controls go
    assert controls.panel_controls((1, 3, 4)) == ("components_enabled", "min_volume_et", "min_volume_cc",
                                                   "min_volume_ed")
    assert controls.panel_controls((4,)) == ("components_enabled", "min_volume_ed")
    assert controls.panel_controls(()) == ()


def test_parameter_changes():
    p = PostprocessParams()
    assert controls.parameter_changes(p, {"ratio_high": 1.388000001, "min_volume_et": 160.0, "ratio_enabled": True}) == {}
    assert controls.parameter_changes(p, {"ratio_high": 1.5, "components_enabled": False}) == {
        "ratio_high": 1.5, "components_enabled": False}
    assert controls.parameter_changes(p, {"min_volume_et": 0}) == {"min_volume_et": 0.0}


def test_results_table_and_csv():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 0, :4] = 1  # 4 ET
    labels[1, 0, :2] = 2  # 2 NET
    labels[2, 0, :1] = 3  # 1 CC
    labels[3, :, :] = 4  # 30 ED
    rows = results.results_table(labels, (2.0, 1.0, 0.5))  # voxel = 1 mm^3
    assert [r.region for r in rows] == ["ET", "NET", "CC", "ED", "TC", "WT"]
    by = {r.region: r for r in rows}
    assert by["ET"].volume_ml == pytest.approx(0.004) and by["ED"].volume_ml == pytest.approx(0.030)
    assert by["TC"].volume_ml == pytest.approx(0.007) and by["WT"].volume_ml == pytest.approx(0.037)
    assert by["WT"].fraction_of_wt == pytest.approx(1.0) and by["ET"].fraction_of_wt == pytest.approx(4 / 37)
    assert by["CC"].description == "Cystic component"
    assert by["ET"].display() == ("ET", "Enhancing tumor", "0.00", "10.8 %")
    parsed = list(csv.DictReader(io.StringIO(results.results_csv(rows))))
    assert [r["region"] for r in parsed] == ["ET", "NET", "CC", "ED", "TC", "WT"]
    assert float(parsed[5]["volume_ml"]) == pytest.approx(0.037)
    # an empty whole tumor: every volume 0, every share undefined (shown as "-", empty in the CSV), never 0 %
    empty = results.results_table(np.zeros((2, 2, 2), np.uint8), (1, 1, 1))
    assert all(r.volume_ml == 0 and r.fraction_of_wt is None for r in empty)
    assert empty[0].display()[3] == "-"
    assert all(r["fraction_of_wt"] == "" for r in csv.DictReader(io.StringIO(results.results_csv(empty))))


def _split_like_slicer(entry: str):
    """Mirror of vtkSlicerTerminologiesModuleLogic::DeserializeTerminologyEntry's checks (Slicer 5.10)."""
    parts = entry.split("~")
    assert len(parts) == 7
    assert parts[1] != "^^", "an empty category is refused by Slicer"
    for index in (1, 2, 3, 5, 6):
        assert len(parts[index].split("^")) == 3
    return parts


@pytest.mark.parametrize("label, code", [(1, "108369006"), (2, "4147007"), (3, "367643001"), (4, "79654002")])
def test_terminology_entry_format(label, code):
    entry = terminology.terminology_entry(label)
    parts = _split_like_slicer(entry)
    assert parts[0] == "Segmentation category and type - DICOM master list"
    assert parts[1] == "SCT^49755003^Morphologically Altered Structure"
    assert parts[2].split("^")[:2] == ["SCT", code]
    assert parts[3] == "^^"
    assert parts[4] == "Anatomic codes - DICOM master list"
    assert parts[5] == "SCT^12738006^Brain"
    assert parts[6] == "^^"
    assert "\n" not in entry


def test_terminology_entries_distinct_and_invalid_label():
    entries = {terminology.terminology_entry(label) for label in (1, 2, 3, 4)}
    assert len(entries) == 4
    with pytest.raises(ValueError):
        terminology.terminology_entry(0)


def test_crop_and_same_as():
    a = np.zeros((3, 4, 5), np.uint8)
    a[1, 1, 1] = 1
    a[2, 3, 1] = 7  # any non-zero value is inside
    c = arrays.crop(a, (10, 20, 30))
    assert c.start == (11, 21, 31) and c.array.shape == (2, 3, 1) and c.array.dtype == np.uint8
    assert c.array[:, :, 0].tolist() == [[1, 0, 0], [0, 0, 1]]
    assert c.box == (slice(11, 13), slice(21, 24), slice(31, 32))
    assert arrays.crop(np.zeros((2, 2, 2))) is None
    b = np.zeros((6, 6, 6), np.uint8)
    b[2:4, 2:5, 2] = a[1:3, 1:4, 1] != 0  # the same voxels at another place of a bigger array
    assert arrays.crop(a, (0, 0, 0)).same_as(arrays.crop(b, (-1, -1, -1)))
    assert not arrays.crop(a).same_as(arrays.crop(b))  # moved by one voxel
    b[5, 5, 5] = 1
    assert not arrays.crop(a, (0, 0, 0)).same_as(arrays.crop(b, (-1, -1, -1)))
    assert not arrays.crop(a).same_as(None)
    # the crop's box is the one bounding box of the package
    assert arrays.crop(a).box == arrays.bounding_box(a)


def test_clamp_ratio_window():
    from pedtumorseg.postprocess import PostprocessParams

    p = PostprocessParams(ratio_low=0.8, ratio_high=1.4)
    assert controls.clamp_ratio_window(p, {"ratio_low": 1.0}) == {"ratio_low": 1.0}  # valid: unchanged
    assert controls.clamp_ratio_window(p, {"min_volume_et": 3.0}) == {"min_volume_et": 3.0}
    assert controls.clamp_ratio_window(p, {"ratio_low": 1.9}) == {"ratio_low": 1.39}  # one 0.01 step below high
    assert controls.clamp_ratio_window(p, {"ratio_low": 1.4}) == {"ratio_low": 1.39}
    assert controls.clamp_ratio_window(p, {"ratio_high": 0.5}) == {"ratio_high": 0.81}  # one step above low
    assert controls.clamp_ratio_window(p, {"ratio_high": 0.3, "ratio_low": 0.9}) == {"ratio_high": 0.3, "ratio_low": 0.29}
    assert controls.clamp_ratio_window(PostprocessParams(ratio_low=0.2, ratio_high=0.5), {"ratio_high": 0.2}) == {
        "ratio_high": 0.21}
    # high at the bottom of the range (0.2) and low dragged onto it: low stays at the bottom, high moves up
    assert controls.clamp_ratio_window(p, {"ratio_high": 0.2, "ratio_low": 0.5}) == {"ratio_high": 0.21, "ratio_low": 0.2}
    top = PostprocessParams(ratio_low=4.0, ratio_high=5.0)
    assert controls.clamp_ratio_window(top, {"ratio_low": 5.0}) == {"ratio_low": 4.99}
    for changes in ({"ratio_low": 3.3}, {"ratio_high": 0.2}, {"ratio_low": 5.0, "ratio_high": 0.2}):
        p.replace(**controls.clamp_ratio_window(p, changes))  # always a valid PostprocessParams


def test_raw_scan_arguments():
    assert controls.raw_scan_arguments("Auto", "auto") == []
    assert controls.raw_scan_arguments("Yes", "No") == ["--skull-strip", "yes", "--register", "no"]
    assert controls.raw_scan_arguments("Auto", "Yes") == ["--register", "yes"]
    with pytest.raises(ValueError, match="--skull-strip"):
        controls.raw_scan_arguments("maybe", "auto")


def test_missing_requirements():
    full = {"numpy": "2.0", "scipy": "1.14", "SimpleITK": "2.4", "torch": "2.5", "safetensors": "0.4",
            "tqdm": "4.66"}
    assert requirements.missing_requirements(full).ok
    r = requirements.missing_requirements({"numpy": "2.0", "scipy": "1.1", "simpleitk": "2.4"})
    assert r.install_torch and r.pip == ("safetensors>=0.4", "tqdm>=4.60") and r.problems == ()
    assert not r.ok
    r = requirements.missing_requirements(dict(full, numpy=None, SimpleITK=None))
    assert not r.install_torch and r.pip == ()
    assert len(r.problems) == 2 and "numpy" in r.problems[0] and "SimpleITK" in r.problems[1]
    # shipped packages are never installed with pip
    assert all(not req.lower().startswith(("numpy", "scipy", "simpleitk")) for req in
               requirements.missing_requirements({}).pip)
