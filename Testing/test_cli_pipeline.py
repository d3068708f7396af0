"""The `pedtumorseg` CLI and the case pipeline: outputs, refusals, batch resume/sharding, progress protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_tiny_bundle
from pedtumorseg import cli
from pedtumorseg.inputs.cases import find_case, find_cases
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.phantoms.clean import write_phantoms
from pedtumorseg.errors import UsageError
from pedtumorseg.outputs.paths import CaseOutputs
from pedtumorseg.pipeline import shard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny.zip", name="tiny-test")


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cases")
    write_phantoms(root, 3, size="small", seed=11)
    return root


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_phantoms_command_writes_valid_cases(tmp_path, capsys):
    code, out, _ = _run(["phantoms", "--out", tmp_path, "--n", 3, "--size", "small", "--seed", 5], capsys)
    assert code == 0
    cases = find_cases(tmp_path)
    assert len(cases) == 3 and len(out.strip().splitlines()) == 3
    for files in cases:
        case = load_case(files)
        seg = read_labels(files.seg, case.geometry)
        assert set(np.unique(seg)) <= {0, 1, 2, 3, 4} and (seg > 0).any()


def test_predict_single_case_outputs_on_input_grid(tmp_path, tiny_bundle, cases_dir, capsys):
    case_dir = sorted(p for p in cases_dir.iterdir() if p.is_dir())[0]
    code, out, err = _run(["predict", "--case", case_dir, "--out", tmp_path, "--model", tiny_bundle,
                           "--device", "cpu", "--no-tta", "--raw", "--overlay", "--set", "min_volume_et=0"], capsys)
    assert code == 0, err
    files = find_case(case_dir)
    paths = CaseOutputs.of(files.case_id, tmp_path).paths()
    for kind in ("seg", "raw", "stats", "overlay"):
        assert paths[kind].is_file(), kind
    ref = sitk.ReadImage(str(files.images["t1ce"]))
    seg = sitk.ReadImage(str(paths["seg"]))
    assert seg.GetSize() == ref.GetSize() and seg.GetSpacing() == ref.GetSpacing()
    assert seg.GetOrigin() == ref.GetOrigin() and seg.GetDirection() == ref.GetDirection()
    assert seg.GetPixelID() == sitk.sitkUInt8
    stats = json.loads(paths["stats"].read_text())
    assert stats["case_id"] == files.case_id
    assert set(stats["volumes_ml"]) == {"ET", "NET", "CC", "ED", "TC", "WT"}
    assert stats["model"]["name"] == "tiny-test"
    assert stats["postprocessing"]["min_volume_et"] == 0  # the --set reached the post-processing
    labels = sitk.GetArrayFromImage(seg)
    wt_ml = np.count_nonzero(labels) * np.prod(ref.GetSpacing()) / 1000.0
    assert stats["volumes_ml"]["WT"] == pytest.approx(wt_ml, rel=1e-6)


def test_predict_four_files_json_progress(tmp_path, tiny_bundle, cases_dir, capsys):
    files = find_cases(cases_dir)[1]
    im = files.images
    code, out, err = _run(["predict", "--t1", im["t1"], "--t1ce", im["t1ce"], "--t2", im["t2"], "--flair",
                           im["flair"], "--out", tmp_path, "--model", tiny_bundle, "--device", "cpu", "--no-tta",
                           "--progress", "json", "--case-id", "custom"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in out.strip().splitlines()]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert events[-1]["event"] == "done" and events[-1]["case_id"] == "custom"
    assert Path(events[-1]["outputs"]["seg"]).name == "custom-seg.nii.gz"


def test_predict_raw_only_writes_the_network_labels_and_no_post_processed_map(tmp_path, tiny_bundle, cases_dir,
                                                                               capsys):
    """The Slicer module's one-way Apply: the process returns raw labels only; the module post-processes."""
    from pedtumorseg.pipeline import Predictor, predict_case

    files = find_cases(cases_dir)[2]
    code, out, err = _run(["predict", "--case", files.images["t1"].parent, "--out", tmp_path / "only", "--model",
                           tiny_bundle, "--device", "cpu", "--no-tta", "--raw-only", "--progress", "json"], capsys)
    assert code == 0, err
    done = json.loads(out.strip().splitlines()[-1])
    assert done["event"] == "done" and sorted(done["outputs"]) == ["raw", "stats"]
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == [f"{files.case_id}-seg-raw.nii.gz",
                                                                     f"{files.case_id}-stats.json"]
    stats = json.loads(Path(done["outputs"]["stats"]).read_text())
    assert stats["postprocessing"] is None
    # the same raw labels as a normal run's --raw output
    predictor = Predictor.load(str(tiny_bundle), device="cpu", tta=False)
    normal = predict_case(files, tmp_path / "normal", predictor, write_raw=True)
    np.testing.assert_array_equal(read_labels(done["outputs"]["raw"]), read_labels(normal.outputs["raw"]))
    code, _, err = _run(["predict", "--case", files.images["t1"].parent, "--out", tmp_path / "x", "--model",
                         tiny_bundle, "--raw-only", "--set", "min_volume_et=1"], capsys)
    assert code != 0 and "--raw-only" in err
    code, _, err = _run(["predict", "--input-dir", cases_dir, "--output-dir", tmp_path / "batch", "--raw-only"], capsys)
    assert code != 0 and "--raw-only" in err and not (tmp_path / "batch").exists()


