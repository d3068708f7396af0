"""``pedtumorseg-train import-nnunet``: tiny nnU-Net v2 results folders (plans.json, dataset.json, checkpoints shaped
like nnU-Net's, networks built by nnU-Net's own ``get_network_from_plans``) imported as bundles, then predicted by
this project's engine and compared with nnU-Net's own ``nnUNetPredictor`` on the same case (same folds, same
mirroring; nnU-Net with float32 accumulators, see Testing/test_conformance.py). Three models: a PlainConvUNet with
permuted channels and no cystic label, a ResidualEncoderUNet with a transpose, resampling and a CT-normalized
channel, and a region-based (sigmoid) PlainConvUNet. Refusals: a checkpoint that needs full unpickling, channel names
that are not T1/T1CE/T2/FLAIR, a missing fold, weights that do not fit the plans.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunet_harness import fp32_accumulation, nnunet_predict, plans_dict, spread_init_  # noqa: E402

from pedtumorseg.conventions import CHANNELS  # noqa: E402
from pedtumorseg.inference.bundle import load_bundle  # noqa: E402
from pedtumorseg.inference.engine import Engine, PredictOptions  # noqa: E402
from pedtumorseg.model.presets import PLAIN_UNET, RESENC_UNET, dna_kwargs  # noqa: E402
from pedtumorseg_train import cli as train_cli  # noqa: E402

BLOCK = (22, 34, 30)
PED_LABELS = {"background": 0, "ET": 1, "NET": 2, "ED": 3}  # a PED model without a cystic label
ADULT_LABELS = {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}
REGION_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}


class NotAWeight:
    """An object only full unpickling can recreate (a stand-in for code in a checkpoint)."""


@pytest.fixture(scope="module")
def case():
    """The small phantom reduced to a block around the tumor (zeros elsewhere: cropping still runs)."""
    from pedtumorseg.phantoms.clean import make_phantom
    ph = make_phantom(3, "small")
    images = np.stack([ph.images[c] for c in CHANNELS]).astype(np.float32)
    centre = [int(np.mean(ix)) for ix in np.nonzero(ph.seg)]
    box = tuple(slice(max(0, c - b // 2), max(0, c - b // 2) + b) for c, b in zip(centre, BLOCK))
    reduced = np.zeros_like(images)
    reduced[(slice(None), *box)] = images[(slice(None), *box)]
    return reduced[:, 4:-4, 6:-6, 6:-6], tuple(float(s) for s in ph.geometry.spacing_zyx)


def _intensity_properties(images, order):
    fg = (images != 0).any(0)
    props = {}
    for i, c in enumerate(order):
        v = images[CHANNELS.index(c)][fg]
        props[str(i)] = {"max": float(v.max()), "min": float(v.min()), "mean": float(v.mean()),
                         "median": float(np.median(v)), "std": float(v.std()),
                         "percentile_00_5": float(np.percentile(v, 0.5)),
                         "percentile_99_5": float(np.percentile(v, 99.5))}
    return props


def make_results(root: Path, images, *, cls=PLAIN_UNET, channel_names=("T1", "T1Gd", "T2", "FLAIR"),
                 labels=None, regions_class_order=None, spacing=(2.5, 2.5, 2.5), transpose=(0, 1, 2),
                 schemes=None, folds=(0, 1), seed=0, order=CHANNELS) -> Path:
    """A trainer folder as nnU-Net v2 writes it: plans.json, dataset.json, fold_K/checkpoint_final.pth (a dict of
    nnU-Net's keys, numpy scalars in its logging, a torch.device in init_args), the network built by nnU-Net."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    labels = labels or PED_LABELS
    kind = "resenc" if cls == RESENC_UNET else "nnunet"
    kwargs = dna_kwargs(kind, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [[3, 3, 3]] * 3)
    kwargs["features_per_stage"] = [4, 8, 16]
    manifest_like = {"spacing_zyx": list(spacing), "patch_size": [16, 32, 32],
                     "normalization": {"use_mask_for_norm": [True] * len(channel_names)},
                     "network": {"class": cls, "kwargs": kwargs}}
    plans = plans_dict(manifest_like)
    conf = plans["configurations"]["3d_fullres"]
    conf["architecture"]["_kw_requires_import"] = ["conv_op", "norm_op", "dropout_op", "nonlin"]
    conf["normalization_schemes"] = list(schemes or ["ZScoreNormalization"] * len(channel_names))
    conf["use_mask_for_norm"] = [s == "ZScoreNormalization" for s in conf["normalization_schemes"]]
    plans["transpose_forward"] = list(transpose)
    plans["transpose_backward"] = [int(i) for i in np.argsort(transpose)]
    plans["foreground_intensity_properties_per_channel"] = _intensity_properties(images, order)
    dataset = {"channel_names": {str(i): n for i, n in enumerate(channel_names)}, "labels": labels,
               "numTraining": 4, "file_ending": ".nii.gz"}
    if regions_class_order is not None:
        dataset["regions_class_order"] = list(regions_class_order)
    folder = root / "Dataset777_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    n_out = pm.get_label_manager(dataset).num_segmentation_heads
    for k, fold in enumerate(folds):
        torch.manual_seed(seed + k)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, len(channel_names), n_out,
                                     deep_supervision=True)
        spread_init_(net, seed=seed + 10 * k + 1)
        ckpt = {"network_weights": net.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
                "logging": {"mean_fg_dice": [np.float64(0.5), np.float32(0.6)], "epoch_end_timestamps": [1.0]},
                "_best_ema": np.float64(0.55), "current_epoch": 3,
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold,
                              "dataset_json": dataset, "device": torch.device("cpu")},
                "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)}
        (folder / f"fold_{fold}").mkdir()
        torch.save(ckpt, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def nnunet_reference(folder: Path, images, spacing, folds=(0, 1)):
    """nnU-Net's own predictor on the model folder's plans, network and checkpoints (labels in nnU-Net values)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    params = [torch.load(folder / f"fold_{f}" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"] for f in folds]  # our own test file
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, len(dataset["channel_names"]),
                                 pm.get_label_manager(dataset).num_segmentation_heads, deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, params, dataset, "nnUNetTrainer", (0, 1, 2))
    with fp32_accumulation():
        seg, _ = nnunet_predict(predictor, images, spacing)
    return seg


def import_(folder, out, *extra):
    code = train_cli.main(["import-nnunet", str(folder), "--out", str(out), *map(str, extra)])
    assert code == 0
    return load_bundle(out)


def conformance(tmp_path, case, model_order, **kwargs):
    images, spacing = case
    folder = make_results(tmp_path, images, order=model_order, **kwargs)
    bundle = import_(folder, tmp_path / "imported.zip")
    pred = Engine(bundle, PredictOptions(device="cpu", tta=True, precision="fp32")).predict(images, spacing)
    model_images = images[[CHANNELS.index(c) for c in model_order]]
    seg = nnunet_reference(folder, model_images, spacing)
    io = bundle.io
    painted = (dict(zip(kwargs["regions_class_order"], io.output_labels)) if io.activation == "sigmoid"
               else dict(enumerate(io.output_labels)))
    ref = np.vectorize(lambda v: painted.get(int(v), 0))(seg).astype(np.uint8)
    ref[~(images != 0).any(0)] = 0  # the engine's one documented difference (no image data: background)
    same = float((pred.labels == ref).mean())
    present = np.unique(pred.labels)
    print(f"\n{kwargs.get('cls', PLAIN_UNET).rsplit('.', 1)[1]} {io.activation}: same label {same:.6f}, labels "
          f"{present.tolist()}")
    assert len(present) >= 3, "predictions too uniform to test agreement"
    assert same >= 0.999
    return bundle, pred


def test_plain_unet_permuted_channels_without_cc_matches_nnunet(tmp_path, case):
    bundle, pred = conformance(tmp_path, case, ["flair", "t1ce", "t1", "t2"],
                               channel_names=("FLAIR", "T1Gd", "T1", "T2"))
    m = bundle.manifest
    assert m["inputs"] == ["flair", "t1ce", "t1", "t2"]
    assert m["labels"] == {"1": "ET", "2": "NET", "4": "ED"}  # no CC: the bundle says so
    assert m["outputs"] == {"activation": "softmax", "labels": [0, 1, 2, 4]}
    assert m["network"]["class"] == PLAIN_UNET and m["folds"] == [0, 1] and m["mirror_axes"] == [0, 1, 2]
    assert m["training"]["trainer"] == "nnUNetTrainer" and m["training"]["label_mapping"]["ED"] == "ED"
    assert 3 not in np.unique(pred.labels)
    from pedtumorseg.ui.controls import panel_controls  # the panel shows what this model has: no CC slider
    assert bundle.io.labels == (1, 2, 4)
    assert "min_volume_cc" not in panel_controls(bundle.io.labels)
    assert {"ratio_high", "min_volume_et", "min_volume_net", "min_volume_ed"} <= set(panel_controls(bundle.io.labels))


def test_resenc_transposed_resampled_ct_channel_matches_nnunet(tmp_path, case):
    bundle, _ = conformance(tmp_path, case, ["t1", "t1ce", "t2", "flair"], cls=RESENC_UNET,
                            channel_names=("T1n", "T1c", "T2w", "T2f"), labels=ADULT_LABELS,
                            spacing=(3.0, 2.5, 2.75), transpose=(2, 0, 1),
                            schemes=["ZScoreNormalization", "CTNormalization", "ZScoreNormalization",
                                     "ZScoreNormalization"])
    m = bundle.manifest
    assert m["transpose_forward"] == [2, 0, 1]
    # plans spacing is in the network's (transposed) order: network axis i is image axis transpose[i]
    assert m["spacing_zyx"] == [2.5, 2.75, 3.0]
    assert m["normalization"]["schemes"][1] == "CTNormalization"
    assert m["outputs"]["labels"] == [0, 2, 4, 1]  # NETC -> NET, SNFH -> ED, ET -> ET


def test_region_based_model_matches_nnunet(tmp_path, case):
    bundle, _ = conformance(tmp_path, case, list(CHANNELS), labels=REGION_LABELS, regions_class_order=[1, 2, 3])
    assert bundle.manifest["outputs"] == {"activation": "sigmoid", "labels": [4, 2, 1]}  # WT\TC=ED, TC\ET=NET
    assert bundle.manifest["labels"] == {"1": "ET", "2": "NET", "4": "ED"}


def test_region_probabilities_sum_to_one_by_hand():
    """Two nested regions, s = (0.8, 0.25) on one voxel: p(ET) = 0.25, p(ED) = 0.8 * 0.75 = 0.6, background
    0.2 * 0.75 = 0.15; labels painted in order: ED (0.8 > 0.5), ET not (0.25)."""
    from pedtumorseg.inference.model_io import ModelIO
    io = ModelIO((0, 1, 2, 3), "sigmoid", (4, 1), (0, 1, 2), (1, 4))
    logits = torch.logit(torch.tensor([0.8, 0.25]))[:, None]
    probs, labels = io.to_classes(logits)
    np.testing.assert_allclose(probs[:, 0], [0.15, 0.25, 0, 0, 0.6], atol=1e-6)
    assert labels.tolist() == [4]


def test_predict_cli_and_onnx_backend_load_the_imported_bundle(tmp_path, case):
    from pedtumorseg import cli
    from pedtumorseg.inference import backends
    from pedtumorseg.inputs.cases import find_case
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom
    import SimpleITK as sitk

    folder = make_results(tmp_path, case[0], folds=(0,))
    out = tmp_path / "imported.zip"
    import_(folder, out, "--folds", 0)
    case_dir = write_phantom(make_phantom(3, "small"), tmp_path / "case")
    assert cli.main(["predict", "--case", str(case_dir), "--out", str(tmp_path / "pred"), "--model", str(out),
                     "--device", "cpu", "--no-tta", "--raw"]) == 0
    files = find_case(case_dir)
    from pedtumorseg.outputs.paths import CaseOutputs
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(CaseOutputs.of(files.case_id, tmp_path / "pred").paths()["raw"])))
    assert raw.shape == (62, 96, 96) and set(np.unique(raw)) <= {0, 1, 2, 4}
    from pedtumorseg_train.cli import update_bundle_postprocessing  # what fit-postprocessing writes with
    refit = load_bundle(update_bundle_postprocessing(out, tmp_path / "refit.zip", {"min_volume_et": 7}))
    assert refit.postprocessing.min_volume_et == 7 and refit.manifest["outputs"] == load_bundle(out).manifest["outputs"]
    if not backends.is_available("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    images, spacing = case
    bundle = load_bundle(out)
    by_torch = Engine(bundle, PredictOptions(device="cpu", tta=False)).predict(images, spacing).labels
    by_onnx = Engine(bundle, PredictOptions(device="cpu", tta=False, backend="onnxruntime")).predict(
        images, spacing).labels
    assert (by_torch == by_onnx).mean() >= 0.999


def _fails(capsys, folder, out, *extra):
    code = train_cli.main(["import-nnunet", str(folder), "--out", str(out), *map(str, extra)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and not out.exists(), err
    return err


def test_refusals_name_the_file_and_write_nothing(tmp_path, case, capsys):
    folder = make_results(tmp_path, case[0], folds=(0,))
    out = tmp_path / "b.zip"
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    err = _fails(capsys, folder, out, "--folds", 0, 1)
    assert "fold_1" in err and "missing" in err
    good = torch.load(ckpt, map_location="cpu", weights_only=False)
    torch.save({**good, "extra": NotAWeight()}, ckpt)
    err = _fails(capsys, folder, out)
    assert str(ckpt) in err and "NotAWeight" in err and "refused" in err
    bad_weights = copy.deepcopy(good)
    bad_weights["network_weights"] = {k: v[..., :1] if v.ndim == 5 else v for k, v in good["network_weights"].items()}
    torch.save(bad_weights, ckpt)
    err = _fails(capsys, folder, out)
    assert str(ckpt) in err and "do not fit" in err
    torch.save(good, ckpt)
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "ADC", "1": "DWI", "2": "T2", "3": "FLAIR"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    err = _fails(capsys, folder, out)
    assert str(folder / "dataset.json") in err and "'ADC'" in err and "--channels" in err
    import_(folder, out, "--channels", "t1", "t1ce", "t2", "flair")  # named explicitly: imported


def test_nnunet_normalization_schemes_by_hand():
    """Per channel: CT clip to [0, 10], minus 4, over 2: (-5, 3, 20) -> (-2, -0.5, 3); rescale (2, 4, 6) ->
    (0, 0.5, 1); none unchanged; z-score (1, 2, 3) -> (-1.2247, 0, 1.2247) (population std sqrt(2/3))."""
    from pedtumorseg.inference.preprocessing import normalize
    data = np.array([[-5, 3, 20], [2, 4, 6], [7, 8, 9], [1, 2, 3]], np.float32).reshape(4, 1, 1, 3)
    norm = {"scheme": "nnunet", "use_mask_for_norm": [False] * 4,
            "schemes": ["CTNormalization", "RescaleTo01Normalization", "NoNormalization", "ZScoreNormalization"],
            "intensity_properties": [{"mean": 4.0, "std": 2.0, "percentile_00_5": 0.0, "percentile_99_5": 10.0},
                                     None, None, None]}
    out = normalize(data.copy(), None, norm).reshape(4, 3)
    np.testing.assert_allclose(out, [[-2, -0.5, 3], [0, 0.5, 1], [7, 8, 9], [-1.2247449, 0, 1.2247449]], atol=1e-6)


def test_manifest_records_where_the_postprocessing_comes_from(tmp_path, case):
    """Imported: the paper's defaults, ``postprocessing_source`` "defaults"; fit-postprocessing's writer with a
    fit report: "fitted", with the number of cases and the date; values set by hand: "given" (the old fit record
    dropped); any other value is refused by the manifest check."""
    import datetime

    from pedtumorseg.errors import BundleError
    from pedtumorseg.inference.manifest import validate_manifest
    from pedtumorseg_train.cli import update_bundle_postprocessing
    out = tmp_path / "imported.zip"
    imported = import_(make_results(tmp_path, case[0], folds=(0,)), out)
    assert imported.manifest["postprocessing_source"] == "defaults"
    report = {"normalization": "zscore", "percentile": 95, "n_training_cases": 12, "n_cases_with_prediction": 11}
    fitted = load_bundle(update_bundle_postprocessing(out, tmp_path / "fitted.zip", {"min_volume_et": 7}, report))
    fit = fitted.manifest["training"]["postprocessing_fit"]
    assert fitted.manifest["postprocessing_source"] == "fitted" and fitted.postprocessing.min_volume_et == 7
    assert fit["n_training_cases"] == 12 and fit["n_cases_with_prediction"] == 11
    when = datetime.datetime.fromisoformat(fit["fitted"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 600
    given = load_bundle(update_bundle_postprocessing(tmp_path / "fitted.zip", tmp_path / "given.zip",
                                                     {"min_volume_et": 9}))
    assert given.manifest["postprocessing_source"] == "given"
    assert "postprocessing_fit" not in given.manifest["training"]
    with pytest.raises(BundleError, match="postprocessing_source must be one of defaults, fitted, given"):
        validate_manifest({**imported.manifest, "postprocessing_source": "guessed"}, out)


def test_imported_ratio_relabel_only_for_a_model_with_et_and_net():
    """The T1CE/T1 relabel moves voxels between NET and ET: a model lacking either gets it off by default (it would
    otherwise paint a label the model never produces); everything else stays the paper's defaults."""
    from pedtumorseg.postprocess import PostprocessParams
    from pedtumorseg_train.import_nnunet import _imported_postprocessing
    paper = PostprocessParams().to_dict()
    assert paper["ratio_enabled"] and _imported_postprocessing([1, 2, 4]) == paper
    no_net = _imported_postprocessing([1, 3, 4])
    assert no_net["ratio_enabled"] is False and {k: v for k, v in no_net.items() if k != "ratio_enabled"} == {
        k: v for k, v in paper.items() if k != "ratio_enabled"}
    assert _imported_postprocessing([2, 4])["ratio_enabled"] is False
