"""`pedtumorseg response` end to end on two synthetic timepoints given as label maps + T1CE, and its bad inputs."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest

from pedtumorseg.cli import main
from pedtumorseg.phantoms.series import make_series, write_series


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    series = make_series(scales=(1.0, 1.3), new_lesion_at=1)  # growth and a new lesion: PD
    return write_series(series, tmp_path_factory.mktemp("series"))


def _tp(folder, seg_of=None):
    name = folder.name.split("-")[-1]
    seg = (seg_of or folder) / f"{(seg_of or folder).name}-seg.nii.gz"
    return f"{name}={seg},{folder / (folder.name + '-t1c.nii.gz')}"


@pytest.fixture(scope="module")
def two_timepoints(folders, tmp_path_factory):
    """The command run once on the two timepoints: (its output folder, what it printed)."""
    out, printed = tmp_path_factory.mktemp("resp") / "out", io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["response", "--criterion", "rano2", "--out", str(out), "--quiet",
                   "--timepoint", _tp(folders[0]), "--timepoint", _tp(folders[1]), "--steroids-increased", "tp1"])
    assert rc == 0, printed.getvalue()
    return out, printed.getvalue()


def test_two_timepoints_end_to_end(two_timepoints):
    out, text = two_timepoints
    assert "tp1: 2D PD" in text and "suggestion for the reader" in text
    result = json.loads((out / "response.json").read_text())
    assert result["criterion"]["key"] == "rano2" and result["measured"] == "ET"
    tp1 = result["timepoints"][1]
    assert tp1["category_2d"]["category"] == "PD" and tp1["category_volume"]["category"] == "PD"
    assert "new measurable lesion" in tp1["category_2d"]["reasons"]
    assert tp1["alignment_to_baseline"]["registered"] and tp1["alignment_to_baseline"]["nmi_after"] > 1.2
    assert tp1["clinical"]["steroids_increased"] is True
    with open(out / "response-timepoints.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["timepoint"] for r in rows] == ["tp0", "tp1"] and rows[1]["category_2d"] == "PD"
    assert float(rows[0]["WT_ml"]) == pytest.approx(result["timepoints"][0]["volumes_ml"]["WT"])
    with open(out / "response-lesions.csv", newline="") as fh:
        lesions = list(csv.DictReader(fh))
    assert any(r["status"] == "new" and r["timepoint"] == "tp1" for r in lesions)
    page = (out / "response.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # the timeline and one caliper figure per timepoint
    assert "src=\"http" not in page and "suggestion for the reader" in page
    assert sorted(p.name for p in out.iterdir()) == ["response-lesions.csv", "response-timepoints.csv",
                                                      "response.html", "response.json", "response.pdf"]


def test_the_pdf_report_holds_the_html_reports_content(two_timepoints):
    out, _ = two_timepoints
    data = (out / "response.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(out / "response.pdf")
    result = json.loads((out / "response.json").read_text())
    # the text page, the timeline, the timepoint table, one caliper slice per timepoint, the lesion table
    assert len(reader.pages) == 3 + len(result["timepoints"]) + 1
    assert "suggestion for the reader" in reader.metadata.subject
    text = [" ".join(page.extract_text().split()) for page in reader.pages]
    assert "RANO 2.0" in text[0] and "suggestion for the reader" in text[0]
    assert "volume (mL)" in text[1] and "sum of products" in text[1]
    assert "category_2d" in text[2] and "PD" in text[2] and "tp1" in text[2]
    for page, tp in zip(text[3:], result["timepoints"]):
        chosen = [les for les in result["lesions"] if les["timepoint"] == tp["name"] and les["kind"] == "ET"
                  and les["target"] and les["measurement"]]
        assert f"{tp['name']}: slice" in page and f"{chosen[0]['longest_mm']:.1f} x" in page
    assert "Lesions (1-" in text[-1] and "new" in text[-1]


def test_missing_file_is_named_and_nothing_is_written(folders, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere-seg.nii.gz"
    rc = main(["response", "--criterion", "rapno-hgg", "--out", str(out), "--quiet", "--timepoint", _tp(folders[0]),
               "--timepoint", f"tp1={missing},{folders[1] / (folders[1].name + '-t1c.nii.gz')}"])
    err = capsys.readouterr().err
    assert rc == 1 and str(missing) in err and "error:" in err
    assert not out.exists() or not any(out.iterdir())


def test_label_map_on_another_grid_is_refused(folders, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["response", "--criterion", "rapno-lgg", "--out", str(out), "--quiet", "--timepoint", _tp(folders[0]),
               "--timepoint", _tp(folders[1], seg_of=folders[0])])
    err = capsys.readouterr().err
    assert rc == 1 and f"{folders[0].name}-seg.nii.gz" in err and "grid" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("extra,message", [
    ([], "at least two"),
    (["--timepoint", "tp0=a,b"], "given twice"),
    (["--timepoint", "bad"], "NAME=CASE_FOLDER"),
    (["--timepoint", "tp9=x", "--clinically-worse", "nope"], "no timepoint of that name"),
])
def test_usage_errors_exit_2(folders, tmp_path, capsys, extra, message):
    rc = main(["response", "--criterion", "rano2", "--out", str(tmp_path / "o"), "--timepoint", _tp(folders[0])]
              + extra)
    assert rc == 2 and message in capsys.readouterr().err


def test_phantoms_series_mode_writes_three_timepoints(tmp_path, capsys):
    assert main(["phantoms", "--out", str(tmp_path), "--mode", "series"]) == 0
    folders = capsys.readouterr().out.split()
    assert [f.split("-")[-1] for f in folders] == ["tp0", "tp1", "tp2"]
    for f in folders:
        name = f.rsplit("/", 1)[-1]
        assert (tmp_path / name / f"{name}-t1c.nii.gz").exists() and (tmp_path / name / f"{name}-seg.nii.gz").exists()


def test_dicom_timepoints_of_different_patients_are_refused(folders, tmp_path, capsys):
    pytest.importorskip("pydicom")
    import numpy as np
    import SimpleITK as sitk

    from pedtumorseg.phantoms.raw import write_dicom_series

    specs = []
    for folder, patient in zip(folders, ("CHILD-A", "CHILD-B")):
        image = sitk.Cast(sitk.ReadImage(str(folder / f"{folder.name}-t1c.nii.gz")), sitk.sitkInt16)
        series = write_dicom_series(image, tmp_path / f"{folder.name}-dicom",
                                    {"0008|0060": "MR", "0010|0020": patient, "0020|000d": "2.25.1",
                                     "0020|000e": f"2.25.{len(specs) + 2}"}, np.random.default_rng(len(specs)))
        specs += ["--timepoint", f"{folder.name.split('-')[-1]}={folder / (folder.name + '-seg.nii.gz')},{series}"]
    out = tmp_path / "out"
    rc = main(["response", "--criterion", "rano2", "--out", str(out), "--quiet", *specs])
    err = capsys.readouterr().err
    assert rc == 1 and "CHILD-B" in err and "not one patient" in err and f"{folders[1].name}-dicom" in err
    assert not out.exists() or not any(out.iterdir())


def test_case_timepoints_are_segmented_with_the_model(tmp_path, capsys):
    """``NAME=CASE``: the case is segmented (a tiny random network, so only the plumbing is checked) into
    ``OUT/NAME/`` and assessed with its T1CE; a copy of the same scan registers onto it exactly."""
    import shutil

    pytest.importorskip("nilearn")
    from conftest import write_tiny_bundle

    from pedtumorseg.phantoms.clean import write_phantoms

    bundle = write_tiny_bundle(tmp_path / "tiny.zip")
    case = write_phantoms(tmp_path / "cases", 1, size="small", seed=3)[0]
    copy = shutil.copytree(case, tmp_path / "copy")
    out = tmp_path / "out"
    rc = main(["response", "--criterion", "rapno-hgg", "--out", str(out), "--quiet", "--no-html", "--model",
               str(bundle), "--device", "cpu", "--no-tta", "--timepoint", f"a={case}", "--timepoint", f"b={copy}"])
    capsys.readouterr()
    assert rc == 0
    result = json.loads((out / "response.json").read_text())
    assert [tp["segmented_here"] for tp in result["timepoints"]] == [True, True]
    assert (out / "a" / f"{case.name}-seg.nii.gz").exists() and (out / "b" / f"{case.name}-seg.nii.gz").exists()
    a, b = result["timepoints"]
    assert a["volumes_ml"] == b["volumes_ml"]  # the same scan, the same network: the same labels
    assert b["alignment_to_baseline"]["nmi_after"] > 1.5
