"""``PedTumorSegTrainer``: nnU-Net v2's trainer with the paper's network, loss, optimizer, schedule and init.

What differs from ``nnUNetTrainer`` (everything else — data loading, sampling, DDP, checkpoint format,
validation — is nnU-Net's, unchanged):

* network: the class and kwargs named in the plans (``pedtumorseg.model.network.PedTumorSegNet`` or a baseline
  preset's class), built through the core's restricted resolver ``pedtumorseg.model.presets.build_network``;
  PedTumorSegNet applies its own small-scale init (``w ~ N(0, (2/fan_in)^alpha)``, alpha =
  ``arch_kwargs["init_alpha"]``), nnU-Net's U-Nets their He init, the others their own. Deep supervision is on
  for the classes that have it (``presets.supports_deep_supervision``) and off for the others.
* loss: ``pedtumorseg.model.loss.PedTumorSegLoss`` (-Dice + CE + w_hd*HD + theta*FP), batch_dice from the plans,
  wrapped in ``DeepSupervisionLoss`` with nnU-Net's weights (1/2^i, lowest resolution 0, normalized; under DDP
  the lowest gets 1e-6 as nnU-Net does, so that every head has a gradient).
* optimizer: SGD, lr 1e-2, momentum 0.99, weight decay 3e-5, **Nesterov** (nnU-Net's choice; the paper only says
  "SGD with momentum", we keep nnU-Net's, switchable with ``nesterov = False``).
* augmentation: nnU-Net's pipeline with **elastic deformation switched on** (paper §3 lists it; nnU-Net 2.8.1's
  ``SpatialTransform`` has ``p_elastic_deform=0``): probability ``p_elastic_deform`` (default 0.2, the
  probability nnU-Net uses for rotation and scaling), smoothing sigma a fraction ``ELASTIC_SCALE`` of the patch
  edge per axis, maximum displacement up to ``ELASTIC_MAGNITUDE`` x that sigma (``elastic_magnitude``). All
  other transforms and their probabilities are nnU-Net's.
* CPU training: the network's weights are stored channels-last (``torch.channels_last_3d``), so oneDNN runs
  the convolutions in that layout: the depthwise 3D convolutions' backward pass is ~3x faster than in the
  default layout on a 2-core AVX2 CPU (a whole demo-preset iteration ~1.7x). Same arithmetic; checkpoints and
  exported bundles are unaffected (the export makes every tensor contiguous).
* schedule: cosine decay over the whole run (``schedule.CosineLRScheduler``), stepped per epoch.
* logging: besides nnU-Net's training log and ``progress.png`` (loss, pseudo-Dice, epoch time, learning rate),
  every epoch rewrites ``epochs.jsonl`` and ``epochs.csv`` (epoch, train/val loss, pseudo-Dice per class, lr,
  epoch time) from the logger's full history, so a resumed run's files stay consistent.

The constructor signature must stay exactly nnU-Net's (nnU-Net records ``__init__`` args via ``locals()``);
hyper-parameters are attributes, set by ``configure()`` before ``initialize()``.
"""

from __future__ import annotations

import csv
import json
import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from pedtumorseg.conventions import LABEL_NAMES
from pedtumorseg.model.loss import DeepSupervisionLoss, PedTumorSegLoss, deep_supervision_weights
from pedtumorseg.errors import UsageError
from pedtumorseg.model.presets import build_network, supports_deep_supervision

from .schedule import DEFAULTS, LOSS_DEFAULTS, CosineLRScheduler

#: elastic deformation: the displacement field's Gaussian sigma, as a fraction of the patch edge (sampled per axis)
ELASTIC_SCALE = (0.1, 0.25)
#: maximum displacement (voxels) = U(0, ELASTIC_MAGNITUDE) x sigma, i.e. at most a quarter of the smoothing scale
ELASTIC_MAGNITUDE = 0.25


def elastic_magnitude(*args, patch_size, dim, deformation_scale, **kwargs) -> float:
    """Maximum elastic displacement (voxels) along ``dim`` for batchgeneratorsv2's ``SpatialTransform``
    (module-level so that the transform pickles into nnU-Net's augmentation workers)."""
    return float(np.random.uniform(0.0, ELASTIC_MAGNITUDE) * deformation_scale * patch_size[dim])


