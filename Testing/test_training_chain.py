"""End-to-end training chain on tiny phantoms (CPU, a few minutes on 2 cores):

convert -> plan (demo preset, tiny patch and widths) -> train one fold for 2 epochs x 2 iterations -> export ->
the core engine loads the bundle and predicts finite labels on a new phantom; plus interruption/resume,
conversion rejections and the evaluate / fit-postprocessing wiring.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("nnunetv2")

import torch  # noqa: E402
from nnunet_harness import fewer_fingerprint_samples, small_progress_plots  # noqa: E402

from pedtumorseg.conventions import BRATS_SUFFIXES, CHANNELS  # noqa: E402

DATASET_ID = 971
N_CASES = 5
PATCH = ["32", "32", "32"]
WIDTHS = ["4", "8", "16", "16"]  # even smaller than the demo preset
NNUNET_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA", "OMP_NUM_THREADS",
               "nnUNet_def_n_proc")


@pytest.fixture(scope="module")
def restore_env():
    saved = {k: os.environ.get(k) for k in NNUNET_VARS}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _run(*argv) -> int:
    from pedtumorseg_train.cli import main
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def chain(tmp_path_factory, restore_env):
    with pytest.MonkeyPatch.context() as mp:
        fewer_fingerprint_samples(mp)
        small_progress_plots(mp)
        yield _chain(tmp_path_factory)


def _chain(tmp_path_factory):
    from pedtumorseg.phantoms.clean import write_phantoms
    root = tmp_path_factory.mktemp("chain")
    brats = root / "brats"
    cases = write_phantoms(brats, N_CASES, size="small", seed=500)
    _store_as_ras(cases[-1])  # a case stored in another orientation: convert brings it to LPS
    work = root / "work"
    common = ["--work-dir", work, "--threads", "2", "--num-workers", "0"]
    assert _run("convert", "--brats", brats, "--dataset-id", DATASET_ID, "--name", "Chain", *common) == 0
    assert _run("plan", "--dataset-id", DATASET_ID, "--preset", "demo", "--patch-size", *PATCH,
                "--decoder-widths", *WIDTHS, *common) == 0
    assert _run("train", "--dataset-id", DATASET_ID, "--preset", "demo", "--fold", "0", "--epochs", "2",
                "--iterations", "2", "--val-iterations", "1", "--save-every", "1", "--no-final-validation",
                *common) == 0
    return {"root": root, "work": work, "common": common, "brats": brats}


def _store_as_ras(case_dir: Path) -> None:
    from pedtumorseg.geometry import Geometry
    from pedtumorseg.inputs.orientation import reorient_array
    for path in case_dir.glob("*.nii.gz"):
        image = sitk.ReadImage(str(path))
        array, geometry = reorient_array(sitk.GetArrayFromImage(image), Geometry.from_image(image), "RAS")
        sitk.WriteImage(geometry.to_image(array), str(path), True)


def _results(work: Path) -> Path:
    return work / "nnUNet_results" / f"Dataset{DATASET_ID}_Chain" / "PedTumorSegTrainer__PedTumorSegPlans_demo__3d_fullres"


@pytest.mark.slow
def test_convert_writes_an_nnunet_raw_dataset(chain, monkeypatch):
    ds = chain["work"] / "nnUNet_raw" / f"Dataset{DATASET_ID}_Chain"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T1CE", "2": "T2", "3": "FLAIR"}
    assert meta["labels"] == {"background": 0, "ET": 1, "NET": 2, "CC": 3, "ED": 4}
    assert meta["numTraining"] == N_CASES and meta["file_ending"] == ".nii.gz"
    case_dirs = sorted(p for p in chain["brats"].iterdir() if p.is_dir())
    first = case_dirs[0].name
    for i, ch in enumerate(CHANNELS):  # fixed channel order, identical voxels
        src = case_dirs[0] / f"{first}-{BRATS_SUFFIXES[ch]}.nii.gz"
        dst = ds / "imagesTr" / f"{first}_{i:04d}.nii.gz"
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(src))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(dst))))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / f"{first}.nii.gz")))
    assert set(np.unique(seg)) <= {0, 1, 2, 3, 4} and (seg > 0).any()
    assert (ds / "rejected.txt").read_text() == ""
    # the file list under nnU-Net's "dataset" key: what nnU-Net's own discovery finds, without its fork pool
    import nnunetv2.utilities.utils as nnunet_utils
    without_list = nnunet_utils.get_filenames_of_train_images_and_targets(
        str(ds), {k: v for k, v in meta.items() if k != "dataset"})
    monkeypatch.setattr(nnunet_utils, "Pool", None)  # any use of the pool fails
    with_list = nnunet_utils.get_filenames_of_train_images_and_targets(str(ds), json.loads(
        (ds / "dataset.json").read_text()))
    monkeypatch.undo()
    assert list(with_list) == sorted(with_list) == sorted(without_list)
    assert all(with_list[k]["images"] == without_list[k]["images"] and with_list[k]["label"] ==
               without_list[k]["label"] for k in with_list)
    # one orientation for the whole dataset: the case stored as RAS is written as LPS, same voxels, same anatomy
    from pedtumorseg.geometry import Geometry
    from pedtumorseg.inputs.orientation import orientation_code
    from pedtumorseg.phantoms.clean import make_phantom
    assert meta["pedtumorseg_orientation"] == "LPS"
    for path in (ds / "imagesTr").glob("*.nii.gz"):
        assert orientation_code(Geometry.from_image(sitk.ReadImage(str(path)))) == "LPS", path
    last = case_dirs[-1].name
    original = make_phantom(500 + N_CASES - 1, "small")
    converted = sitk.ReadImage(str(ds / "labelsTr" / f"{last}.nii.gz"))
    assert Geometry.from_image(converted).same_grid(original.geometry)
    assert np.array_equal(sitk.GetArrayFromImage(converted), original.seg)


@pytest.mark.slow
def test_plan_names_our_network(chain):
    plans = json.loads((chain["work"] / "nnUNet_preprocessed" / f"Dataset{DATASET_ID}_Chain" /
                        "PedTumorSegPlans_demo.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    assert cfg["architecture"]["network_class_name"] == "pedtumorseg.model.network.PedTumorSegNet"
    assert cfg["architecture"]["_kw_requires_import"] == []
    assert cfg["architecture"]["arch_kwargs"]["decoder_widths"] == [int(w) for w in WIDTHS]
    assert cfg["patch_size"] == [int(p) for p in PATCH] and cfg["batch_size"] == 2


@pytest.mark.slow
def test_training_writes_logs_and_checkpoint(chain):
    fold = _results(chain["work"]) / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "progress.png").is_file()
    records = [json.loads(line) for line in (fold / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0]["lr"] == pytest.approx(1e-2) and records[1]["lr"] == pytest.approx(5e-3)  # cosine, T = 2
    for r in records:
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) and r["epoch_time_s"] > 0
        assert {"pseudo_dice_ET", "pseudo_dice_NET", "pseudo_dice_CC", "pseudo_dice_ED"} <= set(r)
    header = (fold / "epochs.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "train_loss", "val_loss"]


@pytest.mark.slow
def test_export_and_engine_prediction(chain, tmp_path, monkeypatch):
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    from pedtumorseg.inference.bundle import load_bundle
    from pedtumorseg.inference.engine import Engine, PredictOptions
    from pedtumorseg.inputs.cases import find_case
    from pedtumorseg.inputs.images import load_case
    from pedtumorseg.phantoms.clean import write_phantoms
    out = chain["root"] / "bundle.zip"
    assert _run("export", "--dataset-id", DATASET_ID, "--preset", "demo", "--folds", "0", "--out", out,
                "--name", "chain-test", "--version", "0.0.1", *chain["common"]) == 0
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    assert names == {"manifest.json", "fold_0.safetensors"}  # no pickle in a bundle
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m["name"] == "chain-test" and m["folds"] == [0]
    assert m["patch_size"] == [int(p) for p in PATCH] and m["spacing_zyx"] == [2.5, 2.5, 2.5]
    assert m["normalization"] == {"scheme": "zscore", "use_mask_for_norm": [True] * 4}
    assert m["network"]["class"] == "pedtumorseg.model.network.PedTumorSegNet"
    assert m["mirror_axes"] == [0, 1, 2] and m["orientation"] == "LPS" and bundle.orientation == "LPS"
    assert m["training"]["folds"]["0"]["epochs_trained"] == 2
    # weights equal the checkpoint's
    from pedtumorseg_train.export import clean_state_dict, read_checkpoint
    ckpt = clean_state_dict(read_checkpoint(_results(chain["work"]) / "fold_0" / "checkpoint_final.pth")
                            ["network_weights"])
    state = bundle.state_dict(0)
    assert set(state) == set(ckpt) and all(np.array_equal(state[k].numpy(), ckpt[k].numpy()) for k in ckpt)
    # a new phantom (not in training)
    case_dir = write_phantoms(tmp_path / "new", 1, size="small", seed=9000)[0]
    case = load_case(find_case(case_dir))
    pred = Engine(bundle, PredictOptions(device="cpu", probabilities=True, tta=False)).predict(
        case.images, case.geometry.spacing_zyx)
    assert pred.labels.shape == case.images.shape[1:] and pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels)) <= {0, 1, 2, 3, 4}
    assert np.isfinite(pred.probabilities).all()

    # evaluate wiring: the prediction against the phantom's ground truth
    from pedtumorseg.outputs.images import write_labels
    pred_dir = tmp_path / "pred"
    write_labels(pred.labels, case.geometry, pred_dir / f"{case.case_id}.nii.gz")
    csv_path = tmp_path / "eval" / "eval.csv"
    assert _run("evaluate", "--pred", pred_dir, "--gt", case_dir.parent, "--out", csv_path) == 0
    header = csv_path.read_text().splitlines()[0]
    assert header.startswith("case,region,lesion_dice")
    assert len(csv_path.read_text().splitlines()) == 1 + 6  # one row per region


@pytest.mark.slow
def test_fit_postprocessing_updates_the_bundle(chain, tmp_path, monkeypatch):
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    import shutil

    from pedtumorseg.inference.bundle import load_bundle
    bundle_in = chain["root"] / "bundle.zip"
    if not bundle_in.is_file():
        assert _run("export", "--dataset-id", DATASET_ID, "--preset", "demo", "--folds", "0", "--out", bundle_in,
                    *chain["common"]) == 0
    raw = chain["work"] / "nnUNet_raw" / f"Dataset{DATASET_ID}_Chain"
    preds = tmp_path / "cv"
    preds.mkdir()
    for seg in (raw / "labelsTr").iterdir():  # perfect "cross-validation predictions"
        shutil.copyfile(seg, preds / seg.name)
    # a bundle that declares the "mean" ratio normalization: fit-postprocessing fits for it (no --normalization)
    from pedtumorseg.postprocess import PostprocessParams
    from pedtumorseg_train.cli import update_bundle_postprocessing
    declared = tmp_path / "declares_mean.zip"
    update_bundle_postprocessing(bundle_in, declared, PostprocessParams(normalization="mean").to_dict())
    bundle_in = declared
    out = tmp_path / "fitted.zip"
    report = tmp_path / "fit.json"
    assert _run("fit-postprocessing", "--raw", raw, "--predictions", preds, "--bundle", bundle_in, "--out", out,
                "--report", report, "--labels", "ET", "CC", "ED") == 0
    fitted = json.loads(report.read_text())["params"]
    assert set(json.loads(report.read_text())["sweep"]["table"]) == {"ET", "CC", "ED"}  # --labels: ED swept too
    assert json.loads(report.read_text())["normalization"] == "mean" and fitted["normalization"] == "mean"
    before, after = load_bundle(bundle_in), load_bundle(out)  # load verifies the recomputed checksums
    assert after.manifest["postprocessing"] == fitted
    assert after.manifest["postprocessing"]["ratio_high"] != before.manifest["postprocessing"]["ratio_high"]
    assert after.manifest["files"] == before.manifest["files"]  # same weights
    assert after.manifest["training"]["postprocessing_fit"]["n_training_cases"] == N_CASES


@pytest.mark.slow
def test_interrupted_training_resumes_from_checkpoint(chain, monkeypatch):
    from pedtumorseg_train import trainer as trainer_mod

    class Interrupted(Exception):
        pass

    original = trainer_mod.PedTumorSegTrainer.on_epoch_end

    def crash_after_first_epoch(self):
        original(self)
        if self.current_epoch == 1:
            raise Interrupted()

    settings = dict(num_epochs=3, num_iterations_per_epoch=1, num_val_iterations_per_epoch=1, save_every=1)
    monkeypatch.setattr(trainer_mod.PedTumorSegTrainer, "on_epoch_end", crash_after_first_epoch)
    with pytest.raises(Interrupted):
        trainer_mod.train_fold(DATASET_ID, 1, preset="demo", device="cpu", final_validation=False, **settings)
    monkeypatch.setattr(trainer_mod.PedTumorSegTrainer, "on_epoch_end", original)
    fold = _results(chain["work"]) / "fold_1"
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    before = [json.loads(line) for line in (fold / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in before] == [0]

    messages = []
    t = trainer_mod.train_fold(DATASET_ID, 1, preset="demo", device="cpu", final_validation=False,
                               log=messages.append, **settings)
    assert any("resuming fold 1" in m and "at epoch 1" in m for m in messages)
    assert t.current_epoch == 3
    after = [json.loads(line) for line in (fold / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in after] == [0, 1, 2]
    assert after[0]["train_loss"] == pytest.approx(before[0]["train_loss"])  # history kept, not retrained
    assert after[1]["lr"] == pytest.approx(1e-2 * 0.75) and after[2]["lr"] == pytest.approx(1e-2 * 0.25)
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "checkpoint_latest.pth").exists()
    # a finished fold is not retrained
    assert trainer_mod.train_fold(DATASET_ID, 1, preset="demo", device="cpu", log=messages.append,
                                  **settings) is None


def test_convert_rejects_bad_cases(tmp_path, restore_env):
    from pedtumorseg.phantoms.clean import write_phantoms
    brats = tmp_path / "brats"
    good, no_seg, bad_labels, incomplete = write_phantoms(brats, 4, size="small", seed=700)
    (no_seg / f"{no_seg.name}-seg.nii.gz").unlink()
    seg_path = bad_labels / f"{bad_labels.name}-seg.nii.gz"
    seg = sitk.ReadImage(str(seg_path))
    arr = sitk.GetArrayFromImage(seg)
    arr[0, 0, 0] = 7
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(seg)
    sitk.WriteImage(bad, str(seg_path))
    (incomplete / f"{incomplete.name}-t2f.nii.gz").unlink()
    assert _run("convert", "--brats", brats, "--dataset-id", 972, "--name", "Bad", "--work-dir", tmp_path / "w") == 0
    ds = tmp_path / "w" / "nnUNet_raw" / "Dataset972_Bad"
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 1
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == [f"{good.name}.nii.gz"]
    rejected = (ds / "rejected.txt").read_text()
    assert no_seg.name in rejected and "label" in rejected
    assert bad_labels.name in rejected and "[7]" in rejected
    assert incomplete.name in rejected and "T2-FLAIR" in rejected
    # nothing acceptable -> non-zero exit
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run("convert", "--brats", empty, "--dataset-id", 973, "--work-dir", tmp_path / "w") == 1


ABLATIONS = {  # switch -> (CLI flags, what the trained run must show)
    "width": ["--encoder-width-factor", "1"],
    "se": ["--se", "off"],
    "separable": ["--separable", "off"],
    "fp": ["--theta", "0"],
    "hd": ["--w-hd", "0"],
    "alpha": ["--init-alpha", "0.9"],
}


@pytest.mark.slow
@pytest.mark.parametrize("switch", sorted(ABLATIONS))
def test_ablation_switch_short_training_run(chain, switch):
    """Each ablation switch of ``pedtumorseg-train train``: one epoch of one iteration under its own --tag; the
    trained checkpoint / plans / trainer settings carry the switch and the default run does not."""
    from pedtumorseg_train.export import clean_state_dict, read_checkpoint
    assert _run("train", "--dataset-id", DATASET_ID, "--preset", "demo", "--fold", "0", "--epochs", "1",
                "--iterations", "1", "--val-iterations", "1", "--no-final-validation", "--tag", switch,
                *ABLATIONS[switch], *chain["common"]) == 0
    base = _results(chain["work"]).parent / f"PedTumorSegTrainer__PedTumorSegPlans_demo_{switch}__3d_fullres"
    default_base = _results(chain["work"])
    arch = json.loads((base / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    default_arch = json.loads((default_base / "plans.json").read_text())["configurations"]["3d_fullres"][
        "architecture"]["arch_kwargs"]
    state = clean_state_dict(read_checkpoint(base / "fold_0" / "checkpoint_final.pth")["network_weights"])
    default_state = clean_state_dict(read_checkpoint(default_base / "fold_0" / "checkpoint_final.pth")
                                     ["network_weights"])
    log = "\n".join(p.read_text() for p in (base / "fold_0").glob("training_log_*.txt"))
    settings = log[log.index("PedTumorSegTrainer settings:"):].splitlines()[0]

    def depthwise(s):
        return sum(1 for v in s.values() if v.ndim == 5 and v.shape[1] == 1 and v.shape[2] == 3)

    if switch == "width":
        assert arch["encoder_width_factor"] == 1 and default_arch["encoder_width_factor"] == 2
        first = "encoder.stages.0.0.0.weight"  # stem conv: (encoder width 0, 4, k, k, k)
        assert state[first].shape[0] == int(WIDTHS[0]) and default_state[first].shape[0] == 2 * int(WIDTHS[0])
    elif switch == "se":
        assert arch["se_reduction"] == 0
        assert not any(".se." in k for k in state) and any(".se." in k for k in default_state)
    elif switch == "separable":
        assert arch["depthwise_separable"] is False and arch["decoder_separable"] is False
        assert depthwise(state) == 0 and depthwise(default_state) > 0
    elif switch == "fp":
        assert "'theta': 0.0" in settings and "'w_hd': 1.0" in settings
    elif switch == "hd":
        assert "'w_hd': 0.0" in settings and "'theta': 0.1" in settings
    elif switch == "alpha":
        assert arch["init_alpha"] == 0.9 and default_arch["init_alpha"] != 0.9
    if switch not in ("width", "se", "separable"):
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in default_state.items()}


@pytest.mark.slow
def test_seeded_runs_repeat_batch_by_batch(chain):
    """``--seed`` with augmentation in the main process: two runs with the same seed end with identical weights
    (same initialization, same sampled patches and augmentations); another seed gives other weights."""
    from pedtumorseg_train.export import clean_state_dict, read_checkpoint

    def run(tag, seed):
        assert _run("train", "--dataset-id", DATASET_ID, "--preset", "demo", "--fold", "2", "--epochs", "1",
                    "--iterations", "2", "--val-iterations", "1", "--no-final-validation", "--tag", tag,
                    "--seed", seed, *chain["common"]) == 0
        base = _results(chain["work"]).parent / f"PedTumorSegTrainer__PedTumorSegPlans_demo_{tag}__3d_fullres"
        log = "\n".join(p.read_text() for p in (base / "fold_2").glob("training_log_*.txt"))
        assert f"seed: {seed}" in log
        return clean_state_dict(read_checkpoint(base / "fold_2" / "checkpoint_final.pth")["network_weights"])

    a, b, c = run("seed_a", 7), run("seed_b", 7), run("seed_c", 8)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_init_weights_start_from_a_bundle(chain, tmp_path, monkeypatch, capsys):
    """``--init-weights``: the run starts from a bundle's weights (with lr 0 they are what it ends with); a bundle
    of another network is refused before training, naming the file, exit status 1, no checkpoint."""
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    from pedtumorseg.inference.bundle import load_bundle
    from pedtumorseg_train.export import clean_state_dict, read_checkpoint
    start = tmp_path / "start.zip"
    assert _run("export", "--dataset-id", DATASET_ID, "--preset", "demo", "--folds", "0", "--out", start,
                *chain["common"]) == 0
    base = _results(chain["work"]).parent

    def train(tag, bundle):
        return _run("train", "--dataset-id", DATASET_ID, "--preset", "demo", "--fold", "3", "--epochs", "1",
                    "--iterations", "1", "--val-iterations", "1", "--no-final-validation", "--tag", tag,
                    "--init-weights", bundle, "--lr", "0", *chain["common"])

    assert train("init", start) == 0
    final = base / "PedTumorSegTrainer__PedTumorSegPlans_demo_init__3d_fullres" / "fold_3" / "checkpoint_final.pth"
    got = clean_state_dict(read_checkpoint(final)["network_weights"])
    want = load_bundle(start).state_dict(0)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    log = "\n".join(p.read_text() for p in final.parent.glob("training_log_*.txt"))
    assert f"initial weights: {start} fold 0" in log

    # the shipped demo bundle has the demo preset's full widths, not this chain's narrowed ones
    shipped = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "pedtumorseg-demo.zip"
    capsys.readouterr()
    assert train("init_bad", shipped) == 1
    err = capsys.readouterr().err
    assert str(shipped) in err and "do not fit this run's network" in err and "shape" in err
    assert not (base / "PedTumorSegTrainer__PedTumorSegPlans_demo_init_bad__3d_fullres" / "fold_3"
                / "checkpoint_final.pth").exists()
