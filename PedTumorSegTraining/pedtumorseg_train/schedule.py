"""Cosine learning-rate decay over the whole run (paper §3, eq. 4):

    eta_t = eta_0 * (1 + cos(pi * t / T)) / 2        t = epoch (0-based), T = number of epochs

eta_0 at t = 0, eta_0 / 2 at t = T/2, 0 at t = T (the last trained epoch t = T-1 still has a small positive rate).
The scheduler is stepped once per epoch with the epoch index, exactly like nnU-Net's ``PolyLRScheduler``
(``nnUNetTrainer.on_train_epoch_start`` calls ``lr_scheduler.step(current_epoch)``), so a resumed run continues on
the same curve without any scheduler state.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from pedtumorseg.model.loss import HD_WEIGHT, THETA

#: the training schedule's documented defaults (paper §3); each is a ``pedtumorseg-train train`` option.
#: (Kept here, free of nnunetv2 imports, so that the CLI can show them before nnU-Net's environment is set.)
DEFAULTS = {
    "num_epochs": 1000,
    "num_iterations_per_epoch": 250,
    "num_val_iterations_per_epoch": 50,
    "initial_lr": 1e-2,
    "momentum": 0.99,
    "nesterov": True,
    "weight_decay": 3e-5,
    "save_every": 50,
    "p_elastic_deform": 0.2,
}
#: PedTumorSegLoss weights used by the trainer (pedtumorseg.model.loss documents each term)
LOSS_DEFAULTS = {"w_dice": 1.0, "w_ce": 1.0, "w_hd": HD_WEIGHT, "theta": THETA}


def cosine_lr(initial_lr: float, t: float, total: float) -> float:
    """eta_0 (1 + cos(pi t / T)) / 2, with t clipped to [0, T]."""
    if total <= 0:
        raise ValueError("the number of epochs T must be positive")
    t = min(max(float(t), 0.0), float(total))
    return initial_lr * (1.0 + math.cos(math.pi * t / total)) / 2.0


class CosineLRScheduler(LRScheduler):
    """Sets every param group's lr to ``cosine_lr(initial_lr, epoch, max_epochs)`` on ``step(epoch)``."""

    def __init__(self, optimizer: Optimizer, initial_lr: float, max_epochs: int, current_step: int | None = None):
        self.initial_lr = float(initial_lr)
        self.max_epochs = int(max_epochs)
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None):  # noqa: D102 (nnU-Net's call convention)
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = cosine_lr(self.initial_lr, current_step, self.max_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr for _ in self.optimizer.param_groups]