def test_missing_flair_fails_naming_the_file_and_writes_nothing(tmp_path, tiny_bundle, cases_dir):
    src = find_cases(cases_dir)[0]
    case = tmp_path / "case"
    case.mkdir()
    for channel in ("t1", "t1ce", "t2"):
        (case / src.images[channel].name).symlink_to(src.images[channel])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pedtumorseg", "predict", "--case", str(case), "--out", str(out),
                           "--model", str(tiny_bundle), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "flair" in proc.stderr.lower() and str(case) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_bad_set_value_is_a_usage_error(tmp_path, tiny_bundle, cases_dir, capsys):
    case_dir = find_cases(cases_dir)[0].images["t1"].parent
    code, _, err = _run(["predict", "--case", case_dir, "--out", tmp_path, "--model", tiny_bundle,
                         "--set", "ratio_high=abc"], capsys)
    assert code == 2 and "ratio_high" in err
    assert not any(tmp_path.iterdir())


def test_batch_resume_failures_and_sharding(tmp_path, tiny_bundle, cases_dir, capsys):
    root = tmp_path / "in"
    root.mkdir()
    for files in find_cases(cases_dir):
        (root / files.case_id).symlink_to(files.images["t1"].parent, target_is_directory=True)
    broken = root / "BraTS-PED-BROKEN-000"
    broken.mkdir()
    good = find_cases(cases_dir)[0]
    for channel, suffix in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w")):
        (broken / f"BraTS-PED-BROKEN-000-{suffix}.nii.gz").symlink_to(good.images[channel])
    (broken / "BraTS-PED-BROKEN-000-t2f.nii.gz").write_bytes(b"not a nifti file")
    incomplete = root / "BraTS-PED-NOFLAIR-000"  # a missing modality fails this case only
    incomplete.mkdir()
    for channel, suffix in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w")):
        (incomplete / f"BraTS-PED-NOFLAIR-000-{suffix}.nii.gz").symlink_to(good.images[channel])
    out = tmp_path / "out"
    args = ["predict", "--input-dir", root, "--output-dir", out, "--model", tiny_bundle, "--device", "cpu",
            "--no-tta", "--progress", "none"]

    code, stdout, err = _run(args, capsys)
    assert code == 1
    assert "FAILED BraTS-PED-BROKEN-000" in err and "t2f" in err
    assert "FAILED BraTS-PED-NOFLAIR-000" in err and "FLAIR" in err
    assert "3 segmented, 0 already finished (skipped), 2 failed" in stdout
    assert not list(out.glob("BraTS-PED-BROKEN-000*")) and not list(out.glob("BraTS-PED-NOFLAIR-000*"))
    assert len(list(out.glob("*-seg.nii.gz"))) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*-seg.nii.gz")}

    code, stdout, _ = _run(args, capsys)  # resume: finished cases are not redone
    assert code == 1 and "0 segmented, 3 already finished (skipped), 2 failed" in stdout
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*-seg.nii.gz")}


