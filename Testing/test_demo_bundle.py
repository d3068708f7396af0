"""The shipped demo bundle: what `pedtumorseg demo`, the CLI default and the Slicer module use."""

from __future__ import annotations

import numpy as np

from pedtumorseg import cli
from pedtumorseg.bundle import default_bundle_path, load_bundle
from pedtumorseg.conventions import CHANNELS
from pedtumorseg.engine import Engine, PredictOptions
from pedtumorseg.metrics import lesion_wise
from pedtumorseg.model.presets import ALLOWED_CLASSES
from pedtumorseg.phantom import make_phantom

# measured on held-out phantoms when the bundle was made (Resources/Models/pedtumorseg-demo.md); a bundle that
# falls well below this is broken, not just weak
MIN_WT_DICE = 0.3


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


def test_demo_command_uses_the_shipped_bundle(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path), "--size", "small", "--device", "cpu", "--no-tta"])
    out = capsys.readouterr().out
    assert code == 0
    assert "model: pedtumorseg-demo" in out
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
