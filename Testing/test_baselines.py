"""Baseline presets: the networks, the bundle allow-list, 2D (slice-wise) prediction, and compare's statistics.

The end-to-end training of every preset is in test_baselines_chain.py.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pedtumorseg.conventions import CHANNELS, LABEL_NAMES, NUM_CLASSES
from pedtumorseg.errors import BundleError
from pedtumorseg.model import presets
from pedtumorseg.model.baselines import LightUNet3D, ResSELKAUNet2D

TOPOLOGY = ([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 4)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_light3d_has_the_papers_parameter_count():
    # the seed paper reports 340,596 parameters for 4 output classes (BraTS 2020); 5 classes add 16 + 1
    assert n_params(LightUNet3D(4, 4)) == 340_596
    assert n_params(LightUNet3D(4, 5)) == 340_596 + 17
    net = LightUNet3D(4, 5).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 4, 16, 24, 8)).shape == (1, 5, 16, 24, 8)


def test_resselka2d_blocks():
    net = ResSELKAUNet2D(4, 5, widths=[8, 16, 32]).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 4, 32, 24)).shape == (2, 5, 32, 24)
    # LKA: depthwise 5x5 and 7x7 (C * 25 + C, C * 49 + C), pointwise C*C + C, BN 2C
    lka = net.encoder[0][1]
    assert n_params(lka) == 8 * 26 + 8 * 50 + 8 * 9 + 16
    # SE gate of a block at width 32 (reduction 16 -> 2 hidden): 32*2 + 2 + 2*32 + 32
    assert n_params(net.encoder[2][0].se) == 32 * 2 + 2 + 2 * 32 + 32
    with pytest.raises(ValueError, match="deep supervision"):
        ResSELKAUNet2D(4, 5, deep_supervision=True)


@pytest.mark.parametrize("preset", sorted(presets.BASELINES))
def test_every_preset_builds_and_runs(preset):
    if presets.BASELINES[preset]["class"] in presets.MONAI_CLASSES:
        pytest.importorskip("monai")
    if presets.BASELINES[preset]["class"] in presets.DNA_CLASSES:
        pytest.importorskip("dynamic_network_architectures")
    if preset == "resselka2d":
        kw = presets.baseline_kwargs(preset, [[1, 1], [2, 2], [2, 2]], [[3, 3]] * 3, [16, 16])
        x = torch.randn(1, 4, 16, 16)
    else:
        kw = presets.baseline_kwargs(preset, *TOPOLOGY, [32, 32, 32])
        x = torch.randn(1, 4, 32, 32, 32)
    json.dumps(kw)  # kwargs must go into plans and manifests as JSON
    cls = presets.BASELINES[preset]["class"]
    assert cls in presets.ALLOWED_CLASSES
    net = presets.build_network(cls, kw, 4, NUM_CLASSES).eval()
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, NUM_CLASSES, *x.shape[2:])
    assert presets.spatial_dims(cls, kw) == x.ndim - 2


def test_allow_list_is_exactly_the_presets_classes():
    assert presets.ALLOWED_CLASSES == {b["class"] for b in presets.BASELINES.values()}
    with pytest.raises(ValueError, match="not allowed"):
        presets.resolve_class("torch.nn.modules.conv.Conv3d")
    pytest.importorskip("dynamic_network_architectures")
    kw = presets.dna_kwargs("nnunet", *TOPOLOGY)
    kw["nonlin"] = "os.system"  # a layer type outside ALLOWED_OPS is never imported
    with pytest.raises(ValueError, match="layer type 'os.system' is not allowed"):
        presets.build_network(presets.PLAIN_UNET, kw, 4, 5)


def test_dna_kwargs_are_what_nnunet_builds():
    """Our planned kwargs build the same network through nnU-Net's own get_network_from_plans."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    for preset, blocks_key, blocks in (("nnunet", "n_conv_per_stage", [2, 2, 2, 2]),
                                       ("resenc", "n_blocks_per_stage", [1, 3, 4, 6])):
        kw = presets.dna_kwargs(preset, *TOPOLOGY)
        assert kw["features_per_stage"] == [32, 64, 128, 256] and kw[blocks_key] == blocks
        ours = presets.build_network(presets.BASELINES[preset]["class"], kw, 4, 5, deep_supervision=True)
        theirs = get_network_from_plans(presets.BASELINES[preset]["class"], kw, list(presets.DNA_OP_KEYS), 4, 5,
                                        deep_supervision=True)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in
                                                                      theirs.state_dict().items()}
    assert presets.dna_kwargs("nnunet", [1, 2, 2, 2, 2, 2, 2], [3] * 7)["features_per_stage"][-1] == 320


def _manifest(cls, kwargs, patch, mirror_axes=(1, 2)):
    return {"format": "pedtumorseg-bundle", "format_version": 1, "name": "t", "version": "0",
            "labels": {str(k): v for k, v in LABEL_NAMES.items()}, "channels": list(CHANNELS),
            "spacing_zyx": [2.0, 1.0, 1.0], "patch_size": list(patch),
            "normalization": {"scheme": "zscore", "use_mask_for_norm": [False] * 4},
            "network": {"class": cls, "kwargs": kwargs}, "mirror_axes": list(mirror_axes), "postprocessing": {}}


