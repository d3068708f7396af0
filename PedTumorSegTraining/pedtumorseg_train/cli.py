"""``pedtumorseg-train``: convert | plan | train | export | import-nnunet | fit-postprocessing | evaluate | compare.

nnU-Net reads its folders and worker counts from environment variables; ``--work-dir W`` sets
nnUNet_raw=W/nnUNet_raw, nnUNet_preprocessed=W/nnUNet_preprocessed, nnUNet_results=W/nnUNet_results (defaults:
the variables already set, else ./work_dirs/nnunet), plus nnUNet_n_proc_DA (``--num-workers``), nnUNet_def_n_proc
and OMP/torch threads (``--threads``) before any nnunetv2 module is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pedtumorseg.errors import UsageError
from pedtumorseg.inference.manifest import INTENDED_USES
from pedtumorseg.model.presets import BASELINES

ENV_DIRS = {"nnUNet_raw": "nnUNet_raw", "nnUNet_preprocessed": "nnUNet_preprocessed",
            "nnUNet_results": "nnUNet_results"}


def setup_environment(work_dir: str | None, num_workers: int | None = None, threads: int | None = None) -> dict:
    """Set nnU-Net's environment variables (and thread counts) for this process; returns them."""
    if work_dir is None and not all(os.environ.get(k) for k in ENV_DIRS):
        work_dir = os.path.join(os.getcwd(), "work_dirs", "nnunet")
    if work_dir is not None:
        for var, sub in ENV_DIRS.items():
            os.environ[var] = str(Path(work_dir, sub).resolve())
    for var in ENV_DIRS:
        Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    if num_workers is not None:
        os.environ["nnUNet_n_proc_DA"] = str(int(num_workers))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(int(threads))
        os.environ["nnUNet_def_n_proc"] = str(int(threads))
        import torch
        torch.set_num_threads(int(threads))
    return {k: os.environ[k] for k in (*ENV_DIRS, "nnUNet_n_proc_DA", "OMP_NUM_THREADS") if k in os.environ}


def _fold(value: str):
    return value if value == "all" else int(value)


def _maybe_init_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): NCCL process group, one GPU per LOCAL_RANK; nnU-Net's DDP path takes over."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    import torch
    import torch.distributed as dist
    if not torch.cuda.is_available():
        raise RuntimeError("multi-process training (WORLD_SIZE > 1) needs CUDA GPUs")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl")
    return "cuda"


# --- subcommands ------------------------------------------------------------------------------------------
def cmd_convert(a) -> int:
    from .convert import convert
    _, accepted, _ = convert(a.brats, a.out, a.dataset_id, a.name)
    return 0 if accepted else 1


def cmd_plan(a) -> int:
    from .planning import plan
    overrides = {}
    if a.decoder_widths:
        overrides["decoder_widths"] = list(a.decoder_widths)
    if a.blocks_per_stage:
        overrides["blocks_per_stage"] = list(a.blocks_per_stage)
    if a.arch_kwargs:
        try:
            extra = json.loads(a.arch_kwargs)
        except json.JSONDecodeError as e:
            raise UsageError(None, f"--arch-kwargs is not valid JSON: {e}") from None
        if not isinstance(extra, dict):
            raise UsageError(None, "--arch-kwargs must be a JSON object")
        overrides.update(extra)
    if a.patch_size is not None and len(a.patch_size) not in (2, 3):
        raise UsageError(None, "--patch-size takes 3 values (Z Y X), or 2 (Y X) for a 2D preset")
    try:
        plan(a.dataset_id, a.preset, a.patch_size, a.spacing, num_processes=a.threads or 2,
             batch_size=a.batch_size, arch_overrides=overrides or None)
    except ValueError as e:  # a preset that cannot take the patch / kwargs
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_train(a) -> int:
    from .trainer import train_fold
    device = _maybe_init_distributed(a.device)
    folds = list(range(5)) if a.all_folds else [a.fold]
    loss_kwargs = {"w_dice": a.w_dice, "w_ce": a.w_ce, "w_hd": a.w_hd, "theta": a.theta}
    arch = {"encoder_width_factor": a.encoder_width_factor,
            "se_reduction": None if a.se is None else (a.se_reduction if a.se == "on" else 0),
            "depthwise_separable": None if a.separable is None else a.separable == "on",
            "decoder_separable": None if a.separable is None else a.separable == "on"}
    if a.se is None and a.se_reduction is not None:
        arch["se_reduction"] = a.se_reduction
    for fold in folds:
        train_fold(a.dataset_id, fold, preset=a.preset, device=device, init_alpha=a.init_alpha,
                   arch_overrides=arch, tag=a.tag, seed=a.seed, p_elastic_deform=a.p_elastic_deform,
                   final_validation=not a.no_final_validation, resume=not a.restart,
                   num_epochs=a.epochs, num_iterations_per_epoch=a.iterations,
                   num_val_iterations_per_epoch=a.val_iterations, initial_lr=a.lr, momentum=a.momentum,
                   nesterov=None if a.nesterov is None else a.nesterov == "on", weight_decay=a.weight_decay,
                   save_every=a.save_every, loss_kwargs=loss_kwargs, init_weights=a.init_weights,
                   init_fold=a.init_fold)
    return 0