def enable_elastic_deformation(transforms, p: float):
    """Switch on elastic deformation in nnU-Net's training pipeline (its ``SpatialTransform``); returns it."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    stack, found = [transforms], 0
    while stack:
        t = stack.pop()
        if isinstance(t, SpatialTransform):
            t.p_elastic_deform = float(p)
            t.elastic_deform_scale = ELASTIC_SCALE
            t.elastic_deform_magnitude = elastic_magnitude
            found += 1
        stack.extend(getattr(t, "transforms", []) or [])
        inner = getattr(t, "transform", None)
        if inner is not None:
            stack.append(inner)
    if found != 1:
        raise RuntimeError(f"expected one SpatialTransform in nnU-Net's training pipeline, found {found}")
    return transforms


class PedTumorSegTrainer(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = DEFAULTS["initial_lr"]
        self.weight_decay = DEFAULTS["weight_decay"]
        self.momentum = DEFAULTS["momentum"]
        self.nesterov = DEFAULTS["nesterov"]
        self.num_epochs = DEFAULTS["num_epochs"]
        self.num_iterations_per_epoch = DEFAULTS["num_iterations_per_epoch"]
        self.num_val_iterations_per_epoch = DEFAULTS["num_val_iterations_per_epoch"]
        self.save_every = DEFAULTS["save_every"]
        self.p_elastic_deform = DEFAULTS["p_elastic_deform"]
        self.loss_kwargs = dict(LOSS_DEFAULTS)
        if not supports_deep_supervision(self.configuration_manager.network_arch_class_name):
            self.enable_deep_supervision = False

    def configure(self, **settings) -> "PedTumorSegTrainer":
        """Set hyper-parameters (names as in ``schedule.DEFAULTS``; ``loss_kwargs`` is merged). Before ``initialize()``."""
        if self.was_initialized:
            raise RuntimeError("configure() must be called before initialize()")
        for key, value in settings.items():
            if value is None:
                continue
            if key == "loss_kwargs":
                self.loss_kwargs.update({k: float(v) for k, v in value.items() if v is not None})
            elif key in DEFAULTS:
                setattr(self, key, type(DEFAULTS[key])(value))
            else:
                raise KeyError(f"unknown trainer setting {key!r}; known: {sorted(DEFAULTS) + ['loss_kwargs']}")
        self.print_to_log_file(f"PedTumorSegTrainer settings: {self.settings()}")
        return self

    def settings(self) -> dict:
        return {"num_epochs": self.num_epochs, "num_iterations_per_epoch": self.num_iterations_per_epoch,
                "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch, "initial_lr": self.initial_lr,
                "momentum": self.momentum, "nesterov": self.nesterov, "weight_decay": self.weight_decay,
                "save_every": self.save_every, "p_elastic_deform": self.p_elastic_deform,
                "loss_kwargs": dict(self.loss_kwargs),
                "batch_size": self.configuration_manager.batch_size,
                "patch_size": list(self.configuration_manager.patch_size)}

    # --- network -------------------------------------------------------------------------------------
    def initialize(self):
        was = self.was_initialized
        super().initialize()
        if not was and self.device.type == "cpu" and self._spatial_dims() == 3:
            # in place: the Parameter objects (and so the optimizer's references) stay the same
            self.network.to(memory_format=torch.channels_last_3d)

    def _spatial_dims(self) -> int:
        return len(self.configuration_manager.patch_size)

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        return build_network(configuration_manager.network_arch_class_name,
                             dict(configuration_manager.network_arch_init_kwargs), num_input_channels,
                             num_output_channels, deep_supervision=enable_deep_supervision)

    # --- augmentation ----------------------------------------------------------------------------------
    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training pipeline (its static method, same arguments) with elastic deformation on."""
        return enable_elastic_deformation(nnUNetTrainer.get_training_transforms(*args, **kwargs),
                                          self.p_elastic_deform)

    def set_deep_supervision_enabled(self, enabled: bool):
        if supports_deep_supervision(self.configuration_manager.network_arch_class_name):
            super().set_deep_supervision_enabled(enabled)

    # --- loss ----------------------------------------------------------------------------------------
    def deep_supervision_weights(self) -> list[float]:
        n = len(self._get_deep_supervision_scales())
        weights = deep_supervision_weights(n)
        if self.is_ddp and n > 1:  # as nnU-Net: DDP needs a gradient for every head
            weights[-1] = 1e-6
            s = sum(weights)
            weights = [w / s for w in weights]
        return weights

    def _build_loss(self):
        loss = PedTumorSegLoss(batch_dice=self.configuration_manager.batch_dice, **self.loss_kwargs)
        if self.enable_deep_supervision:
            return DeepSupervisionLoss(loss, self.deep_supervision_weights())
        return loss

    # --- optimizer and schedule ------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.network.parameters(), self.initial_lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay, nesterov=self.nesterov)
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # --- per-epoch log -----------------------------------------------------------------------------------
    def epoch_records(self) -> list[dict]:
        """One dict per finished epoch from nnU-Net's logger (its history survives checkpoint/resume)."""
        log = self.logger.get_checkpoint()
        n = min(len(log[k]) for k in ("train_losses", "val_losses", "lrs", "dice_per_class_or_region",
                                      "epoch_start_timestamps", "epoch_end_timestamps"))
        names = [LABEL_NAMES[i] for i in sorted(LABEL_NAMES)]
        records = []
        for e in range(n):
            dice = [float(d) for d in log["dice_per_class_or_region"][e]]
            rec = {"epoch": e, "train_loss": float(log["train_losses"][e]), "val_loss": float(log["val_losses"][e]),
                   "lr": float(log["lrs"][e]),
                   "epoch_time_s": float(log["epoch_end_timestamps"][e] - log["epoch_start_timestamps"][e]),
                   "mean_pseudo_dice": float(np.nanmean(dice)) if dice else float("nan"),
                   "ema_pseudo_dice": float(log["ema_fg_dice"][e]) if e < len(log["ema_fg_dice"]) else float("nan")}
            for name, d in zip(names, dice):
                rec[f"pseudo_dice_{name}"] = d
            records.append(rec)
        return records

    def write_epoch_log(self) -> None:
        if self.local_rank != 0:
            return
        records = self.epoch_records()
        jsonl = os.path.join(self.output_folder, "epochs.jsonl")
        with open(jsonl + ".tmp", "w") as f:
            for rec in records:
                f.write(json.dumps({k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                    for k, v in rec.items()}) + "\n")
        os.replace(jsonl + ".tmp", jsonl)
        if records:
            path = os.path.join(self.output_folder, "epochs.csv")
            with open(path + ".tmp", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
            os.replace(path + ".tmp", path)

    def on_epoch_end(self):
        # nnU-Net's on_epoch_end logs the end time, writes checkpoints and progress.png, increments the epoch
        super().on_epoch_end()
        self.write_epoch_log()


# --- running one fold --------------------------------------------------------------------------------------
def results_folder(dataset_id: int, preset: str, trainer_class: type = None, tag: str | None = None) -> str:
    """nnU-Net's output folder base of our trainer for a dataset, preset and variant tag (holds fold_<k>/)."""
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    from .planning import configuration_of, plans_identifier
    cls = trainer_class or PedTumorSegTrainer
    return os.path.join(str(nnUNet_results), convert_id_to_dataset_name(dataset_id),
                        f"{cls.__name__}__{plans_identifier(preset)}{'_' + tag if tag else ''}__{configuration_of(preset)}")


def load_plans_and_dataset_json(dataset_id: int, preset: str) -> tuple[dict, dict]:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    from .planning import plans_identifier
    base = os.path.join(str(nnUNet_preprocessed), convert_id_to_dataset_name(dataset_id))
    plans_file = os.path.join(base, plans_identifier(preset) + ".json")
    if not os.path.isfile(plans_file):
        raise FileNotFoundError(f"{plans_file}: no plans; run 'pedtumorseg-train plan --dataset-id {dataset_id} "
                                f"--preset {preset}' first")
    return load_json(plans_file), load_json(os.path.join(base, "dataset.json"))


def load_init_weights(trainer, path, fold=None):
    """Copy a bundle's weights (``fold``, default its first) into ``trainer.network``; returns the fold used.

    Read with safetensors through the core bundle loader (checksums verified; nothing unpickled) and loaded
    strictly (``pedtumorseg.inference.bundle.load_fold_weights``): a bundle of another preset, width or class count is refused with
    :class:`~pedtumorseg.errors.BundleError` naming the file and the first mismatch, before any training step.
    """
    from pedtumorseg.inference.bundle import load_bundle, load_fold_weights
    bundle = load_bundle(path)
    used = bundle.folds[0] if fold is None else fold
    net = trainer.network
    net = getattr(net, "module", net)  # DDP
    net = getattr(net, "_orig_mod", net)  # torch.compile
    load_fold_weights(bundle, net, used, network=f"this run's network (fold {used} of the bundle)", path=path)
    return used


#: network kwargs a training run may override (the paper's ablation switches), with their types
ARCH_OVERRIDES = {"init_alpha": float, "encoder_width_factor": int, "se_reduction": int,
                  "depthwise_separable": bool, "decoder_separable": bool}


def train_fold(dataset_id: int, fold, preset: str = "paper", device: str = "cpu", init_alpha: float | None = None,
               final_validation: bool = True, resume: bool = True, trainer_class: type = None,
               arch_overrides: dict | None = None, tag: str | None = None, seed: int | None = None,
               init_weights: str | os.PathLike | None = None, init_fold=None,
               log=print, **settings) -> PedTumorSegTrainer:
    """Train one fold (int or "all"); resumes from ``checkpoint_latest.pth`` when present and ``resume``.

    ``settings`` are ``PedTumorSegTrainer.configure`` keys. ``init_alpha`` and ``arch_overrides`` (keys of
    ``ARCH_OVERRIDES``: the ablation switches) override the plans' network kwargs; they are recorded in the
    plans.json that nnU-Net copies next to the folds, which export reads. ``tag`` names a variant: its results
    go to ``<trainer>__<plans>_<tag>__3d_fullres`` (export with the same tag), so ablation runs on one
    preprocessed dataset do not overwrite each other.

    ``seed`` seeds Python's, NumPy's and torch's generators before the trainer is built: the weight
    initialization, and with augmentation in the main process (``nnUNet_n_proc_DA=0``) nnU-Net's patch sampling
    and augmentation, then repeat exactly. Two runs with the same seed (and a resumed run: seeded at the resume)
    see the same batches in the same order — what a controlled loss or ablation comparison needs. nnU-Net's
    augmentation worker processes are not seeded (its ``NonDetMultiThreadedAugmenter``), so with workers > 0
    only the initialization repeats.

    ``init_weights`` (a model bundle, .zip or folder) starts the run from that bundle's weights of ``init_fold``
    (default: its first fold) instead of a random initialization: fine-tuning, with this run's own schedule and
    loss. The weights are read with safetensors (never unpickled) and must match the network of the plans key by
    key and shape by shape (:func:`load_init_weights`). A resumed run continues from its own checkpoint and
    ignores them.
    """
    cls = trainer_class or PedTumorSegTrainer
    plans, dataset_json = load_plans_and_dataset_json(dataset_id, preset)
    from .planning import configuration_of
    configuration = configuration_of(preset)
    overrides = dict(arch_overrides or {})
    arch = plans["configurations"][configuration]["architecture"]
    if init_alpha is not None:
        if "init_alpha" not in arch["arch_kwargs"]:
            raise UsageError(None, f"--init-alpha applies to PedTumorSegNet presets only, not "
                                       f"{arch['network_class_name']}")
        overrides["init_alpha"] = init_alpha
    for key, value in overrides.items():
        if key not in ARCH_OVERRIDES:
            raise KeyError(f"unknown network override {key!r}; known: {sorted(ARCH_OVERRIDES)}")
        if value is not None:
            arch["arch_kwargs"][key] = ARCH_OVERRIDES[key](value)
    if tag:
        plans["plans_name"] = f"{plans['plans_name']}_{tag}"
    fold = fold if fold == "all" else int(fold)
    out = os.path.join(results_folder(dataset_id, preset, cls, tag), f"fold_{fold}")
    final = os.path.join(out, "checkpoint_final.pth")
    latest = os.path.join(out, "checkpoint_latest.pth")
    if os.path.isfile(final) and resume:
        log(f"{final} exists: fold {fold} is already trained (use --restart to train it again)")
        return None
    do_resume = resume and os.path.isfile(latest)
    plans["continue_training"] = do_resume
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if int(os.environ.get("nnUNet_n_proc_DA", "1") or 0) > 0:
            log(f"seed {seed}: augmentation runs in worker processes, which nnU-Net does not seed; use "
                "--num-workers 0 for a run that repeats batch by batch")
    trainer = cls(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json, device=dev)
    trainer.configure(**settings)
    if seed is not None:
        trainer.print_to_log_file(f"seed: {seed}")
    if do_resume:
        trainer.load_checkpoint(latest)  # our own local training state (nnU-Net's pickle-based checkpoint)
        log(f"resuming fold {fold} from {latest} at epoch {trainer.current_epoch}")
        if init_weights is not None:
            log(f"resumed run: --init-weights {init_weights} is not used (the checkpoint holds the weights)")
    elif init_weights is not None:
        trainer.initialize()
        used = load_init_weights(trainer, init_weights, init_fold)
        trainer.print_to_log_file(f"initial weights: {init_weights} fold {used}")
        log(f"fold {fold}: starting from the weights of {init_weights} (fold {used})")
    trainer.run_training()
    if final_validation:
        trainer.perform_actual_validation(False)
    return trainer