def test_missing_package_is_a_one_line_bundle_error(tmp_path, monkeypatch):
    from pedtumorseg.inference.bundle import load_bundle, write_bundle
    kw = {"spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 1}
    net = pytest.importorskip("monai").networks.nets.UNet(in_channels=4, out_channels=5, **kw)
    path = write_bundle(tmp_path / "b.zip", _manifest(presets.MONAI_UNET, kw, [16, 16, 16]), {0: net.state_dict()})
    monkeypatch.setitem(sys.modules, "monai.networks.nets", None)  # as if monai were not installed
    bundle = load_bundle(path)
    with pytest.raises(BundleError) as err:
        bundle.build_network()
    msg = str(err.value)
    assert "\n" not in msg and "monai" in msg and "pedtumorseg[baselines]" in msg


def test_compute_steps_tile_of_one_visits_every_slice_once():
    from pedtumorseg.inference.engine import compute_steps
    assert compute_steps((5, 20, 16), (1, 16, 16), 0.5) == [[0, 1, 2, 3, 4], [0, 4], [0]]


def test_2d_bundle_is_predicted_slice_by_slice(tmp_path):
    """Without TTA, a 2D network whose patch covers the slice gives, for every slice, the network's own output
    on that slice (Gaussian weights of one tile cancel)."""
    from pedtumorseg.inference.bundle import load_bundle, write_bundle
    from pedtumorseg.inference.engine import Engine, PredictOptions
    kw = {"widths": [4, 8], "strides": [1, 2]}
    torch.manual_seed(0)
    net = ResSELKAUNet2D(4, NUM_CLASSES, **kw).eval()
    bundle = load_bundle(write_bundle(tmp_path / "b", _manifest(presets.RESSELKA_UNET2D, kw, [1, 16, 12]),
                                      {0: net.state_dict()}, zip=False))
    data = np.random.default_rng(0).normal(size=(4, 3, 16, 12)).astype(np.float32)
    engine = Engine(bundle, PredictOptions(device="cpu", tta=False))
    assert engine.spatial_dims == 2
    logits = engine.predict_logits(data)
    with torch.no_grad():
        expected = net(torch.from_numpy(data).permute(1, 0, 2, 3)).permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # mirroring over (y, x) is applied in the slice plane
    tta = Engine(bundle, PredictOptions(device="cpu", tta=True)).predict_logits(data)
    assert tta.shape == logits.shape and np.isfinite(tta).all()
    # a 2D bundle with a patch thicker than one slice is refused
    bad = load_bundle(write_bundle(tmp_path / "bad", _manifest(presets.RESSELKA_UNET2D, kw, [2, 16, 12]),
                                   {0: net.state_dict()}, zip=False))
    from pedtumorseg.errors import PredictionError
    with pytest.raises(PredictionError, match=r"expected \[1, y, x\]"):
        Engine(bad, PredictOptions(device="cpu"))


# --- compare's statistics ----------------------------------------------------------------------------------

def test_paired_wilcoxon_hand_computed():
    from pedtumorseg_train.compare import paired_tests
    cases = [f"c{i}" for i in range(5)]
    a = {"WT": dict(zip(cases, [0.9, 0.8, 0.7, 0.6, 0.5]))}
    b = {"WT": dict(zip(cases, [0.8, 0.6, 0.4, 0.2, 0.0]))}  # a - b = 0.1 .. 0.5, all positive
    (row,) = paired_tests({"A": a, "B": b})
    # exact signed-rank test, n = 5, W- = 0: P(W- = 0) = 1/32 per tail -> two-sided p = 2/32
    assert row["n"] == 5 and row["p_value"] == pytest.approx(2 / 32)
    assert row["median_difference"] == pytest.approx(0.3) and row["statistic"] == 0
    # a NaN case is left out of the pairs; identical models give no p-value
    a["WT"]["c0"] = math.nan
    (row,) = paired_tests({"A": a, "B": b})
    assert row["n"] == 4 and row["p_value"] == pytest.approx(2 / 16)
    (same,) = paired_tests({"A": b, "B": b})
    assert math.isnan(same["p_value"]) and same["median_difference"] == 0


def test_patch_flops_hand_computed():
    from pedtumorseg_train.compare import patch_flops
    conv = nn.Conv3d(4, 8, 3, padding=1)
    # 8^3 outputs x 8 channels x (4 x 27) taps, 2 FLOPs per multiply-accumulate
    assert patch_flops(conv, (8, 8, 8)) == 2 * 512 * 8 * 108
    conv2d = nn.Conv2d(4, 2, 1)
    assert patch_flops(conv2d, (1, 5, 6), spatial_dims=2) == 2 * 30 * 2 * 4


def test_parse_model():
    from pathlib import Path

    from pedtumorseg.errors import InputError
    from pedtumorseg_train.compare import parse_model
    assert parse_model("a=/x/y.zip") == ("a", Path("/x/y.zip"))
    assert parse_model("/x/nnunet.zip") == ("nnunet", Path("/x/nnunet.zip"))
    with pytest.raises(InputError):
        parse_model("bad name=/x")