def _load_postprocessing_json(path):
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    return data.get("postprocessing", data)


def cmd_export(a) -> int:
    from pedtumorseg.files import check_output_file, check_output_folder

    from .export import export
    (check_output_folder if a.folder else check_output_file)(a.out)  # before the checkpoints are read
    export(a.dataset_id, [_fold(f) for f in a.folds], a.out, preset=a.preset, checkpoint=a.checkpoint,
           name=a.name, version=a.version, description=a.description,
           postprocessing=_load_postprocessing_json(a.postprocessing), zip=not a.folder, tag=a.tag,
           intended_use=a.intended_use)
    return 0


def cmd_import_nnunet(a) -> int:
    from pedtumorseg.files import check_output_file, check_output_folder

    from .import_nnunet import import_nnunet
    (check_output_folder if a.folder else check_output_file)(a.out)
    import_nnunet(a.results, a.out, folds=a.folds, checkpoint=a.checkpoint, configuration=a.configuration,
                  channels=a.channels, labels=a.labels, name=a.name, version=a.version, orientation=a.orientation,
                  zip=not a.folder)
    return 0


def update_bundle_postprocessing(bundle_in, bundle_out, postprocessing: dict, report: dict | None = None) -> Path:
    """Rewrite a bundle with new post-processing defaults through the core writer (checksums recomputed);
    ``postprocessing_source`` becomes ``fitted`` with a fit ``report`` (what it was fitted on, and when, under
    ``training.postprocessing_fit``), else ``given``."""
    import datetime

    from pedtumorseg.inference.bundle import load_bundle, write_bundle
    bundle = load_bundle(bundle_in)
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["postprocessing"] = postprocessing
    manifest["postprocessing_source"] = "given" if report is None else "fitted"
    if report is not None:
        fit = {k: report[k] for k in ("normalization", "percentile", "ratio_high_rule", "ratio_low_rule",
                                      "n_training_cases", "n_cases_with_prediction") if k in report}
        fit["fitted"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        manifest.setdefault("training", {})["postprocessing_fit"] = fit
    else:
        manifest.get("training", {}).pop("postprocessing_fit", None)  # an old fit no longer describes the values
    states = {f: bundle.state_dict(f) for f in bundle.folds}
    out = Path(bundle_out)
    write_bundle(out, manifest, states, zip=out.suffix.lower() == ".zip")
    load_bundle(out)  # verify
    return out


def _raw_dataset_dir(a) -> Path:
    if a.raw:
        return Path(a.raw)
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name
    return Path(os.environ["nnUNet_raw"]) / convert_id_to_dataset_name(a.dataset_id)


def fit_normalization(requested: str | None, bundle_path) -> str:
    """The ratio normalization to fit for: the one asked for, else the one the bundle declares, else the
    core default (the paper's z-score)."""
    if requested is not None:
        return requested
    if bundle_path is not None:
        from pedtumorseg.inference.bundle import load_bundle
        declared = load_bundle(bundle_path).manifest.get("postprocessing", {}).get("normalization")
        if declared is not None:
            return declared
    from pedtumorseg.postprocess import PostprocessParams
    return PostprocessParams().normalization


def cmd_fit_postprocessing(a) -> int:
    from pedtumorseg.files import check_output_file

    from .fit_postprocessing import fit
    for path in (a.report, a.out or a.bundle):  # before the fit runs
        if path is not None and not Path(path).is_dir():
            check_output_file(path)
    normalization = fit_normalization(a.normalization, a.bundle)
    print(f"fitting the post-processing for ratio normalization {normalization!r}")
    from pedtumorseg.conventions import LABEL_NAMES

    from .fit_postprocessing import DEFAULT_CANDIDATES
    by_name = {name: label for label, name in LABEL_NAMES.items()}
    params, report = fit(_raw_dataset_dir(a), a.predictions, normalization=normalization,
                         percentile=a.percentile,
                         candidates={by_name[name]: DEFAULT_CANDIDATES for name in a.labels})
    pp = params.to_dict()
    if a.report:
        from pedtumorseg.files import atomic_output
        with atomic_output(a.report) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    if a.bundle:
        out = update_bundle_postprocessing(a.bundle, a.out or a.bundle, pp, report)
        print(f"wrote post-processing defaults into {out}")
    print(json.dumps(pp, indent=2))
    return 0


def cmd_evaluate(a) -> int:
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.files import check_output_file
    check_output_file(a.out)  # before any case is evaluated
    try:
        result = evaluate_folder(a.pred, a.gt, a.out, spacing_from=a.spacing_from, workers=a.workers,
                                 scorer=a.scorer)
    except ImportError as exc:  # --scorer brats2026 without its optional package
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in result.summary_lines():
        print(line)
    if result.missing:
        print(f"{PROG}: error: {a.pred}: {len(result.missing)} ground-truth case(s) without a prediction: "
              f"{', '.join(result.missing[:10])}", file=sys.stderr)
        return 1
    return 0


def cmd_compare(a) -> int:
    from .compare import compare
    result = compare(a.model, a.gt, a.out, device=a.device, tta=not a.no_tta)
    print(Path(result["markdown"]).read_text(), end="")
    print(f"table: {result['csv']}\npaired tests: {result['tests_csv']}")
    return 0


# --- parser ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .schedule import DEFAULTS, LOSS_DEFAULTS
    p = argparse.ArgumentParser(prog="pedtumorseg-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--work-dir", help="root of nnUNet_raw/ nnUNet_preprocessed/ nnUNet_results/ (default: "
                                           "the nnUNet_* environment variables, else ./work_dirs/nnunet)")
        sp.add_argument("--threads", type=int, help="CPU threads (torch, OMP) and nnU-Net's default process count")
        sp.add_argument("--num-workers", type=int,
                        help="nnU-Net data-augmentation worker processes (nnUNet_n_proc_DA; 0 = in-process)")
        return sp

    c = common(sub.add_parser("convert", help="BraTS-PED case folders -> nnU-Net raw dataset"))
    c.add_argument("--brats", required=True, help="folder of case folders (<ID>-t1n/-t1c/-t2w/-t2f/-seg)")
    c.add_argument("--out", help="nnUNet_raw folder (default: $nnUNet_raw)")
    c.add_argument("--dataset-id", type=int, default=1)
    c.add_argument("--name", default="PedTumorSeg")
    c.set_defaults(func=cmd_convert)

    pl = common(sub.add_parser("plan", help="fingerprint, plan (our network) and preprocess"))
    pl.add_argument("--dataset-id", type=int, required=True)
    pl.add_argument("--preset", default="paper", choices=PRESET_CHOICES,
                    help="network preset (pedtumorseg.model.presets.BASELINES; see the training README)")
    pl.add_argument("--patch-size", type=int, nargs="+", metavar="N", help="Z Y X (or Y X for a 2D preset)")
    pl.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"))
    pl.add_argument("--batch-size", type=int, help="default: 2 for 3D presets, nnU-Net's planned one for 2D")
    pl.add_argument("--decoder-widths", type=int, nargs="+", help="override the preset's decoder widths")
    pl.add_argument("--blocks-per-stage", type=int, nargs="+", help="override the preset's encoder blocks")
    pl.add_argument("--arch-kwargs", help="JSON object of network constructor kwargs that replace the preset's "
                                          "(per-stage lists are fitted to the topology's stage count)")
    pl.set_defaults(func=cmd_plan)

    t = common(sub.add_parser("train", help="train one fold or all five with PedTumorSegTrainer"))
    t.add_argument("--dataset-id", type=int, required=True)
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--fold", type=_fold, help="0..4 or 'all'")
    g.add_argument("--all-folds", action="store_true")
    t.add_argument("--preset", default="paper", choices=PRESET_CHOICES)
    t.add_argument("--epochs", type=int, default=DEFAULTS["num_epochs"])
    t.add_argument("--iterations", type=int, default=DEFAULTS["num_iterations_per_epoch"])
    t.add_argument("--val-iterations", type=int, default=DEFAULTS["num_val_iterations_per_epoch"])
    t.add_argument("--lr", type=float, default=DEFAULTS["initial_lr"])
    t.add_argument("--momentum", type=float, default=DEFAULTS["momentum"])
    t.add_argument("--nesterov", choices=["on", "off"], help="Nesterov momentum (default on, as nnU-Net)")
    t.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    abl = t.add_argument_group("ablation switches (paper's architecture and loss; defaults: the preset / paper)")
    abl.add_argument("--init-alpha", type=float, help="small-scale init exponent (default: the preset's)")
    abl.add_argument("--encoder-width-factor", type=int, help="encoder widths = factor x decoder widths (paper 2)")
    abl.add_argument("--se", choices=["on", "off"], help="squeeze-and-excitation in the encoder blocks (paper on)")
    abl.add_argument("--se-reduction", type=int, help="SE reduction ratio when on (paper 16)")
    abl.add_argument("--separable", choices=["on", "off"],
                     help="3D depthwise separable convolutions in encoder and decoder (paper on)")
    abl.add_argument("--theta", type=float, default=LOSS_DEFAULTS["theta"], help="FP term weight (0 = off)")
    abl.add_argument("--w-hd", type=float, default=LOSS_DEFAULTS["w_hd"], help="HD term weight (0 = off)")
    abl.add_argument("--w-dice", type=float, default=LOSS_DEFAULTS["w_dice"])
    abl.add_argument("--w-ce", type=float, default=LOSS_DEFAULTS["w_ce"])
    t.add_argument("--p-elastic-deform", type=float, default=DEFAULTS["p_elastic_deform"],
                   help="probability of elastic deformation per sample (0 = nnU-Net's default pipeline)")
    t.add_argument("--tag", help="variant name: results go to <trainer>__<plans>_<tag>__3d_fullres (ablations)")
    t.add_argument("--seed", type=int, help="seed the initialization and (with --num-workers 0) sampling and "
                   "augmentation, for controlled comparisons")
    t.add_argument("--init-weights", metavar="BUNDLE",
                   help="start from a model bundle's weights (fine-tuning) instead of a random initialization; "
                        "the bundle must have this run's network (same preset and overrides)")
    t.add_argument("--init-fold", type=_fold, help="the bundle fold to start from (default: its first)")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--save-every", type=int, default=DEFAULTS["save_every"],
                   help="write checkpoint_latest.pth every N epochs")
    t.add_argument("--no-final-validation", action="store_true")
    t.add_argument("--restart", action="store_true", help="ignore existing checkpoints and train from scratch")
    t.set_defaults(func=cmd_train)

    e = common(sub.add_parser("export", help="checkpoints -> model bundle (safetensors + manifest)"))
    e.add_argument("--dataset-id", type=int, required=True)
    e.add_argument("--folds", nargs="+", required=True)
    e.add_argument("--preset", default="paper", choices=PRESET_CHOICES)
    e.add_argument("--out", required=True, help="bundle .zip (or folder with --folder)")
    e.add_argument("--folder", action="store_true", help="write a folder instead of a zip")
    e.add_argument("--checkpoint", default="final", choices=sorted(CHECKPOINT_CHOICES))
    e.add_argument("--tag", help="the variant tag the fold was trained with")
    e.add_argument("--name", default="PedTumorSeg")
    e.add_argument("--version", default="0.0.0")
    e.add_argument("--description", default="")
    e.add_argument("--intended-use", choices=INTENDED_USES, default="research",
                   help="demonstration: marked as not for patients wherever its results are shown (default research)")
    e.add_argument("--postprocessing", help="JSON file with post-processing defaults (e.g. from fit-postprocessing)")
    e.set_defaults(func=cmd_export)

    im = common(sub.add_parser("import-nnunet", help="a trained nnU-Net v2 model folder -> model bundle"))
    im.add_argument("results", help="trainer folder (<Trainer>__<Plans>__<configuration>) or the dataset folder")
    im.add_argument("--out", required=True, help="bundle .zip (or folder with --folder)")
    im.add_argument("--folder", action="store_true", help="write a folder instead of a zip")
    im.add_argument("--folds", nargs="+", help="folds to import (default: every fold_* with the checkpoint)")
    im.add_argument("--checkpoint", default="final", choices=["final", "best"])
    im.add_argument("--configuration", help="e.g. 3d_fullres (default: from the trainer folder's name)")
    im.add_argument("--channels", nargs="+", help="the model's channels in order, as t1 t1ce t2 flair (default: "
                                                  "from dataset.json channel_names)")
    im.add_argument("--labels", nargs="+", help="VALUE=NAME per nnU-Net label value (region-based: painted value), "
                                                "NAME one of ET NET CC ED background (default: from dataset.json)")
    im.add_argument("--name")
    im.add_argument("--version", default="1.0.0")
    im.add_argument("--orientation", help="voxel-axis orientation of the training images (default LPS: BraTS "
                                          "NIfTI as SimpleITK reads them)")
    im.set_defaults(func=cmd_import_nnunet)

    f = common(sub.add_parser("fit-postprocessing",
                              help="fit ratio thresholds + minimum component volumes; write them into a bundle"))
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", help="nnU-Net raw dataset folder (imagesTr/, labelsTr/)")
    src.add_argument("--dataset-id", type=int, help="the raw dataset DatasetNNN_* under $nnUNet_raw")
    f.add_argument("--predictions", required=True,
                   help="cross-validation predictions (<case>.nii.gz or nnU-Net's fold_*/validation/)")
    f.add_argument("--normalization", choices=["zscore", "mean"],
                   help="ratio-map normalization to fit for (default: the one --bundle declares, else zscore)")
    f.add_argument("--percentile", type=float, default=95.0)
    f.add_argument("--labels", nargs="+", choices=["ET", "NET", "CC", "ED"], default=["ET", "CC"],
                   help="labels whose minimum component volume is swept (default: ET CC, the paper's)")
    f.add_argument("--bundle", help="bundle whose post-processing defaults are replaced")
    f.add_argument("--out", help="write the updated bundle here (default: replace --bundle)")
    f.add_argument("--report", help="write the full fit report (JSON) here")
    f.set_defaults(func=cmd_fit_postprocessing)

    ev = common(sub.add_parser("evaluate", help="evaluate a folder of predictions against ground truth (pedtumorseg.evaluation.folder)"))
    ev.add_argument("--pred", required=True, help="folder of predicted label maps")
    ev.add_argument("--gt", required=True, help="folder of ground-truth label maps (or BraTS case folders)")
    ev.add_argument("--out", required=True, help="per-case CSV (summary JSON and Bland-Altman PNG next to it)")
    ev.add_argument("--spacing-from", default="gt", choices=["gt", "pred"])
    ev.add_argument("--workers", type=int, default=1)
    ev.add_argument("--scorer", choices=["brats2025", "brats2026"], default="brats2025",
                    help="brats2025: the BraTS 2024/2025 PED scorer (default); brats2026: brats-evaluation "
                         "(panoptica; needs the [brats2026] extra)")
    ev.set_defaults(func=cmd_evaluate)

    cp = common(sub.add_parser("compare", help="score several bundles / prediction folders on one ground truth: "
                                               "one table, paired tests, parameters, FLOPs, time per case"))
    cp.add_argument("--model", required=True, action="append",
                    help="NAME=PATH of a bundle (.zip or folder) or a folder of predictions; repeat per model")
    cp.add_argument("--gt", required=True, help="BraTS case folders (images + segmentation; images are needed "
                                                "to predict with bundles), or label maps for prediction folders")
    cp.add_argument("--out", required=True, help="output folder (compare.csv, compare.md, paired_tests.csv)")
    cp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    cp.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation")
    cp.set_defaults(func=cmd_compare)
    return p