def test_batch_passes_step_size_to_the_engine(tmp_path, cases_dir, monkeypatch, capsys):
    from pedtumorseg import pipeline
    from pedtumorseg.errors import BundleError

    seen = {}

    def fake_load(model=None, **kwargs):
        seen.update(kwargs)
        raise BundleError(model, "stop here")

    monkeypatch.setattr(pipeline.Predictor, "load", staticmethod(fake_load))
    code, _, err = _run(["predict", "--input-dir", cases_dir, "--output-dir", tmp_path / "out", "--step-size", "0.75",
                         "--progress", "none"], capsys)
    assert code == 1 and "stop here" in err
    assert seen["step_size"] == 0.75


def test_batch_reports_any_case_error_and_goes_on(tmp_path, cases_dir, monkeypatch):
    from pedtumorseg import pipeline
    from pedtumorseg.pipeline import batch

    calls = []

    def fake_predict_case(files, out_dir, predictor, **kwargs):
        calls.append(files.case_id)
        if len(calls) == 1:
            raise RuntimeError("non-finite logits in the prediction")  # any unexpected error of one case
        raise MemoryError()

    monkeypatch.setattr(batch, "predict_case", fake_predict_case)
    summary = pipeline.run_batch(cases_dir, tmp_path / "out", lambda: object())
    assert len(calls) == 3 and summary.exit_code == 1
    assert [m for _, m in summary.failed][:2] == ["non-finite logits in the prediction", "MemoryError"]


def test_shard_partitions_cases():
    items = list(range(10))
    parts = [shard(items, 3, i) for i in range(3)]
    assert sorted(sum(parts, [])) == items and all(parts)
    with pytest.raises(UsageError):
        shard(items, 3, 3)


def test_demo_command_with_a_given_bundle(tmp_path, tiny_bundle, capsys):
    code, out, err = _run(["demo", "--out", tmp_path, "--size", "small", "--model", tiny_bundle, "--device", "cpu",
                           "--no-tta"], capsys)
    assert code == 0, err
    assert "overlay:" in out and "seg:" in out
    assert len(list(tmp_path.glob("*-overlay.png"))) == 1
    assert len(list((tmp_path / "input").iterdir())) == 1


def test_readme_commands_match_ci():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    test_command = [line for line in ci.splitlines() if "pytest" in line][0].strip()
    assert test_command in readme


def test_evaluate_command_on_brats_case_folders(tmp_path, tiny_bundle, cases_dir, capsys):
    out = tmp_path / "pred"
    code, _, err = _run(["predict", "--input-dir", cases_dir, "--output-dir", out, "--model", tiny_bundle,
                         "--device", "cpu", "--no-tta", "--progress", "none"], capsys)
    assert code == 0, err
    csv_path = tmp_path / "metrics.csv"
    code, stdout, err = _run(["evaluate", "--pred", out, "--gt", cases_dir, "--out", csv_path], capsys)
    assert code == 0, err
    lines = csv_path.read_text().strip().splitlines()
    assert lines[0] == ("case,region,lesion_dice,lesion_hd95,lesion_nsd_0.5,lesion_nsd_1.0,dice,hd95,sensitivity,"
                        "nsd_0.5,nsd_1.0,specificity,num_tp_lesions,num_fn_lesions,num_fp_lesions")
    assert len(lines) == 1 + 3 * 6  # three cases x six regions
    # evaluating the ground truth against itself is perfect
    gt_flat = tmp_path / "gt_flat"
    gt_flat.mkdir()
    for files in find_cases(cases_dir):
        (gt_flat / f"{files.case_id}-seg.nii.gz").symlink_to(files.seg)
    code, _, err = _run(["evaluate", "--pred", gt_flat, "--gt", cases_dir, "--out", tmp_path / "self.csv"], capsys)
    assert code == 0, err
    rows = (tmp_path / "self.csv").read_text().strip().splitlines()[1:]
    # perfect, except for a region with a GT lesion of <= 10 voxels: the BraTS PED rules delete such lesions from
    # the prediction side, while on the GT side only lesions of <= 10 mm^3 are left out (a voxel is 15.6 mm^3 here)
    from pedtumorseg.evaluation.metrics import dilation_lesions, region_mask

    for row in rows:
        case, region, lesion_dice = row.split(",")[:3]
        lesions, n = dilation_lesions(region_mask(read_labels(gt_flat / f"{case}-seg.nii.gz"), region))
        has_small = n > 0 and np.bincount(lesions.ravel())[1:].min() <= 10
        assert lesion_dice == "1.0" or has_small, row
    assert sum(row.split(",")[2] == "1.0" for row in rows) >= len(rows) // 2
