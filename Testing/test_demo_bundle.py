"""The shipped demo bundle: what `pedtumorseg demo`, the CLI default and the Slicer module use."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pedtumorseg import cli
from pedtumorseg.inference.bundle import default_bundle_path, load_bundle
from pedtumorseg.conventions import CHANNELS
from pedtumorseg.inference.engine import Engine, PredictOptions
from pedtumorseg.evaluation.metrics import lesion_wise
from pedtumorseg.model.presets import ALLOWED_CLASSES
from pedtumorseg.phantoms.clean import make_phantom

# measured on held-out phantoms when the bundle was made (Resources/Models/pedtumorseg-demo.md); a bundle that
# falls well below this is broken, not just weak
MIN_WT_DICE = 0.8


def test_demo_bundle_is_small_and_valid():
    path = default_bundle_path()
    assert path.name == "pedtumorseg-demo.zip" and path.stat().st_size < 20 * 1024 * 1024
    bundle = load_bundle(path)
    assert bundle.network_class in ALLOWED_CLASSES
    assert bundle.name == "pedtumorseg-demo" and bundle.folds
    assert list(bundle.manifest["channels"]) == list(CHANNELS)


def test_demo_bundle_segments_an_unseen_phantom():
    bundle = load_bundle(default_bundle_path())
    phantom = make_phantom(31337, "small")  # not among the training (10000+) or held-out (20000+) seeds
    images = np.stack([phantom.images[c] for c in CHANNELS]).astype(np.float32)
    prediction = Engine(bundle, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(images,
                                                                                phantom.geometry.spacing_zyx)
    assert prediction.labels.shape == phantom.seg.shape
    assert np.isfinite(prediction.probabilities).all()
    wt = lesion_wise(prediction.labels, phantom.seg, phantom.geometry.spacing_zyx)["WT"]
    assert wt["lesion_dice"] > MIN_WT_DICE, wt


def test_demo_bundle_finds_all_four_subregions_on_the_self_test_phantom():
    """The Slicer self-test's phantom holds ET, NET, CC and ED; the shipped bundle with its own post-processing
    defaults predicts each of them (as the module's Fast setting and the CLI's --no-tta do)."""
    import sys
    from pathlib import Path

    from pedtumorseg.pipeline import Predictor
    from pedtumorseg.postprocess import postprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "PedTumorSeg"))
    from PedTumorSegLib.self_test import SELF_TEST_SEED

    phantom = make_phantom(SELF_TEST_SEED, "small")
    assert all((phantom.seg == label).sum() > 100 for label in (1, 2, 3, 4))
    predictor = Predictor.load(device="cpu", tta=False)
    images = np.stack([phantom.images[c] for c in CHANNELS]).astype(np.float32)
    raw = predictor.engine.predict(images, phantom.geometry.spacing_zyx).labels
    final = postprocess(raw, images[0], images[1], phantom.geometry.spacing_zyx, predictor.params)
    for label in (1, 2, 3, 4):
        found = final == label
        overlap = 2 * (found & (phantom.seg == label)).sum() / (found.sum() + (phantom.seg == label).sum())
        assert overlap > 0.5, (label, int(found.sum()), float(overlap))


def test_demo_command_uses_the_shipped_bundle(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path), "--size", "small", "--device", "cpu", "--no-tta"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0
    assert "model: pedtumorseg-demo" in out
    assert "is a demonstration model trained on synthetic phantoms only, not for patients" in captured.err
    # the Dice printed against the phantom's own labels, recomputed here by hand from the files
    line = next(s for s in out.splitlines() if s.startswith("Dice against the phantom's ground truth: "))
    printed = dict(item.split() for item in line.split(": ", 1)[1].split(", "))
    assert list(printed) == ["ET", "NET", "CC", "ED", "TC", "WT"]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(next(tmp_path.glob("*-seg.nii.gz")))))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(next((tmp_path / "input").rglob("*-seg.nii.gz")))))
    a, b = seg > 0, truth > 0
    assert float(printed["WT"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=0.006)
    a, b = np.isin(seg, (1, 2, 3)), np.isin(truth, (1, 2, 3))
    assert float(printed["TC"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=0.006)
    for suffix in ("-seg.nii.gz", "-seg-raw.nii.gz", "-stats.json", "-overlay.png"):
        assert len(list(tmp_path.glob(f"*{suffix}"))) == 1, suffix


def test_demo_bundle_on_a_full_size_grid_returns_the_input_grid():
    """1 mm input, 2.5 mm model: the engine resamples there and back."""
    bundle = load_bundle(default_bundle_path())
    phantom = make_phantom(4242, "brats")
    images = np.stack([phantom.images[c] for c in CHANNELS]).astype(np.float32)
    prediction = Engine(bundle, PredictOptions(device="cpu", tta=False)).predict(images,
                                                                                phantom.geometry.spacing_zyx)
    assert prediction.labels.shape == (155, 240, 240)
    assert set(np.unique(prediction.labels)) <= {0, 1, 2, 3, 4}


def test_shipped_bundle_ratio_thresholds_fit_its_normalization():
    """The paper's thresholds belong to the z-score normalization; a bundle that declares ``mean`` must carry
    thresholds fitted for it (pedtumorseg-train fit-postprocessing), never the paper's."""
    m = load_bundle(default_bundle_path()).manifest
    pp = m["postprocessing"]
    if pp["normalization"] == "mean":
        assert (pp["ratio_high"], pp["ratio_low"]) != (1.388, 0.766)
        assert m["training"]["postprocessing_fit"]["normalization"] == "mean"
    else:
        assert pp["normalization"] == "zscore"