CHECKPOINT_CHOICES = ("final", "best", "latest")
PRESET_CHOICES = sorted(BASELINES)


PROG = "pedtumorseg-train"
#: top-level modules of the [train] extra (nnU-Net v2 and what it brings, the HD term's edt)
TRAINING_PACKAGES = frozenset({"nnunetv2", "dynamic_network_architectures", "batchgenerators", "batchgeneratorsv2",
                               "acvl_utils", "edt"})


def main(argv=None) -> int:
    """Exit status 1 for bad input, 2 for a bad command line, 130 when interrupted, with one line
    ``pedtumorseg-train: error: <file>: <problem>`` (``pedtumorseg.errors.run_command``)."""
    from pedtumorseg.errors import InputError, run_command

    args = build_parser().parse_args(argv)

    def run(a) -> int:
        setup_environment(a.work_dir, a.num_workers, a.threads)
        if a.command == "convert" and a.out is None:
            a.out = os.environ["nnUNet_raw"]
        try:
            return a.func(a)
        except ModuleNotFoundError as e:  # an install without the [train] extra: say how to get it
            if (e.name or "").split(".")[0] not in TRAINING_PACKAGES:
                raise
            raise InputError(None, f"'{PROG} {a.command}' needs {e.name.split('.')[0]}, part of the training "
                                   "packages: pip install 'pedtumorseg[train]'") from None

    return run_command(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
