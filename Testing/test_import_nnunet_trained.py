"""``import-nnunet`` on two models trained by stock nnU-Net v2, label-based and region-based (slow, CPU, ~2 min).

Five small phantoms -> ``pedtumorseg-train convert`` (a stock nnU-Net raw dataset) -> nnU-Net's own fingerprint,
default ``ExperimentPlanner`` and ``DefaultPreprocessor`` -> the plans shrunk the way nnU-Net users do it: a new
configuration ``3d_tiny`` that ``inherits_from`` ``3d_fullres`` with a 3-stage PlainConvUNet of 4/8/16 features,
a 32^3 patch and batch 2 -> nnU-Net's stock ``nnUNetTrainer`` (the class itself, 1 epoch of 3 iterations, no final
validation) for folds 0 and 1, once on the labels and once region-based on the same preprocessed cases (dataset.json
regions WT / TC / ET with ``regions_class_order``, sigmoid outputs, as BraTS models often are) -> real
``fold_K/checkpoint_final.pth`` files in two real results folders ->
``pedtumorseg-train import-nnunet`` -> the engine's labels (before post-processing) against ``nnUNetPredictor``
initialised from that trained model folder (same folds, mirroring on; float32 accumulators as in
Testing/nnunet_harness.py) on a 40^3 block of a held-out phantom, with the torch, onnxruntime and openvino backends.

nnU-Net's fingerprint/preprocessing functions run their per-case work in ``multiprocessing.get_context("spawn")
.Pool``; here the pool is nnU-Net's own code on a thread pool (``ThreadPool``: same ``starmap_async`` and
``_pool`` workers), so nothing forks or spawns inside pytest; augmentation runs in the main process
(``nnUNet_n_proc_DA=0``); the fingerprint samples 1e5 foreground voxels and progress.png is saved at 10 dpi
(Testing/nnunet_harness.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2")

import torch  # noqa: E402
from nnunet_harness import (fewer_fingerprint_samples, fp32_accumulation, nnunet_predict,  # noqa: E402
                            small_progress_plots, thread_pools)

from pedtumorseg.conventions import CHANNELS  # noqa: E402

DATASET_ID = 974
NAME = "Stock"
N_TRAIN = 5  # nnU-Net's 5-fold split needs 5 cases
HELD_OUT_SEED = 9100
HELD_OUT_BLOCK = (40, 40, 40)
TINY = "3d_tiny"
# region-based labels in the converted dataset's values (1 ET, 2 NET, 3 CC, 4 ED), painted WT -> ED, TC -> NET, ET
REGIONS = {"background": 0, "whole tumor": [1, 2, 3, 4], "tumor core": [1, 2, 3], "enhancing tumor": [1]}
REGION_ORDER = [4, 2, 1]
REGION_PLANS = "nnUNetPlansRegions"
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "OMP_NUM_THREADS",
               "nnUNet_def_n_proc", "nnUNet_compile")


def _tiny_plans(plans_file) -> dict:
    """A user's edit of nnU-Net's plans: configuration 3d_tiny inheriting 3d_fullres, a 3-stage tiny net."""
    plans = json.loads(plans_file.read_text())
    arch = json.loads(json.dumps(plans["configurations"]["3d_fullres"]["architecture"]))
    kw = arch["arch_kwargs"]
    kw.update(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
              strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2])
    plans["configurations"][TINY] = {"inherits_from": "3d_fullres", "patch_size": [32, 32, 32], "batch_size": 2,
                                     "architecture": arch}
    plans_file.write_text(json.dumps(plans, indent=2))
    return plans


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real nnU-Net results folder of nnUNetTrainer on 3d_tiny, folds 0 and 1; (model folder, timings)."""
    mp = pytest.MonkeyPatch()
    saved = {k: os.environ.get(k) for k in NNUNET_VARS}
    try:
        yield _train(tmp_path_factory.mktemp("stock"), mp)
    finally:
        mp.undo()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _train(root, mp):
    from pedtumorseg.phantoms.clean import write_phantoms
    from pedtumorseg_train.cli import main
    t0 = time.perf_counter()
    write_phantoms(root / "brats", N_TRAIN, size="small", seed=600)
    work = root / "work"
    assert main(["convert", "--brats", str(root / "brats"), "--dataset-id", str(DATASET_ID), "--name", NAME,
                 "--work-dir", str(work), "--threads", "2", "--num-workers", "0"]) == 0
    os.environ["nnUNet_compile"] = "f"
    thread_pools(mp)
    fewer_fingerprint_samples(mp)
    small_progress_plots(mp)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)
    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True, clean=True, verbose=False,
                         show_progress_bar=False)
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner sets torch threads from it; 0 during training
    plan_experiments([DATASET_ID], experiment_planner_class_name="ExperimentPlanner")
    dataset = f"Dataset{DATASET_ID}_{NAME}"
    plans = _tiny_plans(work / "nnUNet_preprocessed" / dataset / "nnUNetPlans.json")
    preprocess([DATASET_ID], plans_identifier="nnUNetPlans", configurations=(TINY,), num_processes=(1,),
               verbose=False, show_progress_bar=False)
    t_prep = time.perf_counter() - t0
    os.environ["nnUNet_n_proc_DA"] = "0"
    dataset_json = json.loads((work / "nnUNet_preprocessed" / dataset / "dataset.json").read_text())
    models = {"labels": _train_folds(plans, dataset_json),
              # the same preprocessed cases trained region-based, as BraTS models often are: sigmoid outputs of
              # WT / TC / ET painted as ED / NET / ET (no CC), under a plans name of its own
              "regions": _train_folds({**plans, "plans_name": REGION_PLANS},
                                      {**dataset_json, "labels": REGIONS, "regions_class_order": REGION_ORDER})}
    return models, {"preprocess_s": t_prep, "train_s": time.perf_counter() - t0 - t_prep}


