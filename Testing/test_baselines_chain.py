"""Every network preset through the whole training chain on tiny phantoms (CPU, CI-sized):

convert once -> for each preset: plan (tiny widths, 32^3 patch, or 32x32 for the 2D preset) -> train one
epoch of 2 iterations -> export -> the core engine loads the bundle and predicts a held-out phantom -> scored by
pedtumorseg.evaluation. Then ``pedtumorseg-train compare`` on two of the bundles.

nnU-Net's planning runs its own per-case code on thread pools and samples 1e5 foreground voxels for its
fingerprint, and its progress.png is saved at 10 dpi (Testing/nnunet_harness.py: ``thread_pools``,
``fewer_fingerprint_samples``, ``small_progress_plots``); the spawn pools of a plain ``pedtumorseg-train plan``
are run by Testing/test_training_chain.py.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("nnunetv2")

from nnunet_harness import fewer_fingerprint_samples, small_progress_plots, thread_pools  # noqa: E402

from pedtumorseg.model.presets import BASELINES, MONAI_CLASSES  # noqa: E402

DATASET_ID = 975
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "OMP_NUM_THREADS",
               "nnUNet_def_n_proc")
#: per preset, constructor kwargs that make it tiny (per-stage lists are fitted to the 4-stage topology)
TINY = {
    "paper": {"decoder_widths": [4, 8, 16], "blocks_per_stage": [1, 1, 1]},
    "demo": {"decoder_widths": [4, 8, 16], "blocks_per_stage": [1, 1, 1]},
    "nnunet": {"features_per_stage": [4, 8, 16]},
    "resenc": {"features_per_stage": [4, 8, 16], "n_blocks_per_stage": [1, 1, 1]},
    "resunet": {"channels": [4, 8, 16], "num_res_units": 1},
    "segresnet": {"init_filters": 4, "blocks_down": [1, 1, 1, 1], "norm": ["GROUP", {"num_groups": 2}]},
    "unetr": {"feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2},
    "light3d": {"widths": [4, 8, 16]},
    "resselka2d": {"widths": [4, 8, 16]},
}
PRESETS = [p for p in BASELINES if p != "demo"]  # demo: test_training_chain.py


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        fewer_fingerprint_samples(mp)
        thread_pools(mp)
        small_progress_plots(mp)
        yield from _work(tmp_path_factory)


def _work(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in NNUNET_VARS}
    from pedtumorseg.phantoms.clean import write_phantoms
    from pedtumorseg_train.cli import main
    root = tmp_path_factory.mktemp("baselines")
    write_phantoms(root / "brats", 3, size="small", seed=600)
    write_phantoms(root / "heldout", 1, size="small", seed=9100)
    common = ["--work-dir", str(root / "work"), "--threads", "2", "--num-workers", "0"]
    assert main(["convert", "--brats", str(root / "brats"), "--dataset-id", str(DATASET_ID), "--name", "Baselines",
                 *common]) == 0
    yield {"root": root, "common": common}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _chain(work, preset) -> "object":
    from pedtumorseg_train.cli import main
    root, common = work["root"], work["common"]
    patch = ["32", "32"] if BASELINES[preset]["configuration"] == "2d" else ["32", "32", "32"]
    ds = ["--dataset-id", str(DATASET_ID), "--preset", preset]
    assert main(["plan", *ds, "--patch-size", *patch, "--arch-kwargs", json.dumps(TINY[preset]), *common]) == 0
    assert main(["train", *ds, "--fold", "all", "--epochs", "1", "--iterations", "2", "--val-iterations", "1",
                 "--no-final-validation", *common]) == 0
    out = root / f"{preset}.zip"
    assert main(["export", *ds, "--folds", "all", "--out", str(out), "--name", preset, *common]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_exports_predicts_and_scores(work, preset, tmp_path, monkeypatch):
    if BASELINES[preset]["class"] in MONAI_CLASSES:
        pytest.importorskip("monai")
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    from pedtumorseg.inference.bundle import load_bundle
    from pedtumorseg.inference.engine import Engine, PredictOptions
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.inputs.cases import find_cases
    from pedtumorseg.inputs.images import load_case
    from pedtumorseg.outputs.images import write_labels
    out = _chain(work, preset)
    plans = json.loads((work["root"] / "work" / "nnUNet_preprocessed" / f"Dataset{DATASET_ID}_Baselines" /
                        f"PedTumorSegPlans_{preset}.json").read_text())
    assert list(plans["configurations"]) == [BASELINES[preset]["configuration"]]
    planned = plans["pedtumorseg"]["planned_architecture"]
    if preset in ("nnunet", "resenc"):  # our topology -> kwargs rule is nnU-Net's planner's (default / ResEnc-M)
        from pedtumorseg.model.presets import dna_kwargs
        kw = planned["arch_kwargs"]
        assert planned["network_class_name"] == BASELINES[preset]["class"]
        assert json.loads(json.dumps(dna_kwargs(preset, kw["strides"], kw["kernel_sizes"]))) == kw
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m["network"]["class"] == BASELINES[preset]["class"] and m["training"]["preset"] == preset
    if BASELINES[preset]["configuration"] == "2d":
        assert m["patch_size"] == [1, 32, 32] and m["mirror_axes"] == [1, 2]
    else:
        assert m["patch_size"] == [32, 32, 32] and m["mirror_axes"] == [0, 1, 2]
    (files,) = find_cases(work["root"] / "heldout")
    case = load_case(files)
    pred = Engine(bundle, PredictOptions(device="cpu", tta=False, probabilities=True)).predict(
        case.images, case.geometry.spacing_zyx)
    assert pred.labels.shape == case.images.shape[1:] and np.isfinite(pred.probabilities).all()
    pred_dir = tmp_path / "pred"
    write_labels(pred.labels, case.geometry, pred_dir / f"{case.case_id}.nii.gz")
    result = evaluate_folder(pred_dir, work["root"] / "heldout", tmp_path / "eval.csv")
    assert result.summary["n_cases"] == 1 and not result.missing
    for region, stats in result.summary["metrics"].items():
        d = stats["lesion_dice"]["mean"]
        assert np.isnan(d) or 0.0 <= d <= 1.0, (region, d)


@pytest.mark.slow
def test_compare_two_bundles(work, tmp_path, monkeypatch):
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    from pedtumorseg_train.cli import main
    bundles = {p: work["root"] / f"{p}.zip" for p in ("nnunet", "light3d")}
    for p, path in bundles.items():
        if not path.is_file():
            _chain(work, p)
    out = tmp_path / "cmp"
    assert main(["compare", "--model", f"nnunet={bundles['nnunet']}", "--model", f"light3d={bundles['light3d']}",
                 "--gt", str(work["root"] / "heldout"), "--out", str(out), "--device", "cpu", "--no-tta"]) == 0
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [r["model"] for r in rows] == ["nnunet", "light3d"]
    for r in rows:
        assert int(r["params"]) > 0 and float(r["gflops_per_patch"]) > 0 and float(r["median_s_per_case"]) > 0
        assert r["patch_size"] == "32x32x32" and r["device"] == "cpu" and r["n_cases"] == "1"
        assert 0 <= float(r["WT_lesion_dice"]) <= 1 or r["WT_lesion_dice"] == "nan"
    assert (out / "nnunet" / "predictions").is_dir() and (out / "light3d" / "evaluation.csv").is_file()
    tests = list(csv.DictReader(open(out / "paired_tests.csv")))
    assert tests and all(t["model_a"] == "nnunet" and t["model_b"] == "light3d" for t in tests)
    md = (out / "compare.md").read_text()
    assert "| nnunet |" in md and "Wilcoxon" in md
    # a prediction folder is compared as it is (no parameters / time)
    out2 = tmp_path / "cmp2"
    assert main(["compare", "--model", f"folder={out / 'nnunet' / 'predictions'}", "--model",
                 f"light3d={bundles['light3d']}", "--gt", str(work["root"] / "heldout"), "--out", str(out2),
                 "--device", "cpu", "--no-tta"]) == 0
    rows2 = {r["model"]: r for r in csv.DictReader(open(out2 / "compare.csv"))}
    assert rows2["folder"]["params"] == "" and rows2["folder"]["WT_lesion_dice"] == rows[0]["WT_lesion_dice"]