def _train_folds(plans: dict, dataset_json: dict):
    """nnU-Net's stock trainer (the class itself) on 3d_tiny, folds 0 and 1; its results folder."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    for fold in (0, 1):
        torch.manual_seed(fold)
        run_plans = {**json.loads(json.dumps(plans)), "continue_training": False}  # nnU-Net 2.8 pops this key
        trainer = nnUNetTrainer(plans=run_plans, configuration=TINY, fold=fold, dataset_json=dataset_json,
                                device=torch.device("cpu"))
        trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, 3, 1
        trainer.run_training()  # no perform_actual_validation: the final validation is skipped
    return Path(trainer.output_folder).parent


def _held_out():
    """A phantom not trained on, cut to a block of HELD_OUT_BLOCK voxels around its tumor (2 x 2 x 2 overlapping
    32^3 windows instead of the 3 x 4 x 3 of its whole brain: the sliding window, its Gaussian blending and
    the crop to the image data are all still run; the block reaches past the brain on one side)."""
    from pedtumorseg.phantoms.clean import make_phantom
    ph = make_phantom(HELD_OUT_SEED, "small")
    images = np.stack([ph.images[c] for c in CHANNELS]).astype(np.float32)
    centre = [int(np.mean(ix)) for ix in np.nonzero(ph.seg)]
    box = tuple(slice(min(max(0, c - b // 2), n - b), min(max(0, c - b // 2), n - b) + b)
                for c, b, n in zip(centre, HELD_OUT_BLOCK, images.shape[1:]))
    return np.ascontiguousarray(images[(slice(None), *box)]), tuple(float(s) for s in ph.geometry.spacing_zyx)


def _nnunet_labels(model, images, spacing):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0, 1), checkpoint_name="checkpoint_final.pth")
    with fp32_accumulation():
        seg, _ = nnunet_predict(predictor, images, spacing)
    return seg


def _same_labels_as_nnunet(model, bundle):
    """Fraction of voxels with nnUNetPredictor's label per backend (torch and the installed CPU backends) on the
    held-out phantom, and the labels nnU-Net found there."""
    from pedtumorseg.arrays import nonzero_mask
    from pedtumorseg.inference import backends
    from pedtumorseg.inference.engine import Engine, PredictOptions
    images, spacing = _held_out()
    raw_ref = _nnunet_labels(model, images, spacing)  # nnU-Net label values are ours (convert writes 1..4)
    # the engine's one deliberate difference (pedtumorseg.inference.preprocessing): inside the crop box, voxels
    # with no image data are background, where nnU-Net keeps the network's output (random for this barely
    # trained net); compared as test_conformance.py does, after the same rule applied to nnU-Net's labels
    outside = ~nonzero_mask(images)
    ref = np.where(outside, 0, raw_ref)
    results = {}
    for backend in ["torch"] + [b for b in ("onnxruntime", "openvino") if backends.is_available(b)]:
        pred = Engine(bundle, PredictOptions(device="cpu", tta=True, precision="fp32", backend=backend)).predict(
            images, spacing)
        results[backend] = float((pred.labels == ref).mean())
        assert (pred.labels[outside] == 0).all()
    return results, ref


def _import(model, out):
    from pedtumorseg.inference.bundle import load_bundle
    from pedtumorseg_train.cli import main
    for fold in (0, 1):  # nnU-Net's own files of a finished run
        assert (model / f"fold_{fold}" / "checkpoint_final.pth").is_file()
        assert (model / f"fold_{fold}" / "progress.png").is_file()
    # the trainer folder itself: with two results folders of one dataset, --configuration alone is ambiguous
    assert main(["import-nnunet", str(model), "--out", str(out)]) == 0
    return load_bundle(out)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["labels", "regions"])
def test_stock_nnunet_trained_model_imports_and_matches_nnunet(trained, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    models, times = trained
    model = models[kind]
    plans = json.loads((model / "plans.json").read_text())
    assert plans["configurations"][TINY]["inherits_from"] == "3d_fullres"
    if kind == "labels":  # the dataset folder now holds both results folders: which one is not guessed
        from pedtumorseg_train.cli import main
        status = main(["import-nnunet", str(model.parent), "--configuration", TINY, "--out", str(tmp_path / "x.zip")])
        assert status == 1 and not (tmp_path / "x.zip").exists()
    bundle = _import(model, tmp_path / "imported.zip")
    m = bundle.manifest
    assert m["folds"] == [0, 1] and m["patch_size"] == [32, 32, 32] and m["inputs"] == list(CHANNELS)
    assert m["network"]["kwargs"]["features_per_stage"] == [4, 8, 16] and m["training"]["configuration"] == TINY
    assert m["training"]["trainer"] == "nnUNetTrainer" and m["mirror_axes"] == [0, 1, 2]
    if kind == "regions":
        assert m["outputs"] == {"activation": "sigmoid", "labels": REGION_ORDER}
        assert m["labels"] == {"1": "ET", "2": "NET", "4": "ED"}  # no CC: the panel shows no CC slider
    else:
        assert m["outputs"] == {"activation": "softmax", "labels": [0, 1, 2, 3, 4]}
    results, ref = _same_labels_as_nnunet(model, bundle)
    present = np.unique(ref)
    print(f"\nstock nnU-Net trained model ({kind}): prep {times['preprocess_s']:.1f}s, train {times['train_s']:.1f}s "
          f"(both); same label as nnUNetPredictor {results}; nnU-Net labels {present.tolist()} "
          f"(fractions {[round(float((ref == v).mean()), 4) for v in present]})")
    assert len(present) >= 3, "predictions too uniform to test agreement"
    assert all(v >= 0.999 for v in results.values()), results
    if len(results) < 3:
        pytest.skip(f"only {sorted(results)} installed: the other CPU backends not checked")
